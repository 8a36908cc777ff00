"""Fixed-orbit renders of a trained scene, without the diffusion prior: what the turntable video,
the contact sheet and the evaluation's CLIP/FID views are made of."""
from __future__ import annotations

import torch

from ..scene import CameraSampler, VolumeRenderer
from . import fast_render

# Rays per renderer call: bounds the packed-sample memory of one call at high resolutions.
RAY_CHUNK = 16384


@torch.no_grad()
def render_orbit(renderer: VolumeRenderer, n_views: int, resolution: int, elevation: float = 15.0,
                 distance: float = 1.5, fovy: float = 50.0, progress: bool = False,
                 desc: str = "render") -> torch.Tensor:
    """(n_views, 3, resolution, resolution) in [0, 1]: views evenly spaced in azimuth from -180
    degrees at a fixed elevation, albedo shading, the learned background (no random colours).
    progress: a progress bar with ETA on stderr (frames can take seconds each on a CPU)."""
    from tqdm import tqdm

    if n_views < 1:
        raise ValueError(f"render_orbit: 'n_views' must be >= 1, got {n_views}")
    if resolution < 1:
        raise ValueError(f"render_orbit: 'resolution' must be >= 1, got {resolution}")
    was_training = renderer.training
    renderer.eval()
    device = renderer.field.aabb.device
    cams = CameraSampler(height=resolution, width=resolution, device=device).orbit(
        n_views, elevation=elevation, distance=distance, fovy=fovy)
    frames = []
    for i in tqdm(range(n_views), desc=desc, unit="frame", disable=not progress, dynamic_ncols=True):
        o, d = cams.rays_o[i].reshape(-1, 3), cams.rays_d[i].reshape(-1, 3)
        light = cams.light_positions[i:i + 1].expand(o.shape[0], 3)
        if fast_render.supports(renderer):  # same image, a fraction of the work (see fast_render)
            rgb = torch.cat([fast_render.render_albedo(renderer, o[s:s + RAY_CHUNK], d[s:s + RAY_CHUNK])
                             for s in range(0, o.shape[0], RAY_CHUNK)])
        else:
            rgb = torch.cat([renderer(o[s:s + RAY_CHUNK], d[s:s + RAY_CHUNK],
                                      light_positions=light[s:s + RAY_CHUNK])["rgb"]
                             for s in range(0, o.shape[0], RAY_CHUNK)])
        frames.append(rgb.reshape(resolution, resolution, 3).permute(2, 0, 1))
    renderer.train(was_training)
    return torch.stack(frames).clamp(0, 1).float().cpu()


def to_uint8(frames: torch.Tensor):
    """(N, 3, H, W) in [0, 1] -> numpy (N, H, W, 3) uint8, what image writers take."""
    return (frames.clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255).round().astype("uint8")

"""Which stage-1 density level should become the stage-2 surface? threestudio fixes it at 25, a
value tuned for Stable Diffusion runs. Fields distilled from other priors (the shapes prior) reach
other densities, and at 25 their surface can be much smaller than the object the NeRF renders
(measured: pumpkin, 19 % of the image against the rendered 30 %).

The silhouette search picks the level whose surface has the NeRF's own silhouettes: the surface at
level L covers a pixel exactly when the density along that pixel's ray exceeds L somewhere, so one
pass that records each ray's maximum density gives the silhouette of every level at once. Among
log-spaced candidate levels it takes the one whose silhouettes best match (mean IoU over a ring of
views) the rendered opacity > 0.5."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

RAY_CHUNK = 4096


@dataclass
class LevelSearch:
    level: float
    iou: float  # mean silhouette IoU at the chosen level
    levels: list  # the candidates, ascending
    ious: list  # mean IoU per candidate


@torch.no_grad()
def ray_max_density(density_fn, aabb: torch.Tensor, rays_o: torch.Tensor, rays_d: torch.Tensor,
                    n_samples: int = 256) -> torch.Tensor:
    """(N,) the largest density at n_samples evenly spaced points of each ray's segment in the box
    (0 for rays that miss it)."""
    from ..ops.raymarch import ray_aabb_intersect

    aabb = aabb.to(rays_o)
    out = []
    for s in range(0, rays_o.shape[0], RAY_CHUNK):
        o, d = rays_o[s:s + RAY_CHUNK].contiguous(), rays_d[s:s + RAY_CHUNK].contiguous()
        near, far, hit = ray_aabb_intersect(o, d, aabb)
        near = near.clamp(min=0)  # an origin inside the box starts at the origin
        far = torch.where(hit, far, near)  # a miss: an empty segment
        u = (torch.arange(n_samples, dtype=o.dtype, device=o.device) + 0.5) / n_samples
        t = near[:, None] + (far - near).clamp(min=0)[:, None] * u
        points = o[:, None] + t[..., None] * d[:, None]
        density = density_fn(points.reshape(-1, 3)).reshape(t.shape).to(o.dtype)
        peak = density.amax(-1)
        out.append(torch.where(far > near, peak, torch.zeros_like(peak)))
    return torch.cat(out)


def candidate_levels(max_density: float, low: float = 1.0, count: int = 64) -> list[float]:
    """count log-spaced levels from `low` up to 0.95 of the largest density seen."""
    high = 0.95 * max_density
    if not high > low:
        return []
    return [math.exp(math.log(low) + (math.log(high) - math.log(low)) * i / (count - 1))
            for i in range(count)]


def silhouette_iou(masks_a: torch.Tensor, masks_b: torch.Tensor) -> float:
    """Mean IoU over views of (V, P) boolean masks (a view where both are empty counts as 1)."""
    inter = (masks_a & masks_b).sum(-1).double()
    union = (masks_a | masks_b).sum(-1).double()
    per_view = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
    return float(per_view.mean())


@torch.no_grad()
def silhouette_level(density_fn, aabb: torch.Tensor, opacity_fn, rays_o: torch.Tensor,
                     rays_d: torch.Tensor, n_samples: int = 256, count: int = 64) -> LevelSearch:
    """The level whose surface silhouettes best match opacity_fn's > 0.5, for rays (V, P, 3)
    (V views of P pixels). opacity_fn(rays_o (N, 3), rays_d (N, 3)) -> (N,). Raises ValueError when
    the rendered silhouettes are empty or the density never exceeds the lowest candidate."""
    views, pixels = rays_o.shape[:2]
    flat_o, flat_d = rays_o.reshape(-1, 3), rays_d.reshape(-1, 3)
    target = torch.cat([opacity_fn(flat_o[s:s + RAY_CHUNK], flat_d[s:s + RAY_CHUNK]).reshape(-1)
                        for s in range(0, flat_o.shape[0], RAY_CHUNK)]) > 0.5
    if not bool(target.any()):
        raise ValueError("the stage-1 renders have no pixel with opacity > 0.5: nothing to match")
    peak = ray_max_density(density_fn, aabb, flat_o, flat_d, n_samples)
    levels = candidate_levels(float(peak.max()), count=count)
    if not levels:
        raise ValueError(f"the stage-1 density never exceeds 1 along the views' rays "
                         f"(max {float(peak.max()):.4g})")
    target, peak = target.reshape(views, pixels), peak.reshape(views, pixels)
    ious = [silhouette_iou(peak > level, target) for level in levels]
    best = max(range(len(levels)), key=lambda i: (ious[i], -i))  # ties: the lower level
    return LevelSearch(levels[best], ious[best], levels, ious)


def stage1_silhouette_level(renderer, device="cpu") -> LevelSearch:
    """The silhouette search on a stage-1 VolumeRenderer: a ring of 8 views at 15 degrees
    elevation and 4 at 45, 64 px, at the validation orbit's camera distance."""
    from ..scene import CameraSampler

    sampler = CameraSampler(height=64, width=64, device=device)
    rings = [sampler.orbit(8, elevation=15.0), sampler.orbit(4, elevation=45.0)]
    rays_o = torch.cat([cams.rays_o.reshape(cams.rays_o.shape[0], -1, 3) for cams in rings])
    rays_d = torch.cat([cams.rays_d.reshape(cams.rays_d.shape[0], -1, 3) for cams in rings])
    opacity = lambda o, d: renderer(o, d, generator=torch.Generator(o.device).manual_seed(0))["opacity"]  # noqa: E731
    return silhouette_level(renderer.field.density, renderer.field.aabb, opacity, rays_o, rays_d)

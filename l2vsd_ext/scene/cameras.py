"""Camera sampling for score distillation (threestudio's random-camera conventions): z-up world,
cameras on a sphere around the origin looking at it, OpenGL camera axes (x right, y up, looking
down -z), normalised ray directions. View labels follow DreamFusion: 'overhead' above the
overhead threshold, else 'front' / 'back' within a threshold of azimuth 0 / 180, else 'side'."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

VIEW_LABELS = ("front", "side", "back", "overhead")


@dataclass
class CameraBatch:
    rays_o: torch.Tensor          # (B, H, W, 3)
    rays_d: torch.Tensor          # (B, H, W, 3), unit length
    c2w: torch.Tensor             # (B, 4, 4) camera-to-world
    elevation: torch.Tensor       # (B,) degrees
    azimuth: torch.Tensor         # (B,) degrees in [-180, 180)
    distance: torch.Tensor        # (B,)
    fovy: torch.Tensor            # (B,) degrees
    light_positions: torch.Tensor  # (B, 3)
    view_labels: list

    @property
    def batch_size(self) -> int:
        return self.c2w.shape[0]

    @property
    def height(self) -> int:
        return self.rays_o.shape[1]

    @property
    def width(self) -> int:
        return self.rays_o.shape[2]


def view_label(elevation: float, azimuth: float, front_threshold: float = 45.0,
               back_threshold: float = 45.0, overhead_threshold: float = 60.0) -> str:
    """DreamFusion's view-dependent prompt suffix for a camera at (elevation, azimuth) degrees."""
    if elevation > overhead_threshold:
        return "overhead"
    azimuth = (azimuth + 180.0) % 360.0 - 180.0
    if abs(azimuth) < front_threshold:
        return "front"
    if abs(azimuth) > 180.0 - back_threshold:
        return "back"
    return "side"


def look_at(positions: torch.Tensor, centers: torch.Tensor, ups: torch.Tensor) -> torch.Tensor:
    """(B, 4, 4) camera-to-world with columns (right, up, back = -forward, position)."""
    forward = F.normalize(centers - positions, dim=-1)
    right = F.normalize(torch.cross(forward, ups, dim=-1), dim=-1)
    up = F.normalize(torch.cross(right, forward, dim=-1), dim=-1)
    c2w = torch.zeros(positions.shape[0], 4, 4, dtype=positions.dtype, device=positions.device)
    c2w[:, :3, 0], c2w[:, :3, 1], c2w[:, :3, 2] = right, up, -forward
    c2w[:, :3, 3] = positions
    c2w[:, 3, 3] = 1
    return c2w


def camera_rays(c2w: torch.Tensor, fovy_deg: torch.Tensor, height: int, width: int):
    """Pixel-centre rays: origins and unit directions, (B, H, W, 3) each."""
    focal = 0.5 * height / torch.tan(0.5 * torch.deg2rad(fovy_deg))  # (B,)
    j = torch.arange(width, dtype=c2w.dtype, device=c2w.device) + 0.5 - 0.5 * width
    i = torch.arange(height, dtype=c2w.dtype, device=c2w.device) + 0.5 - 0.5 * height
    ii, jj = torch.meshgrid(i, j, indexing="ij")
    dirs = torch.stack([jj[None] / focal[:, None, None], -ii[None] / focal[:, None, None],
                        -torch.ones_like(ii)[None].expand(c2w.shape[0], -1, -1)], dim=-1)
    rays_d = F.normalize(torch.einsum("bij,bhwj->bhwi", c2w[:, :3, :3], dirs), dim=-1)
    rays_o = c2w[:, None, None, :3, 3].expand_as(rays_d)
    return rays_o, rays_d


def spherical_positions(elevation_deg, azimuth_deg, distance):
    e, a = torch.deg2rad(elevation_deg), torch.deg2rad(azimuth_deg)
    return torch.stack([distance * torch.cos(e) * torch.cos(a),
                        distance * torch.cos(e) * torch.sin(a),
                        distance * torch.sin(e)], dim=-1)


def _check_range(name: str, value: Sequence[float], lo: float = -math.inf, hi: float = math.inf):
    if len(value) != 2 or not (lo <= value[0] <= value[1] <= hi):
        raise ValueError(f"CameraSampler: '{name}' must be (min, max) with {lo} <= min <= max <= "
                         f"{hi}, got {tuple(value)}")
    return (float(value[0]), float(value[1]))


class CameraSampler:
    """Random cameras around the origin; deterministic given a torch.Generator.

    Azimuths are stratified over the batch (each camera in its own slice of the range). Jitter
    (threestudio's perturbations, 0 disables): camera position + N(0, camera_perturb), look-at
    centre + N(0, center_perturb), up + N(0, up_perturb). The light sits near the camera direction
    at a distance in light_distance_range (for diffuse / textureless shading)."""

    def __init__(self, height: int = 64, width: int = 64, batch_size: int = 1,
                 elevation_range=(-10.0, 90.0), azimuth_range=(-180.0, 180.0),
                 distance_range=(1.0, 1.5), fovy_range=(40.0, 70.0), camera_perturb: float = 0.1,
                 center_perturb: float = 0.2, up_perturb: float = 0.02,
                 light_distance_range=(0.8, 1.5), light_position_perturb: float = 1.0,
                 front_threshold: float = 45.0, back_threshold: float = 45.0,
                 overhead_threshold: float = 60.0, dtype=torch.float32, device=None):
        if height < 1 or width < 1 or batch_size < 1:
            raise ValueError(f"CameraSampler: height, width and batch_size must be >= 1, got "
                             f"{height}, {width}, {batch_size}")
        self.height, self.width, self.batch_size = int(height), int(width), int(batch_size)
        self.elevation_range = _check_range("elevation_range", elevation_range, -90.0, 90.0)
        self.azimuth_range = _check_range("azimuth_range", azimuth_range)
        self.distance_range = _check_range("distance_range", distance_range, 1e-6)
        self.fovy_range = _check_range("fovy_range", fovy_range, 1e-3, 179.0)
        self.light_distance_range = _check_range("light_distance_range", light_distance_range)
        for name in ("camera_perturb", "center_perturb", "up_perturb", "light_position_perturb"):
            if locals()[name] < 0:
                raise ValueError(f"CameraSampler: '{name}' must be >= 0")
        self.camera_perturb, self.center_perturb = float(camera_perturb), float(center_perturb)
        self.up_perturb = float(up_perturb)
        self.light_position_perturb = float(light_position_perturb)
        self.thresholds = (float(front_threshold), float(back_threshold), float(overhead_threshold))
        self.dtype, self.device = dtype, device

    def _uniform(self, value_range, n, generator):
        lo, hi = value_range
        return lo + (hi - lo) * torch.rand(n, generator=generator, dtype=self.dtype)

    def sample(self, generator: Optional[torch.Generator] = None) -> CameraBatch:
        B = self.batch_size
        elevation = self._uniform(self.elevation_range, B, generator)
        lo, hi = self.azimuth_range
        azimuth = (torch.rand(B, generator=generator, dtype=self.dtype)
                   + torch.arange(B, dtype=self.dtype)) / B * (hi - lo) + lo
        distance = self._uniform(self.distance_range, B, generator)
        fovy = self._uniform(self.fovy_range, B, generator)
        positions = spherical_positions(elevation, azimuth, distance)
        noise = lambda scale: scale * torch.randn(B, 3, generator=generator, dtype=self.dtype)
        positions_jittered = positions + noise(self.camera_perturb)
        centers = noise(self.center_perturb)
        ups = torch.tensor([0.0, 0.0, 1.0], dtype=self.dtype).expand(B, 3) + noise(self.up_perturb)
        light_dist = self._uniform(self.light_distance_range, B, generator)
        light_dir = F.normalize(positions + noise(self.light_position_perturb), dim=-1)
        return self._batch(positions_jittered, centers, ups, elevation, azimuth, distance, fovy,
                           light_dir * light_dist[:, None])

    def orbit(self, n_views: int, elevation: float = 15.0, distance: float = 1.5,
              fovy: float = 50.0) -> CameraBatch:
        """Deterministic turntable: n_views azimuths evenly spaced from -180 degrees, no jitter,
        light at the camera."""
        if n_views < 1:
            raise ValueError(f"CameraSampler.orbit: 'n_views' must be >= 1, got {n_views}")
        azimuth = torch.arange(n_views, dtype=self.dtype) / n_views * 360.0 - 180.0
        elevation_t = torch.full((n_views,), float(elevation), dtype=self.dtype)
        distance_t = torch.full((n_views,), float(distance), dtype=self.dtype)
        fovy_t = torch.full((n_views,), float(fovy), dtype=self.dtype)
        positions = spherical_positions(elevation_t, azimuth, distance_t)
        ups = torch.tensor([0.0, 0.0, 1.0], dtype=self.dtype).expand(n_views, 3)
        return self._batch(positions, torch.zeros_like(positions), ups, elevation_t, azimuth,
                           distance_t, fovy_t, positions.clone())

    def _batch(self, positions, centers, ups, elevation, azimuth, distance, fovy, lights):
        c2w = look_at(positions, centers, ups)
        rays_o, rays_d = camera_rays(c2w, fovy, self.height, self.width)
        labels = [view_label(float(e), float(a), *self.thresholds)
                  for e, a in zip(elevation, azimuth)]
        to = lambda t: t.to(self.device)
        return CameraBatch(to(rays_o), to(rays_d), to(c2w), to(elevation), to(azimuth),
                           to(distance), to(fovy), to(lights), labels)

"""Occupancy grid for empty-space skipping (nerfacc's OccupancyGrid, one level): a float density
grid updated by EMA from a density function, thresholded into a bitfield that the compiled
marching kernel reads. Cell (i, j, k) is bit (i * res_y + j) * res_z + k."""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import torch
from torch import nn

from .._ext import load_extension
from . import random_draws
from .composite import render_weight_from_density
from .raymarch import as_aabb_tensor, ray_aabb_intersect

_BIT_WEIGHTS = tuple(1 << b for b in range(8))


def pack_bits(binary: torch.Tensor) -> torch.Tensor:
    """Flat bool tensor -> uint8 bitfield, bit b of byte i holding binary[8 i + b]."""
    flat = binary.reshape(-1)
    pad = (-flat.numel()) % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    weights = torch.tensor(_BIT_WEIGHTS, dtype=torch.uint8, device=flat.device)
    return (flat.view(-1, 8).to(torch.uint8) * weights).sum(dim=1, dtype=torch.uint8)


def _resolution_triple(resolution) -> tuple[int, int, int]:
    if isinstance(resolution, int):
        values = (resolution,) * 3
    elif isinstance(resolution, (tuple, list)):
        values = tuple(resolution)
    else:
        values = ()
    if len(values) != 3 or not all(isinstance(v, int) and 1 <= v <= 4096 for v in values):
        raise ValueError("OccupancyGrid: argument 'resolution' must be a positive int (or three) "
                         f"no larger than 4096, got {resolution!r}")
    return values


class OccupancyGrid(nn.Module):
    """Binary occupancy over `aabb`, `resolution`^3 cells. Starts fully occupied (nothing is culled
    before the first update).

    update(step, density_fn, ...) re-estimates every `every_n_steps` steps: during the first
    `warmup_steps` all cells are sampled, later a random quarter plus a quarter drawn from occupied
    cells (nerfacc's schedule). A cell's value is max(decay * old, new), and a cell is occupied when
    its value exceeds min(occ_thre, mean), so a cell whose density is above occ_thre is never culled.
    Like nerfacc's occ_eval_fn, density_fn may return density * step size (what threestudio does)."""

    def __init__(self, aabb: Union[torch.Tensor, Sequence[float]], resolution=128, device=None):
        super().__init__()
        self.resolution = _resolution_triple(resolution)
        box = as_aabb_tensor(aabb, "OccupancyGrid")
        self.register_buffer("aabb", box.float().to(device))
        # A host copy for the marching kernel's arguments: reading the buffer back from a GPU on
        # every sampling call would be a host sync.
        self._aabb_host = tuple(box.float().tolist())

        n_cells = self.resolution[0] * self.resolution[1] * self.resolution[2]
        self.register_buffer("density", torch.zeros(n_cells, device=device))
        self.register_buffer("binary", torch.ones(n_cells, dtype=torch.bool, device=device))
        self.register_buffer("bitfield", pack_bits(self.binary))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if prefix + "aabb" in state_dict:
            self._aabb_host = tuple(state_dict[prefix + "aabb"].float().cpu().tolist())

    @property
    def n_cells(self) -> int:
        return self.density.numel()

    def cell_centers(self, cells: torch.Tensor, jitter: bool = False,
                     generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """World positions of flat cell indices (the centre, or a uniform point with jitter)."""
        res = torch.tensor(self.resolution, device=cells.device)
        ijk = torch.stack([cells // (res[1] * res[2]), (cells // res[2]) % res[1], cells % res[2]], -1)
        if jitter:
            u = random_draws.uniform(ijk.shape, generator, cells.device)
        else:
            u = torch.full(ijk.shape, 0.5, device=cells.device)
        lo, hi = self.aabb[:3].to(cells.device), self.aabb[3:].to(cells.device)
        return lo + (ijk.float() + u) / res.float() * (hi - lo)

    def _cells_to_update(self, warmup: bool, generator) -> torch.Tensor:
        device = self.density.device
        if warmup:
            return torch.arange(self.n_cells, device=device)
        n = max(1, self.n_cells // 4)
        uniform = random_draws.integers(self.n_cells, (n,), generator, device)
        occupied = self.binary.nonzero().flatten()
        if occupied.numel():
            pick = random_draws.integers(occupied.numel(), (n,), generator, device)
            uniform = torch.cat([uniform, occupied[pick]])
        return uniform

    @torch.no_grad()
    def update(self, step: int, density_fn: Callable[[torch.Tensor], torch.Tensor],
               occ_thre: float = 0.01, ema_decay: float = 0.95, warmup_steps: int = 256,
               every_n_steps: int = 16, dilation: int = 0,
               generator: Optional[torch.Generator] = None) -> bool:
        """EMA update at steps that are multiples of every_n_steps; returns whether it ran.

        One random point per sampled cell can miss a thin sliver of surface at a cell's corner;
        dilation=k also marks the cells within k of an occupied one (conservative, more samples)."""
        if every_n_steps < 1:
            raise ValueError(f"OccupancyGrid.update: 'every_n_steps' must be >= 1, got {every_n_steps}")
        if dilation < 0:
            raise ValueError(f"OccupancyGrid.update: 'dilation' must be >= 0, got {dilation}")
        if step % every_n_steps:
            return False
        cells = self._cells_to_update(step < warmup_steps, generator)
        points = self.cell_centers(cells, jitter=True, generator=generator)
        new = density_fn(points).reshape(-1).to(self.density)
        if new.numel() != cells.numel():
            raise ValueError(f"OccupancyGrid.update: density_fn returned {new.numel()} values for "
                             f"{cells.numel()} points")
        # A NaN estimate must never cull a cell: count it as dense.
        new = torch.nan_to_num(new, nan=float("inf"))
        # Cells drawn twice take the larger estimate: a max scatter gives the same result in any
        # order, where `density[cells] = ...` keeps whichever write lands last (on CUDA, any).
        self.density.scatter_reduce_(0, cells, torch.maximum(self.density[cells] * ema_decay, new),
                                     reduce="amax", include_self=False)
        threshold = torch.clamp(self.density.mean(), max=occ_thre)
        binary = self.density > threshold
        if dilation:
            size = 2 * dilation + 1
            grown = torch.nn.functional.max_pool3d(binary.float().view(1, 1, *self.resolution),
                                                   size, stride=1, padding=dilation)
            binary = grown.flatten() > 0
        self.binary.copy_(binary)
        self.bitfield.copy_(pack_bits(self.binary))
        return True

    def occupancy_fraction(self) -> float:
        return float(self.binary.float().mean())

    @torch.no_grad()
    def sampling(self, rays_o: torch.Tensor, rays_d: torch.Tensor,
                 density_fn: Optional[Callable] = None, render_step_size: float = 1e-3,
                 near_plane: float = 0.0, far_plane: float = 1e10, stratified: bool = False,
                 cone_angle: float = 0.0, alpha_thre: float = 0.0, early_stop_eps: float = 1e-4,
                 max_samples_per_ray: int = 1024, generator: Optional[torch.Generator] = None):
        """Packed samples (ray_indices, t_starts, t_ends), sorted by ray, no gradient.

        Marches each ray through [max(t_near, near_plane), min(t_far, far_plane)] with steps of
        render_step_size (growing as t * cone_angle), keeping steps whose midpoint lies in an
        occupied cell. With density_fn(t_starts, t_ends, ray_indices) -> sigmas (nerfacc's
        sigma_fn), samples with alpha < alpha_thre or transmittance < early_stop_eps are dropped."""
        op = "OccupancyGrid.sampling"
        t_near, t_far, _ = ray_aabb_intersect(rays_o, rays_d, self._aabb_host)
        t_min = torch.clamp(t_near, min=near_plane)
        t_max = torch.clamp(t_far, max=far_plane)
        offset = None
        if stratified:
            offset = random_draws.uniform((rays_o.shape[0],), generator, rays_o.device,
                                          rays_o.dtype)
        bitfield = self.bitfield.to(rays_o.device)
        ray_indices, t_starts, t_ends = load_extension().march_rays(
            rays_o, rays_d, t_min, t_max, offset, bitfield, list(self._aabb_host),
            list(self.resolution), float(render_step_size), float(cone_angle),
            int(max_samples_per_ray))
        if density_fn is None or t_starts.numel() == 0:
            return ray_indices, t_starts, t_ends
        sigmas = density_fn(t_starts, t_ends, ray_indices).reshape(-1).to(t_starts)
        if sigmas.shape != t_starts.shape:
            raise ValueError(f"{op}: density_fn returned {sigmas.numel()} values for "
                             f"{t_starts.numel()} samples")
        _, transmittance, alphas = render_weight_from_density(t_starts, t_ends, sigmas,
                                                              ray_indices, rays_o.shape[0])
        keep = alphas >= alpha_thre
        if early_stop_eps > 0:
            keep &= transmittance >= early_stop_eps
        return ray_indices[keep], t_starts[keep], t_ends[keep]

"""Inference-only rendering for turntables: the same image as VolumeRenderer.forward (albedo
shading, no gradients), computed with less work. Rays are marched in segments of SEGMENT steps
through occupied cells (32 steps, then 64, 128, ...); each segment's samples go through the field once (density and albedo
together, where the training path evaluates the density twice), and a ray stops as soon as its
transmittance falls below the renderer's early_stop_eps. Empty space is skipped by the occupancy
grid as in training. Used only where the renderer's settings make it exact (alpha_thre == 0,
cone_angle == 0); otherwise VolumeRenderer.forward is called."""
from __future__ import annotations

import torch

from ..ops.composite import render_weight_from_density
from ..ops.raymarch import ray_aabb_intersect

SEGMENT = 32  # steps marched per ray in the first round; doubled each round (most rays stop early)


def supports(renderer) -> bool:
    return renderer.alpha_thre == 0 and renderer.cone_angle == 0 and not renderer.training


@torch.no_grad()
def render_albedo(renderer, rays_o: torch.Tensor, rays_d: torch.Tensor, segment: int = SEGMENT) -> torch.Tensor:
    """(N, 3) colours of rays (N, 3): the albedo composite in front of the renderer's background."""
    from .._ext import load_extension

    grid = renderer.sampler
    n = rays_o.shape[0]
    t_near, t_far, _ = ray_aabb_intersect(rays_o, rays_d, grid.aabb)
    t_min = torch.clamp(t_near, min=renderer.near_plane).contiguous()
    t_max = torch.clamp(t_far, max=renderer.far_plane).contiguous()
    bitfield = grid.bitfield.to(rays_o.device)
    color = torch.zeros(n, 3, dtype=rays_o.dtype, device=rays_o.device)
    opacity = torch.zeros(n, dtype=rays_o.dtype, device=rays_o.device)
    transmittance = torch.ones(n, dtype=rays_o.dtype, device=rays_o.device)
    marched = torch.zeros(n, dtype=torch.long, device=rays_o.device)
    active = torch.arange(n, device=rays_o.device)
    eps = renderer.early_stop_eps
    while active.numel():
        budget = renderer.max_samples_per_ray - int(marched[active].min())
        steps = min(segment, budget)
        if steps <= 0:
            break
        o, d = rays_o[active].contiguous(), rays_d[active].contiguous()
        local, t_starts, t_ends = load_extension().march_rays(
            o, d, t_min[active], t_max[active], None, bitfield, grid.aabb.tolist(), list(grid.resolution),
            float(renderer.render_step_size), 0.0, int(steps))
        if t_starts.numel() == 0:
            break
        m = active.numel()
        mid = 0.5 * (t_starts + t_ends)
        out = renderer.field(o[local] + mid[:, None] * d[local])
        # Weights inside this segment, then scaled by the transmittance the ray arrived with.
        weights, seg_trans, _ = render_weight_from_density(t_starts, t_ends, out["density"].to(t_starts),
                                                           local, m)
        arrived = transmittance[active][local]
        keep = seg_trans * arrived >= eps  # the training path's early termination, sample by sample
        w = (weights * arrived)[keep]
        rays = active[local[keep]]
        color.index_add_(0, rays, w[:, None] * out["albedo"][keep].to(w))
        opacity.index_add_(0, rays, w)
        # Transmittance after the segment: exp(-sum sigma * dt) over all its samples.
        optical = torch.zeros(m, dtype=t_starts.dtype, device=t_starts.device)
        optical.index_add_(0, local, out["density"].to(t_starts) * (t_ends - t_starts))
        transmittance[active] = transmittance[active] * torch.exp(-optical)
        counts = torch.bincount(local, minlength=m)
        last_end = torch.full((m,), -1.0, dtype=t_ends.dtype, device=t_ends.device)
        last_end.scatter_reduce_(0, local, t_ends, reduce="amax")
        marched[active] += counts
        # A ray goes on only if it filled its segment (more occupied steps may follow) and is
        # still transparent enough to see them.
        go_on = (counts == steps) & (transmittance[active] >= eps)
        t_min[active[go_on]] = last_end[go_on]
        active = active[go_on]
        segment *= 2
    background = renderer.background(rays_d).to(color)
    return color + background * (1 - opacity)[:, None]

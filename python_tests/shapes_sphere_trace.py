"""A sphere tracer of an SDF: the independent reference the analytic field's volume renders are
checked against (first hit of each ray, its albedo, over white)."""
from __future__ import annotations

import torch


@torch.no_grad()
def sphere_trace(obj, rays_o: torch.Tensor, rays_d: torch.Tensor, max_steps: int = 256,
                 hit_eps: float = 1e-4, far: float = 4.0):
    """rays (N, 3) -> rgb (N, 3) over white, hit mask (N,), depth (N,) along the ray, and the
    closest the ray came to the surface (N,) (0 for hits)."""
    o, d = rays_o.double(), rays_d.double()
    t = torch.zeros(o.shape[0], dtype=torch.float64)
    hit = torch.zeros(o.shape[0], dtype=torch.bool)
    closest = torch.full((o.shape[0],), float("inf"), dtype=torch.float64)
    for _ in range(max_steps):
        active = ~hit & (t < far)
        if not active.any():
            break
        dist = obj.sdf(o[active] + t[active, None] * d[active])
        closest[active] = torch.minimum(closest[active], dist.clamp_min(0))
        t[active] += 0.9 * dist.clamp_min(0) + 1e-6  # 0.9: the tapered capsule is a bound, not exact
        newly = active.clone()
        newly[active] = dist < hit_eps
        hit |= newly
    rgb = torch.ones(o.shape[0], 3, dtype=torch.float64)
    if hit.any():
        _, albedo = obj.sdf_and_albedo(o[hit] + t[hit, None] * d[hit])
        rgb[hit] = albedo
    closest[hit] = 0
    return rgb.float(), hit, t.float(), closest.float()

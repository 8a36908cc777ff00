"""Ray/box intersection (nerfacc's `ray_aabb_intersect` for one box) over the compiled kernel."""
from __future__ import annotations

from typing import Sequence, Union

import torch

from .._ext import load_extension

MISS_T = 1e10  # t_near and t_far of a ray that misses the box (nerfacc's value)


def as_aabb_tensor(aabb: Union[torch.Tensor, Sequence[float]], op: str) -> torch.Tensor:
    box = torch.as_tensor(aabb, dtype=torch.float64).detach().cpu().reshape(-1)
    if box.numel() != 6:
        raise ValueError(f"{op}: argument 'aabb' must have 6 values (xmin, ymin, zmin, xmax, ymax, "
                         f"zmax), got {box.numel()}")
    if not bool(torch.isfinite(box).all()) or not bool((box[:3] < box[3:]).all()):
        raise ValueError(f"{op}: argument 'aabb' must be finite with min < max on every axis, got "
                         f"{box.tolist()}")
    return box


@torch.no_grad()
def ray_aabb_intersect(rays_o: torch.Tensor, rays_d: torch.Tensor, aabb):
    """(t_near, t_far, hit) for rays (n, 3) against one box (6 values). t_near < 0 when the origin
    is inside; misses (including zero-length or non-finite rays) get t = 1e10 and hit = False."""
    op = "ray_aabb_intersect"
    for name, value in (("rays_o", rays_o), ("rays_d", rays_d)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{op}: argument '{name}' must be a torch.Tensor, "
                            f"got {type(value).__name__}")
    box = as_aabb_tensor(aabb, op)
    return tuple(load_extension().ray_aabb_intersect(rays_o, rays_d, box))

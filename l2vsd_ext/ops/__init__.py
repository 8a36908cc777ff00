"""Differentiable ops over the compiled kernels; `reference` holds their pure-PyTorch twins."""
from .composite import accumulate_along_rays, render_weight_from_density
from .hashgrid import HashGridEncoding, hashgrid_encode, hashgrid_layout
from .occupancy import OccupancyGrid
from .raymarch import ray_aabb_intersect

__all__ = ["HashGridEncoding", "hashgrid_encode", "hashgrid_layout", "OccupancyGrid",
           "ray_aabb_intersect", "render_weight_from_density", "accumulate_along_rays"]

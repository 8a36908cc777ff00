"""Differentiable ops over the compiled kernels; `reference` holds their pure-PyTorch twins."""
from .attention_jvp import attention, attention_jvp, attention_jvp_heads
from .composite import accumulate_along_rays, composite_along_rays, render_weight_from_density
from .hashgrid import HashGridEncoding, hashgrid_encode, hashgrid_layout
from .lora_linear import lora_linear, lora_linear_jvp
from .norm_jvp import group_norm_jvp, layer_norm_jvp
from .occupancy import OccupancyGrid
from .rasterize import Rasterized, antialias, interpolate, rasterize, triangle_neighbors
from .raymarch import ray_aabb_intersect

__all__ = ["HashGridEncoding", "OccupancyGrid", "accumulate_along_rays", "composite_along_rays", "attention",
           "attention_jvp", "attention_jvp_heads", "group_norm_jvp", "hashgrid_encode",
           "hashgrid_layout", "layer_norm_jvp", "lora_linear", "lora_linear_jvp", "ray_aabb_intersect",
           "Rasterized", "antialias", "interpolate", "rasterize", "triangle_neighbors", "render_weight_from_density"]

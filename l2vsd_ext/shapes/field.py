"""The true object as a field the project's VolumeRenderer can draw: density from the signed
distance (a sharp sigmoid, so the surface is the SDF's zero set to within a fraction of a render
step), albedo from the nearest part, normals from the SDF's gradient. Rendered with the run's
renderer, background and cameras, it gives images of the kind a NeRF run can produce."""
from __future__ import annotations

import functools
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .objects import ShapeObject


class AnalyticField(nn.Module):
    """density = max_density * sigmoid(-sdf / sharpness). With the renderer's default step (box
    diagonal / 512 = 0.0068 for the unit box) max_density 600 makes a step inside the surface
    nearly opaque (alpha 0.98), and sharpness 0.004 keeps the transition within about one step."""

    def __init__(self, obj: ShapeObject, aabb: Sequence[float] = (-1, -1, -1, 1, 1, 1),
                 max_density: float = 600.0, sharpness: float = 0.004):
        super().__init__()
        self.obj = obj
        self.register_buffer("aabb", torch.as_tensor(aabb, dtype=torch.float32).reshape(6))
        self.max_density, self.sharpness = float(max_density), float(sharpness)

    def _density(self, sdf: torch.Tensor) -> torch.Tensor:
        return self.max_density * torch.sigmoid(-sdf / self.sharpness)

    def density(self, points: torch.Tensor) -> torch.Tensor:
        return self._density(self.obj.sdf(points))

    def normals(self, points: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            x = points.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.obj.sdf(x).sum(), x)
        return F.normalize(grad, dim=-1)

    def forward(self, points: torch.Tensor, with_normals: bool = False) -> dict:
        sdf, albedo = self.obj.sdf_and_albedo(points)
        out = {"density": self._density(sdf), "albedo": albedo}
        if with_normals:
            out["normal"] = self.normals(points)
        return out


@functools.lru_cache(maxsize=16)
def _shell_cells(obj: ShapeObject, aabb: tuple, resolution: int) -> torch.Tensor:
    from ..ops import OccupancyGrid

    grid = OccupancyGrid(aabb, resolution=resolution)
    centers = grid.cell_centers(torch.arange(grid.n_cells))
    diagonal = float((grid.aabb[3:] - grid.aabb[:3]).norm()) / resolution
    sdf = torch.cat([obj.sdf(chunk) for chunk in centers.split(1 << 18)])
    return sdf.abs() < diagonal


@torch.no_grad()
def surface_shell_grid(field: AnalyticField, resolution: int = 128):
    """An occupancy grid marking the cells within a cell diagonal of the surface: the renderer
    skips the empty space and the deep interior (which the opaque shell hides anyway). The cells
    are cached per object (they cost millions of SDF evaluations)."""
    from ..ops import OccupancyGrid
    from ..ops.occupancy import pack_bits

    grid = OccupancyGrid(field.aabb, resolution=resolution)
    grid.binary.copy_(_shell_cells(field.obj, tuple(field.aabb.tolist()), resolution))
    grid.bitfield.copy_(pack_bits(grid.binary))
    return grid


def truth_renderer(obj: ShapeObject, background=None, grid_resolution: int = 128):
    """The project's VolumeRenderer over the object's analytic field (white background by
    default), in eval mode: the ground truth's images come from here."""
    from ..scene import SolidBackground, VolumeRenderer

    field = AnalyticField(obj)
    grid = surface_shell_grid(field, grid_resolution)
    renderer = VolumeRenderer(field, background if background is not None else SolidBackground(), grid)
    return renderer.eval()

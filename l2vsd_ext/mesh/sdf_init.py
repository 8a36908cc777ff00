"""Stage 1 -> stage 2: a tet-grid SDF from the NeRF's density at a fixed level, and how much the
conversion lost (Chamfer between the stage-1 marching-cubes mesh and the initial tet mesh).

As threestudio does (prolificdreamer-geometry, level 25 after a coarse pass that finds a tight
box): a coarse density grid over the field's box finds where the density exceeds the level, the
tet grid is placed on a cube around that region (one coarse cell of margin), and the SDF at each
grid vertex is (level - density) / level clamped to [-1, 1]. The zero level is exactly the
density level (threestudio clamps level - density to [-1, 1]; dividing by the level first keeps
the values unsaturated for densities up to twice the level, so the linear interpolation of
marching tets places vertices better). Our NeRF uses threestudio's exp-activated density with its
blob bias, so threestudio's level 25 carries over (export/mesh.py uses the same default)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..export.mesh import _chunked, density_grid
from .tetgrid import TetGrid, make_tet_grid

DEFAULT_LEVEL = 25.0
COARSE_RESOLUTION = 32  # the tight-box pass


class NoSurfaceError(ValueError):
    """The density never exceeds the level inside the field's box."""


@dataclass
class Box:
    """A cube: centre (3,) and half edge length."""
    center: tuple
    half_extent: float


@torch.no_grad()
def tight_box(field, level: float, resolution: int = COARSE_RESOLUTION) -> Box:
    """The cube around the region where the field's density exceeds `level`, padded by one coarse
    cell on each side (so the grid's boundary lies outside the surface where the field allows)."""
    volume = density_grid(field, resolution)
    inside = volume > level
    if not bool(inside.any()):
        raise NoSurfaceError(f"the stage-1 density never exceeds the level {level:g} inside its box "
                             f"(max density {float(volume.max()):.4g})")
    aabb = field.aabb.detach().double().cpu()
    lo, hi = aabb[:3], aabb[3:]
    cell = (hi - lo) / (resolution - 1)
    idx = inside.nonzero().double()
    first = lo + (idx.min(0).values - 1) * cell
    last = lo + (idx.max(0).values + 1) * cell
    center = (first + last) / 2
    half = float(((last - first) / 2).max())
    return Box(tuple(float(c) for c in center), half)


def placed_grid(resolution: int, box: Box) -> TetGrid:
    grid = make_tet_grid(resolution, half_extent=box.half_extent)
    center = torch.tensor(box.center, dtype=grid.vertices.dtype)
    return TetGrid(grid.vertices + center, grid.tets, grid.edges, grid.tet_edges, grid.resolution,
                   grid.cell_size)


@torch.no_grad()
def sdf_from_density(field, grid: TetGrid, level: float) -> torch.Tensor:
    """(V,) SDF, negative inside: clamp((level - density) / level, -1, 1) at the grid vertices.
    Vertices on the grid's boundary are kept outside, so the initial mesh is closed."""
    device = field.aabb.device
    density = _chunked(field.density, grid.vertices.to(device).float()).float().cpu()
    sdf = ((level - density) / level).clamp(-1, 1)
    lo, hi = grid.vertices.min(0).values, grid.vertices.max(0).values
    on_boundary = ((grid.vertices == lo) | (grid.vertices == hi)).any(-1)
    sdf[on_boundary] = sdf[on_boundary].clamp(min=1e-3)
    return sdf


def surface_points(vertices: torch.Tensor, faces: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """n points uniformly (by area) on the triangle mesh."""
    g = torch.Generator().manual_seed(seed)
    v = vertices.detach().double().cpu()[faces.long().cpu()]
    area = torch.linalg.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0]).norm(dim=-1)
    pick = torch.multinomial(area, n, replacement=True, generator=g)
    r = torch.rand(n, 2, generator=g, dtype=torch.float64)
    flip = r.sum(-1) > 1
    r[flip] = 1 - r[flip]
    t = v[pick]
    return (t[:, 0] + r[:, :1] * (t[:, 1] - t[:, 0]) + r[:, 1:] * (t[:, 2] - t[:, 0])).float()


class _Boxed:
    """The field seen through another box (extract_mesh samples the field's aabb)."""

    def __init__(self, field, box: Box):
        c, h = torch.tensor(box.center), box.half_extent
        self.aabb = torch.cat([c - h, c + h]).to(field.aabb)
        self.density, self._field = field.density, field

    def __call__(self, points):
        return self._field(points)


def chamfer_kdtree(points_a: torch.Tensor, points_b: torch.Tensor) -> float:
    """shapes.metrics.chamfer_distance's definition (sum of the two mean nearest-neighbour
    distances), by KD-trees: fast enough for 1e5 points a side, which keeps the sampling floor low."""
    from scipy.spatial import cKDTree

    a, b = points_a.double().cpu().numpy(), points_b.double().cpu().numpy()
    return float(cKDTree(b).query(a)[0].mean() + cKDTree(a).query(b)[0].mean())


def conversion_chamfer(field, level: float, vertices: torch.Tensor, faces: torch.Tensor, box: Box,
                       resolution: int, n_points: int = 100000) -> tuple[float, float]:
    """(Chamfer, its sampling floor). Chamfer: symmetric, world units, between the stage-1
    marching-cubes mesh at `level` (export/mesh.py, `resolution`^3 samples over the tight box) and
    the tet mesh, n_points surface samples a side. Floor: the same measure between two independent
    samplings of the reference itself: what the sampling alone contributes."""
    from ..export.mesh import extract_mesh

    reference = extract_mesh(_Boxed(field, box), resolution, threshold=level)
    ref_v = torch.as_tensor(reference.vertices, dtype=torch.float64)
    ref_f = torch.as_tensor(reference.faces, dtype=torch.long)
    ref_points = surface_points(ref_v, ref_f, n_points, 1)
    chamfer = chamfer_kdtree(ref_points, surface_points(vertices, faces, n_points, 2))
    floor = chamfer_kdtree(ref_points, surface_points(ref_v, ref_f, n_points, 3))
    return chamfer, floor

"""Mesh from a density field: density sampled on a grid spanning the field's AABB, marching cubes
(PyMCubes) at a density threshold, vertex colours from the field's albedo, files through trimesh.

The default threshold, 25, is threestudio's isosurface threshold for NeRF-style (exp-activated)
densities. The grid is padded with one layer of zero density, so a surface cut by the box is
capped there and the mesh is always closed."""
from __future__ import annotations

import os

import numpy as np
import torch

DEFAULT_THRESHOLD = 25.0
MESH_FORMATS = ("obj", "ply", "glb")
POINT_CHUNK = 262144  # points per field call: bounds memory at resolution 256 (16.7M points)


class EmptyMeshError(ValueError):
    """No density crosses the threshold inside the box: there is no surface to export.
    field_empty: the field has no density anywhere (no threshold would help)."""

    field_empty = False


def _chunked(fn, points: torch.Tensor) -> torch.Tensor:
    return torch.cat([fn(points[s:s + POINT_CHUNK]) for s in range(0, points.shape[0], POINT_CHUNK)])


def grid_points(aabb: torch.Tensor, resolution: int) -> torch.Tensor:
    """(R, R, R, 3) world points of a grid whose corner samples sit on the box's corners."""
    lo, hi = aabb[:3], aabb[3:]
    axes = [torch.linspace(float(lo[i]), float(hi[i]), resolution, device=aabb.device) for i in range(3)]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)


@torch.no_grad()
def density_grid(field, resolution: int) -> torch.Tensor:
    """(R, R, R) float32 densities of `field` (anything with .aabb and .density(points))."""
    if resolution < 2:
        raise ValueError(f"density_grid: 'resolution' must be >= 2, got {resolution}")
    points = grid_points(field.aabb.float(), resolution).reshape(-1, 3)
    return _chunked(field.density, points).float().reshape(resolution, resolution, resolution).cpu()


@torch.no_grad()
def extract_mesh(field, resolution: int = 128, threshold: float = DEFAULT_THRESHOLD):
    """The isosurface density == threshold as a trimesh.Trimesh in world coordinates, outward
    normals, vertex colours from the field's albedo (the field's forward(points)['albedo'])."""
    import mcubes
    import trimesh

    if not np.isfinite(threshold):
        raise ValueError(f"extract_mesh: 'threshold' must be finite, got {threshold}")
    volume = density_grid(field, resolution).numpy()
    if not (volume > threshold).any():
        top = float(volume.max())
        # Lowering the threshold only helps a field that has some density; an empty one has no surface.
        advice = f"lower --threshold below {top:.4g}" if top > 0 else "the field is empty (train it longer)"
        err = EmptyMeshError(f"no density above the threshold {threshold} inside the box "
                             f"(max density {top:.4g}); {advice}")
        err.field_empty = not top > 0
        raise err
    padded = np.pad(volume, 1, mode="constant", constant_values=min(0.0, threshold - 1.0))
    vertices, faces = mcubes.marching_cubes(padded, threshold)
    aabb = field.aabb.detach().double().cpu().numpy()
    lo, hi = aabb[:3], aabb[3:]
    # Grid index i (in the padded grid) sits at lo + (i - 1) * cell: map back to world space.
    vertices = lo + (vertices - 1.0) * (hi - lo) / (resolution - 1)
    vertices = np.clip(vertices, lo, hi)
    mesh = trimesh.Trimesh(vertices=vertices, faces=faces.astype(np.int64), process=True)
    if mesh.is_watertight and mesh.volume < 0:
        mesh.invert()  # marching cubes' winding depends on which side is "inside"
    mesh.visual.vertex_colors = vertex_colors(field, mesh.vertices)
    return mesh


@torch.no_grad()
def vertex_colors(field, vertices: np.ndarray) -> np.ndarray:
    """(V, 4) uint8 RGBA: the field's albedo at each vertex."""
    device = field.aabb.device
    points = torch.as_tensor(np.asarray(vertices), dtype=torch.float32, device=device)
    albedo = _chunked(lambda p: field(p)["albedo"], points).clamp(0, 1).cpu().numpy()
    rgba = np.concatenate([albedo, np.ones((albedo.shape[0], 1))], axis=1)
    return (rgba * 255).round().astype(np.uint8)


def write_mesh(mesh, stem: str, formats=MESH_FORMATS) -> list[str]:
    """Writes STEM.obj / .ply / .glb (vertex colours in each) and returns the paths."""
    unknown = set(formats) - set(MESH_FORMATS)
    if unknown:
        raise ValueError(f"write_mesh: unknown formats {sorted(unknown)} (choose from {MESH_FORMATS})")
    os.makedirs(os.path.dirname(stem) or ".", exist_ok=True)
    paths = []
    for fmt in formats:
        path = f"{stem}.{fmt}"
        mesh.export(path, file_type=fmt)
        paths.append(path)
    return paths

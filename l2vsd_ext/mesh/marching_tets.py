"""Marching tetrahedra in PyTorch (DMTet's surface extraction, written for our Kuhn grid).

The surface is the zero level of a per-vertex SDF, negative inside. Each grid edge whose ends
have different signs gets exactly one surface vertex (shared by every tet around that edge), so
the mesh has no duplicated vertices and no false silhouettes along tet boundaries. Vertex
positions are linear in the (offset) grid positions and rational in the SDF values, so gradients
reach both. Faces wind outward: their normals point towards positive SDF.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .gather import take_rows
from .tetgrid import TET_EDGES, TetGrid

# A vertex counts as "outside" when sdf >= 0, so a crossing edge always has s_a < 0 <= s_b (or the
# reverse) and the interpolation denominator is never zero.


def _local_edge(a: int, b: int) -> int:
    return TET_EDGES.index((min(a, b), max(a, b)))


def _build_table():
    """For each of the 16 sign patterns (bit i set: vertex i outside), up to two triangles as
    local edge indices, wound outward for a positively oriented tet."""
    # A positively oriented reference tet; orientation is affine-invariant, so the windings
    # found on it hold for every positively oriented tet and any crossing positions.
    ref = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=torch.float64)
    mid = torch.stack([(ref[a] + ref[b]) / 2 for a, b in TET_EDGES])
    table = torch.full((16, 2, 3), -1, dtype=torch.long)
    count = torch.zeros(16, dtype=torch.long)
    for code in range(16):
        out = [i for i in range(4) if code >> i & 1]
        inn = [i for i in range(4) if not code >> i & 1]
        if len(out) in (0, 4):
            continue
        if len(out) == 1 or len(inn) == 1:
            lone = out[0] if len(out) == 1 else inn[0]
            rest = [i for i in range(4) if i != lone]
            tris = [[_local_edge(lone, j) for j in rest]]
        else:
            (a, b), (c, d) = inn, out
            ac, ad, bd, bc = (_local_edge(a, c), _local_edge(a, d), _local_edge(b, d),
                              _local_edge(b, c))
            tris = [[ac, ad, bd], [ac, bd, bc]]
        towards_out = ref[out].mean(0) - ref[inn].mean(0)
        for k, tri in enumerate(tris):
            p = mid[tri]
            normal = torch.linalg.cross(p[1] - p[0], p[2] - p[0])
            if float(normal @ towards_out) < 0:
                tri = [tri[0], tri[2], tri[1]]
            table[code, k] = torch.tensor(tri)
        count[code] = len(tris)
    return table, count


_TRI_TABLE, _TRI_COUNT = _build_table()


@dataclass
class TetMesh:
    """vertices (M, 3); faces (F, 3) long, outward winding; source_edges (M,) long: the grid
    edge each vertex lies on."""
    vertices: torch.Tensor
    faces: torch.Tensor
    source_edges: torch.Tensor


def vertex_positions(grid: TetGrid, offsets: torch.Tensor | None = None,
                     max_offset_cells: float = 0.5) -> torch.Tensor:
    """Grid vertices moved by tanh(offsets) * max_offset_cells cells (DMTet's bounded
    deformation). offsets: (V, 3) raw, unbounded parameters, or None for the regular grid."""
    base = grid.vertices
    if offsets is None:
        return base
    if not isinstance(offsets, torch.Tensor) or offsets.shape != base.shape:
        raise ValueError(f"vertex_positions: argument 'offsets' must be a tensor of shape "
                         f"{tuple(base.shape)}, got "
                         f"{tuple(offsets.shape) if isinstance(offsets, torch.Tensor) else type(offsets).__name__}")
    if not 0 < max_offset_cells <= 1:
        raise ValueError(f"vertex_positions: argument 'max_offset_cells' must be in (0, 1], "
                         f"got {max_offset_cells!r}")
    return base.to(offsets.dtype) + torch.tanh(offsets) * (max_offset_cells * grid.cell_size)


def marching_tets(positions: torch.Tensor, sdf: torch.Tensor, grid: TetGrid) -> TetMesh:
    """The zero level set of `sdf` (V,) on the tets of `grid` at vertex `positions` (V, 3)."""
    n_vertices = grid.vertices.shape[0]
    if not isinstance(positions, torch.Tensor) or positions.shape != (n_vertices, 3):
        raise ValueError(f"marching_tets: argument 'positions' must have shape ({n_vertices}, 3)")
    if not isinstance(sdf, torch.Tensor) or sdf.shape != (n_vertices,):
        raise ValueError(f"marching_tets: argument 'sdf' must have shape ({n_vertices},), got "
                         f"{tuple(sdf.shape) if isinstance(sdf, torch.Tensor) else type(sdf).__name__}")
    if not bool(torch.isfinite(sdf.detach()).all()):
        raise ValueError("marching_tets: argument 'sdf' has non-finite values")
    device = positions.device
    outside = sdf.detach() >= 0

    edges = grid.edges.to(device)
    crossing = outside[edges[:, 0]] != outside[edges[:, 1]]
    cross_ids = crossing.nonzero().squeeze(1)
    # Global edge -> surface vertex index (-1 for edges that do not cross).
    edge_to_vertex = torch.full((edges.shape[0],), -1, dtype=torch.long, device=device)
    edge_to_vertex[cross_ids] = torch.arange(cross_ids.numel(), device=device)

    a, b = edges[cross_ids, 0], edges[cross_ids, 1]
    sa, sb = take_rows(sdf, a)[:, None], take_rows(sdf, b)[:, None]
    # Zero of the linear interpolant: p = (p_a s_b - p_b s_a) / (s_b - s_a).
    vertices = (take_rows(positions, a) * sb - take_rows(positions, b) * sa) / (sb - sa)

    tets = grid.tets.to(device)
    code = (outside[tets].long() << torch.arange(4, device=device)).sum(-1)
    tet_edges = grid.tet_edges.to(device)
    table, counts = _TRI_TABLE.to(device), _TRI_COUNT.to(device)
    faces = []
    for k in range(2):
        active = (counts[code] > k).nonzero().squeeze(1)
        local = table[code[active], k]                           # (n, 3) local edges
        global_edges = torch.gather(tet_edges[active], 1, local)
        faces.append(edge_to_vertex[global_edges])
    faces = torch.cat(faces, 0)
    return TetMesh(vertices, faces, cross_ids)

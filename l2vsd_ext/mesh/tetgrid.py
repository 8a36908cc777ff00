"""Our own tetrahedral grid (no Quartet files): a cube lattice, each cell split into six tets
along the same main diagonal (the Kuhn / Freudenthal split). Because every cell uses the same
diagonal direction, the face diagonals of neighbouring cells agree, so the tets form a
conforming mesh: each interior triangle is shared by exactly two tets."""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

# Corner c of a unit cell has offset (c & 1, c >> 1 & 1, c >> 2 & 1). The six Kuhn tets walk from
# corner 0 to corner 7 adding one axis at a time, in each of the 3! axis orders.
_KUHN_TETS = []
for order in itertools.permutations(range(3)):
    corner, path = 0, [0]
    for axis in order:
        corner |= 1 << axis
        path.append(corner)
    _KUHN_TETS.append(path)

# The six edges of a tet as pairs of local vertex indices; marching_tets relies on this order.
TET_EDGES = ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))


def _oriented_kuhn_tets() -> torch.Tensor:
    """The six Kuhn tets with vertices ordered so that det(v1-v0, v2-v0, v3-v0) > 0. Every
    cell is a translate of the unit cell, so orienting the template orients the whole grid."""
    corners = torch.tensor([[c & 1, c >> 1 & 1, c >> 2 & 1] for c in range(8)], dtype=torch.float64)
    local = torch.tensor(_KUHN_TETS)
    p = corners[local]
    flip = torch.linalg.det(p[:, 1:] - p[:, :1]) < 0
    local[flip] = local[flip][:, [0, 2, 1, 3]]
    return local


@dataclass
class TetGrid:
    """vertices (V, 3) float; tets (T, 4) long, positively oriented; edges (E, 2) long, each
    (a < b) once; tet_edges (T, 6) long: the global edge of each local edge in TET_EDGES order;
    resolution: cells per axis; cell_size: the edge length of a cell."""
    vertices: torch.Tensor
    tets: torch.Tensor
    edges: torch.Tensor
    tet_edges: torch.Tensor
    resolution: int
    cell_size: float

    def to(self, device) -> "TetGrid":
        return TetGrid(self.vertices.to(device), self.tets.to(device), self.edges.to(device),
                       self.tet_edges.to(device), self.resolution, self.cell_size)


def make_tet_grid(resolution: int, half_extent: float = 1.0,
                  dtype: torch.dtype = torch.float32) -> TetGrid:
    """A resolution^3-cell lattice over [-half_extent, half_extent]^3, six tets per cell."""
    if isinstance(resolution, bool) or not isinstance(resolution, int) or not 1 <= resolution <= 512:
        raise ValueError(f"make_tet_grid: argument 'resolution' must be an int in [1, 512], "
                         f"got {resolution!r}")
    if not (half_extent > 0 and half_extent < float("inf")):
        raise ValueError(f"make_tet_grid: argument 'half_extent' must be finite and > 0, "
                         f"got {half_extent!r}")
    n = resolution + 1
    axis = torch.linspace(-half_extent, half_extent, n, dtype=torch.float64)
    ix, iy, iz = torch.meshgrid(torch.arange(n), torch.arange(n), torch.arange(n), indexing="ij")
    # Vertex (i, j, k) at index (i * n + j) * n + k.
    vertices = torch.stack([axis[ix], axis[iy], axis[iz]], dim=-1).reshape(-1, 3)

    r = resolution
    ci, cj, ck = torch.meshgrid(torch.arange(r), torch.arange(r), torch.arange(r), indexing="ij")
    base = ((ci * n + cj) * n + ck).reshape(-1)
    corner_offset = torch.tensor([((c & 1) * n + (c >> 1 & 1)) * n + (c >> 2 & 1) for c in range(8)])
    local = _oriented_kuhn_tets()                           # (6, 4) corner ids
    tets = (base[:, None, None] + corner_offset[local][None]).reshape(-1, 4)

    pairs = tets[:, list(TET_EDGES)]                        # (T, 6, 2)
    pairs = torch.sort(pairs, dim=-1).values.reshape(-1, 2)
    # One scalar key per (a < b) pair: a 1-D unique is far faster than unique(dim=0).
    n_vertices = vertices.shape[0]
    keys, inverse = torch.unique(pairs[:, 0] * n_vertices + pairs[:, 1], return_inverse=True)
    edges = torch.stack([keys // n_vertices, keys % n_vertices], dim=1)
    tet_edges = inverse.reshape(-1, 6)
    return TetGrid(vertices.to(dtype), tets, edges, tet_edges, resolution,
                   2.0 * half_extent / resolution)

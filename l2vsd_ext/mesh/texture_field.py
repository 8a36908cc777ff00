"""The texture stage's colour field: a hash grid over the mesh's box and a small MLP, sigmoid RGB
(threestudio's texture field in prolificdreamer-texture), and its initialisation by fitting the
stage-1 NeRF's albedo on the mesh surface (threestudio issue #198: start from stage 1's colours
instead of from random)."""
from __future__ import annotations

import torch
from torch import nn

from ..ops.hashgrid import HashGridEncoding


class TextureField(nn.Module):
    """(N, 3) world points -> (N, 3) colours in (0, 1). Points are normalised by the cube
    `center` ± `half_extent` (the mesh's box) into [0, 1]^3 for the hash grid."""

    def __init__(self, center, half_extent: float, n_levels: int = 16, log2_hashmap_size: int = 19,
                 hidden_dim: int = 64):
        super().__init__()
        c = torch.as_tensor(center, dtype=torch.float32).reshape(3)
        self.register_buffer("lo", c - half_extent)
        self.register_buffer("size", torch.full((3,), 2.0 * half_extent))
        self.encoding = HashGridEncoding(3, n_levels, 2, log2_hashmap_size, 16, out_of_range="clamp")
        self.mlp = nn.Sequential(nn.Linear(self.encoding.n_output_dims, hidden_dim), nn.ReLU(inplace=True),
                                 nn.Linear(hidden_dim, 3))

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        x = ((points - self.lo) / self.size).clamp(0, 1)
        return torch.sigmoid(self.mlp(self.encoding(x.float())))


def fit_colors(texture: TextureField, points: torch.Tensor, colors: torch.Tensor, steps: int,
               lr: float = 0.01, batch: int = 4096, seed: int = 0) -> tuple[float, float]:
    """Fits `texture` to `colors` (N, 3) at `points` (N, 3) by Adam on random batches; returns the
    mean squared error over all points before and after."""
    def mse():
        with torch.no_grad():
            return float(((texture(points) - colors) ** 2).mean())

    before = mse()
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(texture.parameters(), lr=lr, betas=(0.9, 0.99), eps=1e-15)
    for _ in range(steps):
        pick = torch.randint(points.shape[0], (min(batch, points.shape[0]),), generator=g).to(points.device)
        loss = ((texture(points[pick]) - colors[pick]) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return before, mse()


def remove_small_pieces(vertices: torch.Tensor, faces: torch.Tensor, min_fraction: float):
    """The mesh without connected pieces of fewer than min_fraction of all faces (threestudio's
    outlier removal before texturing), unused vertices dropped: (vertices, faces, pieces removed)."""
    import numpy as np
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    f = faces.long().cpu().numpy()
    n = vertices.shape[0]
    rows = np.concatenate([f[:, 0], f[:, 1], f[:, 2]])
    cols = np.concatenate([f[:, 1], f[:, 2], f[:, 0]])
    graph = coo_matrix((np.ones(rows.shape[0]), (rows, cols)), shape=(n, n))
    _, label = connected_components(graph, directed=False)
    face_label = label[f[:, 0]]
    counts = np.bincount(face_label)
    keep_piece = counts >= min_fraction * f.shape[0]
    keep = keep_piece[face_label]
    removed = int((counts > 0).sum() - (keep_piece & (counts > 0)).sum())
    f = f[keep]
    used = np.unique(f)
    remap = np.full(n, -1, dtype=np.int64)
    remap[used] = np.arange(used.shape[0])
    new_faces = torch.as_tensor(remap[f], dtype=torch.long, device=faces.device)
    return vertices[torch.as_tensor(used, device=vertices.device)], new_faces, removed

"""Clipping a mesh against the camera's near plane, before rasterization.

The rasterize op culls a triangle with any vertex at w <= near_w whole. A triangle that crosses
the camera's near plane (clip-space z = -w, OpenGL) would then vanish, or be drawn in front of
the near plane. Here each such triangle is cut at the plane instead, as a GPU's clipper does:
the part in front of it (z + w > 0) becomes one or two triangles; a triangle wholly behind is
dropped. Cutting happens on the mesh, in PyTorch, so every rasterizer backend (CPU, CUDA,
reference) sees ordinary triangles, and gradients reach the original vertices through the cut
points (which are linear in the two end vertices for a fixed topology).

- A cut point is shared by the triangles on both sides of its edge (one per distinct edge), so
  no false silhouette appears along the cut edges.
- Winding is kept, so outward normals stay outward.
- The clip-space cut parameter along an edge is the same parameter in world space (the
  projection is linear in homogeneous coordinates), so attributes are cut with it too.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from .gather import take_rows


@dataclass
class ClippedMesh:
    """One camera's clipped mesh. pos (V + K, 4): the original vertices, then the K cut points;
    tri (F', 3) int32; source (F',) long: the original triangle of each new one; edge (K, 2) and
    t (K,): cut point k lies at (1 - t_k) v[edge_k0] + t_k v[edge_k1]."""
    pos: torch.Tensor
    tri: torch.Tensor
    source: torch.Tensor
    edge: torch.Tensor
    t: torch.Tensor

    def attributes(self, attr: torch.Tensor) -> torch.Tensor:
        """Vertex attributes (V, C) extended to the cut points, (V + K, C), differentiably."""
        a, b = take_rows(attr, self.edge[:, 0]), take_rows(attr, self.edge[:, 1])
        return torch.cat([attr, a + self.t[:, None].to(attr.dtype) * (b - a)], dim=0)

    def original_ids(self, tri_id: torch.Tensor) -> torch.Tensor:
        """tri_id over the clipped triangles mapped back to the original triangles (-1 stays)."""
        lookup = torch.cat([self.source.new_full((1,), -1), self.source]).to(tri_id.device)
        return lookup[tri_id.long() + 1].to(tri_id.dtype)


def crosses_near_plane(pos: torch.Tensor, faces: torch.Tensor) -> bool:
    """Whether any triangle has a vertex on or behind the near plane for any camera of pos
    (B, V, 4): only then is clipping needed (and results can differ from the unclipped path)."""
    if faces.numel() == 0:
        return False
    behind = (pos[..., 2] + pos[..., 3]) <= 0                       # (B, V)
    if not bool(behind.any()):  # every render asks: skip the per-face gather in the usual case
        return False
    return bool(behind[:, faces.long()].any())


def clip_near_plane(pos: torch.Tensor, faces: torch.Tensor) -> ClippedMesh:
    """Cut one camera's mesh, pos (V, 4) clip coordinates and faces (F, 3), at z + w = 0."""
    faces = faces.long()
    d = pos[:, 2] + pos[:, 3]                                       # > 0: in front of the plane
    inside = (d > 0)[faces]                                         # (F, 3)
    n_in = inside.sum(1)
    kept = faces[n_in == 3]
    kept_src = torch.nonzero(n_in == 3).flatten()

    # Rotate each cut triangle so the odd vertex out is first: the lone inside vertex of a
    # one-in triangle, the lone outside vertex of a two-in one. Rotation keeps the winding.
    def rotated(mask, odd):
        idx = torch.nonzero(mask).flatten()
        first = torch.argmax(odd[idx].long(), dim=1)        # the odd vertex's corner
        corner = (first[:, None] + torch.arange(3, device=faces.device)) % 3
        return idx, torch.gather(faces[idx], 1, corner)

    one_src, one = rotated(n_in == 1, inside)                       # (a in, b out, c out)
    two_src, two = rotated(n_in == 2, ~inside)                      # (o out, a in, b in)
    crossing = torch.cat([one[:, [0, 0]], two[:, [1, 2]]], dim=0)   # inside end of each cut edge
    other = torch.cat([one[:, [1, 2]], two[:, [0, 0]]], dim=0)      # outside end
    lo, hi = torch.minimum(crossing, other), torch.maximum(crossing, other)
    n_vertices = pos.shape[0]
    keys = (lo * n_vertices + hi).reshape(-1)
    unique_keys, cut_index = torch.unique(keys, return_inverse=True)
    cut_index = cut_index.reshape(-1, 2) + n_vertices                # vertex id of each cut point
    edge = torch.stack([unique_keys // n_vertices, unique_keys % n_vertices], dim=1)
    # Parameter from the lower id to the higher one, so both triangles of an edge agree exactly.
    d0, d1 = take_rows(d, edge[:, 0]), take_rows(d, edge[:, 1])
    t = d0 / (d0 - d1)
    p0, p1 = take_rows(pos, edge[:, 0]), take_rows(pos, edge[:, 1])
    cut_pos = p0 + t[:, None] * (p1 - p0)

    n_one = one.shape[0]
    cut_one, cut_two = cut_index[:n_one], cut_index[n_one:]
    # one-in (a, b, c): a, cut(a-b), cut(a-c)
    tri_one = torch.stack([one[:, 0], cut_one[:, 0], cut_one[:, 1]], dim=1)
    # two-in (o, a, b): the quad cut(o-a), a, b, cut(b-o) as two triangles
    tri_two_a = torch.stack([cut_two[:, 0], two[:, 1], two[:, 2]], dim=1)
    tri_two_b = torch.stack([cut_two[:, 0], two[:, 2], cut_two[:, 1]], dim=1)
    tri = torch.cat([kept, tri_one, tri_two_a, tri_two_b], dim=0)
    source = torch.cat([kept_src, one_src, two_src, two_src])
    return ClippedMesh(pos=torch.cat([pos, cut_pos], dim=0), tri=tri.to(torch.int32).contiguous(),
                       source=source, edge=edge, t=t)


def clip_each_camera(pos: torch.Tensor, faces: torch.Tensor) -> Optional[list[ClippedMesh]]:
    """Per camera clipped meshes for pos (B, V, 4), or None when nothing reaches the near plane
    (the common case: callers then rasterize the batch as it is, unchanged)."""
    if not crosses_near_plane(pos, faces):
        return None
    return [clip_near_plane(p, faces) for p in pos]

"""Differentiable triangle rasterization over the compiled kernels: `rasterize`, `interpolate`,
`antialias` (the roles of nvdiffrast's ops, written from Laine et al. 2020; our own conventions).

Conventions:
- `pos` are clip-space positions (x, y, z, w), (V, 4) or (B, V, 4); `tri` is (F, 3) int32
  (int64 is converted). Pixel (px, py) has its centre at NDC ((2px+1)/W - 1, (2py+1)/H - 1): row
  0 is at y = -1 (bottom, OpenGL order; flip rows for a top-down image).
- Near plane: a triangle with any vertex at w <= `near_w` is **culled** whole by this op. The
  mesh renders clip triangles at the camera's near plane before calling it (mesh.near_clip).
- Both faces are drawn (no back-face culling).
- `rasterize` returns `Rasterized(tri_id, bary, depth)`: tri_id (B, H, W) int32, the visible
  triangle or **-1** for none; bary (B, H, W, 3) perspective-correct barycentrics of the
  triangle's three vertices; depth (B, H, W) = z/w at the pixel. Empty pixels have bary 0 and
  depth 0. Per pixel the smallest depth wins (compared in float32), exact ties go to the smaller
  triangle id, so the result is deterministic on CPU and CUDA. Gradients flow from bary and depth
  to `pos`; a (V, 4) input gives outputs with batch size 1.
- `interpolate(attr, rast, tri)`: attributes (V, C) or (B, V, C) at pixels, (B, H, W, C), with
  gradients to attr and through bary to pos; zero at empty pixels.
- `antialias(color, rast, pos, tri)`: analytic silhouette antialiasing. Coverage itself is
  piecewise constant, so this is where silhouette (and occlusion-boundary) gradients to vertex
  positions come from. For each horizontal or vertical pixel pair with different triangles, the
  front pixel's triangle T is searched for a silhouette edge (no neighbour across it, or a
  neighbour facing the other way on screen, or a culled one) crossing the segment between the
  two centres; horizontal pairs take edges steeper than 45 degrees, vertical pairs the rest. With
  s the crossing's distance from the front centre (pixels), colour moves across the boundary at
  the midpoint: s > 1/2 blends (s - 1/2) of the front colour into the other pixel, s < 1/2 blends
  (1/2 - s) of the other colour into the front pixel. The sum of antialiased coverage is then the
  scanline (midpoint-rule) area of the projected mesh, and its gradient the derivative of that
  area. `neighbors` (F, 3) int32 (the triangle across edge (v_k, v_k+1), -1 for none) is computed
  from `tri` when not given; pass it in to reuse it across calls.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch.autograd.function import once_differentiable

from .._ext import load_extension

DEFAULT_NEAR_W = 1e-4


class Rasterized(NamedTuple):
    tri_id: torch.Tensor
    bary: torch.Tensor
    depth: torch.Tensor


def _require_tensor(value, op: str, name: str) -> None:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{op}: argument '{name}' must be a torch.Tensor, got {type(value).__name__}")


def _batched_pos(pos, op: str) -> torch.Tensor:
    _require_tensor(pos, op, "pos")
    if pos.dim() == 2:
        pos = pos.unsqueeze(0)
    if pos.dim() != 3 or pos.shape[-1] != 4:
        raise ValueError(f"{op}: argument 'pos' must have shape (n_vertices, 4) or "
                         f"(batch, n_vertices, 4), got {tuple(pos.shape)}")
    return pos


def _int_tri(tri, op: str) -> torch.Tensor:
    _require_tensor(tri, op, "tri")
    if tri.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"{op}: argument 'tri' must have dtype int32 or int64, got {tri.dtype}")
    if tri.dim() != 2 or tri.shape[1] != 3:
        raise ValueError(f"{op}: argument 'tri' must have shape (n_triangles, 3), got "
                         f"{tuple(tri.shape)}")
    return tri.to(torch.int32).contiguous()


def _check_size(value, name: str, op: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 16384:
        raise ValueError(f"{op}: argument '{name}' must be an int in [1, 16384], got {value!r}")
    return value


def triangle_neighbors(tri: torch.Tensor) -> torch.Tensor:
    """(F, 3) int32: the triangle sharing edge (v_k, v_(k+1) mod 3) of each triangle, -1 where
    the edge is a boundary. On a non-manifold edge the triangles are paired in sorted order."""
    tri = _int_tri(tri, "triangle_neighbors").long()
    n = tri.shape[0]
    if n == 0:
        return torch.empty(0, 3, dtype=torch.int32, device=tri.device)
    a, b = tri, tri.roll(-1, dims=1)
    lo, hi = torch.minimum(a, b), torch.maximum(a, b)
    key = (lo * (int(tri.max()) + 1) + hi).reshape(-1)
    order = torch.argsort(key, stable=True)
    sk = key[order]
    out = torch.full((3 * n,), -1, dtype=torch.long, device=tri.device)
    same_next = torch.zeros_like(sk, dtype=torch.bool)
    same_next[:-1] = sk[:-1] == sk[1:]
    # Pair runs two by two: an entry pairs with the next one when equal and it is the first of
    # its pair (an even position within its run of equal keys).
    run_start = torch.ones_like(sk, dtype=torch.bool)
    run_start[1:] = sk[1:] != sk[:-1]
    idx = torch.arange(sk.numel(), device=tri.device)
    start_idx = torch.cummax(torch.where(run_start, idx, torch.zeros_like(idx)), 0).values
    first = same_next & ((idx - start_idx) % 2 == 0)
    i = idx[first]
    out[order[i]] = order[i + 1] // 3
    out[order[i + 1]] = order[i] // 3
    return out.reshape(n, 3).to(torch.int32)


class _RasterizeFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pos, tri, height, width, near_w):
        tri_id, bary, depth = load_extension().rasterize_forward(pos, tri, height, width, near_w)
        ctx.save_for_backward(pos, tri, tri_id)
        ctx.near_w = near_w
        ctx.mark_non_differentiable(tri_id)
        return tri_id, bary, depth

    @staticmethod
    @once_differentiable
    def backward(ctx, _g_id, g_bary, g_depth):
        pos, tri, tri_id = ctx.saved_tensors
        if g_bary is None:
            g_bary = torch.zeros(*tri_id.shape, 3, dtype=pos.dtype, device=pos.device)
        grad = load_extension().rasterize_backward(pos, tri, tri_id, g_bary, g_depth, ctx.near_w)
        return grad, None, None, None, None


def rasterize(pos: torch.Tensor, tri: torch.Tensor, height: int, width: int,
              near_w: float = DEFAULT_NEAR_W) -> Rasterized:
    """Visible triangle, perspective-correct barycentrics and depth per pixel (module doc)."""
    op = "rasterize"
    pos = _batched_pos(pos, op)
    tri = _int_tri(tri, op)
    _check_size(height, "height", op)
    _check_size(width, "width", op)
    return Rasterized(*_RasterizeFn.apply(pos, tri, height, width, float(near_w)))


class _InterpolateFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, attr, tri, tri_id, bary):
        ctx.save_for_backward(attr, tri, tri_id, bary)
        return load_extension().interpolate_forward(attr, tri, tri_id, bary)

    @staticmethod
    @once_differentiable
    def backward(ctx, g_out):
        attr, tri, tri_id, bary = ctx.saved_tensors
        g_attr, g_bary = load_extension().interpolate_backward(
            attr, tri, tri_id, bary, g_out.contiguous(), ctx.needs_input_grad[0])
        return g_attr, None, None, g_bary


def interpolate(attr: torch.Tensor, rast: Rasterized, tri: torch.Tensor) -> torch.Tensor:
    """Vertex attributes (V, C) or (B, V, C) at pixels: (B, H, W, C)."""
    op = "interpolate"
    _require_tensor(attr, op, "attr")
    if attr.dim() == 2:
        attr = attr.unsqueeze(0)
    if attr.dim() != 3:
        raise ValueError(f"{op}: argument 'attr' must have shape (n_vertices, channels) or "
                         f"(batch, n_vertices, channels), got {tuple(attr.shape)}")
    if not isinstance(rast, tuple) or len(rast) != 3:
        raise TypeError(f"{op}: argument 'rast' must be the Rasterized result of rasterize()")
    tri = _int_tri(tri, op)
    return _InterpolateFn.apply(attr, tri, rast[0], rast[1])


class _AntialiasFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, color, pos, tri, neighbors, tri_id, depth, near_w):
        ctx.save_for_backward(color, pos, tri, neighbors, tri_id, depth)
        ctx.near_w = near_w
        return load_extension().antialias_forward(color, pos, tri, neighbors, tri_id, depth, near_w)

    @staticmethod
    @once_differentiable
    def backward(ctx, g_out):
        color, pos, tri, neighbors, tri_id, depth = ctx.saved_tensors
        g_color, g_pos = load_extension().antialias_backward(
            color, pos, tri, neighbors, tri_id, depth, g_out.contiguous(), ctx.near_w,
            ctx.needs_input_grad[1])
        return g_color, g_pos, None, None, None, None, None


def antialias(color: torch.Tensor, rast: Rasterized, pos: torch.Tensor, tri: torch.Tensor,
              neighbors: Optional[torch.Tensor] = None,
              near_w: float = DEFAULT_NEAR_W) -> torch.Tensor:
    """Analytic silhouette antialiasing of `color` (B, H, W, C) (module doc); gradients to color
    and to the positions of silhouette edge vertices. Use the same pos/tri/near_w as rasterize."""
    op = "antialias"
    _require_tensor(color, op, "color")
    pos = _batched_pos(pos, op)
    tri = _int_tri(tri, op)
    if not isinstance(rast, tuple) or len(rast) != 3:
        raise TypeError(f"{op}: argument 'rast' must be the Rasterized result of rasterize()")
    if neighbors is None:
        neighbors = triangle_neighbors(tri)
    else:
        _require_tensor(neighbors, op, "neighbors")
        neighbors = neighbors.to(torch.int32)
    return _AntialiasFn.apply(color, pos, tri, neighbors, rast[0], rast[2].detach(),
                              float(near_w))

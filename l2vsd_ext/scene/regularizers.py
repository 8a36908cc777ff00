"""Silhouette regularisers on the rendered opacity, as text-to-3D users know them from
threestudio (its lambda_sparsity and lambda_opaque): score distillation alone leaves a
half-transparent haze around the object, which these terms clear. And HiFA's z-variance
regulariser, which pulls each ray's weight into a thin shell (solid surfaces, fewer floaters)."""
from __future__ import annotations

import torch

from ..mesh.gather import take_rows

# Keeps log() finite where the opacity reaches exactly 0 or 1.
_EPS = 1e-5


def opacity_sparsity(opacity: torch.Tensor) -> torch.Tensor:
    """Mean rendered opacity: pushes empty space to stay empty."""
    return opacity.mean()


def opacity_entropy(opacity: torch.Tensor) -> torch.Tensor:
    """Mean binary entropy of the rendered opacity: pushes every pixel to fully in or fully out."""
    a = opacity.clamp(_EPS, 1 - _EPS)
    return -(a * a.log() + (1 - a) * (1 - a).log()).mean()


def silhouette_regularization(opacity: torch.Tensor, sparsity_weight: float,
                              entropy_weight: float) -> torch.Tensor | None:
    """The weighted sum of the terms in use; None when both weights are zero (nothing to add)."""
    terms = []
    if sparsity_weight:
        terms.append(sparsity_weight * opacity_sparsity(opacity))
    if entropy_weight:
        terms.append(entropy_weight * opacity_entropy(opacity))
    return sum(terms) if terms else None


# ---- mesh regularisers (stage 2: threestudio's normal consistency and Laplacian smoothing) ----

def _face_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    v = take_rows(vertices, faces)
    return torch.linalg.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])


def mesh_normal_consistency(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Mean over interior edges of 1 - cos(angle between the normals of the two faces sharing
    it): 0 on a plane, growing with creases. Edges shared by one face only are left out."""
    from ..ops.rasterize import triangle_neighbors

    faces = faces.long()
    if faces.numel() == 0:
        return vertices.sum() * 0
    neighbors = triangle_neighbors(faces).long()
    t = torch.arange(faces.shape[0], device=faces.device)[:, None].expand_as(neighbors)
    pair = neighbors > t                                      # each interior edge once
    if not bool(pair.any()):
        return vertices.sum() * 0
    n = _face_normals(vertices, faces)
    cos = torch.nn.functional.cosine_similarity(take_rows(n, t[pair]), take_rows(n, neighbors[pair]), dim=-1,
                                                eps=1e-12)
    return (1 - cos).mean()


def mesh_laplacian_smoothing(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Uniform Laplacian: mean over vertices of |mean of the edge neighbours - vertex| (the
    pytorch3d / threestudio "uniform" form). Vertices on no face are left out."""
    faces = faces.long()
    if faces.numel() == 0:
        return vertices.sum() * 0
    e = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    e = torch.sort(e, dim=1).values
    n = vertices.shape[0]
    # each undirected edge once; a 1-D unique on one key per edge is far faster than unique(dim=0)
    keys = torch.unique(e[:, 0] * n + e[:, 1])
    e = torch.stack([keys // n, keys % n], dim=1)
    src = torch.cat([e[:, 0], e[:, 1]])
    dst = torch.cat([e[:, 1], e[:, 0]])
    degree = torch.zeros(n, dtype=vertices.dtype, device=vertices.device).index_add_(
        0, src, torch.ones_like(src, dtype=vertices.dtype))
    summed = torch.zeros_like(vertices).index_add(0, src, take_rows(vertices, dst))
    used = degree > 0
    lap = summed[used] / degree[used, None] - vertices[used]
    return lap.norm(dim=-1).mean()


def z_variance_loss(z_variance: torch.Tensor, opacity: torch.Tensor,
                    opacity_threshold: float = 0.5) -> torch.Tensor:
    """HiFA's z-variance regulariser: the mean z-variance over the rays whose opacity is above
    `opacity_threshold` (threestudio's `z_variance[opacity > 0.5].mean()`), and 0 (still a
    graph-connected tensor) when no ray is. The variance is the renderer's
    `renderer(..., with_z_variance=True)["z_variance"]`, with `["opacity"]` of the same shape.
    HiFA weighs it 300 with VSD and 100 with SDS; the threshold only selects rays (no gradient
    flows through it)."""
    if z_variance.shape != opacity.shape:
        raise ValueError(f"z_variance_loss: 'z_variance' and 'opacity' must share a shape, got "
                         f"{tuple(z_variance.shape)} and {tuple(opacity.shape)}")
    selected = z_variance[opacity.detach() > opacity_threshold]
    if selected.numel() == 0:
        return z_variance.sum() * 0
    return selected.mean()

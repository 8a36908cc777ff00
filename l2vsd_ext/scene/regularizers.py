"""Silhouette regularisers on the rendered opacity, as text-to-3D users know them from
threestudio (its lambda_sparsity and lambda_opaque): score distillation alone leaves a
half-transparent haze around the object, which these terms clear."""
from __future__ import annotations

import torch

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

"""Fréchet distance between two Gaussians fitted to feature samples (the math of FID):
|mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^(1/2)), unbiased covariances, in float64.

tr((S_a S_b)^(1/2)) is computed as the sum of singular values of F_a F_b^T, where F^T F = S: the
nonzero eigenvalues of S_a S_b are the squared singular values of F_a F_b^T. With fewer samples
than dimensions (120 images, 2048 Inception features) F is just the centred samples, so this costs
an SVD of an n_a x n_b matrix, stays exact although both covariances are singular, and needs no
d x d matrix square root (which is slow and ill-conditioned for singular covariances)."""
from __future__ import annotations

import torch


def _covariance_factor(samples: torch.Tensor) -> torch.Tensor:
    """F (k, d), k = min(n, d), with F^T F = the unbiased covariance of the (n, d) samples."""
    n, d = samples.shape
    centred = (samples - samples.mean(dim=0)) / (n - 1) ** 0.5
    if n <= d:
        return centred
    values, vectors = torch.linalg.eigh(centred.T @ centred)
    return (vectors * values.clamp_min(0).sqrt()).T  # rounding can leave eigenvalues at -1e-17


def frechet_distance_of_features(a: torch.Tensor, b: torch.Tensor) -> float:
    """a: (n_a, d), b: (n_b, d) feature samples, n >= 2 each."""
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"frechet_distance_of_features: 'a' and 'b' must be (n, d) with the same d, "
                         f"got {tuple(a.shape)} and {tuple(b.shape)}")
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"frechet_distance_of_features: needs >= 2 samples each, got {len(a)} and {len(b)}")
    a, b = a.double(), b.double()
    factor_a, factor_b = _covariance_factor(a), _covariance_factor(b)
    trace_sqrt = torch.linalg.svdvals(factor_a @ factor_b.T).sum()
    distance = ((a.mean(0) - b.mean(0)) ** 2).sum() + (factor_a ** 2).sum() + (factor_b ** 2).sum() - 2 * trace_sqrt
    return max(float(distance), 0.0)  # identical sets can round to -1e-12

"""Closed-form math for Gaussians under DDPM noising: noise predictions, sampling, 2-Wasserstein distance.

Shapes: a batch of S independent problems (one per seed). Means are (S, 2), factors L are (S, 2, 2) with
covariance L Lᵀ, points are (S, n, 2) and ᾱ is (S,).
"""
import torch


def _col(alpha_bar):
    return alpha_bar[:, None, None]


def sample(mu, L, z):
    """Reparametrised samples x = μ + L z for z of shape (S, n, 2)."""
    return mu[:, None, :] + torch.einsum("sij,snj->sni", L, z)


def noise(x0, eps, alpha_bar):
    """x_t = sqrt(ᾱ) x_0 + sqrt(1-ᾱ) ε."""
    a = _col(alpha_bar)
    return a.sqrt() * x0 + (1 - a).sqrt() * eps


def gaussian_eps(xt, mu, L, alpha_bar):
    """Noise prediction of N(μ, L Lᵀ) noised to level ᾱ.

    x_t ~ N(sqrt(ᾱ) μ, ᾱ L Lᵀ + (1-ᾱ) I), and the optimal ε-prediction is -sqrt(1-ᾱ) ∇log p_t(x_t)
    = sqrt(1-ᾱ) Σ_t⁻¹ (x_t - sqrt(ᾱ) μ). Differentiable in μ and L (forward and reverse mode).
    """
    a = _col(alpha_bar)
    eye = torch.eye(2, dtype=xt.dtype, device=xt.device)
    cov_t = a * (L @ L.transpose(-1, -2)) + (1 - a) * eye
    diff = xt - a.sqrt() * mu[:, None, :]
    return (1 - a).sqrt() * _solve_2x2(cov_t, diff)


def _solve_2x2(m, v):
    """m⁻¹ v for m (S, 2, 2) and rows v (S, n, 2), by the adjugate.

    Explicit because batched LAPACK solves cost milliseconds per call on tiny matrices, which dominated the run.
    """
    a, b, c, d = m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1]
    det = (a * d - b * c)[:, None]
    x, y = v[..., 0], v[..., 1]
    return torch.stack(((d[:, None] * x - b[:, None] * y) / det, (a[:, None] * y - c[:, None] * x) / det), -1)


def delta_mixture_eps(xt, centers, alpha_bar):
    """Noise prediction of the empirical distribution over `centers` (S, m, 2), noised to level ᾱ.

    This is what a LoRA that overfits to the rendered samples predicts (paper Fig. 12). Each noised delta is
    N(sqrt(ᾱ) c_j, (1-ᾱ) I); the mixture's ε is the posterior-weighted average of (x_t - sqrt(ᾱ) c_j)/sqrt(1-ᾱ).
    With a single center at the rendered x_0 it returns exactly the injected noise, i.e. VSD collapses to SDS.
    """
    a = _col(alpha_bar)
    diffs = xt[:, :, None, :] - a.sqrt()[..., None] * centers[:, None, :, :]  # (S, n, m, 2)
    logits = -(diffs**2).sum(-1) / (2 * (1 - a))
    weights = torch.softmax(logits, dim=-1)
    return (weights[..., None] * diffs).sum(-2) / (1 - a).sqrt()


def _sqrtm_psd(m):
    """Square root of a batch of symmetric PSD matrices by eigendecomposition."""
    vals, vecs = torch.linalg.eigh(m)
    return (vecs * vals.clamp_min(0).sqrt()[..., None, :]) @ vecs.transpose(-1, -2)


def w2_squared(mu1, cov1, mu2, cov2):
    """Squared 2-Wasserstein distance between N(μ1, Σ1) and N(μ2, Σ2), batched over leading dims.

    ||μ1-μ2||² + tr(Σ1 + Σ2 - 2 (Σ2^½ Σ1 Σ2^½)^½).
    """
    root2 = _sqrtm_psd(cov2)
    cross = _sqrtm_psd(root2 @ cov1 @ root2)
    trace = torch.diagonal(cov1 + cov2 - 2 * cross, dim1=-2, dim2=-1).sum(-1)
    # Rounding can push the trace a hair below zero when the two covariances coincide.
    return ((mu1 - mu2) ** 2).sum(-1) + trace.clamp_min(0)


def w2(mu1, cov1, mu2, cov2):
    """2-Wasserstein distance (the square root of w2_squared)."""
    return w2_squared(mu1, cov1, mu2, cov2).sqrt()


def covariance(L):
    return L @ L.transpose(-1, -2)

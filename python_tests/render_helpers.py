"""Shared helpers for the rendering tests: devices and random packed sample sets."""
import pytest
import torch

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU"))]


def random_packed(counts, dtype=torch.float64, device="cpu", seed=0, sigma_scale=3.0):
    """Packed samples for rays with the given sample counts: sorted ray_indices, contiguous
    increasing intervals per ray, positive densities (never zeros)."""
    g = torch.Generator().manual_seed(seed)
    counts = torch.as_tensor(counts, dtype=torch.long)
    ray_indices = torch.repeat_interleave(torch.arange(counts.numel()), counts)
    n = int(counts.sum())
    deltas = 0.01 + 0.2 * torch.rand(n, generator=g, dtype=dtype)
    t_starts = torch.rand(n, generator=g, dtype=dtype)
    t_ends = t_starts + deltas
    sigmas = sigma_scale * torch.rand(n, generator=g, dtype=dtype) + 0.05
    to = lambda t: t.to(device)
    return to(ray_indices), to(t_starts), to(t_ends), to(sigmas)

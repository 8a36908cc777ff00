"""Shared helpers for the rendering tests: devices and random packed sample sets."""
import torch

from cuda_skip import DEVICES  # noqa: F401  (re-exported: the rendering tests import it from here)


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


def assert_bit_identical_across_thread_counts(grads):
    """grads() -> tensors must come out bit-identical at 1 thread, at 2 threads, and again at 2:
    bit-exact training resume relies on a deterministic CPU backward (fixed summation orders, no
    atomics, a ray's work independent of how rays are split between threads)."""
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = grads()
        torch.set_num_threads(2)
        two, again = grads(), grads()
    finally:
        torch.set_num_threads(threads)
    for a, b, c in zip(one, two, again):
        assert torch.equal(a, b) and torch.equal(b, c)


class AnalyticSphere(torch.nn.Module):
    """A hand-set field: constant density inside a sphere, zero outside; albedo from position
    (a smooth colour gradient) and the exact radial normals."""

    def __init__(self, radius=0.5, density=1000.0, center=(0.0, 0.0, 0.0),
                 aabb=(-1.0, -1.0, -1.0, 1.0, 1.0, 1.0)):
        super().__init__()
        self.radius, self.sigma = radius, density
        self.register_buffer("center", torch.tensor(center))
        self.register_buffer("aabb", torch.tensor(aabb))

    def density(self, x):
        inside = (x - self.center.to(x)).norm(dim=-1) < self.radius
        return inside.to(x.dtype) * self.sigma

    def forward(self, x, with_normals=False):
        rel = (x - self.center.to(x)) / self.radius
        out = {"density": self.density(x), "albedo": (0.5 + 0.45 * rel).clamp(0, 1)}
        if with_normals:
            out["normal"] = torch.nn.functional.normalize(rel, dim=-1)
        return out


def analytic_sphere_hits(rays_o, rays_d, radius, center=(0.0, 0.0, 0.0)):
    """(mask, t_hit) of unit-direction rays against a sphere."""
    rel = rays_o - torch.tensor(center, dtype=rays_o.dtype)
    along = -(rel * rays_d).sum(-1)
    closest2 = (rel + along[..., None] * rays_d).pow(2).sum(-1)
    mask = (closest2 < radius ** 2) & (along > 0)
    t_hit = along - torch.sqrt((radius ** 2 - closest2).clamp(min=0))
    return mask, t_hit


def psnr(a, b):
    return float(-10 * torch.log10(((a - b) ** 2).mean()))

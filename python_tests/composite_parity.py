"""Compiled compositing (the two ops and the fused composite_along_rays) vs the pure-PyTorch
reference over ragged rays, forward and backward, both dtypes and every channel count the CPU launcher vectorises (1-8) plus one it does not (9).
test_composite.py runs check() in-process (the detected instruction set) and this file as a script
under L2VSD_CPU_ISA=avx2 / base, so every CPU build of the kernels is compared on one machine."""
import sys

import torch

from l2vsd_ext.ops import accumulate_along_rays, composite_along_rays, render_weight_from_density
from l2vsd_ext.ops import reference as ref

# Rays shorter than, equal to and longer than a SIMD block (4-16 lanes) and a backward segment
# (32 blocks), and empty ones.
COUNTS = [0, 1, 3, 4, 5, 8, 15, 16, 17, 0, 31, 33, 64, 100, 511, 513, 0, 2, 700]
TOLERANCES = {torch.float32: dict(atol=2e-6, rtol=1e-5), torch.float64: dict(atol=1e-12, rtol=1e-10)}


def _inputs(dtype, seed):
    g = torch.Generator().manual_seed(seed)
    counts = torch.tensor(COUNTS)
    ray_indices = torch.repeat_interleave(torch.arange(len(COUNTS)), counts)
    n = int(counts.sum())
    t_starts = torch.rand(n, generator=g, dtype=dtype)
    t_ends = t_starts + 0.01 + 0.1 * torch.rand(n, generator=g, dtype=dtype)
    sigmas = 5 * torch.rand(n, generator=g, dtype=dtype) + 0.05
    return ray_indices, t_starts, t_ends, sigmas, g


def _grads(fns, ray_indices, t_starts, t_ends, sigmas, values, upstream):
    render_weights, accumulate = fns
    s = sigmas.clone().requires_grad_(True)
    v = None if values is None else values.clone().requires_grad_(True)
    w, trans, alphas = render_weights(t_starts, t_ends, s, ray_indices, len(COUNTS))
    out = accumulate(w, v, ray_indices, len(COUNTS))
    g_out, g_w, g_t, g_a = upstream
    loss = (out * g_out).sum() + (w * g_w).sum() + (trans * g_t).sum() + (alphas * g_a).sum()
    inputs = (s,) if v is None else (s, v)
    return (w, trans, alphas, out) + torch.autograd.grad(loss, inputs)


def _fused_grads(ray_indices, t_starts, t_ends, sigmas, values, g_out):
    s, v = sigmas.clone().requires_grad_(True), values.clone().requires_grad_(True)
    out = composite_along_rays(t_starts, t_ends, s, v, ray_indices, len(COUNTS))
    return (out,) + torch.autograd.grad(out, (s, v), g_out)


def _z_variance_grads(fused, ray_indices, t_starts, t_ends, sigmas, values, g):
    s = sigmas.clone().requires_grad_(True)
    if fused is None:
        opacity, _, z_var = ref.z_variance(t_starts, t_ends, s, ray_indices, len(COUNTS))
    else:
        _, z_var, opacity = fused(t_starts, t_ends, s, values, ray_indices, len(COUNTS),
                                  z_variance=True)
    return (z_var, opacity) + torch.autograd.grad((z_var * g).sum() + opacity.sum(), s)


def check(seed: int):
    """Raises AssertionError on the first mismatch."""
    compiled = (render_weight_from_density, accumulate_along_rays)
    reference = (ref.render_weight_from_density, ref.accumulate_along_rays)
    for dtype, tol in TOLERANCES.items():
        for channels in [None, 1, 2, 3, 4, 5, 8, 9]:
            ray_indices, t_starts, t_ends, sigmas, g = _inputs(dtype, seed=seed + (channels or 0))
            n = sigmas.shape[0]
            c = 1 if channels is None else channels
            values = None if channels is None else torch.rand(n, c, generator=g, dtype=dtype)
            upstream = (torch.randn(len(COUNTS), c, generator=g, dtype=dtype),
                        *(torch.randn(n, generator=g, dtype=dtype) for _ in range(3)))
            got = _grads(compiled, ray_indices, t_starts, t_ends, sigmas, values, upstream)
            want = _grads(reference, ray_indices, t_starts, t_ends, sigmas, values, upstream)
            for name, a, b in zip(["weights", "transmittance", "alphas", "accumulated",
                                   "grad_sigmas", "grad_values"], got, want):
                torch.testing.assert_close(a, b, **tol, msg=lambda m: f"{dtype} C={channels} "
                                           f"{name}: {m}")
            if values is not None:  # the fused op: the same sums and gradients
                fused = _fused_grads(ray_indices, t_starts, t_ends, sigmas, values, upstream[0])
                sums_only = (upstream[0], *(torch.zeros_like(sigmas) for _ in range(3)))
                want_sums = _grads(reference, ray_indices, t_starts, t_ends, sigmas, values,
                                   sums_only)[3:]
                for name, a, b in zip(["fused sums", "fused grad_sigmas", "fused grad_values"],
                                      fused, want_sums):
                    torch.testing.assert_close(a, b, **tol, msg=lambda m: f"{dtype} "
                                               f"C={channels} {name}: {m}")
                # ... and with HiFA's z-variance in the loss (the SIMD kZ kernels).
                got_z = _z_variance_grads(composite_along_rays, ray_indices, t_starts, t_ends,
                                          sigmas, values, upstream[1][:len(COUNTS)])
                want_z = _z_variance_grads(None, ray_indices, t_starts, t_ends, sigmas, values,
                                           upstream[1][:len(COUNTS)])
                for name, a, b in zip(["z_variance", "opacity", "z grad_sigmas"], got_z, want_z):
                    torch.testing.assert_close(a, b, atol=tol["atol"], rtol=10 * tol["rtol"],
                                               msg=lambda m: f"{dtype} C={channels} {name}: {m}")


if __name__ == "__main__":
    from l2vsd_ext import build_info

    check(int(sys.argv[1]))
    print(build_info()["cpu_isa"])
    sys.exit(0)

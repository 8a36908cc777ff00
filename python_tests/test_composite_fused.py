"""The fused compositing op composite_along_rays against the two ops it replaces
(render_weight_from_density + accumulate_along_rays) and the pure-PyTorch references: packed and
batched layouts, float64 gradchecks, rays without samples, bad inputs, deterministic CPU backward.
(composite_parity.py also runs it under every CPU instruction-set build.)"""
import pytest
import torch

from l2vsd_ext.ops import accumulate_along_rays, composite_along_rays, render_weight_from_density
from l2vsd_ext.ops import reference as ref
from render_helpers import DEVICES, assert_bit_identical_across_thread_counts, random_packed

COUNTS = [5, 0, 7, 1, 0, 3, 40, 100, 17, 300]


def _seed():
    return int(torch.randint(0, 2**30, ()))


def _sums_and_grads(kind, ri, ts, te, sig, values, n_rays, grad_out):
    s, v = sig.clone().requires_grad_(True), values.clone().requires_grad_(True)
    if kind == "fused":
        out = composite_along_rays(ts, te, s, v, ri, n_rays)
    else:
        weights_fn, accumulate_fn = {
            "two ops": (render_weight_from_density, accumulate_along_rays),
            "reference": (ref.render_weight_from_density, ref.accumulate_along_rays)}[kind]
        out = accumulate_fn(weights_fn(ts, te, s, ri, n_rays)[0], v, ri, n_rays)
    return (out,) + torch.autograd.grad(out, (s, v), grad_out)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype,tol", [(torch.float32, dict(atol=2e-6, rtol=1e-5)),
                                       (torch.float64, dict(atol=1e-12, rtol=1e-10))])
@pytest.mark.parametrize("channels", [1, 3, 5, 8, 11])
def test_fused_matches_two_ops_and_reference(device, dtype, tol, channels):
    seed = _seed()
    ri, ts, te, sig = random_packed(COUNTS, dtype=dtype, device=device, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    values = torch.rand(sig.shape[0], channels, generator=g, dtype=dtype).to(device)
    grad_out = torch.randn(len(COUNTS), channels, generator=g, dtype=dtype).to(device)
    fused = _sums_and_grads("fused", ri, ts, te, sig, values, len(COUNTS), grad_out)
    for kind in ("two ops", "reference"):
        want = _sums_and_grads(kind, ri, ts, te, sig, values, len(COUNTS), grad_out)
        for name, a, b in zip(("sums", "grad_sigmas", "grad_values"), fused, want):
            torch.testing.assert_close(a, b, **tol, msg=lambda m: f"vs {kind}, {name}: {m}")
    empty = torch.tensor([c == 0 for c in COUNTS], device=device)
    assert bool((fused[0][empty] == 0).all())


def test_float32_fused_over_long_rays_and_extreme_densities_matches_reference():
    # The CPU float32 kernel carries the transmittance as a product of exp(-tau) (one exp per
    # sample): check it over long rays (down to underflow), every block remainder, and at the
    # extremes (zero, huge and infinite densities).
    ri, ts, te, sig = random_packed([700, 1, 63, 64, 65, 130, 2000], dtype=torch.float32,
                                    seed=_seed(), sigma_scale=40.0)
    sig[[3, 70, 200]] = torch.tensor([0.0, 1e30, float("inf")])
    sig[5] = 1e-30
    sig[-2000:] *= 1e-3  # a long ray that stays translucent: the carried product matters
    values = torch.rand(sig.shape[0], 5)
    grad_out = torch.randn(7, 5)
    fused = _sums_and_grads("fused", ri, ts, te, sig, values, 7, grad_out)
    want = _sums_and_grads("reference", ri, ts.double(), te.double(), sig.double(),
                           values.double(), 7, grad_out.double())
    want = [w.float() for w in want]
    for name, a, b in zip(("sums", "grad_sigmas", "grad_values"), fused, want):
        assert bool(torch.isfinite(a).all()), name
        torch.testing.assert_close(a, b, atol=2e-6, rtol=1e-5, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("device", DEVICES)
def test_fused_gradcheck_packed(device):
    ri, ts, te, sig = random_packed([4, 0, 6, 1, 2, 19], device=device, seed=_seed())
    sig.requires_grad_(True)
    values = torch.rand(sig.shape[0], 3, dtype=torch.float64, device=device, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda s, v: composite_along_rays(ts, te, s, v, ri, 6), (sig, values))


def test_fused_gradcheck_batched_and_equal_to_packed():
    n_rays, n_samples = 3, 21
    ri, ts, te, sig = random_packed([n_samples] * n_rays, seed=_seed())
    shape = (n_rays, n_samples)
    values = torch.rand(n_rays * n_samples, 2, dtype=torch.float64)
    batched = composite_along_rays(ts.view(shape), te.view(shape), sig.view(shape),
                                   values.view(*shape, 2))
    torch.testing.assert_close(batched, composite_along_rays(ts, te, sig, values, ri, n_rays))
    s = sig.view(shape).clone().requires_grad_(True)
    v = values.view(*shape, 2).clone().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda a, b: composite_along_rays(ts.view(shape), te.view(shape), a, b), (s, v))


@pytest.mark.parametrize("wanted", ["sigmas", "values"])
def test_fused_gradient_of_one_input_alone(wanted):
    ri, ts, te, sig = random_packed([9, 0, 33], seed=_seed())
    values = torch.rand(sig.shape[0], 4, dtype=torch.float64)
    grad_out = torch.randn(3, 4, dtype=torch.float64)
    want = _sums_and_grads("reference", ri, ts, te, sig, values, 3, grad_out)
    s = sig.clone().requires_grad_(wanted == "sigmas")
    v = values.clone().requires_grad_(wanted == "values")
    out = composite_along_rays(ts, te, s, v, ri, 3)
    (got,) = torch.autograd.grad(out, (s if wanted == "sigmas" else v,), grad_out)
    torch.testing.assert_close(got, want[1 if wanted == "sigmas" else 2])


def test_fused_without_samples_gives_zero_sums():
    e = torch.empty(0, dtype=torch.float64)
    out = composite_along_rays(e, e, e, torch.empty(0, 3, dtype=torch.float64),
                               torch.empty(0, dtype=torch.long), 4)
    assert torch.equal(out, torch.zeros(4, 3, dtype=torch.float64))
    ri, ts, te, sig = random_packed([0, 3, 0], seed=_seed())
    s = sig.clone().requires_grad_(True)
    out = composite_along_rays(ts, te, s, torch.rand(3, 2, dtype=torch.float64), ri, 3)
    assert torch.equal(out[[0, 2]], torch.zeros(2, 2, dtype=torch.float64))
    out.sum().backward()
    assert s.grad.shape == (3,) and bool(torch.isfinite(s.grad).all())


def test_fused_bad_inputs_raise_errors_naming_the_argument():
    ri, ts, te, sig = random_packed([3, 2], seed=_seed())
    values = torch.rand(5, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="sorted"):
        composite_along_rays(ts, te, sig, values, ri.flip(0), 2)
    with pytest.raises(ValueError, match=r"ray_indices.*\[0, n_rays"):
        composite_along_rays(ts, te, sig, values, ri, 1)
    with pytest.raises(TypeError, match="t_ends"):
        composite_along_rays(ts, te.float(), sig, values, ri, 2)
    with pytest.raises(TypeError, match="values"):
        composite_along_rays(ts, te, sig, values.float(), ri, 2)
    with pytest.raises(ValueError, match="values"):
        composite_along_rays(ts, te, sig, values[:4], ri, 2)
    with pytest.raises(ValueError, match="values"):
        composite_along_rays(ts, te, sig, values[:, 0], ri, 2)
    with pytest.raises(ValueError, match="t_starts"):
        composite_along_rays(ts[:-1], te, sig, values, ri, 2)
    with pytest.raises(TypeError, match="sigmas"):
        composite_along_rays(ts, te, sig.long(), values, ri, 2)
    with pytest.raises(TypeError, match="'values' must be a torch.Tensor"):
        composite_along_rays(ts, te, sig, None, ri, 2)
    with pytest.raises(ValueError, match="batched"):
        composite_along_rays(ts, te, sig, values)
    with pytest.raises(ValueError, match="values"):
        composite_along_rays(ts.view(1, 5), te.view(1, 5), sig.view(1, 5), values)
    with pytest.raises(ValueError, match="n_rays"):
        composite_along_rays(ts, te, sig, values, ri, -1)
    with pytest.raises(ValueError, match="'ray_indices' is on meta"):
        composite_along_rays(ts, te, sig, values, ri.to("meta"), 2)


def test_fused_cpu_gradients_are_bit_identical_across_runs_and_thread_counts():
    # Bit-exact training resume relies on a deterministic backward (see test_composite.py).
    ri, ts, te, sig = random_packed([300, 0, 17, 64, 1000, 5] * 40, dtype=torch.float32,
                                    seed=_seed())
    values = torch.rand(sig.shape[0], 5)

    def grads():
        s, v = sig.clone().requires_grad_(True), values.clone().requires_grad_(True)
        (composite_along_rays(ts, te, s, v, ri, 240) ** 2).sum().backward()
        return s.grad, v.grad

    assert_bit_identical_across_thread_counts(grads)

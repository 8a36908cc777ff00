"""HiFA's z-variance inside the fused compositing op (composite_along_rays(z_variance=True)):
known answers (two equal thin shells, one opaque shell), the kernels against the pure-PyTorch
reference and the two-pass definition, float64 gradchecks, the flag off changing nothing, the
regulariser's ray selection, and CUDA against CPU where a GPU is present."""
import pytest
import torch

from l2vsd_ext._ext import load_extension
from l2vsd_ext.ops import composite_along_rays
from l2vsd_ext.ops import reference as ref
from l2vsd_ext.ops.composite import _CompositeDepthFunction, _packed_offsets
from l2vsd_ext.scene.regularizers import z_variance_loss
from render_helpers import DEVICES, random_packed

COUNTS = [5, 0, 7, 1, 0, 3, 40, 100, 17, 300, 33]
TOLERANCES = {torch.float32: dict(atol=2e-6, rtol=1e-4), torch.float64: dict(atol=1e-12, rtol=1e-10)}


def _seed():
    return int(torch.randint(0, 2**30, ()))


def _shells(depths_and_alphas, dtype, width=2.0**-10, start=0.1, step=0.05):
    """One ray: zero-density filler samples every `step` from `start`, and a thin sample of
    width `width` centred at each depth with the given alpha. The depths are first rounded to
    `dtype` (and the width is a power of two), so every interval is exact. Returns (t_starts,
    t_ends, sigmas, depths as rounded)."""
    intervals, rounded = [], []
    t = start
    for depth, alpha in sorted(depths_and_alphas):
        depth = torch.tensor(depth, dtype=dtype).item()
        rounded.append(depth)
        while t + step < depth - width:
            intervals.append((t, t + step, 0.0))
            t += step
        sigma = -torch.log1p(torch.tensor(-alpha, dtype=torch.float64)).item() / width
        intervals.append((depth - width / 2, depth + width / 2, sigma))
        t = depth + width
    intervals.append((t, t + step, 0.0))
    ts, te, sig = (torch.tensor(col, dtype=dtype) for col in zip(*intervals))
    return ts, te, sig, rounded


def _zvar(ts, te, sig, ri=None, n_rays=None, channels=1):
    values = torch.ones(*sig.shape, channels, dtype=sig.dtype, device=sig.device)
    return composite_along_rays(ts, te, sig, values, ri, n_rays, z_variance=True)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("d1,d2", [(2.0, 2.3), (1.0, 3.5), (100.0, 100.3)])
def test_two_equal_thin_shells_give_half_their_distance_squared(device, dtype, d1, d2):
    # Equal weights a at d1 and (1 - a) a2 at d2: a2 = a / (1 - a). The ray starts 0.1 before
    # the first shell, so at depth 100 a float32 sum of w t^2 would lose the answer to rounding
    # (t^2 ~ 1e4, ulp ~ 1e-3 against 0.0225); the op's per-ray t_ref keeps it.
    a = 0.3
    ts, te, sig, (r1, r2) = _shells([(d1, a), (d2, a / (1 - a))], dtype, start=d1 - 0.1)
    out = _zvar(ts[None].to(device), te[None].to(device), sig[None].to(device))
    want = ((r2 - r1) / 2) ** 2
    rel = 1e-4 if dtype == torch.float32 else 1e-9
    assert abs(out.z_variance.item() - want) <= rel * want
    assert abs(out.opacity.item() - 2 * a) <= 1e-6
    torch.testing.assert_close(out.opacity, out.sums[:, 0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_one_opaque_shell_gives_about_zero(dtype):
    # A solid slab: density 2000 over samples 0.004 long, so the first sample inside takes
    # 1 - exp(-8) of the weight; the variance is that of a ~1e-3-thick shell.
    n = 60
    edges = torch.linspace(1.0, 1.0 + 0.004 * n, n + 1, dtype=torch.float64)
    sig = torch.where(edges[:-1] >= 1.1, 2000.0, 0.0)
    ts, te, sig = (x.to(dtype)[None] for x in (edges[:-1], edges[1:], sig))
    out = _zvar(ts, te, sig)
    assert out.opacity.item() > 0.999
    assert 0 <= out.z_variance.item() < 1e-6
    # ... while a translucent cloud over the same samples has a large one.
    cloud = _zvar(ts, te, torch.full_like(sig, 2.0))
    assert cloud.z_variance.item() > 1e-3


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("channels", [1, 3, 5, 8, 9, 11, 0])
def test_kernel_matches_reference(dtype, channels):
    # Channel counts the CPU kernel vectorises (1-8) and ones it does not (9, 11, and 0: the
    # depth spread alone).
    seed = _seed()
    ri, ts, te, sig = random_packed(COUNTS, dtype=dtype, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    n_rays = len(COUNTS)
    values = torch.rand(sig.shape[0], channels, generator=g, dtype=dtype)
    up = [torch.randn(n_rays, k, generator=g, dtype=dtype) for k in (channels, 1, 1)]

    def run(fn):
        s, v = sig.clone().requires_grad_(True), values.clone().requires_grad_(True)
        sums, zvar, opacity = fn(s, v)
        loss = (sums * up[0]).sum() + (zvar * up[1][:, 0]).sum() + (opacity * up[2][:, 0]).sum()
        return (sums, zvar, opacity) + torch.autograd.grad(loss, (s, v), allow_unused=True)

    def reference(s, v):
        w = ref.render_weight_from_density(ts, te, s, ri, n_rays)[0]
        opacity, _, variance = ref.z_variance(ts, te, s, ri, n_rays)
        return ref.accumulate_along_rays(w, v, ri, n_rays), variance, opacity

    got = run(lambda s, v: composite_along_rays(ts, te, s, v, ri, n_rays, z_variance=True))
    want = run(reference)
    for name, a, b in zip(("sums", "z_variance", "opacity", "grad_sigmas", "grad_values"), got, want):
        if b is None:  # no values: no value gradient
            assert a is None or a.numel() == 0
            continue
        torch.testing.assert_close(a, b, **TOLERANCES[dtype], msg=lambda m: f"{name}: {m}")
    empty = torch.tensor([c == 0 for c in COUNTS])
    assert bool((got[1][empty] == 0).all()) and bool((got[2][empty] == 0).all())


def test_depth_stats_mean_column_matches_reference():
    # The op's internal (n_rays, 3) stats: (sum w, mean of t_mid - t_ref, variance), t_ref the
    # ray's first midpoint.
    ri, ts, te, sig = random_packed(COUNTS, seed=_seed())
    values = torch.rand(sig.shape[0], 2, dtype=torch.float64)
    offsets = _packed_offsets(ri, len(COUNTS), True, "test")
    _, stats = _CompositeDepthFunction.apply(ts, te, sig, values, ri, offsets)
    opacity, mean, variance = ref.z_variance(ts, te, sig, ri, len(COUNTS))
    mid = 0.5 * (ts + te)
    t_ref = torch.zeros(len(COUNTS), dtype=torch.float64)
    nonempty = offsets[1:] > offsets[:-1]
    t_ref[nonempty] = mid[offsets[:-1][nonempty]]
    want = torch.stack([opacity, torch.where(opacity > 0, mean - t_ref, 0.0), variance], 1)
    torch.testing.assert_close(stats, want, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("device", DEVICES)
def test_gradcheck_packed_every_output(device):
    ri, ts, te, sig = random_packed([4, 0, 6, 1, 2, 19], device=device, seed=_seed())
    offsets = _packed_offsets(ri, 6, True, "test")
    s = sig.clone().requires_grad_(True)
    v = torch.rand(sig.shape[0], 3, dtype=torch.float64, device=device, requires_grad=True)
    # All three stats columns (the mean's gradient too), and the public outputs.
    assert torch.autograd.gradcheck(
        lambda a, b: _CompositeDepthFunction.apply(ts, te, a, b, ri, offsets), (s, v))
    assert torch.autograd.gradcheck(
        lambda a, b: tuple(composite_along_rays(ts, te, a, b, ri, 6, z_variance=True)), (s, v))
    # The variance alone (the regulariser's use), with values needing no gradient.
    assert torch.autograd.gradcheck(
        lambda a: composite_along_rays(ts, te, a, v.detach(), ri, 6, z_variance=True).z_variance,
        (s,))


def test_gradcheck_batched_and_equal_to_packed():
    n_rays, n_samples = 3, 21
    ri, ts, te, sig = random_packed([n_samples] * n_rays, seed=_seed())
    shape = (n_rays, n_samples)
    values = torch.rand(n_rays * n_samples, 12, dtype=torch.float64)  # the scalar CPU path
    batched = composite_along_rays(ts.view(shape), te.view(shape), sig.view(shape),
                                   values.view(*shape, 12), z_variance=True)
    packed = composite_along_rays(ts, te, sig, values, ri, n_rays, z_variance=True)
    for a, b in zip(batched, packed):
        torch.testing.assert_close(a, b)
    s = sig.view(shape).clone().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda a: tuple(composite_along_rays(ts.view(shape), te.view(shape), a,
                                             values.view(*shape, 12)[..., :2], z_variance=True)),
        (s,))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("channels", [5, 11])
def test_flag_changes_nothing_else(dtype, channels):
    # The sums are bit-identical with and without the flag, and so are both gradients when the
    # z-variance takes no part in the loss.
    ri, ts, te, sig = random_packed(COUNTS * 3, dtype=dtype, seed=_seed())
    n_rays = 3 * len(COUNTS)
    values = torch.rand(sig.shape[0], channels, dtype=dtype)
    grad_out = torch.randn(n_rays, channels, dtype=dtype)
    results = []
    for flag in (False, True):
        s, v = sig.clone().requires_grad_(True), values.clone().requires_grad_(True)
        out = composite_along_rays(ts, te, s, v, ri, n_rays, z_variance=flag)
        sums = out.sums if flag else out
        results.append((sums,) + torch.autograd.grad(sums, (s, v), grad_out))
    for a, b in zip(*results):
        assert torch.equal(a, b)


def test_cpu_gradients_are_bit_identical_across_thread_counts():
    from render_helpers import assert_bit_identical_across_thread_counts
    ri, ts, te, sig = random_packed([300, 0, 17, 64, 1000, 5] * 40, dtype=torch.float32,
                                    seed=_seed())
    values = torch.rand(sig.shape[0], 5)

    def grads():
        s = sig.clone().requires_grad_(True)
        out = composite_along_rays(ts, te, s, values, ri, 240, z_variance=True)
        (out.z_variance.sum() + out.sums.square().sum()).backward()
        return out.z_variance, s.grad

    assert_bit_identical_across_thread_counts(grads)


def test_backward_needs_both_depth_tensors():
    ri, ts, te, sig = random_packed([3, 2], seed=_seed())
    values = torch.rand(5, 2, dtype=torch.float64)
    ext = load_extension()
    out, stats = ext.composite_forward(ts, te, sig, values, ri, 2, True, None, True)
    with pytest.raises(ValueError, match="grad_depth_stats"):
        ext.composite_backward(torch.ones_like(out), out, ts, te, sig, values, ri, 2, True, False,
                               None, stats, None)
    with pytest.raises(ValueError, match="depth_stats"):
        ext.composite_backward(torch.ones_like(out), out, ts, te, sig, values, ri, 2, True, False,
                               None, stats[:, :2], torch.ones_like(stats[:, :2]))


def test_regularizer_is_the_mean_over_opaque_rays_with_its_gradient():
    g = torch.Generator().manual_seed(_seed())
    zvar = torch.rand(4, 6, 1, generator=g, dtype=torch.float64).requires_grad_(True)
    opacity = torch.rand(4, 6, 1, generator=g, dtype=torch.float64)
    opacity[0, 0, 0], opacity[0, 1, 0] = 0.9, 0.1  # at least one ray on each side
    loss = z_variance_loss(zvar, opacity)
    selected = opacity > 0.5
    assert loss.item() == pytest.approx(zvar.detach()[selected].mean().item(), rel=1e-12)
    loss.backward()
    want = selected.to(zvar.dtype) / int(selected.sum())
    assert torch.equal(zvar.grad, want)
    with pytest.raises(ValueError, match="share a shape"):
        z_variance_loss(zvar, opacity[..., 0])


def test_regularizer_is_zero_when_no_ray_is_opaque_enough():
    # Through the op: translucent rays (opacity <= 0.5) contribute nothing, value or gradient.
    ri, ts, te, sig = random_packed([6, 0, 9, 4], seed=_seed(), sigma_scale=0.05)
    s = (sig * 0.1).requires_grad_(True)
    out = composite_along_rays(ts, te, s, torch.ones(sig.shape[0], 1, dtype=sig.dtype), ri, 4,
                               z_variance=True)
    assert float(out.opacity.detach().max()) <= 0.5 and float(out.z_variance.detach().max()) > 0
    loss = z_variance_loss(out.z_variance, out.opacity)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(s.grad, torch.zeros_like(s))
    # A threshold below the opacities selects them again.
    assert z_variance_loss(out.z_variance, out.opacity, 0.0).item() > 0


def test_regularizer_gradient_thins_a_two_shell_ray():
    # One descent step on the loss through the op lowers the variance of a two-shell ray (the
    # gradient reaches the sigmas and moves weight towards one shell).
    ts, te, sig, _ = _shells([(2.0, 0.4), (2.5, 0.6)], torch.float64)
    s = sig[None].clone().requires_grad_(True)
    out = _zvar(ts[None], te[None], s)
    loss = z_variance_loss(out.z_variance, out.opacity)
    loss.backward()
    with torch.no_grad():
        stepped = _zvar(ts[None], te[None], (s - 1e-3 * s.grad / s.grad.abs().max()).clamp(min=0))
    assert stepped.z_variance.item() < out.z_variance.item()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("channels", [1, 5, 8, 9, 0])
def test_cuda_matches_cpu(dtype, channels):
    ri, ts, te, sig = random_packed(COUNTS * 9, dtype=dtype, seed=_seed(), sigma_scale=10.0)
    n_rays = 9 * len(COUNTS)
    values = torch.rand(sig.shape[0], channels, dtype=dtype)
    up = [torch.randn(n_rays, channels, dtype=dtype), torch.randn(n_rays, dtype=dtype),
          torch.randn(n_rays, dtype=dtype)]
    results = []
    for device in ("cpu", "cuda"):
        s = sig.to(device).requires_grad_(True)
        v = values.to(device).requires_grad_(True)
        out = composite_along_rays(ts.to(device), te.to(device), s, v, ri.to(device), n_rays,
                                   z_variance=True)
        loss = sum((o * u.to(device)).sum() for o, u in zip(out, up))
        results.append([t.cpu() for t in (*out, *torch.autograd.grad(loss, (s, v)))])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, **TOLERANCES[dtype])

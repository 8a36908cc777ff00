"""Compositing ops (render_weight_from_density, accumulate_along_rays) against the pure-PyTorch
references: packed and batched layouts, float64 gradchecks, rays without samples, bad inputs."""
import os
import pathlib
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings, strategies as st

import composite_parity
import l2vsd_ext
from l2vsd_ext import build_info
from l2vsd_ext._ext import load_extension
from l2vsd_ext.ops import accumulate_along_rays, render_weight_from_density
from l2vsd_ext.ops import reference as ref
from render_helpers import DEVICES, assert_bit_identical_across_thread_counts, random_packed


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_weights_match_reference(device, dtype, tol):
    ri, ts, te, sig = random_packed([5, 0, 7, 1, 0, 3], dtype=dtype, device=device)
    got = render_weight_from_density(ts, te, sig, ri, 6)
    want = ref.render_weight_from_density(ts, te, sig, ri, 6)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=tol, rtol=tol)


def test_float32_weights_over_long_rays_and_extreme_densities_match_reference():
    # The CPU float32 path has its own vectorised exp: check it over a long ray (transmittance
    # down to underflow), across chunk boundaries (rays of 1..130 samples) and at the extremes.
    ri, ts, te, sig = random_packed([700, 1, 63, 64, 65, 130], dtype=torch.float32, seed=7,
                                    sigma_scale=40.0)
    sig[[3, 70, 200]] = torch.tensor([0.0, 1e30, float("inf")])
    sig[5] = 1e-30
    got = render_weight_from_density(ts, te, sig, ri, 6)
    want = ref.render_weight_from_density(ts, te, sig, ri, 6)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=1e-6, rtol=1e-5)
    assert got[1][3 + 1] == got[1][3] * (1 - got[2][3])  # a zero density changes nothing


def test_weight_gradient_of_a_ray_longer_than_the_cpu_scratch_matches_reference():
    # Rays over 2^16 samples take the CPU backward's plain back-to-front path, others the scratch.
    ri, ts, te, sig = random_packed([70000, 5], seed=9, sigma_scale=1e-3)
    grad_w = torch.randn(sig.shape, dtype=sig.dtype, generator=torch.Generator().manual_seed(1))
    got, want = [torch.autograd.grad(fn(ts, te, s, ri, 2)[0], s, grad_w)[0]
                 for fn, s in ((render_weight_from_density, sig.clone().requires_grad_()),
                               (ref.render_weight_from_density, sig.clone().requires_grad_()))]
    torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("device", DEVICES)
def test_weights_gradcheck(device):
    ri, ts, te, sig = random_packed([4, 0, 6, 1, 2], device=device)
    sig.requires_grad_(True)
    # All three outputs contribute, so every term of the backward is checked.
    assert torch.autograd.gradcheck(lambda s: render_weight_from_density(ts, te, s, ri, 5), (sig,))


@pytest.mark.parametrize("device", DEVICES)
def test_weights_gradient_matches_reference(device):
    ri, ts, te, sig = random_packed([8, 3, 0, 5], device=device, seed=3)
    grads = [torch.randn(sig.shape, dtype=sig.dtype, device=device) for _ in range(3)]
    results = []
    for fn in (render_weight_from_density, ref.render_weight_from_density):
        s = sig.clone().requires_grad_(True)
        results.append(torch.autograd.grad(fn(ts, te, s, ri, 4), s, grads)[0])
    torch.testing.assert_close(results[0], results[1], atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("device", DEVICES)
def test_accumulate_gradcheck(device):
    ri, _, _, w = random_packed([3, 0, 5, 2], device=device, seed=1)
    w.requires_grad_(True)
    values = torch.rand(w.shape[0], 3, dtype=torch.float64, device=device, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: accumulate_along_rays(a, b, ri, 4), (w, values))
    assert torch.autograd.gradcheck(lambda a: accumulate_along_rays(a, None, ri, 4), (w,))


@pytest.mark.parametrize("device", DEVICES)
def test_full_composite_gradcheck(device):
    """sigmas -> weights -> colour: the chain the renderer differentiates."""
    ri, ts, te, sig = random_packed([4, 2, 0, 3], device=device, seed=2)
    sig.requires_grad_(True)
    rgb = torch.rand(sig.shape[0], 3, dtype=torch.float64, device=device, requires_grad=True)

    def render(s, c):
        w, _, _ = render_weight_from_density(ts, te, s, ri, 4)
        return accumulate_along_rays(w, c, ri, 4)

    assert torch.autograd.gradcheck(render, (sig, rgb))


@settings(max_examples=40, deadline=None)
@given(counts=st.lists(st.integers(0, 12), min_size=0, max_size=20),
       channels=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_random_ray_counts_match_reference(counts, channels, seed):
    n_rays = len(counts)
    ri, ts, te, sig = random_packed(counts, seed=seed)
    values = torch.rand(sig.shape[0], channels, dtype=torch.float64,
                        generator=torch.Generator().manual_seed(seed + 1))
    got = render_weight_from_density(ts, te, sig, ri, n_rays)
    want = ref.render_weight_from_density(ts, te, sig, ri, n_rays)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=1e-12, rtol=1e-10)
    acc = accumulate_along_rays(got[0], values, ri, n_rays)
    torch.testing.assert_close(acc, ref.accumulate_along_rays(want[0], values, ri, n_rays))
    assert acc.shape == (n_rays, channels)
    empty = torch.tensor([c == 0 for c in counts], dtype=torch.bool)
    assert bool((acc[empty] == 0).all())


def test_batched_layout_equals_packed():
    n_rays, n_samples = 5, 7
    ri, ts, te, sig = random_packed([n_samples] * n_rays, seed=4)
    shape = (n_rays, n_samples)
    packed = render_weight_from_density(ts, te, sig, ri, n_rays)
    batched = render_weight_from_density(ts.view(shape), te.view(shape), sig.view(shape))
    for p, b in zip(packed, batched):
        assert b.shape == shape
        torch.testing.assert_close(b.reshape(-1), p)
    values = torch.rand(n_rays * n_samples, 2, dtype=torch.float64)
    torch.testing.assert_close(accumulate_along_rays(batched[0], values.view(n_rays, n_samples, 2)),
                               accumulate_along_rays(packed[0], values, ri, n_rays))


def test_batched_gradcheck():
    _, ts, te, sig = random_packed([6] * 3, seed=5)
    ts, te = ts.view(3, 6), te.view(3, 6)
    sig = sig.view(3, 6).clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda s: render_weight_from_density(ts, te, s), (sig,))


def test_n_rays_inferred_when_missing():
    ri, ts, te, sig = random_packed([2, 0, 3], seed=6)
    w, _, _ = render_weight_from_density(ts, te, sig, ri)
    assert accumulate_along_rays(w, None, ri).shape == (3, 1)


def test_empty_inputs_give_empty_outputs():
    e = torch.empty(0, dtype=torch.float64)
    ri = torch.empty(0, dtype=torch.long)
    w, t, a = render_weight_from_density(e, e, e, ri, 4)
    assert w.shape == t.shape == a.shape == (0,)
    assert torch.equal(accumulate_along_rays(w, None, ri, 4), torch.zeros(4, 1, dtype=torch.float64))


def test_bad_inputs_raise_clear_errors():
    ri, ts, te, sig = random_packed([3, 2], seed=7)
    with pytest.raises(ValueError, match="sorted"):
        render_weight_from_density(ts, te, sig, ri.flip(0), 2)
    with pytest.raises(ValueError, match=r"ray_indices.*\[0, n_rays"):
        render_weight_from_density(ts, te, sig, ri, 1)
    with pytest.raises(TypeError, match="t_ends"):
        render_weight_from_density(ts, te.float(), sig, ri, 2)
    with pytest.raises(ValueError, match="t_starts"):
        render_weight_from_density(ts[:-1], te, sig, ri, 2)
    with pytest.raises(TypeError, match="sigmas"):
        render_weight_from_density(ts, te, sig.long(), ri, 2)
    with pytest.raises(TypeError, match="must be a torch.Tensor"):
        render_weight_from_density(ts, te, [1.0], ri, 2)
    with pytest.raises(ValueError, match="values"):
        accumulate_along_rays(sig, torch.rand(4, 3, dtype=torch.float64), ri, 2)
    with pytest.raises(ValueError, match="batched"):
        accumulate_along_rays(sig)
    with pytest.raises(ValueError, match="n_rays"):
        render_weight_from_density(ts, te, sig, ri, -1)


def test_mismatched_devices_raise():
    ri, ts, te, sig = random_packed([3, 2], seed=8)
    with pytest.raises(ValueError, match="device|meta"):
        render_weight_from_density(ts.to("meta"), te, sig, ri, 2)


def test_compiled_matches_reference_over_ragged_rays_and_channel_counts():
    composite_parity.check(seed=int(torch.randint(0, 2**30, ())))


@pytest.mark.parametrize("isa", ["avx2", "base"])
def test_every_cpu_build_matches_reference(isa):
    # The CPU kernels are compiled per instruction set and picked at run time; L2VSD_CPU_ISA caps
    # the pick, so this machine runs the builds it would not choose itself.
    order = ["base", "avx2", "avx512"]
    if order.index(build_info()["cpu_isa"]) < order.index(isa):
        pytest.skip(f"this CPU does not support {isa}")
    script = pathlib.Path(__file__).with_name("composite_parity.py")
    seed = str(int(torch.randint(0, 2**30, ())))
    package_parent = str(pathlib.Path(l2vsd_ext.__file__).resolve().parents[1])
    env = dict(os.environ, L2VSD_CPU_ISA=isa, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([package_parent, os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, str(script), seed], env=env, capture_output=True,
                          text=True, cwd=package_parent)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-1] == isa  # the capped build really ran


def test_layout_offsets_are_reused_only_for_the_unchanged_tensor():
    ri, ts, te, sig = random_packed([3, 2, 4], seed=10)
    w, _, _ = render_weight_from_density(ts, te, sig, ri, 3)  # validates and caches ri's layout
    torch.testing.assert_close(accumulate_along_rays(w, None, ri, 3),
                               ref.accumulate_along_rays(w, None, ri, 3))
    ri[0], ri[-1] = 2, 0  # in place: the version counter moves, so the layout is checked again
    with pytest.raises(ValueError, match="sorted"):
        accumulate_along_rays(w, None, ri, 3)
    with pytest.raises(ValueError, match=r"\[0, n_rays"):
        accumulate_along_rays(w, None, ri.clone().fill_(5), 3)  # another tensor: checked too


@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
def test_packed_offsets_over_many_samples_match_searchsorted_and_find_the_bad_sample(index_dtype):
    # Over 2^17 samples the host pass splits the samples between threads: the offsets of rays
    # starting at a split and the first bad sample must not depend on it.
    g = torch.Generator().manual_seed(int(torch.randint(0, 2**30, ())))
    counts = torch.randint(0, 80, (5000,), generator=g)
    counts[::7] = 0
    ri = torch.repeat_interleave(torch.arange(5000), counts).to(index_dtype)
    ext = load_extension()
    want = torch.searchsorted(ri.long(), torch.arange(5001))
    assert torch.equal(ext.packed_offsets(ri, 5000), want)
    bad = ri.clone()
    at = bad.numel() * 3 // 4
    bad[at] = bad[at - 1] - 1 if bad[at - 1] > 0 else 4999
    with pytest.raises(ValueError, match=f"sample {at}"):
        ext.packed_offsets(bad, 5000)
    with pytest.raises(ValueError, match=r"\[0, n_rays=4000\)"):
        ext.packed_offsets(ri, 4000)


def test_glue_rejects_offsets_that_do_not_partition_the_samples():
    ri, ts, te, sig = random_packed([3, 2], seed=11)
    ext = load_extension()
    good = ext.packed_offsets(ri, 2)
    for bad, match in [(torch.tensor([0, 4, 3]), "non-decreasing"),
                       (torch.tensor([0, 2, 4]), "non-decreasing"),
                       (torch.tensor([0, 5]), r"offsets.*\(n_rays \+ 1,\)"),
                       (good.int(), "offsets")]:
        with pytest.raises((ValueError, TypeError), match=match):
            ext.render_weights_forward(ts, te, sig, ri, 2, True, bad)
    w, t, a = ext.render_weights_forward(ts, te, sig, ri, 2, True, good)
    torch.testing.assert_close(w, ref.render_weight_from_density(ts, te, sig, ri, 2)[0])


def test_ray_indices_on_another_device_raise_before_any_layout_pass():
    ri, ts, te, sig = random_packed([3, 2], seed=12)
    with pytest.raises(ValueError, match="'ray_indices' is on meta"):
        render_weight_from_density(ts, te, sig, ri.to("meta"), 2)
    with pytest.raises(ValueError, match="'ray_indices' is on meta"):
        accumulate_along_rays(sig, None, ri.to("meta"), 2)


def test_cpu_gradients_are_bit_identical_across_runs_and_thread_counts():
    # Bit-exact training resume relies on a deterministic backward: fixed summation orders, no
    # atomics, and the work of a ray never depends on how rays are split between threads.
    ri, ts, te, sig = random_packed([300, 0, 17, 64, 1000, 5] * 40, dtype=torch.float32, seed=13)
    values = torch.rand(sig.shape[0], 5)

    def grads():
        s, v = sig.clone().requires_grad_(True), values.clone().requires_grad_(True)
        w, _, _ = render_weight_from_density(ts, te, s, ri, 240)
        (accumulate_along_rays(w, v, ri, 240) ** 2).sum().backward()
        return s.grad, v.grad

    assert_bit_identical_across_thread_counts(grads)

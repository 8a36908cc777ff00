"""Hash-grid encoding: compiled CPU/CUDA kernels vs the pure-PyTorch reference."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from l2vsd_ext.ops import HashGridEncoding, hashgrid_encode, hashgrid_layout
from l2vsd_ext.ops import reference
from l2vsd_ext.ops.hashgrid import HashGridConfig

from cuda_skip import requires_cuda

SMALL = HashGridConfig(n_input_dims=3, n_levels=4, n_features_per_level=2, log2_hashmap_size=8,
                       base_resolution=4, per_level_scale=1.8)


def reference_encode(x, params, config, clamp=False):
    return reference.hashgrid_encode(x, params, *tuple(config)[1:], clamp=clamp)


def random_table(config, dtype, device, generator=None):
    n = hashgrid_layout(config)[-1]
    size = (n.offset + n.size) * config.n_features_per_level
    return torch.rand(size, dtype=dtype, generator=generator).mul_(2).sub_(1).to(device)


def points_off_cell_faces(n, config, dtype, margin=1e-3, seed=0):
    """Random points whose fractional cell position is at least `margin` from every face on
    every level, so finite differences never cross a cell (the encoding is piecewise linear)."""
    gen = torch.Generator().manual_seed(seed)
    kept = []
    while sum(len(k) for k in kept) < n:
        x = torch.rand(4 * n, config.n_input_dims, dtype=torch.float64, generator=gen)
        ok = torch.ones(len(x), dtype=torch.bool)
        for lv in hashgrid_layout(config):
            frac = torch.frac(x * lv.scale + 0.5)
            ok &= ((frac > margin) & (frac < 1 - margin)).all(dim=1)
        kept.append(x[ok])
    return torch.cat(kept)[:n].to(dtype)


def test_layout_matches_reference_and_tcnn_sizes():
    config = HashGridConfig()
    kernel = [tuple(lv) for lv in hashgrid_layout(config)]
    assert kernel == reference.hashgrid_layout_reference(*config)
    # tiny-cuda-nn's rule: min(next multiple of 8 of res^3, 2^19) entries per level.
    for lv in hashgrid_layout(config):
        assert lv.size == min(-(-lv.resolution ** 3 // 8) * 8, 2 ** 19)
        assert lv.resolution == math.ceil(lv.scale) + 1
    sizes = [lv.size for lv in hashgrid_layout(config)]
    assert any(s < 2 ** 19 for s in sizes) and any(s == 2 ** 19 for s in sizes)


def test_module_parameter_layout_and_init():
    enc = HashGridEncoding()
    layout = hashgrid_layout(enc.config)
    assert [name for name, _ in enc.named_parameters()] == ["params"]
    assert enc.params.numel() == (layout[-1].offset + layout[-1].size) * 2
    assert enc.params.dtype == torch.float32
    assert enc.params.abs().max() <= 1e-4 and enc.params.std() > 1e-5
    assert enc.n_output_dims == 32


def test_default_config_forward_matches_reference_float32(device):
    config = HashGridConfig()
    torch.manual_seed(1)
    params = random_table(config, torch.float32, device)
    x = torch.rand(4096, 3, device=device)
    x[:3] = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 0.5]])
    out = hashgrid_encode(x, params, config)
    expected = reference_encode(x, params, config)
    assert out.shape == (4096, 32)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


def test_default_config_gradients_match_reference_float32(device):
    config = HashGridConfig()
    torch.manual_seed(2)
    params = random_table(config, torch.float32, device).requires_grad_()
    x = torch.rand(2048, 3, device=device, requires_grad=True)
    dy = torch.randn(2048, 32, device=device)
    gp, gx = torch.autograd.grad(hashgrid_encode(x, params, config), (params, x), dy)
    rp, rx = torch.autograd.grad(reference_encode(x, params, config), (params, x), dy)
    torch.testing.assert_close(gp, rp, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gx, rx, rtol=1e-4, atol=1e-3)


def test_gradcheck_table_and_input_float64(device):
    torch.manual_seed(3)
    params = random_table(SMALL, torch.float64, device).requires_grad_()
    x = points_off_cell_faces(12, SMALL, torch.float64, seed=3).to(device).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: hashgrid_encode(a, b, SMALL), (x, params),
                                    eps=1e-6, atol=1e-6)


def test_gradcheck_hashed_levels_float64():
    config = HashGridConfig(3, 3, 4, 6, 8, 2.0)  # 8^3 = 512 > 64 entries: every level hashed
    assert all(lv.resolution ** 3 > lv.size for lv in hashgrid_layout(config))
    params = random_table(config, torch.float64, "cpu").requires_grad_()
    x = points_off_cell_faces(10, config, torch.float64, seed=4).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: hashgrid_encode(a, b, config), (x, params),
                                    eps=1e-6, atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 64),
    n_dims=st.sampled_from([1, 2, 3]),
    n_levels=st.integers(1, 6),
    n_features=st.sampled_from([1, 2, 3, 4, 8]),  # 3: the CPU kernel's runtime-width path
    log2_size=st.integers(4, 14),
    base=st.integers(2, 16),
    per_level_scale=st.floats(1.0, 2.5),
    seed=st.integers(0, 2 ** 31 - 1),
)
def test_random_configs_match_reference(n, n_dims, n_levels, n_features, log2_size, base,
                                        per_level_scale, seed):
    config = HashGridConfig(n_dims, n_levels, n_features, log2_size, base, per_level_scale)
    gen = torch.Generator().manual_seed(seed)
    params = random_table(config, torch.float64, "cpu", gen).requires_grad_()
    x = torch.rand(n, n_dims, dtype=torch.float64, generator=gen)
    x[0, :] = 0.0  # faces of the unit cube, where the top corner wraps in the table
    x[-1, -1] = 1.0
    x.requires_grad_()
    out = hashgrid_encode(x, params, config)
    expected = reference_encode(x, params, config)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-12)
    dy = torch.randn(out.shape, dtype=torch.float64, generator=gen)
    got = torch.autograd.grad(out, (params, x), dy)
    want = torch.autograd.grad(expected, (params, x), dy)
    torch.testing.assert_close(got[0], want[0], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(got[1], want[1], rtol=1e-8, atol=1e-9)


def test_clamp_mode_equals_encoding_clamped_points():
    torch.manual_seed(5)
    params = random_table(SMALL, torch.float64, "cpu")
    x = (torch.rand(64, 3, dtype=torch.float64) * 1.6 - 0.3).requires_grad_()
    out = hashgrid_encode(x, params, SMALL, out_of_range="clamp")
    torch.testing.assert_close(out, reference_encode(x.detach().clamp(0, 1), params, SMALL))
    (grad,) = torch.autograd.grad(out.sum(), x)
    outside = (x < 0) | (x > 1)
    assert outside.any() and (grad[outside] == 0).all()
    assert (grad[~outside] != 0).any()


def test_cpu_table_gradient_is_bit_identical_across_calls():
    # Bit-exact resume relies on it: each level's gradient has one owner thread summing in
    # point order, whatever the thread count or scheduling.
    config = HashGridConfig(3, 8, 2, 12, 8, 1.5)
    gen = torch.Generator().manual_seed(11)
    params = random_table(config, torch.float32, "cpu", gen).requires_grad_()
    x = torch.rand(1 << 14, 3, generator=gen)
    dy = torch.randn(1 << 14, 16, generator=gen)
    grads = [torch.autograd.grad(hashgrid_encode(x, params, config), params, dy)[0]
             for _ in range(3)]
    assert all(torch.equal(grads[0], g) for g in grads[1:])
    expected = reference_encode(x.double(), params.double(), config)
    want = torch.autograd.grad(expected, params, dy.double())[0]  # float32, summed in float64
    torch.testing.assert_close(grads[0], want, rtol=1e-4, atol=1e-4)


def test_only_requested_gradients_are_computed():
    params = random_table(SMALL, torch.float32, "cpu").requires_grad_()
    x = torch.rand(32, 3)
    out = hashgrid_encode(x, params, SMALL)
    out.sum().backward()
    assert params.grad is not None and x.grad is None


def test_empty_batch():
    params = random_table(SMALL, torch.float32, "cpu").requires_grad_()
    out = hashgrid_encode(torch.empty(0, 3), params, SMALL)
    assert out.shape == (0, 8)
    out.sum().backward()
    assert params.grad.abs().sum() == 0


@pytest.mark.parametrize("bad, exc, words", [
    (lambda x, p: (x.to(torch.int32), p), TypeError, "'x'"),
    (lambda x, p: (x.double(), p), TypeError, "'x'"),
    (lambda x, p: (x.half(), p.half()), TypeError, "'params'"),
    (lambda x, p: (x[:, :2].contiguous(), p), ValueError, "'x'"),
    (lambda x, p: (x.t().contiguous().t(), p), ValueError, "contiguous"),
    (lambda x, p: (x, p[:-8]), ValueError, "'params'"),
    (lambda x, p: (x, p.view(-1, 2)), ValueError, "'params'"),
    (lambda x, p: (x + 1.5, p), ValueError, "[0, 1]"),
    (lambda x, p: (x.index_fill(0, torch.tensor([3]), float("nan")), p), ValueError, "'x'"),
    (lambda x, p: ("points", p), TypeError, "'x'"),
    (lambda x, p: (x.to("meta"), p.to("meta")), ValueError, "'x'"),
])
def test_bad_input_raises_naming_the_argument(bad, exc, words):
    params = random_table(SMALL, torch.float32, "cpu")
    x = torch.rand(16, 3)
    bx, bp = bad(x, params)
    with pytest.raises(exc, match=words.replace("[", r"\[").replace("]", r"\]")):
        hashgrid_encode(bx, bp, SMALL)


def test_bad_config_raises():
    with pytest.raises(ValueError, match="n_levels"):
        HashGridEncoding(n_levels=0)
    with pytest.raises(ValueError, match="n_input_dims"):
        HashGridEncoding(n_input_dims=4)
    with pytest.raises(ValueError, match="log2_hashmap_size"):
        HashGridEncoding(log2_hashmap_size=40)
    with pytest.raises(ValueError, match="out_of_range"):
        HashGridEncoding(out_of_range="wrap")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_tensor_without_cuda_kernels_is_refused():
    from l2vsd_ext._ext import cuda_kernels_available

    if cuda_kernels_available():
        pytest.skip("this build has CUDA kernels")
    with pytest.raises(ValueError, match="without CUDA"):
        hashgrid_encode(torch.rand(4, 3, device="cuda"), random_table(SMALL, torch.float32, "cuda"), SMALL)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_half_table_matches_float_reference():
    from l2vsd_ext._ext import cuda_kernels_available

    if not cuda_kernels_available():
        pytest.skip("this build has no CUDA kernels")
    config = HashGridConfig()
    params = random_table(config, torch.float32, "cuda")
    x = torch.rand(4096, 3, device="cuda")
    out = hashgrid_encode(x, params.half(), config)
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.float(), reference_encode(x, params.half().float(), config),
                               rtol=2e-2, atol=2e-2)


def test_huge_resolutions_are_refused_with_the_arguments_named():
    # 16 * 2^31 cells per side at the finest level: beyond 2^24 a float32 position cannot resolve
    # a cell, and the kernels' float-to-integer conversions would overflow.
    with pytest.raises(ValueError, match=r"finest level.*2\^24.*per_level_scale=2"):
        HashGridEncoding(n_levels=32, per_level_scale=2.0)
    with pytest.raises(ValueError, match="base_resolution"):
        HashGridEncoding(base_resolution=1 << 25)
    with pytest.raises(ValueError, match="base_resolution"):
        hashgrid_layout(HashGridConfig(base_resolution=(1 << 32) + 16))  # no silent uint32 wrap
    # The largest accepted: the finest scale exactly 2^24 - 1 (resolution 2^24).
    levels = hashgrid_layout(HashGridConfig(n_levels=2, base_resolution=1 << 24, per_level_scale=1.0))
    assert levels[-1].resolution == 1 << 24


@requires_cuda
def test_cuda_half_table_wide_levels_sum_in_float32():
    """More than 8 features per level take the CUDA kernel's generic body, which must sum a
    float16 table's corners in float32 as the register path does (it summed in float16: 1e-3
    against the register path's 4e-4)."""
    errors = {}
    for features in (8, 12):  # 8: the register path; 12: the generic body
        config = HashGridConfig(n_levels=8, n_features_per_level=features, log2_hashmap_size=14)
        table = random_table(config, torch.float32, "cuda").half()
        x = torch.rand(8192, 3, device="cuda")
        want = reference_encode(x.double(), table.double(), config)
        got = hashgrid_encode(x, table, config).double()
        errors[features] = ((got - want).abs().max() / want.abs().max()).item()
    assert errors[12] <= 1.5 * errors[8] + 1e-4, errors

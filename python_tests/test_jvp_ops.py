"""The JVP engine's fused rules (LoRA linear, attention, group/layer norm) vs their pure-PyTorch
references (torch.func.jvp of the plain formula), on random shapes; and their argument checks."""
import importlib
import pytest
import torch
from hypothesis import given, settings, strategies as st

from l2vsd_ext._ext import cuda_kernels_available
from l2vsd_ext.ops import (attention, attention_jvp, attention_jvp_heads, group_norm_jvp,
                           layer_norm_jvp, lora_linear, lora_linear_jvp, reference)
from l2vsd_ext.ops.attention_jvp import (attention_jvp_blocked, attention_jvp_kernel, merge_heads,
                                        split_heads)

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not (torch.cuda.is_available() and cuda_kernels_available()), reason="needs a CUDA build and GPU"))]
HYP = settings(max_examples=25, deadline=None)


def rand(*shape, dtype=torch.float64, device="cpu", gen=None):
    return torch.randn(*shape, dtype=dtype, generator=gen).to(device)


def assert_close(actual, expected, dtype):
    tol = {torch.float64: 1e-10, torch.float32: 2e-4, torch.float16: 3e-2, torch.bfloat16: 8e-2}[dtype]
    scale = expected.abs().max().item() + 1e-12
    err = (actual.double() - expected.double()).abs().max().item()
    assert err <= tol * scale, f"max error {err:.3g} vs scale {scale:.3g}"


# --- LoRA linear -------------------------------------------------------------------------------

def lora_case(m, n_in, n_out, r, dtype, device, seed, with_bias=True):
    gen = torch.Generator().manual_seed(seed)
    x, x_dot = rand(m, n_in, gen=gen), rand(m, n_in, gen=gen)
    w, b = rand(n_out, n_in, gen=gen), rand(n_out, gen=gen) if with_bias else None
    a, a_dot = rand(r, n_in, gen=gen), rand(r, n_in, gen=gen)
    bb, bb_dot = rand(n_out, r, gen=gen), rand(n_out, r, gen=gen)
    args = [x, x_dot, w, b, a, a_dot, bb, bb_dot]
    return [None if t is None else t.to(dtype).to(device) for t in args]


@HYP
@given(m=st.integers(1, 40), n_in=st.integers(1, 70), n_out=st.integers(1, 70),
       r=st.integers(1, 9), with_bias=st.booleans(), seed=st.integers(0, 10**6))
def test_lora_linear_jvp_matches_reference(m, n_in, n_out, r, with_bias, seed):
    args = lora_case(m, n_in, n_out, r, torch.float64, "cpu", seed, with_bias)
    y, y_dot = lora_linear_jvp(*args, 0.7)
    y_ref, y_dot_ref = reference.lora_linear_jvp(*args, 0.7)
    assert_close(y, y_ref, torch.float64)
    assert_close(y_dot, y_dot_ref, torch.float64)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("m,n_in,n_out,r", [(300, 320, 320, 4), (77, 1024, 1280, 4), (9, 1283, 67, 16)])
def test_lora_linear_jvp_stable_diffusion_sizes(dtype, m, n_in, n_out, r):
    """Widths of SD 2.1's projections (full SIMD blocks and remainders in both projections)."""
    args64 = lora_case(m, n_in, n_out, r, torch.float64, "cpu", n_in, with_bias=n_out != 320)
    y_ref, y_dot_ref = reference.lora_linear_jvp(*args64, 0.25)
    y, y_dot = lora_linear_jvp(*(None if t is None else t.to(dtype) for t in args64), 0.25)
    assert_close(y, y_ref, dtype)
    assert_close(y_dot, y_dot_ref, dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_lora_linear_jvp_dtypes(device, dtype):
    if device == "cpu" and dtype != torch.float32:
        pytest.skip("CPU kernels take float32/float64")
    args = lora_case(2 * 3 * 17, 40, 24, 4, torch.float64, "cpu", 3)
    y_ref, y_dot_ref = reference.lora_linear_jvp(*args, 1.5)
    cast = [t.to(dtype).to(device) for t in args]
    y, y_dot = lora_linear_jvp(cast[0].view(2, 3, 17, 40), cast[1].view(2, 3, 17, 40), *cast[2:], 1.5)
    assert y.shape == (2, 3, 17, 24)
    assert_close(y.reshape(-1, 24).cpu(), y_ref, dtype)
    assert_close(y_dot.reshape(-1, 24).cpu(), y_dot_ref, dtype)


def test_lora_linear_jvp_without_input_tangent_and_large_rank():
    args = lora_case(9, 12, 10, 70, torch.float64, "cpu", 5)  # rank above the kernel's register budget
    args[1] = None
    y, y_dot = lora_linear_jvp(*args, 0.3)
    y_ref, y_dot_ref = reference.lora_linear_jvp(*args, 0.3)
    assert_close(y, y_ref, torch.float64)
    assert_close(y_dot, y_dot_ref, torch.float64)


def test_lora_linear_function_jvp_and_backward():
    x, x_dot, w, b, a, a_dot, bb, bb_dot = lora_case(6, 8, 5, 3, torch.float64, "cpu", 11)
    f = lambda x_, a_, b_: lora_linear(x_, w, b, a_, b_, 0.9)  # noqa: E731
    got = torch.func.jvp(f, (x, a, bb), (x_dot, a_dot, bb_dot))
    want = reference.lora_linear_jvp(x, x_dot, w, b, a, a_dot, bb, bb_dot, 0.9)
    assert_close(got[1], want[1], torch.float64)
    inputs = [t.clone().requires_grad_(True) for t in (x, w, b, a, bb)]
    assert torch.autograd.gradcheck(lambda *t: lora_linear(*t[:3], t[3], t[4], 0.9), inputs)
    # forward_ad dual tensors route through the Function's jvp too
    import torch.autograd.forward_ad as fwAD
    with fwAD.dual_level():
        out = lora_linear(fwAD.make_dual(x, x_dot), w, b, fwAD.make_dual(a, a_dot),
                          fwAD.make_dual(bb, bb_dot), 0.9)
        assert_close(fwAD.unpack_dual(out).tangent, want[1], torch.float64)


def test_lora_linear_jvp_bad_inputs():
    args = lora_case(4, 6, 5, 2, torch.float64, "cpu", 0)
    bad_a_dot = list(args); bad_a_dot[5] = torch.randn(3, 6, dtype=torch.float64)
    with pytest.raises(ValueError, match="lora_a_dot"):
        lora_linear_jvp(*bad_a_dot, 1.0)
    bad_x = list(args); bad_x[0] = torch.randn(4, 7, dtype=torch.float64)
    with pytest.raises(ValueError, match="'x'"):
        lora_linear_jvp(*bad_x, 1.0)
    bad_dtype = list(args); bad_dtype[6] = args[6].float()
    with pytest.raises(TypeError, match="lora_b"):
        lora_linear_jvp(*bad_dtype, 1.0)
    half = [None if t is None else t.half() for t in args]
    with pytest.raises(TypeError, match="'x'"):
        lora_linear_jvp(*half, 1.0)


# --- attention ---------------------------------------------------------------------------------

def attn_case(bh, n, m, d, dtype, device, seed):
    gen = torch.Generator().manual_seed(seed)
    q, q_dot = rand(bh, n, d, gen=gen), rand(bh, n, d, gen=gen)
    k, k_dot = rand(bh, m, d, gen=gen), rand(bh, m, d, gen=gen)
    v, v_dot = rand(bh, m, d, gen=gen), rand(bh, m, d, gen=gen)
    return [t.to(dtype).to(device) for t in (q, q_dot, k, k_dot, v, v_dot)]


@HYP
@given(bh=st.integers(1, 4), n=st.integers(1, 40), m=st.integers(1, 40),
       d=st.sampled_from([1, 3, 8, 40, 64, 80]), seed=st.integers(0, 10**6))
def test_attention_jvp_matches_reference(bh, n, m, d, seed):
    args = attn_case(bh, n, m, d, torch.float64, "cpu", seed)
    scale = d ** -0.5
    ref = reference.attention_jvp(*args, scale)
    for impl in (attention_jvp_kernel, attention_jvp_blocked):
        out, out_dot = impl(*args, scale)
        assert_close(out, ref[0], torch.float64)
        assert_close(out_dot, ref[1], torch.float64)


def heads_reference(q, q_dot, k, k_dot, v, v_dot, heads, scale):
    ref = reference.attention_jvp(*(None if t is None else split_heads(t, heads)
                                    for t in (q, q_dot, k, k_dot, v, v_dot)), scale)
    return merge_heads(ref[0], q.shape[0]), merge_heads(ref[1], q.shape[0])


@HYP
@given(batch=st.integers(1, 3), heads=st.integers(1, 5), n=st.integers(1, 37), m=st.integers(1, 30),
       d=st.sampled_from([1, 5, 8, 64]), strided=st.booleans(), missing=st.booleans(),
       seed=st.integers(0, 10**6))
def test_attention_jvp_heads_matches_reference(batch, heads, n, m, d, strided, missing, seed):
    """(B, N, heads * d) tensors read in place: contiguous, or (strided) slices of wider rows as
    a fused projection would give, with a transposed batch; tangents may be absent."""
    gen = torch.Generator().manual_seed(seed)
    w = heads * d

    def make(tokens):
        if not strided:
            return rand(batch, tokens, w, gen=gen)
        wide = rand(tokens, batch, 3 * w, gen=gen).transpose(0, 1)  # row stride 3w, batch stride 3w
        return wide[..., w:2 * w]
    q, q_dot, k, k_dot, v, v_dot = make(n), make(n), make(m), make(m), make(m), make(m)
    if missing:
        q_dot = v_dot = None
    scale = d ** -0.5
    want = heads_reference(q, q_dot, k, k_dot, v, v_dot, heads, scale)
    out, out_dot = attention_jvp_heads(q, q_dot, k, k_dot, v, v_dot, heads, scale)
    assert out.shape == out_dot.shape == (batch, n, w)
    assert_close(out, want[0], torch.float64)
    assert_close(out_dot, want[1], torch.float64)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_attention_jvp_heads_stable_diffusion_layout(device, dtype):
    """SD 2.1's heads (5 of 64 channels) on enough queries for full vector blocks and key tiles,
    self- and cross-attention (77 keys), against the reference (CUDA: the head-split path)."""
    gen = torch.Generator().manual_seed(5)
    for m in (300, 77):
        q, q_dot = (rand(2, 300, 320, gen=gen) for _ in range(2))
        k, k_dot, v, v_dot = (rand(2, m, 320, gen=gen) for _ in range(4))
        want = heads_reference(q, q_dot, k, k_dot, v, v_dot, 5, 0.125)
        out, out_dot = attention_jvp_heads(*(t.to(dtype).to(device) for t in (q, q_dot, k, k_dot, v, v_dot)),
                                           5, 0.125)
        assert out.dtype == dtype and out.device.type == device
        assert_close(out.cpu(), want[0], dtype)
        assert_close(out_dot.cpu(), want[1], dtype)


def test_attention_jvp_heads_bad_inputs():
    q = torch.randn(2, 4, 12, dtype=torch.float64)
    with pytest.raises(ValueError, match="heads"):
        attention_jvp_heads(q, None, q, None, q, None, 5, 1.0)
    with pytest.raises(ValueError, match="'v'"):
        attention_jvp_heads(q, None, q, None, q[:, :3], None, 3, 1.0)
    with pytest.raises(ValueError, match="'k'"):
        attention_jvp_heads(q, None, q[:1], None, q[:1], None, 3, 1.0)
    with pytest.raises(ValueError, match="q_dot"):
        attention_jvp_heads(q, q[:, :2], q, None, q, None, 3, 1.0)
    with pytest.raises(ValueError, match="'q'"):
        attention_jvp_heads(q[0], None, q, None, q, None, 3, 1.0)
    with pytest.raises(TypeError, match="'k'"):
        attention_jvp_heads(q, None, q.float(), None, q, None, 3, 1.0)


def test_attention_jvp_blocked_small_blocks_and_missing_tangents():
    q, q_dot, k, k_dot, v, v_dot = attn_case(3, 37, 29, 16, torch.float64, "cpu", 4)
    ref = reference.attention_jvp(q, None, k, k_dot, v, None, 0.3)
    out, out_dot = attention_jvp_blocked(q, None, k, k_dot, v, None, 0.3, block_elements=200)
    assert_close(out_dot, ref[1], torch.float64)
    out, out_dot = attention_jvp_kernel(q, None, k, k_dot, v, None, 0.3)
    assert_close(out_dot, ref[1], torch.float64)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("d", [40, 64, 80, 160])
def test_attention_jvp_stable_diffusion_head_dims(device, dtype, d):
    if device == "cpu" and dtype != torch.float32:
        pytest.skip("CPU kernels take float32/float64")
    args64 = attn_case(2, 33, 19, d, torch.float64, "cpu", d)
    ref = reference.attention_jvp(*args64, d ** -0.5)
    args = [t.to(dtype).to(device) for t in args64]
    for backend in ("kernel", "blocked"):
        out, out_dot = attention_jvp(*args, d ** -0.5, backend=backend)
        assert_close(out.cpu(), ref[0], dtype)
        assert_close(out_dot.cpu(), ref[1], dtype)


CUDA_ONLY = pytest.mark.skipif(not (torch.cuda.is_available() and cuda_kernels_available()),
                               reason="needs a CUDA build and GPU")


@CUDA_ONLY
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("bh,n,m,d", [
    (3, 70, 45, 64),    # tiled D=64: rows past one 64-row block, keys past one 32-key tile
    (2, 130, 300, 64),  # several row blocks and key tiles
    (5, 33, 77, 40),    # d below the padded 64; cross-attention's 77 keys
    (2, 67, 50, 17),    # tiled D=32, odd d
    (2, 35, 70, 80),    # tiled D=96
    (3, 3, 17, 100),    # tiled D=128 (16-key tiles), n < 4
    (2, 34, 41, 128),
    (2, 21, 30, 160),   # per-row kernel (d > 128)
    (2, 1, 1, 64),      # one query, one key
])
def test_attention_jvp_cuda_tiles_match_cpu(dtype, bh, n, m, d):
    """The CUDA kernels (tiled for d <= 128 in float32/16/bf16, per-row otherwise) against the CPU
    kernel on the same (rounded) inputs, on tails of every tile dimension."""
    args64 = attn_case(bh, n, m, d, torch.float64, "cpu", n * 1000 + m + d)
    args = [t.to(dtype) for t in args64]
    cpu_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    want = attention_jvp_kernel(*(t.to(cpu_dtype) for t in args), d ** -0.5)
    got = attention_jvp_kernel(*(t.cuda() for t in args), d ** -0.5)
    assert_close(got[0].cpu().to(cpu_dtype), want[0], dtype)
    assert_close(got[1].cpu().to(cpu_dtype), want[1], dtype)


@CUDA_ONLY
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_attention_jvp_cuda_more_heads_than_grid_y(dtype):
    """70000 heads > grid.y's 65535: the kernels fold the heads into a strided loop."""
    args64 = attn_case(70000, 5, 3, 8, torch.float64, "cpu", 1)
    args = [t.to(dtype) for t in args64]
    want = attention_jvp_kernel(*(t.float() for t in args), 8 ** -0.5)
    got = attention_jvp_kernel(*(t.cuda() for t in args), 8 ** -0.5)
    assert_close(got[0].cpu().float(), want[0], dtype)
    assert_close(got[1].cpu().float(), want[1], dtype)


def test_attention_function_routes_dual_tensors():
    q, q_dot, k, k_dot, v, v_dot = attn_case(2, 7, 5, 8, torch.float64, "cpu", 9)
    got = torch.func.jvp(lambda a, b, c: attention(a, b, c, 0.4), (q, k, v), (q_dot, k_dot, v_dot))
    want = reference.attention_jvp(q, q_dot, k, k_dot, v, v_dot, 0.4)
    assert_close(got[0], want[0], torch.float64)
    assert_close(got[1], want[1], torch.float64)


def test_attention_jvp_bad_inputs():
    q, q_dot, k, k_dot, v, v_dot = attn_case(2, 4, 5, 8, torch.float64, "cpu", 0)
    with pytest.raises(ValueError, match="'v'"):
        attention_jvp_kernel(q, q_dot, k, k_dot, v[:, :3], v_dot, 1.0)
    with pytest.raises(ValueError, match="k_dot"):
        attention_jvp_kernel(q, q_dot, k, k_dot[:, :2], v, v_dot, 1.0)
    with pytest.raises(ValueError, match="head_dim"):
        attention_jvp_kernel(*(torch.randn(1, 2, 300, dtype=torch.float64) for _ in range(6)), 1.0)
    with pytest.raises(TypeError, match="'k'"):
        attention_jvp_kernel(q, q_dot, k.float(), k_dot, v, v_dot, 1.0)
    with pytest.raises(ValueError, match="backend"):
        attention_jvp(q, q_dot, k, k_dot, v, v_dot, 1.0, backend="magic")


# --- group norm / layer norm -------------------------------------------------------------------

@HYP
@given(n=st.integers(1, 3), groups=st.integers(1, 4), cpg=st.integers(1, 5),
       spatial=st.lists(st.integers(2, 6), min_size=1, max_size=2), affine=st.booleans(),
       seed=st.integers(0, 10**6))
def test_group_norm_jvp_matches_reference(n, groups, cpg, spatial, affine, seed):
    gen = torch.Generator().manual_seed(seed)
    c = groups * cpg
    x, x_dot = rand(n, c, *spatial, gen=gen), rand(n, c, *spatial, gen=gen)
    w, b = (rand(c, gen=gen), rand(c, gen=gen)) if affine else (None, None)
    got = group_norm_jvp(x, x_dot, groups, w, b, 1e-5)
    want = reference.group_norm_jvp(x, x_dot, groups, w, b, 1e-5)
    assert_close(got[0], want[0], torch.float64)
    assert_close(got[1], want[1], torch.float64)


@HYP
@given(lead=st.lists(st.integers(1, 5), min_size=1, max_size=2),
       norm=st.lists(st.integers(1, 9), min_size=1, max_size=2), affine=st.booleans(),
       seed=st.integers(0, 10**6))
def test_layer_norm_jvp_matches_reference(lead, norm, affine, seed):
    gen = torch.Generator().manual_seed(seed)
    x, x_dot = rand(*lead, *norm, gen=gen), rand(*lead, *norm, gen=gen)
    w, b = (rand(*norm, gen=gen), rand(*norm, gen=gen)) if affine else (None, None)
    got = layer_norm_jvp(x, x_dot, norm, w, b, 1e-5)
    want = reference.layer_norm_jvp(x, x_dot, norm, w, b, 1e-5)
    assert_close(got[0], want[0], torch.float64)
    assert_close(got[1], want[1], torch.float64)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_norms_dtypes(device, dtype):
    if device == "cpu" and dtype != torch.float32:
        pytest.skip("CPU kernels take float32/float64")
    gen = torch.Generator().manual_seed(0)
    x, x_dot, w, b = rand(2, 64, 9, 9, gen=gen), rand(2, 64, 9, 9, gen=gen), rand(64, gen=gen), rand(64, gen=gen)
    want = reference.group_norm_jvp(x, x_dot, 32, w, b, 1e-5)
    got = group_norm_jvp(*(t.to(dtype).to(device) for t in (x, x_dot)), 32,
                         w.to(dtype).to(device), b.to(dtype).to(device), 1e-5)
    assert_close(got[0].cpu(), want[0], dtype)
    assert_close(got[1].cpu(), want[1], dtype)
    xl, xl_dot = rand(3, 77, 320, gen=gen), rand(3, 77, 320, gen=gen)
    want = reference.layer_norm_jvp(xl, xl_dot, (320,), None, None, 1e-5)
    got = layer_norm_jvp(xl.to(dtype).to(device), xl_dot.to(dtype).to(device), 320)
    assert_close(got[1].cpu(), want[1], dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_norms_stable_diffusion_sizes(dtype):
    """SD 2.1's group norm (32 groups, 17x17 so runs are not a multiple of the SIMD width) and
    layer norm over 320 / 1280 channels, with and without affine parameters."""
    gen = torch.Generator().manual_seed(11)
    x, x_dot = rand(2, 320, 17, 17, gen=gen), rand(2, 320, 17, 17, gen=gen)
    w, b = rand(320, gen=gen), rand(320, gen=gen)
    for affine in ((w, b), (None, None)):
        want = reference.group_norm_jvp(x, x_dot, 32, *affine, 1e-5)
        got = group_norm_jvp(x.to(dtype), x_dot.to(dtype), 32,
                             *(None if t is None else t.to(dtype) for t in affine), 1e-5)
        assert_close(got[0], want[0], dtype)
        assert_close(got[1], want[1], dtype)
    for c in (320, 1280):
        xl, xl_dot, wl, bl = rand(3, 19, c, gen=gen), rand(3, 19, c, gen=gen), rand(c, gen=gen), rand(c, gen=gen)
        for affine in ((wl, bl), (wl, None), (None, None)):
            want = reference.layer_norm_jvp(xl, xl_dot, (c,), *affine, 1e-5)
            got = layer_norm_jvp(xl.to(dtype), xl_dot.to(dtype), (c,),
                                 *(None if t is None else t.to(dtype) for t in affine), 1e-5)
            assert_close(got[0], want[0], dtype)
            assert_close(got[1], want[1], dtype)


def test_norm_bad_inputs():
    x = torch.randn(2, 6, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="num_groups"):
        group_norm_jvp(x, x, 4)
    with pytest.raises(ValueError, match="x_dot"):
        group_norm_jvp(x, x[:1], 3)
    with pytest.raises(ValueError, match="weight"):
        group_norm_jvp(x, x, 3, torch.ones(5, dtype=torch.float64))
    with pytest.raises(ValueError, match="normalized_shape"):
        layer_norm_jvp(x, x, (4,))
    with pytest.raises(TypeError, match="'x'"):
        layer_norm_jvp(x.int(), None, 3)


def test_backend_environment_variable_picks_the_blocked_path(monkeypatch):
    module = importlib.import_module("l2vsd_ext.ops.attention_jvp")
    args = attn_case(2, 17, 13, 8, torch.float64, "cpu", 5)
    ref = reference.attention_jvp(*args, 0.4)
    calls = []
    blocked = module.attention_jvp_blocked
    monkeypatch.setattr(module, "attention_jvp_blocked", lambda *a, **k: calls.append(1) or blocked(*a, **k))
    monkeypatch.setenv(module.BACKEND_ENV, "blocked")
    out, out_dot = module.attention_jvp(*args, 0.4)
    assert calls and torch.allclose(out_dot, ref[1], atol=1e-12)
    heads = [None if t is None else merge_heads(t, 1) for t in args]  # (1, N, 2 * d)
    module.attention_jvp_heads(*heads, 2, 0.4)
    assert len(calls) == 2
    monkeypatch.setenv(module.BACKEND_ENV, "fast")
    with pytest.raises(ValueError, match=module.BACKEND_ENV):
        module.attention_jvp(*args, 0.4)

"""Mixed precision in the JVP engine's LoRA rule: a float16/bfloat16 activation and base weight
with float32 LoRA factors (the score model on CUDA: fp16 UNet, fp32 LoRA parameters) takes the
fused op, never the forward-AD fallback, and matches a float64 reference."""
import pytest
import torch

from l2vsd_ext._ext import cuda_kernels_available
from l2vsd_ext.jvp import lora_jvp, lora_rule
from l2vsd_ext.jvp.tiny_unets import (TINY_CONFIGS, lora_parameters, make_lora_unet,
                                      random_direction, random_inputs)
from l2vsd_ext.ops import lora_linear_jvp, reference
from l2vsd_ext.ops.jvp_support import lora_kernel_supports

GPU = pytest.mark.skipif(not (torch.cuda.is_available() and cuda_kernels_available()),
                         reason="needs a CUDA build and GPU")
DEVICES = ["cpu", pytest.param("cuda", marks=GPU)]
LOW = [torch.bfloat16, pytest.param(torch.float16, marks=GPU)]


def rel_err(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_mixed_op_matches_float64_reference(device, dtype):
    if device == "cpu" and dtype == torch.float16:
        pytest.skip("CPU float16 GEMMs are not what a run uses; bfloat16 covers the CPU path")
    m, n_in, n_out, r = 9, 24, 17, 4
    x, x_dot = torch.randn(m, n_in), torch.randn(m, n_in)
    w, b = torch.randn(n_out, n_in) / 5, torch.randn(n_out)
    a, a_dot, bb, bb_dot = (torch.randn(r, n_in), torch.randn(r, n_in), torch.randn(n_out, r),
                            torch.randn(n_out, r))
    low = [t.to(device, dtype) for t in (x, x_dot, w, b)]
    fp32 = [t.to(device) for t in (a, a_dot, bb, bb_dot)]
    y, y_dot = lora_linear_jvp(low[0], low[1], low[2], low[3], fp32[0], fp32[1], fp32[2], fp32[3],
                               0.75)
    assert y.dtype == dtype and y_dot.dtype == dtype
    # Reference in float64 from the rounded inputs the op actually saw.
    want, want_dot = reference.lora_linear_jvp(*(t.double().cpu() for t in low[:4]),
                                               *(t.double().cpu() for t in fp32), 0.75)
    tol = 2e-2 if dtype == torch.bfloat16 else 3e-3
    assert rel_err(y.cpu(), want) <= tol
    assert rel_err(y_dot.cpu(), want_dot) <= tol


def test_mixed_op_rejects_other_factor_dtypes():
    x = torch.randn(3, 8, dtype=torch.bfloat16)
    w = torch.randn(5, 8, dtype=torch.bfloat16)
    a, bb = torch.randn(2, 8, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64)
    with pytest.raises(TypeError, match="'x'"):  # bfloat16 on CPU only with float32 factors
        lora_linear_jvp(x, x, w, None, a, a, bb, bb, 1.0)
    a32, b16 = a.float(), bb.to(torch.bfloat16)
    with pytest.raises(TypeError, match="lora_b"):
        lora_linear_jvp(x, x, w, None, a32, a32, b16, b16, 1.0)
    with pytest.raises(TypeError, match="weight"):
        lora_linear_jvp(x, x, w.float(), None, a32, a32, bb.float(), bb.float(), 1.0)


def test_dispatch_takes_the_fused_op_for_mixed_precision():
    x16 = torch.zeros(2, 4, dtype=torch.bfloat16)
    assert lora_kernel_supports(x16, x16.new_zeros(3, 4), torch.float32)
    assert lora_kernel_supports(x16.float(), x16.float().new_zeros(3, 4), torch.float32)
    assert not lora_kernel_supports(x16, x16.new_zeros(3, 4), torch.float64)
    assert not lora_kernel_supports(x16, x16.new_zeros(3, 4).float(), torch.float32)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", LOW)
def test_engine_never_falls_back_for_low_precision_base_with_fp32_lora(monkeypatch, device, dtype):
    unet64 = make_lora_unet(TINY_CONFIGS["cross_attention"], dtype=torch.float64)
    direction, inputs = random_direction(unet64), random_inputs(unet64, batch=1)
    sample, timestep, ehs, _ = inputs
    from test_jvp_engine import func_jvp
    want, want_dot = func_jvp(unet64, direction, inputs)

    # What the score model builds on CUDA: a low-precision UNet, its LoRA parameters in float32.
    unet = unet64.to(device, dtype)
    for p in lora_parameters(unet).values():
        p.data = p.data.float()

    def fallback(*args, **kwargs):
        raise AssertionError("the LoRA rule fell back to forward AD for fp16/bf16 + fp32 LoRA")

    monkeypatch.setattr(lora_rule, "_generic_forward", fallback)
    eps, eps_dot = lora_jvp(unet, {k: v.to(device, torch.float32) for k, v in direction.items()},
                            sample.to(device, dtype), timestep.to(device), ehs.to(device, dtype))
    assert eps_dot.dtype == dtype
    tol = 0.1 if dtype == torch.bfloat16 else 3e-2
    assert rel_err(eps.cpu(), want) <= tol
    assert rel_err(eps_dot.cpu(), want_dot) <= tol

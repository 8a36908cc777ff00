"""The engine's rules for arithmetic between a dual tensor and a tangent-free operand give PyTorch's
own forward-AD result bit for bit, leave every other case to PyTorch, and never share a tangent
between two duals."""
import pytest
import torch
import torch.autograd.forward_ad as fwAD

from l2vsd_ext.jvp.constant_operands import ConstantOperandMode, _combine

CASES = {
    "x + c": lambda x, c: x + c, "c + x": lambda x, c: c + x, "x - c": lambda x, c: x - c,
    "c - x": lambda x, c: c - x, "x * c": lambda x, c: x * c, "c * x": lambda x, c: c * x,
    "x / c": lambda x, c: x / c, "torch.add": lambda x, c: torch.add(x, c),
    "Tensor.sub": lambda x, c: x.sub(c), "torch.mul": lambda x, c: torch.mul(x, c),
    "torch.div": lambda x, c: torch.div(x, c), "true_divide": lambda x, c: torch.true_divide(x, c),
    "x + 1.5": lambda x, c: x + 1.5, "2 - x": lambda x, c: 2 - x, "3 * x": lambda x, c: 3 * x,
    "x / 0.7": lambda x, c: x / 0.7,
    # left to PyTorch: nonlinear, keyword arguments, both dual, broadcasting the tangent
    "c / x": lambda x, c: c / x, "add alpha": lambda x, c: torch.add(x, c, alpha=2.0),
    "div floor": lambda x, c: torch.div(x, c, rounding_mode="floor"), "x * x": lambda x, c: x * x,
    "broadcast": lambda x, c: x[:, :1] + c,
}


def _run(f, primal, tangent, const, mode):
    with torch.no_grad(), fwAD.dual_level():
        x = fwAD.make_dual(primal, tangent)
        if mode:
            with ConstantOperandMode():
                out = f(x, const)
        else:
            out = f(x, const)
        unpacked = fwAD.unpack_dual(out)
        return unpacked.primal.clone(), unpacked.tangent.clone()


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_same_bits_as_pytorch_forward_ad(name, dtype):
    # fresh inputs each run (conftest seeds torch and prints the seed for a replay)
    primal, tangent, const = (torch.randn(2, 3, 4, dtype=dtype) + 0.5 for _ in range(3))
    want = _run(CASES[name], primal, tangent, const, mode=False)
    got = _run(CASES[name], primal, tangent, const, mode=True)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_only_the_one_dual_operand_cases_are_taken():
    p, t, c = (torch.randn(3, 4) for _ in range(3))
    with torch.no_grad(), fwAD.dual_level():
        x = fwAD.make_dual(p, t)
        assert _combine("mul", x, c) is not None and _combine("mul", c, x) is not None
        assert _combine("div", c, x) is None        # nonlinear in x
        assert _combine("mul", x, x) is None        # both dual: PyTorch's own rule is fast
        assert _combine("add", p, c) is None        # neither dual
        assert _combine("add", x[:1], c) is None    # the tangent would need broadcasting
        assert _combine("add", x, c.double()) is None  # type promotion changes the dtype
        assert _combine("add", x, "text") is None   # not a number or a tensor


def test_tangents_are_not_shared():
    p, t, c = (torch.randn(5) for _ in range(3))
    with torch.no_grad(), fwAD.dual_level(), ConstantOperandMode():
        x = fwAD.make_dual(p, t)
        y = x + c
        y_tangent_before = fwAD.unpack_dual(y).tangent.clone()
        x.mul_(2.0)  # in place on x: y's tangent must not follow
        assert torch.equal(fwAD.unpack_dual(y).tangent, y_tangent_before)
        assert fwAD.unpack_dual(y).tangent.data_ptr() != fwAD.unpack_dual(x).tangent.data_ptr()


@pytest.mark.parametrize("last_layer_only", [False, True])
def test_the_engine_leaves_no_mode_behind_even_when_the_pass_raises(last_layer_only):
    from l2vsd_ext.jvp import lora_jvp
    from l2vsd_ext.jvp.tiny_unets import TINY_CONFIGS, make_lora_unet, random_direction, random_inputs

    unet = make_lora_unet(TINY_CONFIGS["cross_attention"], dtype=torch.float64)
    direction = random_direction(unet)
    sample, timestep, ehs, _ = random_inputs(unet)
    depth = torch._C._len_torch_function_stack()
    eps, eps_dot = lora_jvp(unet, direction, sample, timestep, ehs, last_layer_only=last_layer_only)
    assert torch._C._len_torch_function_stack() == depth and eps_dot.abs().sum() > 0

    def fail(module, args, output):
        raise RuntimeError("planted failure after the last LoRA layer")

    handle = unet.conv_out.register_forward_hook(fail)
    try:
        with pytest.raises(RuntimeError, match="planted failure"):
            lora_jvp(unet, direction, sample, timestep, ehs, last_layer_only=last_layer_only)
    finally:
        handle.remove()
    assert torch._C._len_torch_function_stack() == depth
    assert not any(m._forward_pre_hooks for m in unet.modules())  # the last-layer mode's hook is gone

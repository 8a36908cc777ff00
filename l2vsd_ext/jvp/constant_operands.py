"""Arithmetic between a dual tensor and an operand without a tangent (a Python number or a plain
tensor), computed as the primal op plus the tangent op, inside the engine's pass.

Why: PyTorch's forward AD gives the missing tangent an efficient zero tensor, and in torch 2.13
the zero tensor's ops run through Python reference decompositions: 100-400 µs per op, against
about 3 µs for the same op between two duals. A UNet makes dozens of such ops per pass (residuals
divided by `output_scale_factor`, the time embedding added to a dual activation), which was
most of the engine's overhead on small UNets (issue 23 §4). The rules are exact: they drop a
zero term, nothing else (x·0 and 0/c added to the tangent)."""
from __future__ import annotations

import contextlib

import torch
import torch.autograd.forward_ad as fwAD
from torch import nn
from torch.overrides import TorchFunctionMode

from .dual import split


def _parts(x):
    """(primal, tangent or None) of a tensor or a Python number (numbers have no tangent)."""
    if isinstance(x, torch.Tensor):
        return split(x)
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return x, None
    return None, None


def _combine(op: str, a, b):
    """The dual result of `a op b` when exactly one operand has a tangent, or None to leave the op
    to PyTorch (both or neither dual, a nonlinear case, or a result whose shape or dtype differs
    from the tangent's, which broadcasting or type promotion would need)."""
    a_p, a_t = _parts(a)
    b_p, b_t = _parts(b)
    if a_p is None or b_p is None or (a_t is None) == (b_t is None):
        return None
    # A fresh tangent for add/sub (a clone, not the operand's): an in-place op on one dual must
    # not change another's tangent.
    if op == "add":
        out_p, out_t = a_p + b_p, (a_t if a_t is not None else b_t).clone()
    elif op == "sub":
        out_p, out_t = a_p - b_p, (a_t.clone() if a_t is not None else -b_t)
    elif op == "mul":
        out_p = a_p * b_p
        out_t = a_t * b_p if a_t is not None else a_p * b_t
    elif op == "div":
        if a_t is None:  # c / x is not linear in x
            return None
        out_p, out_t = a_p / b_p, a_t / b_p
    else:
        raise ValueError(op)
    if not isinstance(out_p, torch.Tensor) or out_t.shape != out_p.shape or out_t.dtype != out_p.dtype:
        return None
    return fwAD.make_dual(out_p, out_t)


# func -> (op, whether the operands come swapped: x.__rsub__(c) is c - x)
_RULES = {}
for _op, _funcs, _reflected in (
        ("add", (torch.add, torch.Tensor.add, torch.Tensor.__add__), None),
        ("add", (torch.Tensor.__radd__,), True),
        ("sub", (torch.sub, torch.Tensor.sub, torch.Tensor.__sub__), None),
        ("sub", (torch.Tensor.__rsub__,), True),
        ("mul", (torch.mul, torch.Tensor.mul, torch.Tensor.__mul__), None),
        ("mul", (torch.Tensor.__rmul__,), True),
        ("div", (torch.div, torch.Tensor.div, torch.true_divide, torch.Tensor.__truediv__), None)):
    for _func in _funcs:
        _RULES[_func] = (_op, bool(_reflected))


class ConstantOperandMode(TorchFunctionMode):
    """Active for the engine's pass: the binary ops above with exactly one dual operand take the
    primal-plus-tangent path; everything else (in-place ops, keyword arguments such as alpha or
    rounding_mode, broadcasting of the tangent) runs unchanged."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        rule = _RULES.get(func)
        if rule is not None and not kwargs and len(args) == 2:
            op, reflected = rule
            a, b = (args[1], args[0]) if reflected else args
            out = _combine(op, a, b)
            if out is not None:
                return out
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def constant_operand_rules(first_tangent_module: nn.Module | None = None):
    """ConstantOperandMode for the engine's pass. With first_tangent_module (the last-layer mode's
    one LoRA layer), the mode starts when that module is called: no dual tensor exists before it,
    and the mode's per-op cost (about 1.5 µs on every torch call) would buy nothing there."""
    mode = ConstantOperandMode()
    if first_tangent_module is None:
        with mode:
            yield
        return
    entered = []

    def enter(module, args):
        if not entered:
            mode.__enter__()
            entered.append(True)

    handle = first_tangent_module.register_forward_pre_hook(enter)
    try:
        yield
    finally:
        handle.remove()
        if entered:
            mode.__exit__(None, None, None)

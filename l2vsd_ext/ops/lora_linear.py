"""LoRA linear layer with its forward-mode tangent: the fused (y, y_dot) op and an autograd.Function
whose jvp rule lets torch.func.jvp / forward-AD dual tensors differentiate through it."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .._ext import load_extension
from .jvp_support import kernels_support


def lora_linear_jvp(x, x_dot, weight, bias, lora_a, lora_a_dot, lora_b, lora_b_dot, scale):
    """(y, y_dot) for y = x W^T + b + scale (x A^T) B^T, with W and b constant.

    The base GEMM runs once on [x; x_dot] (MKL / cuBLAS); the rank-r part is one fused kernel.
    x_dot may be None (zero). Float32/float64 on CPU; float16/bfloat16/float32/float64 on CUDA.
    """
    return load_extension().lora_linear_jvp(x, x_dot, weight, bias, lora_a, lora_a_dot, lora_b,
                                            lora_b_dot, float(scale))


class LoraLinearFunction(torch.autograd.Function):
    """y = x W^T + b + scale (x A^T) B^T with backward and a jvp rule (any input's tangent)."""

    @staticmethod
    def forward(x, weight, bias, lora_a, lora_b, scale):
        return F.linear(x, weight, bias) + scale * F.linear(F.linear(x, lora_a), lora_b)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, bias, lora_a, lora_b, scale = inputs
        ctx.save_for_backward(x, weight, lora_a, lora_b)
        ctx.save_for_forward(x, weight, lora_a, lora_b)
        ctx.scale = scale
        ctx.has_bias = bias is not None

    @staticmethod
    def jvp(ctx, x_dot, weight_dot, bias_dot, lora_a_dot, lora_b_dot, _scale_dot):
        x, weight, lora_a, lora_b = ctx.saved_tensors
        s = ctx.scale
        zero_x = x_dot is None
        if not zero_x and weight_dot is None and bias_dot is None:
            # The common case (LoRA tangents, constant base layer): the fused kernel. Its primal
            # is discarded; the rank-r part of it is negligible next to the tangent's GEMM.
            a_dot = torch.zeros_like(lora_a) if lora_a_dot is None else lora_a_dot
            b_dot = torch.zeros_like(lora_b) if lora_b_dot is None else lora_b_dot
            if all(_fused_ok(t) for t in (x, x_dot, weight, lora_a, a_dot, lora_b, b_dot)):
                return lora_linear_jvp(x, x_dot, weight, None, lora_a, a_dot, lora_b, b_dot, s)[1]
        out = None
        u = F.linear(x, lora_a)

        def add(acc, term):
            return term if acc is None else acc + term

        if x_dot is not None:
            out = add(out, F.linear(x_dot, weight) + s * F.linear(F.linear(x_dot, lora_a), lora_b))
        if weight_dot is not None:
            out = add(out, F.linear(x, weight_dot))
        if bias_dot is not None:
            out = add(out, bias_dot.expand(*x.shape[:-1], bias_dot.shape[0]))
        if lora_a_dot is not None:
            out = add(out, s * F.linear(F.linear(x, lora_a_dot), lora_b))
        if lora_b_dot is not None:
            out = add(out, s * F.linear(u, lora_b_dot))
        if out is None:
            out = torch.zeros(*x.shape[:-1], weight.shape[0], dtype=x.dtype, device=x.device)
        return out

    @staticmethod
    def backward(ctx, grad_y):
        x, weight, lora_a, lora_b = ctx.saved_tensors
        s = ctx.scale
        u = F.linear(x, lora_a)
        g_u = F.linear(grad_y, lora_b.t()) * s
        grad_x = grad_w = grad_b = grad_a = grad_bb = None
        if ctx.needs_input_grad[0]:
            grad_x = F.linear(grad_y, weight.t()) + F.linear(g_u, lora_a.t())
        flat_g = grad_y.reshape(-1, grad_y.shape[-1])
        if ctx.needs_input_grad[1]:
            grad_w = flat_g.t() @ x.reshape(-1, x.shape[-1])
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = flat_g.sum(0)
        if ctx.needs_input_grad[3]:
            grad_a = g_u.reshape(-1, g_u.shape[-1]).t() @ x.reshape(-1, x.shape[-1])
        if ctx.needs_input_grad[4]:
            grad_bb = s * flat_g.t() @ u.reshape(-1, u.shape[-1])
        return grad_x, grad_w, grad_b, grad_a, grad_bb, None


def _fused_ok(x: torch.Tensor) -> bool:
    return kernels_support(x, "lora_linear_jvp")


def lora_linear(x, weight, bias, lora_a, lora_b, scale):
    """Differentiable LoRA linear layer (reverse and forward mode)."""
    return LoraLinearFunction.apply(x, weight, bias, lora_a, lora_b, float(scale))

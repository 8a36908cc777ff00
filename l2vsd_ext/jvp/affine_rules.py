"""Primal+tangent forwards for nn.Linear and nn.Conv1d/2d/3d without LoRA during the engine's pass.

Their weights carry no tangent, so the tangent is the same map without the bias applied to the
input tangent. PyTorch's forward AD would also evaluate the weight-tangent term on a materialised
zero tangent (one more GEMM or convolution per layer, about a third of the engine's non-attention
time on the benchmark UNet). A weight or bias that is itself a dual tensor (a LoRA conv's adapter
inside functional_call) falls back to the module's own forward under forward AD.

Primal: the module's own forward (bit for bit the plain forward's), except for convolutions on
small images, which run primal and tangent as one batch of 2B (see STACK_MAX_PIXELS)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .dual import join, split

# A convolution whose input has at most this many pixels (batch x spatial) runs on [x; x_dot] as
# one batch, then adds the bias to the primal half. oneDNN keeps the cores busier with the larger
# batch there: one thread, SD 2.1's 3x3 convs, stacked vs two calls: 0.65x at 8x8 (1280 channels),
# 0.83x at 16x16, 0.94x at 32x32 (1280), 0.99x at 32x32 (640), 1.02x at 64x64 (where the
# concatenation's copy is no longer paid back).
STACK_MAX_PIXELS = 1024


def _has_tangent(param) -> bool:
    return param is not None and split(param)[1] is not None


def _make_forward(module: nn.Module, original_forward, tangent_map, stacked=None):
    def forward(x):
        x_p, x_t = split(x)
        if x_t is None or _has_tangent(module.weight) or _has_tangent(module.bias):
            return original_forward(x)
        both = stacked(x_p, x_t) if stacked is not None else None
        if both is not None:
            return join(*both)
        return join(original_forward(x_p), tangent_map(x_t))
    return forward


def make_linear_forward(module: nn.Linear, original_forward):
    # No stacking: MKL's GEMMs gain nothing from twice the rows at SD's sizes (0.9-1.1x).
    return _make_forward(module, original_forward, lambda x_t: F.linear(x_t, module.weight))


def _stacked_conv(module: nn.modules.conv._ConvNd, x_p, x_t):
    """(y, y_dot) from one convolution of [x; x_dot], or None where stacking does not pay."""
    spatial_dims = module.weight.dim() - 2
    if (x_p.dim() != spatial_dims + 2 or x_t.shape != x_p.shape or x_t.dtype != x_p.dtype
            or math.prod(x_p.shape[2:]) * x_p.shape[0] > STACK_MAX_PIXELS):
        return None
    out = module._conv_forward(torch.cat([x_p, x_t]), module.weight, None)
    y, y_dot = out.split(x_p.shape[0])
    if module.bias is not None:
        y.add_(module.bias.view(1, -1, *([1] * spatial_dims)))
    return y, y_dot


def make_conv_forward(module: nn.modules.conv._ConvNd, original_forward):
    # _conv_forward applies the module's padding mode, which is linear, to the tangent as well.
    return _make_forward(module, original_forward,
                         lambda x_t: module._conv_forward(x_t, module.weight, None),
                         lambda x_p, x_t: _stacked_conv(module, x_p, x_t))


# Module types whose forward is exactly the stock one (a subclass that overrides forward keeps it).
AFFINE_RULES = {
    nn.Linear.forward: make_linear_forward,
    nn.Conv1d.forward: make_conv_forward,
    nn.Conv2d.forward: make_conv_forward,
    nn.Conv3d.forward: make_conv_forward,
}

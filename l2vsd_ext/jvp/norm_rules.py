"""Primal+tangent forwards for nn.GroupNorm and nn.LayerNorm during the engine's pass. Without a
tangent on the input (or on tensors the kernels do not take) the module's own forward runs."""
from __future__ import annotations

from torch import nn

from ..ops.jvp_support import kernels_support
from ..ops.norm_jvp import group_norm_jvp, layer_norm_jvp
from .dual import join, split


def _fusable(module, x_p, x_t, op):
    if x_t is None or not kernels_support(x_p, op) or x_t.dtype != x_p.dtype:
        return False
    return all(p is None or p.dtype == x_p.dtype
               for p in (module.weight, getattr(module, "bias", None)))


def make_group_norm_forward(module: nn.GroupNorm, original_forward):
    def forward(x):
        x_p, x_t = split(x)
        if not _fusable(module, x_p, x_t, "group_norm_jvp"):
            return original_forward(x)
        y, y_dot = group_norm_jvp(x_p, x_t, module.num_groups, module.weight, module.bias,
                                  module.eps)
        return join(y, y_dot)
    return forward


def make_layer_norm_forward(module: nn.LayerNorm, original_forward):
    def forward(x):
        x_p, x_t = split(x)
        if not _fusable(module, x_p, x_t, "layer_norm_jvp"):
            return original_forward(x)
        y, y_dot = layer_norm_jvp(x_p, x_t, module.normalized_shape, module.weight,
                                  getattr(module, "bias", None), module.eps)
        return join(y, y_dot)
    return forward

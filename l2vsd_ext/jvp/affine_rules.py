"""Primal+tangent forwards for nn.Linear and nn.Conv1d/2d/3d without LoRA during the engine's pass.

Their weights carry no tangent, so the tangent is the same map without the bias applied to the
input tangent. PyTorch's forward AD would also evaluate the weight-tangent term on a materialised
zero tangent (one more GEMM or convolution per layer, about a third of the engine's non-attention
time on the benchmark UNet). The primal runs the module's own forward, so it is bit for bit the
plain forward's. A weight or bias that is itself a dual tensor (a LoRA conv's adapter inside
functional_call) falls back to the module's own forward under forward AD."""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from .dual import join, split


def _has_tangent(param) -> bool:
    return param is not None and split(param)[1] is not None


def _make_forward(module: nn.Module, original_forward, tangent_map):
    def forward(x):
        x_p, x_t = split(x)
        if x_t is None or _has_tangent(module.weight) or _has_tangent(module.bias):
            return original_forward(x)
        return join(original_forward(x_p), tangent_map(x_t))
    return forward


def make_linear_forward(module: nn.Linear, original_forward):
    return _make_forward(module, original_forward, lambda x_t: F.linear(x_t, module.weight))


def make_conv_forward(module: nn.modules.conv._ConvNd, original_forward):
    # _conv_forward applies the module's padding mode, which is linear, to the tangent as well.
    return _make_forward(module, original_forward,
                         lambda x_t: module._conv_forward(x_t, module.weight, None))


# Module types whose forward is exactly the stock one (a subclass that overrides forward keeps it).
AFFINE_RULES = {
    nn.Linear.forward: make_linear_forward,
    nn.Conv1d.forward: make_conv_forward,
    nn.Conv2d.forward: make_conv_forward,
    nn.Conv3d.forward: make_conv_forward,
}

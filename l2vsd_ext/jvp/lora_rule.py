"""Primal+tangent forward for a peft LoRA layer during the engine's pass.

Fast path (plain peft lora.Linear, one vanilla adapter, no dropout in effect, no lora bias): the
fused op, base GEMM once on [x; x_dot]. Anything else (several adapters, dropout in training,
conv LoRA, DoRA and other variants): the layer's own forward under forward AD, with its adapter
parameters turned into dual tensors by functional_call."""
from __future__ import annotations

import torch
import torch.autograd.forward_ad as fwAD
from torch import nn

from ..ops.jvp_support import lora_kernel_supports
from ..ops.lora_linear import lora_linear_jvp
from .dual import join, split


def _fast_path_ok(layer: nn.Module, adapters: dict, x: torch.Tensor, args, kwargs) -> bool:
    from peft.tuners.lora import Linear as LoraLinear
    if args or kwargs or not isinstance(layer, LoraLinear) or len(adapters) != 1:
        return False
    if layer.merged or layer.disable_adapters or not isinstance(layer.base_layer, nn.Linear):
        return False
    if getattr(layer, "fan_in_fan_out", False):
        return False
    (adapter,) = adapters
    if adapter in getattr(layer, "lora_variant", {}) or "B_bias" in adapters[adapter]:
        return False
    dropout = layer.lora_dropout[adapter]
    if not isinstance(dropout, nn.Identity) and dropout.training and getattr(dropout, "p", 0) > 0:
        return False
    weight = layer.base_layer.weight
    lora_dtype = layer.lora_A[adapter].weight.dtype
    return lora_dtype == layer.lora_B[adapter].weight.dtype and lora_kernel_supports(
        x, weight, lora_dtype)


def make_lora_forward(layer: nn.Module, original_forward, tangents: dict, bypass: dict):
    """tangents: adapter -> {"A": tensor, "B": tensor[, "B_bias": tensor]} for this layer."""

    def forward(x, *args, **kwargs):
        if bypass.get("on"):
            return original_forward(x, *args, **kwargs)
        x_p, x_t = split(x)
        if _fast_path_ok(layer, tangents, x_p, args, kwargs):
            (adapter, tan), = tangents.items()
            base = layer.base_layer
            y, y_dot = lora_linear_jvp(x_p, x_t, base.weight, base.bias,
                                       layer.lora_A[adapter].weight, tan["A"],
                                       layer.lora_B[adapter].weight, tan["B"],
                                       layer.scaling[adapter])
            return join(y, y_dot)
        return _generic_forward(layer, x, args, kwargs, tangents, bypass)

    return forward


def _generic_forward(layer, x, args, kwargs, tangents, bypass):
    duals = {}
    for adapter, tan in tangents.items():
        duals[f"lora_A.{adapter}.weight"] = fwAD.make_dual(layer.lora_A[adapter].weight, tan["A"])
        duals[f"lora_B.{adapter}.weight"] = fwAD.make_dual(layer.lora_B[adapter].weight, tan["B"])
        if "B_bias" in tan:
            duals[f"lora_B.{adapter}.bias"] = fwAD.make_dual(layer.lora_B[adapter].bias, tan["B_bias"])
    bypass["on"] = True  # functional_call re-enters forward: run the layer's own code this time
    try:
        return torch.func.functional_call(layer, duals, (x, *args), kwargs, strict=False)
    finally:
        bypass["on"] = False

"""Primal+tangent forward for a plain nn.Linear whose own weight and bias carry a tangent during the
engine's pass (parameters outside the LoRA adapters that the lookahead also moves, such as the
score model's camera MLP):  y = x Wᵀ + b,  ẏ = ẋ Wᵀ + x Ẇᵀ + ḃ.

The primal is the module's own forward, bit for bit; the tangent needs one more GEMM on the
primal input (a camera MLP's is (batch, 16) or (batch, width): negligible next to the UNet)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .dual import join, split
from .lora_layers import parameter_by_name


def make_param_tangent_forward(module: nn.Linear, original_forward, tangents: dict):
    """tangents: {"weight": tensor or None, "bias": tensor or None} for this layer."""
    weight_dot, bias_dot = tangents.get("weight"), tangents.get("bias")

    def forward(x):
        x_p, x_t = split(x)
        y = original_forward(x_p)
        y_dot = None
        if weight_dot is not None:
            y_dot = F.linear(x_p, weight_dot, bias_dot)
        elif bias_dot is not None:
            y_dot = bias_dot.expand_as(y)
        if x_t is not None:
            from_input = F.linear(x_t, module.weight)
            y_dot = from_input if y_dot is None else y_dot + from_input
        return join(y, y_dot)
    return forward


def param_sites(model: nn.Module, direction: dict, named_modules: list | None = None) -> dict:
    """{module: {"weight": t, "bias": t}} for a direction over parameters of plain nn.Linear layers,
    or a ValueError naming the key that is not one. named_modules: list(model.named_modules()),
    where the caller has walked the model already (lora_jvp does, once per call)."""
    modules = dict(named_modules if named_modules is not None else model.named_modules())
    sites = {}
    for key, value in direction.items():
        owner, _, attr = key.rpartition(".")
        module = modules.get(owner)
        param = parameter_by_name(modules, key)
        if param is None:
            raise ValueError(f"lora_jvp: param_direction key '{key}' is not a parameter name of the model")
        if type(module).forward is not nn.Linear.forward or attr not in ("weight", "bias"):
            raise ValueError(f"lora_jvp: param_direction key '{key}' is not the weight or bias of a plain "
                             f"nn.Linear (its module is a {type(module).__name__})")
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"lora_jvp: param_direction['{key}'] must be a tensor, got {type(value).__name__}")
        for what, got, want in (("shape", tuple(value.shape), tuple(param.shape)),
                                ("dtype", value.dtype, param.dtype), ("device", value.device, param.device)):
            if got != want:
                raise ValueError(f"lora_jvp: param_direction['{key}'] has {what} {got}, the parameter has {want}")
        sites.setdefault(module, {})[attr] = value
    return sites

"""lora_jvp: exact forward-mode JVP of a LoRA UNet's noise prediction w.r.t. its LoRA parameters."""
from __future__ import annotations

import threading

import torch
import torch.autograd.forward_ad as fwAD
from torch import nn

from .constant_operands import constant_operand_rules
from .forward_order import last_site_in_forward_order
from .lora_layers import all_lora_parameter_names, check_direction, find_lora_sites
from .param_rule import param_sites
from .scope import engine_scope

# The engine patches the module for the duration of a call; one call at a time per process.
_LOCK = threading.RLock()


def lora_jvp(unet: nn.Module, direction: dict, sample: torch.Tensor, timestep, encoder_hidden_states,
             class_labels=None, last_layer_only: bool = False, param_direction: dict | None = None):
    """Returns (eps, eps_dot): unet(sample, timestep, encoder_hidden_states, class_labels).sample
    and its directional derivative w.r.t. the LoRA parameters in `direction` (keyed like
    unet.named_parameters()). last_layer_only: only the last LoRA layer in forward order gets a
    tangent, and every layer before it runs as a plain forward.
    param_direction: tangents of further parameters outside the LoRA adapters, each the weight or
    bias of a plain nn.Linear (the score model's camera MLP); not allowed with last_layer_only.

    Run eagerly: torch.compile may drop the custom jvp rules the engine relies on. The outputs are
    detached (the pass runs under no_grad; forward-mode AD does not need the autograd graph)."""
    if not isinstance(unet, nn.Module):
        raise ValueError(f"lora_jvp: argument 'unet' must be an nn.Module, got {type(unet).__name__}")
    # One walk of the module tree serves every lookup of the call (the walks were most of the
    # engine's overhead on small UNets).
    named_modules = list(unet.named_modules())
    sites = find_lora_sites(unet, named_modules)
    if not sites:
        raise ValueError("lora_jvp: the module has no active peft LoRA adapter (add one with "
                         "unet.add_adapter(LoraConfig(...)))")
    param_direction = param_direction or {}
    if not isinstance(param_direction, dict):
        raise ValueError("lora_jvp: argument 'param_direction' must be a dict of tensors keyed like "
                         f"named_parameters(), got {type(param_direction).__name__}")
    if param_direction and last_layer_only:
        raise ValueError("lora_jvp: 'param_direction' with last_layer_only: the last-layer tangent is "
                         "on the last LoRA layer only")
    lora_names = all_lora_parameter_names(unet, named_modules)
    clash = next((k for k in param_direction if k in lora_names), None)
    if clash is not None:
        raise ValueError(f"lora_jvp: param_direction key '{clash}' is a LoRA parameter: give it in 'direction'")
    extra_sites = param_sites(unet, param_direction, named_modules) if param_direction else {}
    with _LOCK:
        if last_layer_only:
            sites = [last_site_in_forward_order(unet, sites, sample, timestep,
                                                encoder_hidden_states, class_labels)]
        check_direction(unet, direction, sites, lora_names, named_modules)
        site_tangents = {s.module: {adapter: {role: direction[key] for role, key in keys.items()}
                                    for adapter, keys in s.keys.items()}
                         for s in sites}
        with (engine_scope(unet, site_tangents, extra_sites, [m for _, m in named_modules]),
              fwAD.dual_level(), torch.no_grad(),
              constant_operand_rules(sites[0].module if last_layer_only else None)):
            out = unet(sample, timestep, encoder_hidden_states, class_labels=class_labels,
                       return_dict=False)[0]
            unpacked = fwAD.unpack_dual(out)
            eps = unpacked.primal
            eps_dot = unpacked.tangent
            if eps_dot is None:  # no LoRA layer on the path to the output
                eps_dot = torch.zeros_like(eps)
    return eps, eps_dot

"""Finds the peft LoRA layers of a module and checks a direction against their parameters."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn


def _lora_layer_type():
    from peft.tuners.lora import LoraLayer
    return LoraLayer


@dataclass
class LoraSite:
    """One peft LoRA layer: its module name and, per active adapter, its parameter keys."""
    name: str
    module: nn.Module
    keys: dict = field(default_factory=dict)  # adapter -> {"A": key, "B": key, ["B_bias": key]}


def find_lora_sites(model: nn.Module, named_modules: list | None = None) -> list[LoraSite]:
    """LoRA layers with at least one active adapter, in registration order. named_modules:
    list(model.named_modules()), where the caller has walked the model already."""
    lora_layer = _lora_layer_type()
    sites = []
    for name, module in (named_modules if named_modules is not None else model.named_modules()):
        if not isinstance(module, lora_layer) or not hasattr(module, "lora_A"):
            continue
        site = LoraSite(name, module)
        for adapter in module.active_adapters:
            if adapter not in module.lora_A:
                continue
            prefix = f"{name}." if name else ""
            keys = {"A": f"{prefix}lora_A.{adapter}.weight", "B": f"{prefix}lora_B.{adapter}.weight"}
            if getattr(module.lora_B[adapter], "bias", None) is not None:
                keys["B_bias"] = f"{prefix}lora_B.{adapter}.bias"
            site.keys[adapter] = keys
        if site.keys:
            sites.append(site)
    return sites


def all_lora_parameter_names(model: nn.Module, named_modules: list | None = None) -> set[str]:
    """Every parameter that belongs to a LoRA adapter (active or not)."""
    lora_layer = _lora_layer_type()
    names = set()
    for name, module in (named_modules if named_modules is not None else model.named_modules()):
        if isinstance(module, lora_layer):
            prefix = f"{name}." if name else ""
            for attr in getattr(module, "adapter_layer_names", ()):
                container = getattr(module, attr, None)
                if isinstance(container, (nn.ModuleDict, nn.ParameterDict)):
                    for pname, _ in container.named_parameters():
                        names.add(f"{prefix}{attr}.{pname}")
    return names


def parameter_by_name(modules: dict, key: str):
    """The parameter named `key` (as named_parameters() names it), found through its module."""
    owner, _, attr = key.rpartition(".")
    module = modules.get(owner)
    return None if module is None else module._parameters.get(attr)


def check_direction(model: nn.Module, direction, required_sites: list[LoraSite],
                    lora_names: set[str] | None = None, named_modules: list | None = None) -> None:
    """ValueError naming the key for anything that is not a tangent of a LoRA parameter, a missing
    tangent of a required site, or a tangent whose shape, dtype or device differ from the parameter.
    lora_names, named_modules: all_lora_parameter_names(model) and list(model.named_modules()),
    where the caller has them already (each is a walk of the whole model)."""
    if not isinstance(direction, dict):
        raise ValueError(f"lora_jvp: argument 'direction' must be a dict of tensors keyed like "
                         f"named_parameters(), got {type(direction).__name__}")
    if named_modules is None:
        named_modules = list(model.named_modules())
    if lora_names is None:
        lora_names = all_lora_parameter_names(model, named_modules)
    modules = dict(named_modules)
    for key, value in direction.items():
        param = parameter_by_name(modules, key)
        if key not in lora_names:
            what = "a parameter of the model" if param is not None else "a parameter name of the model"
            raise ValueError(f"lora_jvp: direction key '{key}' is not a LoRA parameter "
                             f"({'it is ' + what + ' outside the LoRA adapters' if param is not None else 'not ' + what})")
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"lora_jvp: direction['{key}'] must be a tensor, got {type(value).__name__}")
        if value.shape != param.shape:
            raise ValueError(f"lora_jvp: direction['{key}'] has shape {tuple(value.shape)}, the "
                             f"parameter has {tuple(param.shape)}")
        if value.dtype != param.dtype:
            raise ValueError(f"lora_jvp: direction['{key}'] has dtype {value.dtype}, the parameter "
                             f"has {param.dtype}")
        if value.device != param.device:
            raise ValueError(f"lora_jvp: direction['{key}'] is on {value.device}, the parameter is "
                             f"on {param.device}")
    for site in required_sites:
        for keys in site.keys.values():
            for key in keys.values():
                if key not in direction:
                    raise ValueError(f"lora_jvp: direction is missing key '{key}' (a LoRA parameter)")

"""Scoped patching: installs the engine's rules (LoRA layers, attention processors, norms, plain
linear and conv layers) on a module tree and restores it exactly on exit
(instance forwards removed or put back, processors put back), even when the pass raises."""
from __future__ import annotations

import contextlib

from torch import nn

from .affine_rules import AFFINE_RULES
from .attention_processor import REPLACEABLE, JvpAttnProcessor
from .lora_rule import make_lora_forward
from .norm_rules import make_group_norm_forward, make_layer_norm_forward
from .param_rule import make_param_tangent_forward

_MISSING = object()


class _Patches:
    def __init__(self):
        self._forwards = []    # (module, previous instance forward or _MISSING)
        self._processors = []  # (attention module, previous processor)

    def set_forward(self, module: nn.Module, make):
        previous = module.__dict__.get("forward", _MISSING)
        original = module.forward  # bound method (or an existing instance override)
        self._forwards.append((module, previous))
        module.forward = make(original)

    def set_processor(self, attn: nn.Module, processor):
        self._processors.append((attn, attn.processor))
        # Plain assignment: Attention.set_processor would also log and touch other state.
        attn.processor = processor

    def restore(self):
        for attn, processor in reversed(self._processors):
            attn.processor = processor
        for module, previous in reversed(self._forwards):
            if previous is _MISSING:
                del module.forward
            else:
                module.forward = previous
        self._forwards.clear()
        self._processors.clear()


@contextlib.contextmanager
def engine_scope(unet: nn.Module, site_tangents: dict, param_tangents: dict | None = None,
                 modules: list | None = None):
    """site_tangents: LoRA module -> {adapter: {"A": t, "B": t, ...}}; only those get a rule
    (the others run their own forward without tangent). param_tangents: plain nn.Linear ->
    {"weight": t, "bias": t}, layers whose own parameters carry a tangent. modules:
    list(unet.modules()), where the caller has walked the tree already."""
    param_tangents = param_tangents or {}
    from diffusers.models.attention_processor import Attention

    patches = _Patches()
    try:
        for module, tangents in site_tangents.items():
            bypass = {"on": False}
            patches.set_forward(module, lambda orig, m=module, t=tangents, b=bypass:
                                make_lora_forward(m, orig, t, b))
        for module, tangents in param_tangents.items():
            patches.set_forward(module, lambda orig, m=module, t=tangents:
                                make_param_tangent_forward(m, orig, t))
        processor = JvpAttnProcessor()
        for module in (modules if modules is not None else unet.modules()):
            if isinstance(module, Attention):
                if type(getattr(module, "processor", None)).__name__ in REPLACEABLE:
                    patches.set_processor(module, processor)
            elif type(module).forward is nn.GroupNorm.forward:
                patches.set_forward(module, lambda orig, m=module: make_group_norm_forward(m, orig))
            elif type(module).forward is nn.LayerNorm.forward:
                patches.set_forward(module, lambda orig, m=module: make_layer_norm_forward(m, orig))
            elif (type(module).forward in AFFINE_RULES and module not in site_tangents
                  and module not in param_tangents):
                make = AFFINE_RULES[type(module).forward]
                patches.set_forward(module, lambda orig, m=module, mk=make: mk(m, orig))
        yield
    finally:
        patches.restore()

"""The last LoRA layer in forward order, found by a hooked forward on a tiny crop of the inputs
(cached per module and LoRA layout, so the cost is paid once)."""
from __future__ import annotations

import weakref

import torch
from torch import nn

from .lora_layers import LoraSite

_CACHE: "weakref.WeakKeyDictionary[nn.Module, tuple]" = weakref.WeakKeyDictionary()


def _crop_batch(t, n=1):
    return t[:n] if isinstance(t, torch.Tensor) and t.dim() > 0 else t


def last_site_in_forward_order(unet: nn.Module, sites: list[LoraSite], sample, timestep,
                               encoder_hidden_states, class_labels) -> LoraSite:
    signature = tuple((s.name, tuple(sorted(s.keys))) for s in sites)
    cached = _CACHE.get(unet)
    if cached is not None and cached[0] == signature:
        return next(s for s in sites if s.name == cached[1])
    calls = []
    hooks = [s.module.register_forward_hook(lambda m, i, o, name=s.name: calls.append(name))
             for s in sites]
    try:
        # The smallest spatial size the UNet accepts keeps this trace cheap; the call order of
        # layers does not depend on the resolution.
        factor = 2 ** int(getattr(unet, "num_upsamplers", 0))
        tiny = _crop_batch(sample)[..., :factor, :factor]
        with torch.no_grad():
            unet(tiny, _crop_batch(timestep), _crop_batch(encoder_hidden_states),
                 class_labels=_crop_batch(class_labels), return_dict=False)
    finally:
        for h in hooks:
            h.remove()
    if not calls:
        raise ValueError("lora_jvp: no LoRA layer ran in the forward pass")
    _CACHE[unet] = (signature, calls[-1])
    return next(s for s in sites if s.name == calls[-1])

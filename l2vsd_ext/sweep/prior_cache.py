"""Prior weights loaded once per worker process, not once per run.

A DiffusionPrior cannot itself serve two runs: the VSD-family modes add LoRA adapters and a camera
embedding to its UNet in place. So the cache keeps the loaded components, and each run gets a fresh
DiffusionPrior around a copy of the pristine UNet (a memory copy, much faster than reading the
weights again); the frozen VAE and text encoder are only ever read, so runs share them."""
from __future__ import annotations

import copy

_COMPONENTS: dict = {}


def prior_for(pretrained: str, dtype, device):
    """A DiffusionPrior for one run, from components cached under (pretrained, dtype, device)."""
    import torch

    from ..prior import DiffusionPrior
    from ..prior.diffusion import default_dtype
    from ..prior.loading import load_components

    device = torch.device(device)
    dtype = dtype or default_dtype(device)
    key = (pretrained, dtype, str(device))
    if key not in _COMPONENTS:
        unet, vae, text_encoder, tokenizer, scheduler = load_components(pretrained, dtype)
        for module in (unet, vae, text_encoder):
            module.to(device).eval().requires_grad_(False)
        _COMPONENTS[key] = (unet, vae, text_encoder, tokenizer, scheduler)
    unet, vae, text_encoder, tokenizer, scheduler = _COMPONENTS[key]
    return DiffusionPrior(copy.deepcopy(unet), vae, text_encoder, tokenizer, copy.deepcopy(scheduler),
                          device=device, dtype=dtype)


def cached_keys() -> list:
    return list(_COMPONENTS)


def clear() -> None:
    _COMPONENTS.clear()

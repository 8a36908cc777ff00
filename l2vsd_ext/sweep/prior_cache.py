"""Prior weights loaded once per worker process, not once per run.

A DiffusionPrior cannot itself serve two runs: the VSD-family modes add LoRA adapters and a camera
embedding to its UNet's modules in place. So the cache keeps the loaded components, and each run gets
a fresh DiffusionPrior around a new copy of the UNet's module tree that shares the loaded weight
tensors: they are frozen and never written (LoRA adds its own parameters beside them). Sharing, not
copying, the tensors also keeps a run bit for bit what it is with a fresh load: a copied tensor sits
at a different memory alignment, and CPU GEMM kernels round differently by alignment. The frozen
VAE and text encoder are only ever read, so runs share them as they are."""
from __future__ import annotations

import copy
import itertools

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
            if module is not None:  # a pixel-space prior has no VAE
                module.to(device).eval().requires_grad_(False)
        _COMPONENTS[key] = (unet, vae, text_encoder, tokenizer, scheduler)
    unet, vae, text_encoder, tokenizer, scheduler = _COMPONENTS[key]
    return DiffusionPrior(module_sharing_tensors(unet), vae, text_encoder, tokenizer,
                          copy.deepcopy(scheduler), device=device, dtype=dtype)


def module_sharing_tensors(module):
    """A copy of `module`'s module tree whose parameters and buffers are the original tensors."""
    shared = {id(t): t for t in itertools.chain(module.parameters(), module.buffers())}
    return copy.deepcopy(module, memo=shared)


def cached_keys() -> list:
    return list(_COMPONENTS)


def clear() -> None:
    _COMPONENTS.clear()

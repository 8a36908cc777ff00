"""Which tensors the JVP-engine kernels accept: float32/float64 on CPU, float16/bfloat16/float32/
float64 on CUDA, and only when the compiled extension loads (else callers use PyTorch's own AD)."""
from __future__ import annotations

import functools

import torch

from .._ext import ExtensionUnavailable, load_extension

_CPU_DTYPES = (torch.float32, torch.float64)
_CUDA_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


@functools.lru_cache(maxsize=None)
def _has(name: str) -> bool:
    try:
        return hasattr(load_extension(), name)
    except ExtensionUnavailable:
        return False


def _is_functorch_wrapped(x: torch.Tensor) -> bool:
    # Inside torch.func transforms tensors may be wrappers without storage; the kernels need data.
    check = getattr(torch._C._functorch, "is_functorch_wrapped_tensor", None)
    return bool(check(x)) if check is not None else False


def kernels_support(x: torch.Tensor, op: str) -> bool:
    """True when the compiled op `op` exists and handles x's device and dtype."""
    if not _has(op) or _is_functorch_wrapped(x):
        return False
    if x.device.type == "cpu":
        return x.dtype in _CPU_DTYPES
    if x.device.type == "cuda":
        return x.dtype in _CUDA_DTYPES and bool(load_extension().build_info()["cuda"])
    return False


_LOW_PRECISION = (torch.float16, torch.bfloat16)


def lora_kernel_supports(x: torch.Tensor, weight: torch.Tensor, lora_dtype: torch.dtype) -> bool:
    """True when the fused lora_linear_jvp op takes this combination: x and the base weight share
    a dtype the kernels handle, and the LoRA factors have that dtype or, with a float16/bfloat16
    activation, float32 (mixed precision: fp16 UNet, fp32 LoRA, as the score model runs on CUDA;
    on CPU the rank-r part of that case runs through ATen inside the op)."""
    if x.dtype != weight.dtype or x.device != weight.device or not _has("lora_linear_jvp"):
        return False
    if _is_functorch_wrapped(x):
        return False
    if x.dtype in _LOW_PRECISION and lora_dtype == torch.float32:
        if x.device.type == "cpu":
            return True
        return x.device.type == "cuda" and bool(load_extension().build_info()["cuda"])
    return lora_dtype == x.dtype and kernels_support(x, "lora_linear_jvp")

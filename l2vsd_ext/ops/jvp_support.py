"""Which tensors the JVP-engine kernels accept: float32/float64 on CPU, float16/bfloat16/float32/
float64 on CUDA, and only when the compiled extension loads and, on CUDA, has code for the card's
architecture (else callers use PyTorch's own AD)."""
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


def _arch_version(arch: str) -> tuple[int, int]:
    """'8.6' / '9.0+PTX' / '9.0a' -> (8, 6) / (9, 0) / (9, 0)."""
    major, minor = arch.split("+")[0].split(".")
    return int(major), int("".join(ch for ch in minor if ch.isdigit()) or 0)


def arch_list_runs_on(capability: tuple[int, int], arch_list) -> bool:
    """Whether a build for TORCH_CUDA_ARCH_LIST entries `arch_list` has code a card of compute
    capability `capability` can run: SASS for X.Y runs on X.Z with Z >= Y (same major), and
    "+PTX" entries are JIT-compiled by the driver for any newer card."""
    for arch in arch_list:
        built = _arch_version(arch)
        if built[0] == capability[0] and built[1] <= capability[1]:
            return True
        if arch.endswith("+PTX") and built <= tuple(capability):
            return True
    return False


@functools.lru_cache(maxsize=None)
def cuda_device_supported(index: int) -> bool:
    """True when this build's CUDA kernels have code for cuda:`index` (a T4 against a build
    without 7.5, say, is refused here and callers fall back, instead of failing at launch)."""
    info = load_extension().build_info()
    if not info["cuda"]:
        return False
    return arch_list_runs_on(tuple(torch.cuda.get_device_capability(index)), info["cuda_arch_list"])


def _cuda_index(device: torch.device) -> int:
    return device.index if device.index is not None else torch.cuda.current_device()


def kernels_support(x: torch.Tensor, op: str) -> bool:
    """True when the compiled op `op` exists and handles x's device (and, on CUDA, the card's
    architecture) and dtype."""
    if not _has(op) or _is_functorch_wrapped(x):
        return False
    if x.device.type == "cpu":
        return x.dtype in _CPU_DTYPES
    if x.device.type == "cuda":
        return x.dtype in _CUDA_DTYPES and cuda_device_supported(_cuda_index(x.device))
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
        return x.device.type == "cuda" and cuda_device_supported(_cuda_index(x.device))
    return lora_dtype == x.dtype and kernels_support(x, "lora_linear_jvp")

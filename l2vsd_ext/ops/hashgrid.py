"""Multi-resolution hash-grid encoding (tiny-cuda-nn layout) as an autograd op and an nn.Module."""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from .._ext import load_extension

OUT_OF_RANGE_MODES = ("error", "clamp")


class HashGridConfig(NamedTuple):
    n_input_dims: int = 3
    n_levels: int = 16
    n_features_per_level: int = 2
    log2_hashmap_size: int = 19
    base_resolution: int = 16
    per_level_scale: float = 1.447269237440378


class LevelLayout(NamedTuple):
    scale: float
    resolution: int
    offset: int  # first entry of the level in the table
    size: int  # entries of the level


def hashgrid_layout(config: HashGridConfig) -> list[LevelLayout]:
    """Per-level layout exactly as the kernels compute it."""
    return [LevelLayout(*lv) for lv in load_extension().hashgrid_layout(*config)]


def n_params(config: HashGridConfig) -> int:
    last = hashgrid_layout(config)[-1]
    return (last.offset + last.size) * config.n_features_per_level


class _HashGridFunction(torch.autograd.Function):
    @staticmethod
    def forward(x, params, config, clamp):
        return load_extension().hashgrid_forward(x, params, *config, clamp)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, params, config, clamp = inputs
        ctx.save_for_backward(x, params)
        ctx.config = config
        ctx.clamp = clamp

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        x, params = ctx.saved_tensors
        need_x, need_params = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_params, grad_x = load_extension().hashgrid_backward(
            grad_out, x, params, *ctx.config, ctx.clamp, need_params, need_x)
        return grad_x, grad_params, None, None


def _check_range(x: torch.Tensor) -> None:
    if x.numel() == 0:
        return
    lo, hi = torch.aminmax(x.detach())
    # NaN makes both comparisons false, so it is reported here too.
    if not (bool(lo >= 0) and bool(hi <= 1)):
        raise ValueError(
            f"hashgrid_encode: argument 'x' must lie in [0, 1] (got min {lo.item():.6g}, "
            f"max {hi.item():.6g}); normalise positions by the scene's bounding box, or pass "
            "out_of_range='clamp'")


def hashgrid_encode(x: torch.Tensor, params: torch.Tensor, config: HashGridConfig = HashGridConfig(),
                    out_of_range: str = "error") -> torch.Tensor:
    """Encodes points x (N, n_input_dims) in [0,1] into (N, n_levels * n_features_per_level).

    out_of_range="error" raises ValueError for coordinates outside [0,1] or NaN (one reduction,
    which on CUDA synchronises); "clamp" clamps them in the kernel (zero input-gradient there).
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"hashgrid_encode: argument 'x' must be a torch.Tensor, got {type(x).__name__}")
    if not isinstance(params, torch.Tensor):
        raise TypeError("hashgrid_encode: argument 'params' must be a torch.Tensor, "
                        f"got {type(params).__name__}")
    if out_of_range not in OUT_OF_RANGE_MODES:
        raise ValueError(f"hashgrid_encode: argument 'out_of_range' must be one of "
                         f"{OUT_OF_RANGE_MODES}, got {out_of_range!r}")
    if x.dim() != 2 or x.shape[1] != config.n_input_dims:
        raise ValueError(f"hashgrid_encode: argument 'x' must have shape (N, {config.n_input_dims}), "
                         f"got {tuple(x.shape)}")
    if x.device.type not in ("cpu", "cuda"):
        raise ValueError(f"hashgrid_encode: argument 'x' is on {x.device}; only CPU and CUDA tensors "
                         "are supported")
    if out_of_range == "error" and x.is_floating_point():
        _check_range(x)
    return _HashGridFunction.apply(x, params, tuple(config), out_of_range == "clamp")


class HashGridEncoding(nn.Module):
    """tiny-cuda-nn-compatible HashGrid encoding; `params` is the flat table in its layout."""

    def __init__(self, n_input_dims: int = 3, n_levels: int = 16, n_features_per_level: int = 2,
                 log2_hashmap_size: int = 19, base_resolution: int = 16,
                 per_level_scale: float = 1.447269237440378, out_of_range: str = "error",
                 dtype: torch.dtype = torch.float32, device=None):
        super().__init__()
        if out_of_range not in OUT_OF_RANGE_MODES:
            raise ValueError(f"HashGridEncoding: argument 'out_of_range' must be one of "
                             f"{OUT_OF_RANGE_MODES}, got {out_of_range!r}")
        if not (isinstance(per_level_scale, (int, float)) and math.isfinite(per_level_scale)):
            raise ValueError(f"HashGridEncoding: argument 'per_level_scale' must be a finite number, "
                             f"got {per_level_scale!r}")
        self.config = HashGridConfig(int(n_input_dims), int(n_levels), int(n_features_per_level),
                                     int(log2_hashmap_size), int(base_resolution),
                                     float(per_level_scale))
        self.out_of_range = out_of_range
        table = torch.empty(n_params(self.config), dtype=dtype, device=device)
        self.params = nn.Parameter(table.uniform_(-1e-4, 1e-4))

    @property
    def n_output_dims(self) -> int:
        return self.config.n_levels * self.config.n_features_per_level

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return hashgrid_encode(x, self.params, self.config, self.out_of_range)

    def extra_repr(self) -> str:
        c = self.config
        return (f"n_input_dims={c.n_input_dims}, n_levels={c.n_levels}, "
                f"n_features_per_level={c.n_features_per_level}, "
                f"log2_hashmap_size={c.log2_hashmap_size}, base_resolution={c.base_resolution}, "
                f"per_level_scale={c.per_level_scale}, params={self.params.numel()}")

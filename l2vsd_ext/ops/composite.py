"""Volume-rendering compositing in nerfacc's packed layout, as autograd ops over the compiled
kernels: `render_weight_from_density` and `accumulate_along_rays` (nerfacc's names and argument
order). Samples are sorted by ray; each op also accepts the batched layout (n_rays, n_samples)."""
from __future__ import annotations

import functools
import threading
import weakref
from typing import NamedTuple, Optional

import torch
from torch.autograd.function import once_differentiable

from .._ext import load_extension


def _require_tensor(value, op: str, name: str) -> None:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{op}: argument '{name}' must be a torch.Tensor, got {type(value).__name__}")


def _batched_layout(shape: torch.Size, device):
    """(ray_indices, offsets) of the batched layout (n_rays, n_samples): valid by construction."""
    return _cached_batched_layout(int(shape[0]), int(shape[1]), torch.device(device))


@functools.lru_cache(maxsize=2)
def _cached_batched_layout(n_rays: int, n_samples: int, device: torch.device):
    # Every call of a training step has the same batched shape; rebuilding the (n_rays *
    # n_samples) int64 indices twice per step cost about as much as a compositing kernel. The
    # tensors never leave this module (ops read them and autograd saves them), so sharing is safe.
    ray_indices = torch.arange(n_rays, device=device).repeat_interleave(n_samples)
    offsets = torch.arange(0, n_rays * n_samples + 1, max(n_samples, 1), device=device)
    if n_samples == 0:
        offsets = torch.zeros(n_rays + 1, dtype=torch.long, device=device)
    return ray_indices, offsets


class _PackedLayoutCache:
    """The offsets of the last packed layout seen. A render step passes the same ray_indices to
    render_weight_from_density and then accumulate_along_rays; checking them and finding the ray
    offsets is a pass over every sample, so the second call reuses the first one's result. A hit
    needs the very same tensor object, unchanged (autograd's version counter, data pointer, size),
    and the same n_rays; a layout checked without validation never serves a validating call."""

    def __init__(self):
        self._key = None
        self._ray_indices = None  # weak reference: the cache never keeps a layout alive
        self._offsets = None

    def offsets(self, ray_indices: torch.Tensor, n_rays: int, validate: bool, op: str):
        key = (ray_indices._version, ray_indices.data_ptr(), ray_indices.numel(),
               ray_indices.device, n_rays)
        cached = self._ray_indices() if self._ray_indices is not None else None
        if cached is ray_indices and self._key[:-1] == key and (self._key[-1] or not validate):
            return self._offsets
        offsets = load_extension().packed_offsets(ray_indices, n_rays, validate, op)
        self._key = key + (validate or ray_indices.device.type == "cpu",)
        self._ray_indices = weakref.ref(ray_indices)
        self._offsets = offsets
        return offsets


_packed_layouts = threading.local()


def _packed_offsets(ray_indices: torch.Tensor, n_rays: int, validate: bool, op: str):
    if not hasattr(_packed_layouts, "cache"):
        _packed_layouts.cache = _PackedLayoutCache()
    return _packed_layouts.cache.offsets(ray_indices, n_rays, validate, op)


def _batched_interval_shape(t_starts: torch.Tensor, t_ends: torch.Tensor, sigmas: torch.Tensor,
                            op: str) -> torch.Size:
    """(n_rays, n_samples) of a batched call (ray_indices=None), after checking that the sample
    intervals and sigmas are 2-D and share it."""
    if sigmas.dim() != 2:
        raise ValueError(f"{op}: without 'ray_indices' the inputs must be batched "
                         f"(n_rays, n_samples), got sigmas of shape {tuple(sigmas.shape)}")
    shape = sigmas.shape
    if t_starts.shape != shape or t_ends.shape != shape:
        raise ValueError(f"{op}: 't_starts', 't_ends' and 'sigmas' must share one shape, got "
                         f"{tuple(t_starts.shape)}, {tuple(t_ends.shape)}, {tuple(shape)}")
    return shape


def _require_same_layout(ray_indices: torch.Tensor, like: torch.Tensor, op: str, name: str) -> None:
    # Before the layout pass, so a mismatch is reported against the samples, not as a bad layout.
    if ray_indices.device != like.device:
        raise ValueError(f"{op}: argument 'ray_indices' is on {ray_indices.device} but '{name}' is "
                         f"on {like.device}; move them to one device")
    if like.dim() >= 1 and ray_indices.dim() == 1 and ray_indices.shape[0] != like.shape[0]:
        raise ValueError(f"{op}: argument 'ray_indices' must have shape (n_samples,) with "
                         f"n_samples={like.shape[0]} (from '{name}'), got {tuple(ray_indices.shape)}")


def _infer_n_rays(ray_indices: torch.Tensor, n_rays: Optional[int]) -> int:
    if n_rays is not None:
        return int(n_rays)
    # nerfacc's fallback; costs a device sync and drops trailing rays without samples.
    return int(ray_indices.max().item()) + 1 if ray_indices.numel() else 0


class _RenderWeightFunction(torch.autograd.Function):
    # offsets: the checked per-ray layout (_packed_offsets / _batched_layout), reused by backward.
    @staticmethod
    def forward(t_starts, t_ends, sigmas, ray_indices, offsets):
        return tuple(load_extension().render_weights_forward(
            t_starts, t_ends, sigmas, ray_indices, offsets.numel() - 1, False, offsets))

    @staticmethod
    def setup_context(ctx, inputs, output):
        t_starts, t_ends, _, ray_indices, offsets = inputs
        ctx.save_for_backward(t_starts, t_ends, ray_indices, offsets, *output)
        # Unused outputs (usually transmittance and alphas) then arrive as None, which the kernel
        # reads as zero, instead of as materialised zero tensors.
        ctx.set_materialize_grads(False)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_weights, grad_transmittance, grad_alphas):
        t_starts, t_ends, ray_indices, offsets, weights, transmittance, alphas = ctx.saved_tensors
        grad_sigmas = None
        if ctx.needs_input_grad[2] and not (grad_weights is None and grad_transmittance is None
                                            and grad_alphas is None):
            grad_sigmas = load_extension().render_weights_backward(
                grad_weights, grad_transmittance, grad_alphas, t_starts, t_ends, ray_indices,
                offsets.numel() - 1, weights, transmittance, alphas, offsets)
        return None, None, grad_sigmas, None, None


def render_weight_from_density(t_starts: torch.Tensor, t_ends: torch.Tensor, sigmas: torch.Tensor,
                               ray_indices: Optional[torch.Tensor] = None,
                               n_rays: Optional[int] = None, check_layout: bool = True):
    """(weights, transmittance, alphas) per sample: alpha = 1 - exp(-sigma (t_end - t_start)),
    T_i = prod_{j<i} (1 - alpha_j), w = T alpha. Packed (n_samples,) tensors with sorted
    `ray_indices`, or the batched layout (n_rays, n_samples) with ray_indices=None. Differentiable
    w.r.t. sigmas (the sample intervals come from the sampler and carry no gradient).
    check_layout=False skips the range/order check of ray_indices on CUDA (host syncs on every
    call): only for layouts valid by construction, such as the sampler's output."""
    op = "render_weight_from_density"
    for name, value in (("t_starts", t_starts), ("t_ends", t_ends), ("sigmas", sigmas)):
        _require_tensor(value, op, name)
    if ray_indices is None:
        shape = _batched_interval_shape(t_starts, t_ends, sigmas, op)
        indices, offsets = _batched_layout(shape, sigmas.device)
        outputs = _RenderWeightFunction.apply(t_starts.reshape(-1), t_ends.reshape(-1),
                                              sigmas.reshape(-1), indices, offsets)
        return tuple(o.view(shape) for o in outputs)
    _require_tensor(ray_indices, op, "ray_indices")
    _require_same_layout(ray_indices, sigmas, op, "sigmas")
    offsets = _packed_offsets(ray_indices, _infer_n_rays(ray_indices, n_rays), bool(check_layout),
                              op)
    return _RenderWeightFunction.apply(t_starts, t_ends, sigmas, ray_indices, offsets)


class _AccumulateFunction(torch.autograd.Function):
    @staticmethod
    def forward(weights, values, ray_indices, offsets):
        return load_extension().accumulate_forward(weights, values, ray_indices,
                                                   offsets.numel() - 1, False, offsets)

    @staticmethod
    def setup_context(ctx, inputs, output):
        weights, values, ray_indices, offsets = inputs
        ctx.save_for_backward(weights, values, ray_indices, offsets)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        weights, values, ray_indices, offsets = ctx.saved_tensors
        need_w, need_v = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_w, grad_v = load_extension().accumulate_backward(
            grad_out, weights, values, ray_indices, offsets.numel() - 1, need_w, need_v, offsets)
        return grad_w, grad_v, None, None


def accumulate_along_rays(weights: torch.Tensor, values: Optional[torch.Tensor] = None,
                          ray_indices: Optional[torch.Tensor] = None,
                          n_rays: Optional[int] = None, check_layout: bool = True) -> torch.Tensor:
    """Per-ray sum of w_i * values_i -> (n_rays, C); values=None sums the weights (opacity,
    (n_rays, 1)). Packed: weights (n_samples,), values (n_samples, C), sorted ray_indices.
    Batched: weights (n_rays, n_samples), values (n_rays, n_samples, C), ray_indices=None.
    check_layout: as for render_weight_from_density."""
    op = "accumulate_along_rays"
    _require_tensor(weights, op, "weights")
    if values is not None:
        _require_tensor(values, op, "values")
    if ray_indices is None:
        if weights.dim() != 2:
            raise ValueError(f"{op}: without 'ray_indices' the weights must be batched "
                             f"(n_rays, n_samples), got shape {tuple(weights.shape)}")
        if values is not None and (values.dim() != 3 or values.shape[:2] != weights.shape):
            raise ValueError(f"{op}: batched 'values' must have shape (n_rays, n_samples, C) "
                             f"matching weights {tuple(weights.shape)}, got {tuple(values.shape)}")
        indices, offsets = _batched_layout(weights.shape, weights.device)
        flat_values = None if values is None else values.reshape(-1, values.shape[-1])
        return _AccumulateFunction.apply(weights.reshape(-1), flat_values, indices, offsets)
    _require_tensor(ray_indices, op, "ray_indices")
    _require_same_layout(ray_indices, weights, op, "weights")
    offsets = _packed_offsets(ray_indices, _infer_n_rays(ray_indices, n_rays), bool(check_layout),
                              op)
    return _AccumulateFunction.apply(weights, values, ray_indices, offsets)


class _CompositeFunction(torch.autograd.Function):
    """The fused kernels (CPU and CUDA): one sweep per ray forward, one backward (the weights are
    recomputed from the sigmas, not stored)."""

    @staticmethod
    def forward(t_starts, t_ends, sigmas, values, ray_indices, offsets):
        return load_extension().composite_forward(t_starts, t_ends, sigmas, values, ray_indices,
                                                  offsets.numel() - 1, False, offsets)[0]

    @staticmethod
    def setup_context(ctx, inputs, output):
        t_starts, t_ends, sigmas, values, ray_indices, offsets = inputs
        ctx.save_for_backward(t_starts, t_ends, sigmas, values, ray_indices, offsets, output)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        t_starts, t_ends, sigmas, values, ray_indices, offsets, out = ctx.saved_tensors
        need_s, need_v = ctx.needs_input_grad[2], ctx.needs_input_grad[3]
        grad_s, grad_v = load_extension().composite_backward(
            grad_out, out, t_starts, t_ends, sigmas, values, ray_indices, offsets.numel() - 1,
            need_s, need_v, offsets)
        return None, None, grad_s, grad_v, None, None


class _CompositeDepthFunction(torch.autograd.Function):
    """The fused kernels with the depth spread: (out, depth_stats (n_rays, 3)), the stats being
    (sum w, mean of t_mid - t_ref, variance of t_mid) under the normalised weights, t_ref the
    ray's first sample midpoint (composite.h). Differentiable w.r.t. sigmas (all outputs) and
    values (out)."""

    @staticmethod
    def forward(t_starts, t_ends, sigmas, values, ray_indices, offsets):
        return tuple(load_extension().composite_forward(
            t_starts, t_ends, sigmas, values, ray_indices, offsets.numel() - 1, False, offsets,
            True))

    @staticmethod
    def setup_context(ctx, inputs, output):
        t_starts, t_ends, sigmas, values, ray_indices, offsets = inputs
        ctx.save_for_backward(t_starts, t_ends, sigmas, values, ray_indices, offsets, *output)
        ctx.set_materialize_grads(False)  # an unused output's gradient arrives as None

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out, grad_stats):
        t_starts, t_ends, sigmas, values, ray_indices, offsets, out, stats = ctx.saved_tensors
        need_s, need_v = ctx.needs_input_grad[2], ctx.needs_input_grad[3]
        if grad_out is None:
            grad_out = torch.zeros_like(out)
        grad_s, grad_v = load_extension().composite_backward(
            grad_out, out, t_starts, t_ends, sigmas, values, ray_indices, offsets.numel() - 1,
            need_s, need_v, offsets, None if grad_stats is None else stats, grad_stats)
        return None, None, grad_s, grad_v, None, None


class CompositeWithZVariance(NamedTuple):
    """composite_along_rays(..., z_variance=True): the per-ray sums (n_rays, C), and per ray
    (n_rays,) the z-variance and the opacity (sum of the weights) that selects the rays it is
    averaged over (scene.regularizers.z_variance_loss)."""
    sums: torch.Tensor
    z_variance: torch.Tensor
    opacity: torch.Tensor


def composite_along_rays(t_starts: torch.Tensor, t_ends: torch.Tensor, sigmas: torch.Tensor,
                         values: torch.Tensor, ray_indices: Optional[torch.Tensor] = None,
                         n_rays: Optional[int] = None, check_layout: bool = True,
                         z_variance: bool = False):
    """accumulate_along_rays(render_weight_from_density(...)[0], values, ...) in one op: the
    per-ray sums (n_rays, C) of w_i * values_i. Packed: (n_samples,) intervals and sigmas,
    values (n_samples, C), sorted ray_indices. Batched: (n_rays, n_samples) and
    (n_rays, n_samples, C) with ray_indices=None. Differentiable w.r.t. sigmas and values.
    One fused kernel (CPU and CUDA) reads each sample once forward and once backward and stores
    no per-sample weights. check_layout: as for render_weight_from_density.

    z_variance=True (HiFA's regulariser) returns CompositeWithZVariance(sums, z_variance,
    opacity) instead: per ray, with normalised weights w_i / sum w and sample midpoints t_i,
    z_variance = sum_i (w_i / sum w) (t_i - mu)^2 around mu = sum_i (w_i / sum w) t_i (0 for a ray
    with no weight), computed in the same sweep; its gradient reaches the sigmas (t carries
    none). It can be a rounding error below 0. False (the default) is the op without it, bit for
    bit."""
    op = "composite_along_rays"
    for name, value in (("t_starts", t_starts), ("t_ends", t_ends), ("sigmas", sigmas),
                        ("values", values)):
        _require_tensor(value, op, name)
    if ray_indices is None:
        shape = _batched_interval_shape(t_starts, t_ends, sigmas, op)
        if values.dim() != 3 or values.shape[:2] != shape:
            raise ValueError(f"{op}: batched 'values' must have shape (n_rays, n_samples, C) "
                             f"matching sigmas {tuple(shape)}, got {tuple(values.shape)}")
        indices, offsets = _batched_layout(shape, sigmas.device)
        flat = (t_starts.reshape(-1), t_ends.reshape(-1), sigmas.reshape(-1),
                values.reshape(-1, values.shape[-1]))
    else:
        _require_tensor(ray_indices, op, "ray_indices")
        _require_same_layout(ray_indices, sigmas, op, "sigmas")
        indices = ray_indices
        offsets = _packed_offsets(ray_indices, _infer_n_rays(ray_indices, n_rays),
                                  bool(check_layout), op)
        flat = (t_starts, t_ends, sigmas, values)
    if not z_variance:
        return _CompositeFunction.apply(*flat, indices, offsets)
    sums, stats = _CompositeDepthFunction.apply(*flat, indices, offsets)
    return CompositeWithZVariance(sums, stats[:, 2], stats[:, 0])

"""Group norm and layer norm with their forward-mode tangents (affine parameters held constant)."""
from __future__ import annotations

import math

from .._ext import load_extension


def group_norm_jvp(x, x_dot, num_groups, weight=None, bias=None, eps=1e-5):
    """(y, y_dot) of F.group_norm(x, num_groups, weight, bias, eps); x_dot None means zero."""
    return load_extension().group_norm_jvp(x, x_dot, int(num_groups), weight, bias, float(eps))


def layer_norm_jvp(x, x_dot, normalized_shape, weight=None, bias=None, eps=1e-5):
    """(y, y_dot) of F.layer_norm(x, normalized_shape, weight, bias, eps); x_dot None means zero."""
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if tuple(x.shape[x.dim() - len(shape):]) != shape:
        raise ValueError(f"layer_norm_jvp: argument 'normalized_shape' {shape} must match the "
                         f"trailing dimensions of x {tuple(x.shape)}")
    return load_extension().layer_norm_jvp(x, x_dot, math.prod(shape), weight, bias, float(eps))

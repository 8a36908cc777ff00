"""Bilinear resize with TensorFlow 1.x's `tf.image.resize_bilinear` arithmetic (align_corners=False,
no half-pixel centres). The reference FID Inception was run on images resized this way; PyTorch's
F.interpolate samples at half-pixel centres instead, which shifts Inception features measurably."""
from __future__ import annotations

import torch


def _source_positions(in_size: int, out_size: int, dtype: torch.dtype, device):
    """For each output index: (lower source index, upper source index, weight of the upper one)."""
    # TF1 keeps the scale in float32 and samples at out_index * scale (no half-pixel offset).
    scale = torch.tensor(in_size / out_size, dtype=torch.float32).to(dtype)
    position = torch.arange(out_size, dtype=dtype, device=device) * scale
    lower = position.long()  # positions are >= 0, so truncation is floor
    upper = (lower + 1).clamp_max(in_size - 1)
    return lower, upper, position - lower.to(dtype)


def resize_bilinear_tf1(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """images: (N, C, H, W) floating point -> (N, C, size[0], size[1]) in the same dtype."""
    if images.dim() != 4 or not images.is_floating_point():
        raise ValueError(f"resize_bilinear_tf1: 'images' must be a floating (N, C, H, W) tensor, "
                         f"got {images.dtype} of shape {tuple(images.shape)}")
    rows_lo, rows_hi, row_weight = _source_positions(images.shape[2], size[0], images.dtype, images.device)
    cols_lo, cols_hi, col_weight = _source_positions(images.shape[3], size[1], images.dtype, images.device)
    col_weight = col_weight.view(1, 1, 1, -1)

    def along_columns(rows):
        left, right = rows.index_select(3, cols_lo), rows.index_select(3, cols_hi)
        return left + (right - left) * col_weight

    top = along_columns(images.index_select(2, rows_lo))
    bottom = along_columns(images.index_select(2, rows_hi))
    return top + (bottom - top) * row_weight.view(1, 1, -1, 1)

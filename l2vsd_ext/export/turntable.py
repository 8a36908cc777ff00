"""Turntable outputs from orbit frames: an H.264 MP4 (imageio-ffmpeg), a looping GIF (Pillow
through imageio) and a contact-sheet PNG (a grid of evenly picked frames)."""
from __future__ import annotations

import os

import numpy as np
import torch

from .views import to_uint8


def write_mp4(frames: torch.Tensor, path: str, fps: int = 30) -> str:
    """frames (N, 3, H, W) in [0, 1]. H and W must be even: H.264 in yuv420p (the pixel format
    every player reads) halves the chroma resolution."""
    import imageio.v2 as imageio

    _, _, h, w = frames.shape
    if h % 2 or w % 2:
        raise ValueError(f"write_mp4: frame size must be even for H.264, got {h}x{w}")
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    # macro_block_size=2: keep the exact frame size instead of imageio's rescale to multiples of 16.
    with imageio.get_writer(path, format="FFMPEG", mode="I", fps=fps, codec="libx264",
                            pixelformat="yuv420p", quality=8, macro_block_size=2) as writer:
        for frame in to_uint8(frames):
            writer.append_data(frame)
    return path


def write_gif(frames: torch.Tensor, path: str, fps: int = 30) -> str:
    import imageio.v3 as iio

    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    iio.imwrite(path, to_uint8(frames), extension=".gif", duration=1000.0 / fps, loop=0)
    return path


def contact_sheet(frames: torch.Tensor, n_tiles: int = 12, columns: int = 6) -> np.ndarray:
    """(rows*H, columns*W, 3) uint8: n_tiles frames evenly spaced over the orbit, white gaps."""
    n = frames.shape[0]
    if n_tiles < 1 or columns < 1:
        raise ValueError(f"contact_sheet: 'n_tiles' and 'columns' must be >= 1, got {n_tiles}, {columns}")
    picks = np.unique(np.linspace(0, n, min(n_tiles, n), endpoint=False).astype(int))
    tiles = to_uint8(frames[torch.as_tensor(picks)])
    columns = min(columns, len(tiles))
    rows = -(-len(tiles) // columns)
    _, h, w, _ = tiles.shape
    sheet = np.full((rows * h, columns * w, 3), 255, dtype=np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        sheet[r * h:(r + 1) * h, c * w:(c + 1) * w] = tile
    return sheet


def write_contact_sheet(frames: torch.Tensor, path: str, n_tiles: int = 12, columns: int = 6) -> str:
    import imageio.v3 as iio

    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    iio.imwrite(path, contact_sheet(frames, n_tiles, columns))
    return path

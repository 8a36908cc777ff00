"""A lower bound on the memory one training step needs, checked before the prior is loaded, so
that e.g. --set resolution=1e9 is one line instead of an allocation failure deep in the renderer.
Deliberately an underestimate (only buffers every step certainly holds): it refuses settings that
cannot fit, never ones that merely might not."""
from __future__ import annotations

import os

from .config import ConfigError

# Per ray: origin, direction, colour, opacity, depth and their gradients, float32, plus per sample
# at least a position and a density (the packed samples of the ray marcher).
BYTES_PER_RAY = 4 * 3 * 8
BYTES_PER_SAMPLE = 4 * 4
# Per pixel of the VAE's input image: the image and its gradient, and the encoder's first feature map
# (128 channels at full resolution, float16 at least).
BYTES_PER_ENCODE_PIXEL = 4 * 3 * 2 + 2 * 128


def step_bytes_lower_bound(config) -> int:
    rays = config.batch_size * config.resolution ** 2
    samples = rays * min(config.max_samples_per_ray, 8)  # most rays stop early: count only a few
    encode = config.batch_size * config.encode_resolution ** 2 * BYTES_PER_ENCODE_PIXEL
    return rays * BYTES_PER_RAY + samples * BYTES_PER_SAMPLE + encode


def machine_memory(device: str | None) -> tuple[int, str]:
    """(bytes, what) of the memory a run on `device` allocates from."""
    import torch

    name = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and torch.cuda.is_available():
        index = torch.device(name).index or 0
        return torch.cuda.get_device_properties(index).total_memory, f"GPU {index}"
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "this machine"


def check_memory(config) -> None:
    need = step_bytes_lower_bound(config)
    have, where = machine_memory(config.device)
    if need > have:
        raise ConfigError(f"--resolution {config.resolution}, --encode-resolution {config.encode_resolution}, "
                          f"batch_size {config.batch_size}: one step needs at least {need / 2**30:.3g} GiB, "
                          f"more than the {have / 2**30:.3g} GiB of {where}")

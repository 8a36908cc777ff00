"""Training images beyond the white-background renders.

A distillation run shows the prior renders it never saw: an initial grey blob, whole frames of one
colour, the trainer's random-colour backgrounds. Stable Diffusion's VAE and UNet were trained on
everything, so they answer sensibly there; a prior trained only on eight objects over white does
not (its encoder maps a grey disc on pink to a blue mug on white, so SDS through it pushes the
field nowhere useful). Hence: objects over random solid backgrounds for both networks, and generic
images (smooth colour fields, ellipses) for the VAE."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def over_background(rgb_over_white: torch.Tensor, alpha: torch.Tensor, colours: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) renders made over white, re-composited over per-image colours (B, 3)."""
    foreground = rgb_over_white - (1 - alpha)  # premultiplied colour
    return (foreground + (1 - alpha) * colours.view(-1, 3, 1, 1)).clamp(0, 1)


def random_backgrounds(rgb_over_white, alpha, white_probability: float, generator) -> torch.Tensor:
    """Each render kept over white with `white_probability`, else over a uniform random colour
    (the trainer's augmentation draws its colours the same way)."""
    b = rgb_over_white.shape[0]
    colours = torch.rand(b, 3, generator=generator)
    keep_white = torch.rand(b, generator=generator) < white_probability
    colours = torch.where(keep_white.view(-1, 1), torch.ones_like(colours), colours)
    return over_background(rgb_over_white, alpha, colours)


def smooth_colour_fields(n: int, resolution: int, generator) -> torch.Tensor:
    """Low-frequency colour images: random 1x1 to 4x4 grids, bilinearly upsampled."""
    out = torch.empty(n, 3, resolution, resolution)
    sizes = torch.randint(1, 5, (n,), generator=generator)
    for i in range(n):
        k = int(sizes[i])
        grid = torch.rand(1, 3, k, k, generator=generator)
        out[i] = F.interpolate(grid, size=(resolution, resolution), mode="bilinear", align_corners=False)[0]
    return out


def ellipses(n: int, resolution: int, generator, max_shapes: int = 3) -> torch.Tensor:
    """Up to `max_shapes` solid ellipses of random colours, with soft edges, on a smooth field."""
    images = smooth_colour_fields(n, resolution, generator)
    coords = torch.linspace(-1, 1, resolution)
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    for i in range(n):
        for _ in range(int(torch.randint(1, max_shapes + 1, (1,), generator=generator))):
            centre = torch.rand(2, generator=generator) * 1.4 - 0.7
            radii = torch.rand(2, generator=generator) * 0.6 + 0.1
            angle = torch.rand(1, generator=generator) * torch.pi
            c, s = torch.cos(angle), torch.sin(angle)
            u = ((x - centre[0]) * c + (y - centre[1]) * s) / radii[0]
            v = (-(x - centre[0]) * s + (y - centre[1]) * c) / radii[1]
            inside = torch.sigmoid((1 - (u ** 2 + v ** 2)) * 12)
            colour = torch.rand(3, 1, 1, generator=generator)
            images[i] = images[i] * (1 - inside) + colour * inside
    return images


def generic_images(n: int, resolution: int, generator) -> torch.Tensor:
    """Half smooth colour fields, half ellipses: what an early or failing run renders."""
    n_fields = n // 2
    return torch.cat([smooth_colour_fields(n_fields, resolution, generator),
                      ellipses(n - n_fields, resolution, generator)])

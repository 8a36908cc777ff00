"""Backgrounds behind the volume: a solid colour, or a small MLP on the view direction. Either can
be replaced by a random solid colour during training (threestudio's augmentation), which keeps the
field from explaining the object with the background."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn


class _RandomColour(nn.Module):
    def __init__(self, random_probability: float):
        super().__init__()
        if not 0.0 <= random_probability <= 1.0:
            raise ValueError(f"background: 'random_probability' must be in [0, 1], got "
                             f"{random_probability}")
        self.random_probability = float(random_probability)
        self.generator: Optional[torch.Generator] = None  # set for reproducible augmentation

    def _maybe_random(self, dirs: torch.Tensor) -> Optional[torch.Tensor]:
        if not self.training or self.random_probability == 0.0:
            return None
        draw = torch.rand(4, generator=self.generator)
        if float(draw[0]) >= self.random_probability:
            return None
        return draw[1:].to(dirs).expand(dirs.shape[0], 3)


class SolidBackground(_RandomColour):
    """A fixed colour (white by default); random_probability > 0 draws a random colour per call
    with that probability while training."""

    def __init__(self, color: Sequence[float] = (1.0, 1.0, 1.0), random_probability: float = 0.0):
        super().__init__(random_probability)
        self.register_buffer("color", torch.as_tensor(color, dtype=torch.float32).reshape(3))

    def forward(self, dirs: torch.Tensor) -> torch.Tensor:
        """(N, 3) view directions -> (N, 3) colours."""
        random = self._maybe_random(dirs)
        return random if random is not None else self.color.to(dirs).expand(dirs.shape[0], 3)


class MLPBackground(_RandomColour):
    """Colour from the view direction: sin/cos frequency encoding -> MLP -> sigmoid."""

    def __init__(self, n_frequencies: int = 4, hidden_dim: int = 32,
                 random_probability: float = 0.0):
        super().__init__(random_probability)
        self.register_buffer("frequencies", 2.0 ** torch.arange(n_frequencies, dtype=torch.float32))
        in_dim = 3 + 6 * n_frequencies
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(inplace=True),
                                 nn.Linear(hidden_dim, 3))

    def forward(self, dirs: torch.Tensor) -> torch.Tensor:
        random = self._maybe_random(dirs)
        if random is not None:
            return random
        d = torch.nn.functional.normalize(dirs, dim=-1).to(self.frequencies.dtype)
        angles = (d[:, :, None] * self.frequencies).flatten(1)
        features = torch.cat([d, torch.sin(angles), torch.cos(angles)], dim=-1)
        return torch.sigmoid(self.mlp(features)).to(dirs.dtype)

"""Which diffusion timesteps the distillation samples, and how that range anneals over training."""
from __future__ import annotations

import torch


class TimestepSchedule:
    """t ~ U[min_step, max_step] (fractions of the training timesteps), with the maximum lowered
    from max_step to max_step_after at `anneal_at` (a fraction of training); ProlificDreamer uses
    0.98 -> 0.5 after 5000 of 25000 steps. Deterministic given the generator."""

    def __init__(self, num_train_timesteps: int, min_step: float = 0.02, max_step: float = 0.98,
                 max_step_after: float | None = None, anneal_at: float = 1.0):
        for name, value in (("min_step", min_step), ("max_step", max_step)):
            if not 0 <= value <= 1:
                raise ValueError(f"TimestepSchedule: argument '{name}' must be in [0, 1], got {value}")
        if min_step > max_step:
            raise ValueError("TimestepSchedule: argument 'min_step' must not exceed 'max_step'")
        self.num_train_timesteps = num_train_timesteps
        self.min_step, self.max_step = min_step, max_step
        self.max_step_after = max_step if max_step_after is None else max(min_step, max_step_after)
        self.anneal_at = anneal_at

    def bounds(self, progress: float) -> tuple[int, int]:
        top = self.max_step if progress < self.anneal_at else self.max_step_after
        n = self.num_train_timesteps
        return int(self.min_step * n), max(int(self.min_step * n), int(top * n))

    def sample(self, batch: int, progress: float, generator: torch.Generator | None = None,
               device=None) -> torch.Tensor:
        lo, hi = self.bounds(progress)
        t = torch.randint(lo, hi + 1, (batch,), generator=generator)
        return t.clamp_(max=self.num_train_timesteps - 1).to(device)

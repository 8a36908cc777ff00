"""Which diffusion timesteps the distillation samples, and how that range anneals over training."""
from __future__ import annotations

import math

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


class SqrtTimestepSchedule:
    """HiFA's square-root annealing (threestudio's `sqrt_anneal`): one timestep per step,
        t = ⌊T·(p_min + (p_max − p_min)(1 − √(step/N)))⌋,
    falling from p_max·T to p_min·T over N steps (HiFA: p_min 0.3, p_max 0.98) and staying at
    p_min·T past N. `horizon` is N as a fraction of the run (1: the run's own steps; a resumed run
    whose --steps changed keeps the original N). The value is deterministic, but one draw per sample
    is still taken from the generator and discarded, so the θ stream (the noise drawn next) stays
    where the uniform schedule leaves it."""

    # Guards the floor against float rounding (0.64·1000 is 639.999… in binary).
    _ROUNDING = 1e-6

    def __init__(self, num_train_timesteps: int, min_step: float = 0.3, max_step: float = 0.98,
                 horizon: float = 1.0):
        for name, value in (("min_step", min_step), ("max_step", max_step)):
            if not 0 <= value <= 1:
                raise ValueError(f"SqrtTimestepSchedule: argument '{name}' must be in [0, 1], got {value}")
        if min_step > max_step:
            raise ValueError("SqrtTimestepSchedule: argument 'min_step' must not exceed 'max_step'")
        if not horizon > 0:
            raise ValueError(f"SqrtTimestepSchedule: argument 'horizon' must be > 0, got {horizon}")
        self.num_train_timesteps = num_train_timesteps
        self.min_step, self.max_step, self.horizon = min_step, max_step, horizon

    def timestep(self, progress: float) -> int:
        fraction = min(max(progress / self.horizon, 0.0), 1.0)
        p = self.min_step + (self.max_step - self.min_step) * (1 - math.sqrt(fraction))
        return min(int(math.floor(self.num_train_timesteps * p + self._ROUNDING)), self.num_train_timesteps - 1)

    def bounds(self, progress: float) -> tuple[int, int]:
        t = self.timestep(progress)
        return t, t

    def sample(self, batch: int, progress: float, generator: torch.Generator | None = None,
               device=None) -> torch.Tensor:
        torch.randint(0, self.num_train_timesteps, (batch,), generator=generator)  # keeps the stream aligned
        return torch.full((batch,), self.timestep(progress), dtype=torch.long).to(device)


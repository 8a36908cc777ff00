"""Timestep and learning-rate schedules of the 2D Gaussian example (paper Appendix F)."""
import math

import torch

# DDPM linear schedule: 1000 timesteps, betas from 1e-4 to 0.02 (Ho et al. 2020, Stable Diffusion's training
# schedule has the same length), so ᾱ_t matches the image-scale experiments.
NUM_TIMESTEPS = 1000
BETA_START = 1e-4
BETA_END = 0.02
# t is drawn uniformly from [0.02T, 0.98T), the range ProlificDreamer samples for VSD: the extreme ends carry
# almost no signal (t≈0) or almost none of x_0 (t≈T).
T_MIN = 20
T_MAX = 980


def alphas_cumprod(dtype=torch.float64):
    """ᾱ_t for t = 0..NUM_TIMESTEPS-1."""
    betas = torch.linspace(BETA_START, BETA_END, NUM_TIMESTEPS, dtype=dtype)
    return torch.cumprod(1.0 - betas, dim=0)


def sample_timesteps(generator, steps):
    """One timestep per optimisation step (shared by the n_render samples of that step)."""
    return torch.randint(T_MIN, T_MAX, (steps,), generator=generator)


def warmup_cosine(warmup_steps, total_steps):
    """LR multiplier: linear warm-up, then a half cosine that would reach 0 at total_steps.

    The paper schedules over 1.5x the optimisation steps, so the lr never quite reaches 0 inside a run.
    """

    def factor(step):
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return factor

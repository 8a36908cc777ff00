"""The paper's Appendix F setting and the optimisation loop, vectorised over seeds.

All seeds of a run are one batch: every optimiser is elementwise (AdamW) and every loss is a sum over seeds,
so each seed evolves exactly as it would alone. Each seed owns a torch.Generator, so its problem and its noise
do not depend on which other seeds share the batch, and all methods see the same draws (paired comparison).
"""
from dataclasses import dataclass

import torch

from . import gaussians
from .guidance import make_guidance
from .schedule import alphas_cumprod, sample_timesteps, warmup_cosine

DTYPE = torch.float64


@dataclass(frozen=True)
class Config:
    steps: int = 2000
    lora_steps: int = 10  # γ: r's AdamW steps per iteration
    n_render: int = 1
    eta: float = 1.0  # L²-VSD lookahead step; 1 = the step that lands r on q (see lora.fitting_loss)
    lr: float = 1e-2  # q's AdamW lr
    lora_lr_scale: float = 5.0  # r's lr = 5 × q's
    warmup_steps: int = 100
    schedule_scale: float = 1.5  # the cosine runs over 1.5 × steps
    lora_init: str = "p"  # r starts as p (a zero LoRA is the pretrained model) or as q ("q")

    @property
    def schedule_steps(self):
        return int(round(self.schedule_scale * self.steps))


@dataclass
class Problem:
    """Target p, initial q and the per-step random draws, stacked over seeds (leading dim S)."""

    seeds: tuple
    mu_p: torch.Tensor
    L_p: torch.Tensor
    mu_q0: torch.Tensor
    L_q0: torch.Tensor
    timesteps: torch.Tensor  # (S, steps)
    z: torch.Tensor  # (S, steps, n, 2): q's reparametrisation noise
    eps: torch.Tensor  # (S, steps, n, 2): the diffusion noise


def _draw_seed(seed, steps, n_render):
    gen = torch.Generator().manual_seed(int(seed))
    # Problem first, so p and q0 are the same whatever steps and n_render are.
    mu_p = torch.rand(2, generator=gen, dtype=DTYPE)
    L_p = torch.rand(2, 2, generator=gen, dtype=DTYPE) + torch.eye(2, dtype=DTYPE)
    dist0 = 10 * torch.rand((), generator=gen, dtype=DTYPE)
    angle = 2 * torch.pi * torch.rand((), generator=gen, dtype=DTYPE)
    mu_q0 = mu_p + dist0 * torch.stack([angle.cos(), angle.sin()])
    L_q0 = torch.rand(2, 2, generator=gen, dtype=DTYPE) + torch.eye(2, dtype=DTYPE)
    timesteps = sample_timesteps(gen, steps)
    z = torch.randn(steps, n_render, 2, generator=gen, dtype=DTYPE)
    eps = torch.randn(steps, n_render, 2, generator=gen, dtype=DTYPE)
    return mu_p, L_p, mu_q0, L_q0, timesteps, z, eps


def make_problem(seeds, steps, n_render):
    per_seed = [_draw_seed(s, steps, n_render) for s in seeds]
    return Problem(tuple(seeds), *(torch.stack(parts) for parts in zip(*per_seed)))


@dataclass
class History:
    """Parameters after each step (index 0 = initial), shape (steps+1, S, ...); r is None without a LoRA."""

    method: str
    mu_q: torch.Tensor
    L_q: torch.Tensor
    mu_r: torch.Tensor | None
    L_r: torch.Tensor | None
    w2: torch.Tensor  # (steps+1, S): W2(q, p)


def w2_to_target(problem, mu_q, L_q):
    cov_p = gaussians.covariance(problem.L_p)
    return gaussians.w2(mu_q, gaussians.covariance(L_q), problem.mu_p, cov_p)


def run_method(method, problem, config):
    """Optimise q with one guidance mode; returns the parameter history."""
    mu_q = problem.mu_q0.clone().requires_grad_(True)
    L_q = problem.L_q0.clone().requires_grad_(True)
    optimizer = torch.optim.AdamW([mu_q, L_q], lr=config.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(config.warmup_steps, config.schedule_steps)
    )
    guidance = make_guidance(method, problem, config)
    alpha_bars = alphas_cumprod(DTYPE)

    trace = {"mu_q": [], "L_q": [], "mu_r": [], "L_r": []}

    def record():
        trace["mu_q"].append(mu_q.detach().clone())
        trace["L_q"].append(L_q.detach().clone())
        if guidance.lora is not None:
            trace["mu_r"].append(guidance.lora.mu.detach().clone())
            trace["L_r"].append(guidance.lora.L.detach().clone())

    record()

    for step in range(config.steps):
        target = (mu_q.detach().clone(), L_q.detach().clone())
        alpha_bar = alpha_bars[problem.timesteps[:, step]]
        eps = problem.eps[:, step]
        guidance.before_step(target)

        x0 = gaussians.sample(mu_q, L_q, problem.z[:, step])
        xt = gaussians.noise(x0.detach(), eps, alpha_bar)
        eps_pre = gaussians.gaussian_eps(xt, problem.mu_p, problem.L_p, alpha_bar)
        grad = (eps_pre - guidance.eps_estimate(xt, x0.detach(), eps, alpha_bar)).detach()
        # grad -> MSE trick: d loss / d x0 = grad / n_render (mean over renders, sum over independent seeds).
        loss = 0.5 * ((x0 - (x0 - grad).detach()) ** 2).sum(-1).mean(-1).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        guidance.after_step(target)
        record()

    stacked = {k: (torch.stack(v) if v else None) for k, v in trace.items()}
    w2 = w2_to_target(problem, stacked["mu_q"], stacked["L_q"])
    return History(method, stacked["mu_q"], stacked["L_q"], stacked["mu_r"], stacked["L_r"], w2)

"""What every guidance mode shares: the prior, prompts, timestep schedule, random streams, and the
gradient sanitation. A mode only decides the order of the LoRA step and how ε_φ is evaluated."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .hifa import ScoreTerms


@dataclass
class GuidanceOptions:
    guidance_scale: float = 7.5  # CFG of the prior; the score model uses 1.0
    eta: float = 1e-2  # L²-VSD lookahead step (see docs: chosen from the paper's 1e-3..1 ablation)
    last_layer: bool = False  # L²-VSD tangent only on the last LoRA layer
    lora_steps: int = 1  # γ: LoRA steps per iteration
    esd_lambda: float = 0.0  # ESD: weight of the camera-dropped ε_φ in the score of q
    lookahead_camera: bool = True  # the lookahead tangent covers the camera MLP too
    lookahead_direction: str = "sgd"  # sgd: −η g; optimizer: the LoRA optimiser's update; random: control
    eta_relative: float | None = None  # κ target: η set each step so |ε_first|/|ε_φ| = this
    high_order_diagnostics: bool = False  # |ε_high| by both definitions (more forwards)
    lora_text: str = "plain"  # the score model's text: plain prompt (threestudio) or view-suffixed


@dataclass
class GuidanceContext:
    """Per-iteration inputs: detached-able latents of the render, its cameras and view labels."""
    latents: torch.Tensor  # (B, C, h, w), differentiable w.r.t. θ
    c2w: torch.Tensor  # (B, 4, 4)
    view_labels: list
    progress: float  # fraction of training done, for the timestep annealing


class DistillationMode:
    """gradient(ctx) -> (∂L/∂latents, stats), leaving in `last_terms` what it denoised with (for
    HiFA's image term, distill/hifa.py); after_step(ctx) after the θ optimiser step."""

    name = "base"
    uses_score_model = True

    def __init__(self, prior, prompts, schedule, score_model=None, options: GuidanceOptions = None,
                 seed: int = 0):
        if self.uses_score_model and score_model is None:
            raise ValueError(f"mode '{self.name}' needs a score model (LoraScoreModel)")
        self.prior, self.prompts, self.schedule = prior, prompts, schedule
        self.score_model = score_model
        self.options = options or GuidanceOptions()
        # Two streams, so that modes which draw the LoRA noise earlier or later than others still
        # see the same θ noise (l2vsd at η=0 reproduces vsd exactly).
        self.theta_rng = torch.Generator().manual_seed(seed)
        self.lora_rng = torch.Generator().manual_seed(seed + 1)
        # A third, for the random-direction control only: the other two stay aligned with it.
        self.direction_rng = torch.Generator().manual_seed(seed + 2)
        self.nonfinite_count = 0
        self.last_terms = None  # ScoreTerms of the last gradient() (HiFA's image term)

    # -- shared pieces ------------------------------------------------------------------------
    def rng_state(self) -> dict:
        return {"theta": self.theta_rng.get_state(), "lora": self.lora_rng.get_state(),
                "direction": self.direction_rng.get_state(),
                "nonfinite_count": int(self.nonfinite_count)}  # read once per checkpoint

    def load_rng_state(self, state: dict) -> None:
        self.theta_rng.set_state(state["theta"])
        self.lora_rng.set_state(state["lora"])
        if "direction" in state:  # checkpoints from before the random control have none (unused)
            self.direction_rng.set_state(state["direction"])
        self.nonfinite_count = state["nonfinite_count"]

    def noised(self, ctx: GuidanceContext):
        latents = ctx.latents.detach().float()
        t = self.schedule.sample(latents.shape[0], ctx.progress, self.theta_rng, latents.device)
        noise = torch.randn(latents.shape, generator=self.theta_rng).to(latents.device)
        return self.prior.add_noise(latents, noise, t), noise, t

    def text(self, ctx: GuidanceContext):
        return self.prompts.get(ctx.view_labels)

    def score_text(self, ctx: GuidanceContext):
        """The score model's text: the prompt without view suffix (threestudio's VSD), or the
        view-suffixed one the prior sees."""
        if self.options.lora_text == "view":
            return self.text(ctx)[0]
        return self.prompts.plain(len(ctx.view_labels))

    def prior_noise(self, noisy, t, ctx):
        cond, uncond = self.text(ctx)
        return self.prior.predict_noise(noisy, t, cond, uncond, self.options.guidance_scale)

    @torch.no_grad()
    def score_noise(self, noisy, t, ctx):
        """ε_φ at the current φ, with ESD's camera-dropped mixture when λ > 0."""
        cond = self.score_text(ctx)
        eps = self.score_model.predict_noise(noisy, t, cond, ctx.c2w)
        if self.options.esd_lambda:
            dropped = self.score_model.predict_noise(noisy, t, cond, torch.zeros_like(ctx.c2w))
            eps = (1 - self.options.esd_lambda) * eps + self.options.esd_lambda * dropped
        return eps

    def lora_steps(self, ctx, n: int):
        cond = self.score_text(ctx)
        loss = 0.0
        for _ in range(n):
            loss = self.score_model.step(ctx.latents, ctx.c2w, cond, self.lora_rng)
        return loss

    def finish(self, eps_target, eps_model, t, stats, noisy=None):
        """grad = w(t)(ε_target − ε_model), with non-finite entries zeroed and counted. With `noisy`
        (z_t), what was denoised is kept as `last_terms` for HiFA's image term (distill/hifa.py);
        a mode without a score model (SDS) keeps no ε_model: the render stands in for it."""
        if noisy is not None:
            self.last_terms = ScoreTerms(noisy, t, eps_target,
                                         eps_model if self.uses_score_model else None)
        grad = self.prior.weight(t) * (eps_target - eps_model)
        # Everything stays on the device (no host sync per step): the count and the stats are 0-d
        # tensors, read once per logging interval (see step_stats.py).
        bad = ~torch.isfinite(grad)
        n_bad = bad.sum()
        self.nonfinite_count = n_bad + self.nonfinite_count
        grad = grad.masked_fill(bad, 0.0)
        stats.update(nonfinite=n_bad, t=t.float().mean(), grad_norm=grad.norm(),
                     eps_phi_norm=eps_model.norm(), signal_norm=(eps_target - eps_model).norm())
        return grad, stats

    # -- the interface ------------------------------------------------------------------------
    def gradient(self, ctx: GuidanceContext):
        raise NotImplementedError

    def after_step(self, ctx: GuidanceContext) -> dict:
        return {}

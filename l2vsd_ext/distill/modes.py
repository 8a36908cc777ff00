"""The four guidance modes. Each differs only in when φ is updated and how ε_φ is evaluated."""
from __future__ import annotations

import torch

from .base import DistillationMode


class SDS(DistillationMode):
    """∇θ = w(t)(ε_pre − ε): no score model."""
    name = "sds"
    uses_score_model = False

    def gradient(self, ctx):
        noisy, noise, t = self.noised(ctx)
        return self.finish(self.prior_noise(noisy, t, ctx), noise, t, {})


class VSD(DistillationMode):
    """∇θ = w(t)(ε_pre − ε_φi); then γ LoRA steps on this iteration's render."""
    name = "vsd"

    def gradient(self, ctx):
        noisy, _, t = self.noised(ctx)
        return self.finish(self.prior_noise(noisy, t, ctx), self.score_noise(noisy, t, ctx), t, {})

    def after_step(self, ctx):
        return {"lora_loss": self.lora_steps(ctx, self.options.lora_steps)}


class LVSD(DistillationMode):
    """L-VSD: γ LoRA steps first, then ∇θ = w(t)(ε_pre − ε_φ(i+γ))."""
    name = "lvsd"

    def gradient(self, ctx):
        lora_loss = self.lora_steps(ctx, self.options.lora_steps)
        noisy, _, t = self.noised(ctx)
        return self.finish(self.prior_noise(noisy, t, ctx), self.score_noise(noisy, t, ctx), t,
                           {"lora_loss": lora_loss})


class L2VSD(DistillationMode):
    """L²-VSD: g = ∇φ L_lora(φi); ε_lin = ε_φi(x_t) + J_φ ε_φi(x_t)·(−η g) by one forward-mode JVP;
    ∇θ = w(t)(ε_pre − ε_lin); then the LoRA optimiser step with the same g (γ−1 more after)."""
    name = "l2vsd"

    def gradient(self, ctx):
        cond, _ = self.text(ctx)
        lora_loss = self.score_model.compute_gradient(ctx.latents, ctx.c2w, cond, self.lora_rng)
        noisy, _, t = self.noised(ctx)
        eps_lin, delta = self.lookahead_noise(noisy, t, ctx)
        grad, stats = self.finish(self.prior_noise(noisy, t, ctx), eps_lin, t,
                                  {"lora_loss": lora_loss})
        stats["delta_eps_first_norm"] = delta.norm()
        return grad, stats

    @torch.no_grad()
    def lookahead_noise(self, noisy, t, ctx):
        from ..jvp import lora_jvp
        from ..prior.score_model import flatten_cameras

        cond, _ = self.text(ctx)
        score = self.score_model
        eta = self.options.eta
        # The lookahead linearises in the LoRA weights; the camera MLP takes its ordinary step.
        direction = {name: -eta * (p.grad if p.grad is not None else torch.zeros_like(p))
                     for name, p in score.lora_params.items()}

        eps, eps_dot = lora_jvp(self.prior.unet, direction, noisy.to(self.prior.dtype), t,
                                cond.to(self.prior.dtype), class_labels=flatten_cameras(ctx.c2w),
                                last_layer_only=self.options.last_layer)
        lookahead = eps.float() + eps_dot.float()
        if self.options.esd_lambda:  # only the camera-conditioned term looks ahead
            lam = self.options.esd_lambda
            dropped = score.predict_noise(noisy, t, cond, torch.zeros_like(ctx.c2w))
            return (1 - lam) * lookahead + lam * dropped, (1 - lam) * eps_dot.float()
        return lookahead, eps_dot.float()

    def after_step(self, ctx):
        self.score_model.apply_gradient()
        stats = {}
        if self.options.lora_steps > 1:
            stats["lora_loss_extra"] = self.lora_steps(ctx, self.options.lora_steps - 1)
        return stats


MODES = {cls.name: cls for cls in (SDS, VSD, LVSD, L2VSD)}


def make_mode(name: str, *args, **kwargs) -> DistillationMode:
    if name not in MODES:
        raise ValueError(f"unknown mode '{name}'; choose one of {sorted(MODES)}")
    return MODES[name](*args, **kwargs)

"""The guidance modes. Each differs only in when φ is updated and how ε_φ is evaluated."""
from __future__ import annotations

import torch

from .base import DistillationMode
from .lookahead import Lookahead


class SDS(DistillationMode):
    """∇θ = w(t)(ε_pre − ε): no score model."""
    name = "sds"
    uses_score_model = False

    def gradient(self, ctx):
        noisy, noise, t = self.noised(ctx)
        return self.finish(self.prior_noise(noisy, t, ctx), noise, t, {}, noisy=noisy)


class VSD(DistillationMode):
    """∇θ = w(t)(ε_pre − ε_φi); then γ LoRA steps on this iteration's render."""
    name = "vsd"

    def gradient(self, ctx):
        noisy, _, t = self.noised(ctx)
        return self.finish(self.prior_noise(noisy, t, ctx), self.score_noise(noisy, t, ctx), t, {},
                           noisy=noisy)

    def after_step(self, ctx):
        return {"lora_loss": self.lora_steps(ctx, self.options.lora_steps)}


class LVSD(DistillationMode):
    """L-VSD: γ LoRA steps first, then ∇θ = w(t)(ε_pre − ε_φ(i+γ))."""
    name = "lvsd"

    def gradient(self, ctx):
        lora_loss = self.lora_steps(ctx, self.options.lora_steps)
        noisy, _, t = self.noised(ctx)
        return self.finish(self.prior_noise(noisy, t, ctx), self.score_noise(noisy, t, ctx), t,
                           {"lora_loss": lora_loss}, noisy=noisy)


class L2VSD(DistillationMode):
    """L²-VSD: g = ∇φ L_lora(φi); ε_lin = ε_φi(x_t) + J_φ ε_φi(x_t)·v by one forward-mode JVP, with
    v = −η g (or the optimiser's update, see distill/lookahead.py); ∇θ = w(t)(ε_pre − ε_lin); the
    LoRA optimiser's step with the same g (γ−1 more after the θ step)."""
    name = "l2vsd"

    def gradient(self, ctx):
        lookahead = Lookahead(self.score_model, self.options, self.direction_rng)
        lora_loss = lookahead.prepare(ctx.latents, ctx.c2w, self.score_text(ctx), self.lora_rng)
        try:
            noisy, _, t = self.noised(ctx)
            eps_pre = self.prior_noise(noisy, t, ctx)
            eps_phi, eps_first, stats = self.linearised(lookahead, noisy, t, ctx, eps_pre)
            eps_model = self.combine(lookahead, noisy, t, ctx, eps_phi, eps_first, stats)
        finally:
            # The optimiser has stepped: φ must be φ_{i+1} even if the step is interrupted here
            # (Ctrl-C, an error), or a checkpoint would pair φ_i with the stepped Adam moments.
            lookahead.finish()
        stats["lora_loss"] = lora_loss
        return self.finish(eps_pre, eps_model, t, stats, noisy=noisy)

    def combine(self, lookahead, noisy, t, ctx, eps_phi, eps_first, stats):
        """ε_model from ε_φi and ε_first: ε_lin here."""
        lookahead_eps = eps_phi + eps_first
        if self.options.esd_lambda:  # only the camera-conditioned term looks ahead
            lam = self.options.esd_lambda
            dropped = self.score_model.predict_noise(noisy, t, self.score_text(ctx),
                                                     torch.zeros_like(ctx.c2w)).detach()
            return (1 - lam) * lookahead_eps + lam * dropped
        return lookahead_eps

    @torch.no_grad()
    def linearised(self, lookahead, noisy, t, ctx, eps_pre):
        """(ε_φi, ε_first, diagnostics): one JVP at φ_i along the lookahead tangent."""
        from ..jvp import lora_jvp
        from ..prior.score_model import flatten_cameras

        v = lookahead.tangent()
        lora_dir, camera_dir = lookahead.split(v)
        eps, eps_dot = lora_jvp(self.prior.unet, lora_dir, noisy.to(self.prior.dtype), t,
                                self.score_text(ctx).to(self.prior.dtype),
                                class_labels=flatten_cameras(ctx.c2w),
                                last_layer_only=self.options.last_layer, param_direction=camera_dir)
        # float32 at least (fp16/bf16 priors), float64 kept (the exactness tests)
        wide = torch.promote_types(eps.dtype, torch.float32)
        eps_phi = self.prior.to_epsilon(eps.to(wide), noisy, t)
        eps_first = self.prior.tangent_to_epsilon(eps_dot.to(wide), t)
        scale = torch.ones(())
        if self.options.eta_relative is not None:
            # κ = K exactly: ε_first is linear in the tangent's scale.
            scale = self.options.eta_relative * eps_phi.norm() / eps_first.norm().clamp_min(1e-30)
            eps_first = scale * eps_first
        self.last_eps_first = eps_first
        stats = lookahead_stats(eps_pre, eps_phi, eps_first)
        stats["lookahead_scale"] = scale
        if self.options.high_order_diagnostics:
            stats.update(self.high_order(lookahead, v, scale, noisy, t, ctx, eps_phi, eps_first))
        return eps_phi, eps_first, stats

    def high_order(self, lookahead, v, scale, noisy, t, ctx, eps_phi, eps_first) -> dict:
        """|ε_high| by both definitions: after the real optimiser step (the paper's Appendix B.2:
        ε_φi+1 − ε_φi − ε_first) and along the tangent itself (ε(φi + v) − ε_φi − ε_first, the
        Taylor remainder, O(|v|²)). No random draws: a run with them equals one without."""
        with lookahead.parameters_at(lookahead.next):
            eps_next = self.camera_score(noisy, t, ctx)
        step = eps_next - eps_phi - eps_first
        same_point = self.options.lookahead_direction == "optimizer" and self.options.eta_relative is None \
            and (self.options.lookahead_camera and not self.options.last_layer)
        if same_point:  # φ_i + v is φ_{i+1}
            taylor = step
        else:
            with lookahead.parameters_at(lookahead.moved(v, scale)):
                taylor = self.camera_score(noisy, t, ctx) - eps_phi - eps_first
        norm = eps_phi.norm().clamp_min(1e-30)
        return {"eps_high_step_norm": step.norm(), "eps_high_taylor_norm": taylor.norm(),
                "eps_high_step_ratio": step.norm() / norm, "eps_high_taylor_ratio": taylor.norm() / norm}

    @torch.no_grad()
    def camera_score(self, noisy, t, ctx):
        return self.score_model.predict_noise(noisy, t, self.score_text(ctx), ctx.c2w)

    def after_step(self, ctx):
        # The optimiser step with g was taken in gradient() (same φ_{i+1} as taking it here).
        stats = {}
        if self.options.lora_steps > 1:
            stats["lora_loss_extra"] = self.lora_steps(ctx, self.options.lora_steps - 1)
        return stats


class HLVSD(L2VSD):
    """HL-VSD (the paper's Appendix C.4): the high-order term in place of the linear one,
    ε_model = ε_φi + ε_high = ε_φi+1 − ε_first, i.e. L-VSD's score less the linear term."""
    name = "hlvsd"

    def combine(self, lookahead, noisy, t, ctx, eps_phi, eps_first, stats):
        with lookahead.parameters_at(lookahead.next):
            eps_next = self.camera_score(noisy, t, ctx)
        return eps_next - eps_first


def lookahead_stats(eps_pre, eps_phi, eps_first) -> dict:
    """The paper's Fig. 4 quantities: |ε_φ|, |ε_first|, κ = |ε_first|/|ε_φ| and the first-order
    term against the VSD signal |ε_pre − ε_φ| (0-d tensors, read once per logging interval)."""
    first = eps_first.norm()
    signal = (eps_pre - eps_phi).norm()
    return {"eps_phi_i_norm": eps_phi.norm(), "eps_first_norm": first,
            "kappa": first / eps_phi.norm().clamp_min(1e-30),
            "first_over_signal": first / signal.clamp_min(1e-30), "vsd_signal_norm": signal}


MODES = {cls.name: cls for cls in (SDS, VSD, LVSD, L2VSD, HLVSD)}


def make_mode(name: str, *args, **kwargs) -> DistillationMode:
    if name not in MODES:
        raise ValueError(f"unknown mode '{name}'; choose one of {sorted(MODES)}")
    return MODES[name](*args, **kwargs)

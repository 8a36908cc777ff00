"""HiFA's image-space score (Zhu et al., "HiFA"; threestudio's `use_img_loss`): an option every
guidance mode can take. The mode hands over what it denoised with (ScoreTerms); this module turns
that into a gradient on the render at the VAE's input size; the trainer applies it.

    ẑ_pre = (z_t − σ_t ε_pre)/α_t,   ẑ_model = (z_t − σ_t ε_model)/α_t,   α_t = √ᾱ_t, σ_t = √(1−ᾱ_t)
    ∂L/∂x = w(t)·(α_t/σ_t)·(D(ẑ_model) − D(ẑ_pre)),   w(t) = 1 − ᾱ_t,   D = decode, clamped to [0, 1]

ε_model is whatever the mode's latent gradient uses (ε_φ, ε_lin, ε_φi+1, ε_HL). SDS has no model
score: its form uses the render itself in place of D(ẑ_model)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class ScoreTerms:
    """What a mode's gradient() denoised with, kept for the image term (all detached)."""
    noisy: torch.Tensor  # z_t (B, C, h, w)
    t: torch.Tensor  # (B,)
    eps_pre: torch.Tensor  # the prior's (CFG) noise prediction
    eps_model: torch.Tensor | None  # the mode's model score; None: SDS (the render stands in)


def resize_for_vae(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """The render at the VAE's input size, differentiable (the same resize encode_images does, so
    encoding this gives the same latents bit for bit)."""
    if images.shape[-1] != resolution:
        images = F.interpolate(images, (resolution, resolution), mode="bilinear", align_corners=False)
    return images


def denoised(prior, noisy: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """ẑ = (z_t − σ_t ε)/α_t: the one-step estimate of the clean latents."""
    a = prior.alphas_cumprod[t].view(-1, 1, 1, 1).to(torch.promote_types(eps.dtype, torch.float32))
    return (noisy.to(a.dtype) - (1 - a).sqrt() * eps.to(a.dtype)) / a.sqrt()


@torch.no_grad()
def image_gradient(prior, terms: ScoreTerms, render: torch.Tensor) -> torch.Tensor:
    """∂L/∂render (B, 3, H, W) at the VAE's input size; non-finite entries zeroed."""
    a = prior.alphas_cumprod[terms.t].view(-1, 1, 1, 1).float()
    scale = (1 - a) * a.sqrt() / (1 - a).sqrt()  # w(t)·α_t/σ_t
    target = prior.decode_latents(denoised(prior, terms.noisy, terms.t, terms.eps_pre)).clamp(0, 1)
    if terms.eps_model is None:
        model = render.detach().float()
    else:
        model = prior.decode_latents(denoised(prior, terms.noisy, terms.t, terms.eps_model)).clamp(0, 1)
    if model.shape != target.shape:
        raise ValueError(f"image_gradient: the render at the VAE's input size {tuple(model.shape)} and the "
                         f"decoded image {tuple(target.shape)} differ; resize it with resize_for_vae")
    grad = scale.to(target.device) * (model.to(target.dtype) - target)
    return grad.masked_fill(~torch.isfinite(grad), 0.0).to(render.dtype)


def image_loss(render: torch.Tensor, grad: torch.Tensor, weight: float) -> torch.Tensor:
    """The MSE trick, as for the latents: d(loss)/d(render) = weight · grad (per-sample sum)."""
    target = (render - grad).detach()
    return weight * 0.5 * F.mse_loss(render, target, reduction="sum") / render.shape[0]


def z_variance_available(renderer_forward=None) -> bool:
    """Whether this build's renderer and regularisers offer HiFA's z-variance."""
    import inspect

    from ..scene import VolumeRenderer, regularizers

    try:
        takes_flag = "with_z_variance" in inspect.signature(renderer_forward or VolumeRenderer.forward).parameters
    except (TypeError, ValueError):
        takes_flag = False
    return takes_flag and callable(getattr(regularizers, "z_variance_loss", None))


class ZVarianceAdapter:
    """Plugs HiFA's z-variance regulariser into the trainer when this build has it: the renderer's
    `with_z_variance` output and scene.regularizers.z_variance_loss (the fused compositing op's
    depth spread). Checked once, when the trainer is built."""

    MISSING = "z-variance needs the fused compositing z-variance output (not in this build)"

    def __init__(self, renderer, weight: float):
        from ..config import ConfigError
        from ..scene import regularizers

        if not z_variance_available(renderer.forward):
            raise ConfigError(f"--z-variance-weight: {self.MISSING}")
        self.weight = weight
        self.loss_fn = regularizers.z_variance_loss

    def render_kwargs(self) -> dict:
        return {"with_z_variance": True}

    def loss(self, out: dict) -> torch.Tensor:
        return self.weight * self.loss_fn(out["z_variance"], out["opacity"])

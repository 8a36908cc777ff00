"""DiffusionPrior: the frozen Stable Diffusion model seen as ε_pre(x_t, t, y) in latent space."""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from .loading import DEFAULT_PRETRAINED, load_components


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    # fp16 weights on CUDA halve the memory of the UNet/VAE/text encoder; CPU kernels want fp32.
    return torch.float16 if device.type == "cuda" else torch.float32


PREDICTION_TYPES = ("epsilon", "v_prediction")


class DiffusionPrior:
    """UNet, VAE, text encoder, tokenizer and DDPM noise schedule of a Stable Diffusion model.

    All weights are frozen. The UNet may later carry LoRA adapters (LoraScoreModel); ε_pre is
    always evaluated with them disabled (`base_model()`).

    vae None: a pixel-space prior (Imagen/DeepFloyd-IF style). Its "latents" are the images
    themselves scaled to [-1, 1]; encode/decode are that scaling and nothing else."""

    def __init__(self, unet, vae, text_encoder, tokenizer, scheduler, device, dtype):
        self.unet, self.vae, self.text_encoder = unet, vae, text_encoder
        self.tokenizer, self.scheduler = tokenizer, scheduler
        self.device, self.dtype = torch.device(device), dtype
        for module in (unet, vae, text_encoder):
            if module is not None:
                module.to(self.device).eval().requires_grad_(False)
        self.num_train_timesteps = scheduler.config.num_train_timesteps
        self.alphas_cumprod = scheduler.alphas_cumprod.to(self.device, torch.float32)
        self.prediction_type = scheduler.config.prediction_type
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"DiffusionPrior: the scheduler's prediction_type must be one of "
                             f"{PREDICTION_TYPES}, got {self.prediction_type!r}")
        self.pixel_space = vae is None
        if self.pixel_space:
            self.vae_scale_factor, self.latent_channels = 1, unet.config.in_channels
        else:
            self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)
            self.latent_channels = vae.config.latent_channels
        self._base_model_hooks = []  # callables entering contexts that restore the plain prior

    @classmethod
    def from_pretrained(cls, id_or_path: str = DEFAULT_PRETRAINED, dtype: torch.dtype | None = None,
                        device=None) -> "DiffusionPrior":
        device = torch.device(device) if device is not None else default_device()
        dtype = dtype or default_dtype(device)
        return cls(*load_components(id_or_path, dtype), device=device, dtype=dtype)

    # -- text ---------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(texts, padding="max_length", max_length=self.tokenizer.model_max_length,
                                truncation=True, return_tensors="pt")
        hidden = self.text_encoder(tokens.input_ids.to(self.device))[0]
        return hidden.to(self.dtype)

    # -- images <-> latents -------------------------------------------------------------------
    def encode_images(self, images: torch.Tensor, resolution: int | None = None) -> torch.Tensor:
        """images (B, 3, H, W) in [0,1], differentiable -> latents (B, C, h, w), scaled.

        With `resolution`, images are bilinearly resized to it first (ProlificDreamer renders at
        64 px and encodes at 512). Uses the posterior's sample, as the distillation recipes do."""
        if resolution is not None and images.shape[-1] != resolution:
            images = F.interpolate(images, (resolution, resolution), mode="bilinear", align_corners=False)
        if self.pixel_space:
            return (images * 2 - 1).to(self.dtype)
        posterior = self.vae.encode((images * 2 - 1).to(self.dtype)).latent_dist
        return posterior.sample() * self.vae.config.scaling_factor

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        if self.pixel_space:
            return ((latents.float() + 1) / 2).clamp(0, 1)
        images = self.vae.decode((latents / self.vae.config.scaling_factor).to(self.dtype)).sample
        return ((images.float() + 1) / 2).clamp(0, 1)

    # -- noise --------------------------------------------------------------------------------
    def to_epsilon(self, output: torch.Tensor, noisy: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The UNet's output as a noise prediction. An ε-prediction prior's output is ε itself; a
        v-prediction one's (e.g. Stable Diffusion 2.1 768-v) gives ε = √ᾱ_t v + √(1−ᾱ_t) x_t, so
        every score difference the modes form (ε_pre − ε_φ, ε_first, ...) is in ε for either."""
        if self.prediction_type == "epsilon":
            return output
        a = self.alphas_cumprod[t].view(-1, 1, 1, 1).to(output.dtype)
        return a.sqrt() * output + (1 - a).sqrt() * noisy.to(output.dtype)

    def tangent_to_epsilon(self, output_dot: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """to_epsilon's derivative along a parameter tangent (x_t fixed): √ᾱ_t v̇ for v-prediction."""
        if self.prediction_type == "epsilon":
            return output_dot
        return self.alphas_cumprod[t].view(-1, 1, 1, 1).to(output_dot.dtype).sqrt() * output_dot

    def add_noise(self, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = self.alphas_cumprod[t].view(-1, 1, 1, 1).to(latents.dtype)
        return a.sqrt() * latents + (1 - a).sqrt() * noise

    def weight(self, t: torch.Tensor) -> torch.Tensor:
        """w(t) = 1 − ᾱ_t, per sample, shaped to broadcast over latents."""
        return (1 - self.alphas_cumprod[t]).view(-1, 1, 1, 1)

    @contextlib.contextmanager
    def base_model(self):
        """The UNet as the pretrained model: any LoRA adapter and camera embedding switched off."""
        with contextlib.ExitStack() as stack:
            for hook in self._base_model_hooks:
                stack.enter_context(hook())
            yield self.unet

    def unet_forward(self, noisy: torch.Tensor, t: torch.Tensor, text: torch.Tensor,
                     class_labels=None) -> torch.Tensor:
        return self.unet(noisy.to(self.dtype), t, encoder_hidden_states=text.to(self.dtype),
                         class_labels=class_labels, return_dict=False)[0]

    @torch.no_grad()
    def predict_noise(self, noisy: torch.Tensor, t: torch.Tensor, cond: torch.Tensor,
                      uncond: torch.Tensor, guidance_scale: float) -> torch.Tensor:
        """ε_pre with classifier-free guidance, conditional and unconditional in one batch."""
        with self.base_model():
            both = self.unet_forward(torch.cat([noisy, noisy]), torch.cat([t, t]),
                                     torch.cat([cond, uncond]))
        # float32 at least (fp16/bf16 priors), float64 kept, as the score model does
        eps_cond, eps_uncond = both.to(torch.promote_types(both.dtype, torch.float32)).chunk(2)
        # Guidance is affine with weights summing to 1, so it commutes with to_epsilon.
        return self.to_epsilon(eps_uncond + guidance_scale * (eps_cond - eps_uncond), noisy, t)

"""Images from a prior by DDIM sampling with classifier-free guidance, through the project's
DiffusionPrior (the same loading path a run uses)."""
from __future__ import annotations

import torch


@torch.no_grad()
def sample_images(prior, texts: list[str], steps: int = 50, guidance_scale: float = 3.0,
                  seed: int = 0) -> torch.Tensor:
    """One image per text: (len(texts), 3, H, W) in [0, 1]."""
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler.from_config(prior.scheduler.config, clip_sample=False,
                                          set_alpha_to_one=False)
    scheduler.set_timesteps(steps)
    cond = prior.encode_text(list(texts))
    uncond = prior.encode_text([""] * len(texts))
    size = prior.unet.config.sample_size
    generator = torch.Generator().manual_seed(seed)
    latents = torch.randn(len(texts), prior.latent_channels, size, size, generator=generator)
    latents = latents.to(prior.device)
    for t in scheduler.timesteps:
        t_batch = torch.full((len(texts),), int(t), device=prior.device, dtype=torch.long)
        eps = prior.predict_noise(latents, t_batch, cond, uncond, guidance_scale)
        latents = scheduler.step(eps.to(latents), t, latents).prev_sample
    return prior.decode_latents(latents).cpu()

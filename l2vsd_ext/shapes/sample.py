"""Images from a prior by DDIM sampling with classifier-free guidance, through the project's
DiffusionPrior (the same loading path a run uses)."""
from __future__ import annotations

import torch


@torch.no_grad()
def sample_images(prior, texts: list[str], steps: int = 50, guidance_scale: float = 3.0,
                  seed: int = 0) -> torch.Tensor:
    """One image per text: (len(texts), 3, H, W) in [0, 1]."""
    from diffusers import DDIMScheduler

    # predict_noise returns ε for every prior (v-prediction ones converted), so the DDIM step
    # takes ε whatever the folder's own prediction_type.
    scheduler = DDIMScheduler.from_config(prior.scheduler.config, clip_sample=False,
                                          set_alpha_to_one=False, prediction_type="epsilon")
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


@torch.no_grad()
def sample_images_diffusers(folder: str, texts: list[str], steps: int = 50, guidance_scale: float = 3.0,
                            seed: int = 0) -> torch.Tensor:
    """The same images drawn by diffusers and transformers alone, without this package's loader: a
    latent folder through StableDiffusionPipeline, a pixel-space one (no vae/) through its UNet,
    text encoder and a DDIM scheduler in the plain classifier-free-guidance loop that
    StableDiffusionPipeline runs. (len(texts), 3, H, W) in [0, 1]."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    from ..prior.loading import is_pixel_space_folder

    generator = torch.Generator().manual_seed(seed)
    if not is_pixel_space_folder(folder):
        pipe = StableDiffusionPipeline.from_pretrained(folder, local_files_only=True)
        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, clip_sample=False,
                                                   set_alpha_to_one=False)
        pipe.set_progress_bar_config(disable=True)
        out = pipe(list(texts), num_inference_steps=steps, guidance_scale=guidance_scale,
                   generator=generator, output_type="pt").images
        return out.float().clamp(0, 1)
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", local_files_only=True).eval()
    text_encoder = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder",
                                                 local_files_only=True).eval()
    tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer", local_files_only=True)
    scheduler = DDIMScheduler.from_pretrained(folder, subfolder="scheduler", local_files_only=True,
                                              clip_sample=False, set_alpha_to_one=False)
    scheduler.set_timesteps(steps)
    ids = tokenizer(list(texts) + [""] * len(texts), padding="max_length",
                    max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt").input_ids
    hidden = text_encoder(ids)[0]
    size = unet.config.sample_size
    x = torch.randn(len(texts), unet.config.in_channels, size, size, generator=generator)
    for t in scheduler.timesteps:
        eps_cond, eps_uncond = unet(torch.cat([x, x]), t, encoder_hidden_states=hidden).sample.chunk(2)
        x = scheduler.step(eps_uncond + guidance_scale * (eps_cond - eps_uncond), t, x).prev_sample
    return ((x + 1) / 2).clamp(0, 1)

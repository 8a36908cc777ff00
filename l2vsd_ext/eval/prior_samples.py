"""Images sampled from the prior for the run's prompt: the reference set of the paper's FID.
A diffusers StableDiffusionPipeline assembled from the same components the run loaded (so a
local folder or hub id works as for training), sampled with DDIM."""
from __future__ import annotations

import numpy as np
import torch


def build_pipeline(pretrained: str, device, dtype=None):
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    from ..prior.loading import load_components

    device = torch.device(device)
    dtype = dtype or (torch.float16 if device.type == "cuda" else torch.float32)
    unet, vae, text_encoder, tokenizer, scheduler = load_components(pretrained, dtype)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   # Latents are not in [-1, 1]: never clip x0 (SD's own configs say so).
                                   scheduler=DDIMScheduler.from_config(scheduler.config, clip_sample=False),
                                   safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


@torch.no_grad()
def sample_prior(pipe, prompt: str, n_samples: int, steps: int = 50, guidance_scale: float = 7.5,
                 negative_prompt: str = "", seed: int = 0, batch_size: int = 4) -> np.ndarray:
    """(n_samples, H, W, 3) uint8 at the pipeline's native size; deterministic given `seed`."""
    if n_samples < 1:
        raise ValueError(f"sample_prior: 'n_samples' must be >= 1, got {n_samples}")
    generator = torch.Generator(device="cpu").manual_seed(seed)
    images = []
    from tqdm import tqdm

    # Dozens of full diffusion samplings: show progress and an ETA (eval hid it before).
    for s in tqdm(range(0, n_samples, batch_size), desc="prior samples", unit="batch", dynamic_ncols=True):
        n = min(batch_size, n_samples - s)
        out = pipe([prompt] * n, negative_prompt=[negative_prompt] * n if negative_prompt else None,
                   num_inference_steps=steps, guidance_scale=guidance_scale, generator=generator,
                   output_type="np")
        images.append((np.clip(out.images, 0, 1) * 255).round().astype(np.uint8))
    return np.concatenate(images)

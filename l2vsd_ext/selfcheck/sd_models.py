"""Stable Diffusion 2.1-base's architectures with random weights, built from their configs (no
download): the UNet the JVP engine is measured on, and a prior with that UNet and SD's VAE for
the paper's setting (64x64 render, 512x512 VAE encode, batch 1). The text encoder is a small CLIP
with SD 2.1's 1024-wide output: it runs once per prompt, so its size does not matter here."""
from __future__ import annotations

import torch

SD21_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                      "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D",
                    "CrossAttnUpBlock2D"),
    attention_head_dim=(5, 10, 20, 20), cross_attention_dim=1024, use_linear_projection=True,
    norm_num_groups=32)

SD21_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    layers_per_block=2, norm_num_groups=32, sample_size=512)


def sd21_lora_unet(device, dtype, rank: int = 4, seed: int = 0):
    """SD 2.1-base's UNet (random weights) with a peft LoRA adapter on the attention projections,
    LoRA factors in float32 for low-precision UNets (as the score model keeps them)."""
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig

    from ..jvp.tiny_unets import LORA_TARGETS

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**SD21_UNET)
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=LORA_TARGETS,
                                init_lora_weights="gaussian"))
    unet = unet.to(device, dtype).eval().requires_grad_(False)
    lora_dtype = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if "lora_" in name:
                p.data = torch.randn(p.shape, device=device, dtype=lora_dtype) * 0.02
    return unet


def sd21_shaped_prior(device, dtype, tiny_root: str):
    """A DiffusionPrior with SD 2.1-base's UNet and VAE (random weights); tokenizer and scheduler
    from the tiny pipeline at tiny_root."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from ..prior.diffusion import DiffusionPrior

    torch.manual_seed(0)
    tokenizer = CLIPTokenizer.from_pretrained(tiny_root, subfolder="tokenizer")
    scheduler = DDPMScheduler.from_pretrained(tiny_root, subfolder="scheduler")
    vocab = len(tokenizer)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=vocab, hidden_size=1024, intermediate_size=1024, num_attention_heads=16,
        num_hidden_layers=1, max_position_embeddings=tokenizer.model_max_length,
        projection_dim=1024, bos_token_id=vocab - 2, eos_token_id=vocab - 1,
        pad_token_id=vocab - 1))
    unet = UNet2DConditionModel(**SD21_UNET)
    vae = AutoencoderKL(**SD21_VAE)
    modules = [m.to(dtype) for m in (unet, vae, text_encoder)]
    return DiffusionPrior(modules[0], modules[1], modules[2], tokenizer, scheduler, device, dtype)

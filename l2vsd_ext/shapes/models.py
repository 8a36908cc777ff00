"""The shapes prior's parts, Stable-Diffusion-shaped and small: a CLIP text encoder over the byte
tokenizer of prior/tiny.py, a VAE that downsamples 4x (32 px -> 8x8x4 latents), a UNet with
cross-attention, and SD's DDPM schedule. `save_pipeline` writes the diffusers folder that both
DiffusionPrior.from_pretrained and StableDiffusionPipeline.from_pretrained load.

Pixel space (version 3, Imagen/DeepFloyd-IF style): no VAE; the UNet denoises the 32x32x3 image
in [-1, 1] itself, so nothing between the UNet and the pixels can blur a nose or a door away. Its
folder has no vae/ and DiffusionPrior treats encode/decode as the identity with that scaling."""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

MAX_TOKENS = 77  # CLIP's context; the byte-level tokenizer needs one token per character


@dataclass
class PriorSizes:
    resolution: int = 32
    vae_channels: tuple = (32, 64, 64)  # 3 levels: 4x downsampling
    unet_channels: tuple = (64, 128, 128)
    text_width: int = 64
    text_layers: int = 2
    pixel_space: bool = False  # no VAE: the UNet works on the image itself
    unet_layers: int = 1       # resnet layers per UNet block

    def to_dict(self) -> dict:
        return asdict(self)


def build_tokenizer(folder: str):
    from transformers import CLIPTokenizer

    from ..prior.tiny import write_tokenizer

    write_tokenizer(folder)
    tokenizer = CLIPTokenizer.from_pretrained(folder, model_max_length=MAX_TOKENS)
    tokenizer.save_pretrained(folder)
    return tokenizer


def build_text_encoder(sizes: PriorSizes, vocab_size: int):
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=sizes.text_width, intermediate_size=2 * sizes.text_width,
        num_attention_heads=4, num_hidden_layers=sizes.text_layers,
        max_position_embeddings=MAX_TOKENS, projection_dim=sizes.text_width,
        bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1))


def build_vae(sizes: PriorSizes):
    from diffusers import AutoencoderKL

    n = len(sizes.vae_channels)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=sizes.vae_channels,
        down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
        layers_per_block=1, norm_num_groups=16, sample_size=sizes.resolution)


def build_unet(sizes: PriorSizes):
    from diffusers import UNet2DConditionModel

    n = len(sizes.unet_channels)
    if sizes.pixel_space:
        # Full resolution without attention (1024 tokens would dominate the cost on a CPU); text
        # cross-attention at every coarser level, where the object's layout is decided.
        return UNet2DConditionModel(
            sample_size=sizes.resolution, in_channels=3, out_channels=3,
            block_out_channels=sizes.unet_channels, layers_per_block=sizes.unet_layers,
            norm_num_groups=16, cross_attention_dim=sizes.text_width, attention_head_dim=8,
            down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (n - 1),
            up_block_types=("CrossAttnUpBlock2D",) * (n - 1) + ("UpBlock2D",))
    latent = sizes.resolution // 2 ** (len(sizes.vae_channels) - 1)
    return UNet2DConditionModel(
        sample_size=latent, in_channels=4, out_channels=4, block_out_channels=sizes.unet_channels,
        layers_per_block=sizes.unet_layers, norm_num_groups=16, cross_attention_dim=sizes.text_width,
        attention_head_dim=8,
        down_block_types=("CrossAttnDownBlock2D",) * (n - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n - 1))


def build_scheduler(pixel_space: bool = False, prediction_type: str = "epsilon"):
    """Stable Diffusion's training schedule; in pixel space DDPM's linear one (beta 1e-4 to 0.02),
    whose last step leaves almost no signal (alpha_bar 4e-5; SD's keeps 0.005, tuned for latents)."""
    from diffusers import DDPMScheduler

    if pixel_space:
        return DDPMScheduler(num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02,
                             beta_schedule="linear", prediction_type=prediction_type, clip_sample=False,
                             steps_offset=1)
    return DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                         beta_schedule="scaled_linear", prediction_type=prediction_type,
                         clip_sample=False, steps_offset=1)


MODEL_INDEX = {
    "_class_name": "StableDiffusionPipeline",
    "feature_extractor": [None, None],
    "safety_checker": [None, None],
    "requires_safety_checker": False,
    "scheduler": ["diffusers", "DDPMScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}


def save_pipeline(folder: str, unet, vae, text_encoder, tokenizer, scheduler) -> str:
    """The diffusers layout, safetensors weights; model_index.json last, so a folder that has it
    is complete. vae None: a pixel-space folder (no vae/, "vae": [null, null] in the index)."""
    import diffusers

    os.makedirs(folder, exist_ok=True)
    unet.save_pretrained(os.path.join(folder, "unet"), safe_serialization=True)
    index = dict(MODEL_INDEX)
    if vae is None:
        index["vae"] = [None, None]
    else:
        vae.save_pretrained(os.path.join(folder, "vae"), safe_serialization=True)
    text_encoder.save_pretrained(os.path.join(folder, "text_encoder"), safe_serialization=True)
    tokenizer.save_pretrained(os.path.join(folder, "tokenizer"))
    scheduler.save_pretrained(os.path.join(folder, "scheduler"))
    with open(os.path.join(folder, "model_index.json"), "w") as fh:
        json.dump({**index, "_diffusers_version": diffusers.__version__}, fh, indent=2)
    return folder

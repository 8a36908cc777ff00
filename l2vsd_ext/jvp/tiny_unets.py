"""UNet2DConditionModel configurations with peft LoRA adapters, built from configs (no weights):
the tiny ones the tests use, the benchmark one (block_out_channels (64, 128, 256)) and Stable
Diffusion 2.1-base's architecture."""
from __future__ import annotations

import torch

LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]

TINY_CONFIGS = {
    # cross-attention transformer blocks in a down and an up block, and the cross-attn mid block
    "cross_attention": dict(
        block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8, cross_attention_dim=24,
        attention_head_dim=2, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")),
    # no cross-attention: self-attention blocks (group norm inside the Attention, 4-D input,
    # residual connection) and a mid block without attention
    "self_attention_only": dict(
        block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8, cross_attention_dim=24,
        attention_head_dim=4, down_block_types=("AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D"), mid_block_type="UNetMidBlock2D"),
    # the camera class embedding of the LoRA score model
    "camera_embedding": dict(
        block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8, cross_attention_dim=24,
        attention_head_dim=2, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), class_embed_type="projection",
        projection_class_embeddings_input_dim=16),
}

BENCHMARK_CONFIG = dict(
    block_out_channels=(64, 128, 256), cross_attention_dim=64,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"))

# Stable Diffusion 2.1-base's UNet (its config.json, without weights). diffusers' attention_head_dim
# is the number of heads here (5, 10, 20, 20), so every head has 64 channels.
SD21_BASE_CONFIG = dict(
    sample_size=64, block_out_channels=(320, 640, 1280, 1280), layers_per_block=2,
    attention_head_dim=(5, 10, 20, 20), cross_attention_dim=1024, use_linear_projection=True,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                      "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"))


def make_lora_unet(config: dict, rank: int = 4, seed: int = 0, dtype=torch.float32,
                   random_lora: bool = True):
    """A UNet from `config` with a peft LoRA adapter on the attention projections. With random_lora
    the adapter's B (zero at peft's init) is randomised too, so every term of the JVP is exercised."""
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**{"in_channels": 4, "out_channels": 4, "sample_size": 8, **config})
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=LORA_TARGETS,
                                init_lora_weights="gaussian"))
    if random_lora:
        with torch.no_grad():
            for name, p in unet.named_parameters():
                if "lora_" in name:
                    p.normal_(0, 0.2)
    return unet.to(dtype).eval()


def lora_parameters(unet) -> dict:
    return {n: p for n, p in unet.named_parameters() if "lora_" in n}


def random_direction(unet, seed: int = 1) -> dict:
    gen = torch.Generator().manual_seed(seed)
    return {n: torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.dtype).to(p.device)
            for n, p in lora_parameters(unet).items()}


def random_inputs(unet, size: int = 8, batch: int = 1, seq: int = 5, seed: int = 2, device="cpu"):
    """(sample, timestep, encoder_hidden_states, class_labels or None)."""
    gen = torch.Generator().manual_seed(seed)
    cfg = unet.config
    dtype = unet.dtype
    sample = torch.randn(batch, cfg.in_channels, size, size, generator=gen, dtype=torch.float64)
    ehs = torch.randn(batch, seq, cfg.cross_attention_dim, generator=gen, dtype=torch.float64)
    labels = None
    if cfg.class_embed_type == "projection":
        labels = torch.randn(batch, cfg.projection_class_embeddings_input_dim, generator=gen,
                             dtype=torch.float64).to(dtype).to(device)
    timestep = torch.tensor([417] * batch, device=device)
    return sample.to(dtype).to(device), timestep, ehs.to(dtype).to(device), labels

"""A tiny Stable-Diffusion-shaped pipeline built from configs with random weights, saved in the
diffusers folder layout so that it loads through the same from_pretrained path as real weights.

The tests use it, and `--pretrained tiny-random` uses it to check an installation end to end without
downloading Stable Diffusion: it produces noise, not objects."""
from __future__ import annotations

import json
import os


def _byte_alphabet():
    """The printable stand-ins CLIP's byte-level BPE uses for the 256 byte values."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = [], 0
    for b in range(256):
        if b in keep:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def write_tokenizer(folder: str) -> int:
    """A CLIP tokenizer whose vocabulary is the byte alphabet (plain and word-final) and a handful
    of merges: enough to tokenize any prompt. Returns the vocabulary size."""
    from transformers import CLIPTokenizer

    os.makedirs(folder, exist_ok=True)
    alphabet = _byte_alphabet()
    merges = ["t h", "th e</w>", "o n", "i n"]
    tokens = alphabet + [c + "</w>" for c in alphabet]
    tokens += [m.replace(" ", "") for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(tokens))}
    with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as fh:
        json.dump(vocab, fh)
    with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as fh:
        fh.write("#version: 0.2\n" + "\n".join(merges) + "\n")
    tokenizer = CLIPTokenizer(os.path.join(folder, "vocab.json"), os.path.join(folder, "merges.txt"),
                              model_max_length=77)
    tokenizer.save_pretrained(folder)
    return len(vocab)


def build_tiny_sd(root: str, seed: int = 0, unet_overrides: dict | None = None) -> str:
    """unet_overrides: UNet2DConditionModel config entries replacing the tiny defaults."""
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    vocab_size = write_tokenizer(os.path.join(root, "tokenizer"))
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_attention_heads=4,
        num_hidden_layers=2, max_position_embeddings=77, projection_dim=32,
        bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1))
    text_encoder.save_pretrained(os.path.join(root, "text_encoder"))
    unet_config = dict(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64),
        layers_per_block=1, norm_num_groups=16, cross_attention_dim=32, attention_head_dim=8,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
    unet = UNet2DConditionModel(**{**unet_config, **(unet_overrides or {})})
    unet.save_pretrained(os.path.join(root, "unet"))
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1, norm_num_groups=8, sample_size=64)
    vae.save_pretrained(os.path.join(root, "vae"))
    DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                  beta_schedule="scaled_linear", prediction_type="epsilon").save_pretrained(
        os.path.join(root, "scheduler"))
    with open(os.path.join(root, "model_index.json"), "w") as fh:
        json.dump({"_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.42.1"}, fh)
    return root


TINY_RANDOM_ID = "tiny-random"


def tiny_random_path() -> str:
    """The tiny pipeline in the user cache, built on first use."""
    cache = os.environ.get("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache"))
    # v2: 77 text positions as in Stable Diffusion (16 cut every prompt to one letter plus the view).
    root = os.path.join(cache, "l2vsd_ext", TINY_RANDOM_ID + "-v2")
    if not os.path.isfile(os.path.join(root, "model_index.json")):
        build_tiny_sd(root)  # model_index.json is written last, so a torn build is rebuilt
    return root

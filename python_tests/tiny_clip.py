"""Builds a tiny CLIP model (random weights) from a config, with its tokenizer and image processor,
saved in the transformers folder layout: loaded through the same from_pretrained path as
openai/clip-vit-base-patch16."""
from __future__ import annotations

import os


def build_tiny_clip(root: str, seed: int = 0) -> str:
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    from l2vsd_ext.prior.tiny import write_tokenizer

    torch.manual_seed(seed)
    vocab_size = write_tokenizer(os.path.join(root, "_tokenizer"))
    config = CLIPConfig(
        text_config=dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64,
                         num_attention_heads=4, num_hidden_layers=2, max_position_embeddings=77,
                         bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1,
                         pad_token_id=vocab_size - 1),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_attention_heads=4,
                           num_hidden_layers=2, image_size=32, patch_size=8),
        projection_dim=16)
    CLIPModel(config).save_pretrained(root)
    tokenizer = CLIPTokenizer.from_pretrained(os.path.join(root, "_tokenizer"))
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(root)
    return root

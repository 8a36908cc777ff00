"""A CLIP model (transformers CLIPModel + CLIPProcessor) from a hub id or a local folder, and its
unit-length image and text embeddings. Every way loading fails offline becomes ModelUnavailable."""
from __future__ import annotations

import os

import numpy as np
import torch

DEFAULT_CLIP_MODEL = "openai/clip-vit-base-patch16"  # the paper's CLIP ViT-B/16


class ModelUnavailable(RuntimeError):
    """Weights for an evaluation model could not be loaded (offline, missing or corrupt files)."""


def load_clip(id_or_path: str, device="cpu"):
    """(model in eval mode, processor). A local folder needs config.json + weights, the tokenizer
    files and preprocessor_config.json (what `save_pretrained` of both writes)."""
    from transformers import CLIPModel, CLIPProcessor

    from ..offline import why_offline

    local = os.path.isdir(id_or_path)
    offline = None if local else why_offline()
    kwargs = {"local_files_only": True} if local or offline else {}
    try:
        model = CLIPModel.from_pretrained(id_or_path, **kwargs)
        processor = CLIPProcessor.from_pretrained(id_or_path, **kwargs)
    except (OSError, ValueError, EnvironmentError) as err:
        where = f"local folder '{id_or_path}'" if local else f"'{id_or_path}' (not a local folder, so a hub id)"
        why = f" (offline: {offline}; not in the Hugging Face cache)" if offline else ""
        detail = (str(err).strip().splitlines() or [""])[0].rstrip(".")
        raise ModelUnavailable(
            f"could not load CLIP from {where}{why}: {type(err).__name__}: {detail}. "
            f"Download it where there is internet (`hf download "
            f"{DEFAULT_CLIP_MODEL if local else id_or_path} --local-dir DIR`) and pass --clip-model DIR") from err
    return model.to(device).eval().requires_grad_(False), processor


def _projected(output) -> torch.Tensor:
    # transformers < 5 returns the projected tensor, >= 5 an output whose pooler_output it is.
    return output if isinstance(output, torch.Tensor) else output.pooler_output


@torch.no_grad()
def image_embeddings(model, processor, images: np.ndarray, batch_size: int = 32) -> torch.Tensor:
    """images (N, H, W, 3) uint8 -> (N, D) float32 unit vectors (the processor resizes and crops)."""
    device = next(model.parameters()).device
    chunks = []
    for s in range(0, len(images), batch_size):
        pixels = processor(images=list(images[s:s + batch_size]), return_tensors="pt")["pixel_values"]
        chunks.append(_projected(model.get_image_features(pixel_values=pixels.to(device))).float())
    return torch.nn.functional.normalize(torch.cat(chunks), dim=-1).cpu()


@torch.no_grad()
def text_embedding(model, processor, text: str) -> torch.Tensor:
    """(D,) float32 unit vector of `text` (truncated to the model's context length)."""
    device = next(model.parameters()).device
    tokens = processor(text=[text], return_tensors="pt", padding=True, truncation=True)
    features = model.get_text_features(input_ids=tokens["input_ids"].to(device),
                                       attention_mask=tokens["attention_mask"].to(device))
    return torch.nn.functional.normalize(_projected(features).float(), dim=-1)[0].cpu()

"""The paper's CLIP similarity (Table 1): cosine between CLIP embeddings of rendered views and of
the prompt, averaged over views; also given as an angle, arccos(mean cosine), in degrees."""
from __future__ import annotations

import math

import numpy as np

from .clip_model import image_embeddings, text_embedding


def clip_similarity(model, processor, images: np.ndarray, prompt: str) -> dict:
    """images (N, H, W, 3) uint8 -> {'clip_cosine_mean', 'clip_cosine_std', 'clip_angle_deg',
    'clip_cosine_per_view'}."""
    if len(images) == 0:
        raise ValueError("clip_similarity: 'images' is empty")
    cosines = image_embeddings(model, processor, images) @ text_embedding(model, processor, prompt)
    mean = float(cosines.mean())
    return {"clip_cosine_mean": mean,
            "clip_cosine_std": float(cosines.std()) if len(cosines) > 1 else 0.0,
            "clip_angle_deg": math.degrees(math.acos(max(-1.0, min(1.0, mean)))),
            "clip_cosine_per_view": [float(c) for c in cosines]}

"""FID between two image sets with torchmetrics' FrechetInceptionDistance, on the image embeddings
of a CLIP model passed as its feature extractor (not Inception-v3).

Why not Inception: torchmetrics' InceptionV3 needs torch-fidelity (which pins torchvision and so a
torch build) and fetches its weights from a URL at first use, which an offline machine cannot.
A CLIP image encoder loads from a hub id or a local folder like every other model here. Numbers are
"FID in CLIP feature space" (FID_CLIP, Kynkäänniemi et al. 2023): comparable between runs
evaluated the same way, not with Inception-FID values published elsewhere."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .clip_model import _projected


class ClipImageFeatures(nn.Module):
    """uint8 images (N, 3, H, W) -> (N, D) projected CLIP image embeddings (not normalised, as
    FID uses the raw feature distribution)."""

    def __init__(self, model, processor):
        super().__init__()
        self.model, self.processor = model, processor
        self.num_features = int(model.config.projection_dim)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        arrays = list(images.permute(0, 2, 3, 1).cpu().numpy().astype(np.uint8))
        pixels = self.processor(images=arrays, return_tensors="pt")["pixel_values"]
        device = next(self.model.parameters()).device
        return _projected(self.model.get_image_features(pixel_values=pixels.to(device))).float()


@torch.no_grad()
def frechet_distance(real: np.ndarray, fake: np.ndarray, features: nn.Module,
                     batch_size: int = 32) -> float:
    """real, fake: (N, H, W, 3) uint8, at least 2 images each."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    if len(real) < 2 or len(fake) < 2:
        raise ValueError(f"frechet_distance: needs >= 2 images per set, got {len(real)} and {len(fake)}")
    metric = FrechetInceptionDistance(feature=features, normalize=False)
    for images, is_real in ((real, True), (fake, False)):
        for s in range(0, len(images), batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(images[s:s + batch_size])).permute(0, 3, 1, 2)
            metric.update(batch, real=is_real)
    return float(metric.compute())

"""FID between two image sets: the Fréchet distance (frechet.py) of their features under one of two
extractors, both mapping uint8 (N, 3, H, W) images to (N, D) features:

- FidInceptionV3 (inception.py, weights via inception_weights.py): pool3 features of TF's 2015-12-05
  Inception, the paper's and the standard FID, with torch-fidelity's resize and scaling. With the
  standard weights file the numbers are comparable with torch-fidelity / pytorch-fid values on the
  same images and set sizes.
- ClipImageFeatures: CLIP's projected image embeddings, i.e. "FID_CLIP" (Kynkäänniemi et al. 2023),
  comparable only between runs evaluated the same way.

Not torchmetrics' FrechetInceptionDistance: once torch-fidelity is installed without torchvision
(how our tests get its Inception as a reference), `import torchmetrics` itself fails."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .clip_model import _projected
from .frechet import frechet_distance_of_features


class ClipImageFeatures(nn.Module):
    """uint8 images (N, 3, H, W) -> (N, D) projected CLIP image embeddings (not normalised, as
    FID uses the raw feature distribution)."""

    def __init__(self, model, processor):
        super().__init__()
        self.model, self.processor = model, processor

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        arrays = list(images.permute(0, 2, 3, 1).cpu().numpy().astype(np.uint8))
        pixels = self.processor(images=arrays, return_tensors="pt")["pixel_values"]
        device = next(self.model.parameters()).device
        return _projected(self.model.get_image_features(pixel_values=pixels.to(device))).float()


def _check_images(name: str, images) -> None:
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"frechet_distance: '{name}' must be a uint8 (N, H, W, 3) array, got "
                         f"{getattr(images, 'dtype', type(images).__name__)} of shape {getattr(images, 'shape', None)}")


@torch.no_grad()
def image_features(images: np.ndarray, features: nn.Module, batch_size: int = 32) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, D) float64 on the CPU."""
    chunks = []
    for s in range(0, len(images), batch_size):
        batch = torch.from_numpy(np.ascontiguousarray(images[s:s + batch_size])).permute(0, 3, 1, 2)
        chunks.append(features(batch).double().cpu())
    return torch.cat(chunks)


def frechet_distance(real: np.ndarray, fake: np.ndarray, features: nn.Module, batch_size: int = 32) -> float:
    """real, fake: (N, H, W, 3) uint8, at least 2 images each; `features`: FidInceptionV3,
    ClipImageFeatures or any module mapping uint8 (N, 3, H, W) to (N, D)."""
    _check_images("real", real)
    _check_images("fake", fake)
    if len(real) < 2 or len(fake) < 2:
        raise ValueError(f"frechet_distance: needs >= 2 images per set, got {len(real)} and {len(fake)}")
    return frechet_distance_of_features(image_features(real, features, batch_size),
                                        image_features(fake, features, batch_size))

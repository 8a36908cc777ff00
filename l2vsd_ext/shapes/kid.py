"""Kernel Inception Distance (Bińkowski et al. 2018) and the image features it is computed on.

KID is the unbiased estimate of the squared maximum mean discrepancy between two feature sets
under the cubic polynomial kernel k(x, y) = (x·y / d + 1)^3. Unlike FID it has no bias at small
sample counts (its expectation is 0 when both sets come from one distribution; single estimates
can be slightly negative), which is why the shapes benchmark reports KID from a few dozen images
per set and no FID: with 32 images and a 2048-d feature the Fréchet distance is dominated by its
sample-size bias.

Features (`feature_extractor`):
- 'random-conv' (the default): a fixed, randomly initialised three-layer convolutional network
  (seeded, so identical on every machine) on the image resized to 32 px, its last 4x4 map
  flattened (2048 numbers). It needs no download; random convolutional features compare colour,
  texture and coarse layout, not semantics. Numbers are comparable only with other
  'random-conv' numbers.
- 'inception': the FID Inception-v3's pool3 features (l2vsd_ext.eval), only when its weights are
  already on this machine (never downloaded here); the standard KID features, but the 32 px
  images are upsampled about 9x to its 299 px input."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

FEATURES = ("random-conv", "inception")
RANDOM_CONV_SEED = 20240531
RANDOM_CONV_SIZE = 32


def kid(a: torch.Tensor, b: torch.Tensor) -> float:
    """Unbiased MMD² of (m, d) and (n, d) feature sets (m, n >= 2), cubic polynomial kernel."""
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"kid: 'a' and 'b' must be (n, d) with the same d, got {tuple(a.shape)} "
                         f"and {tuple(b.shape)}")
    m, n = len(a), len(b)
    if m < 2 or n < 2:
        raise ValueError(f"kid: needs >= 2 samples per set, got {m} and {n}")
    a, b = a.double(), b.double()
    d = a.shape[1]
    kernel = lambda x, y: (x @ y.T / d + 1) ** 3
    k_aa, k_bb, k_ab = kernel(a, a), kernel(b, b), kernel(a, b)
    # Within-set means leave out the diagonal (a sample compared with itself): that is what makes
    # the estimate unbiased.
    within_a = (k_aa.sum() - k_aa.diagonal().sum()) / (m * (m - 1))
    within_b = (k_bb.sum() - k_bb.diagonal().sum()) / (n * (n - 1))
    return float(within_a + within_b - 2 * k_ab.mean())


class RandomConvFeatures(nn.Module):
    """uint8 or [0, 1] float images (N, 3, H, W) -> (N, 2048) features of a fixed random network:
    three 3x3 convolutions (32, 64, 128 channels; He-normal weights from a fixed seed, no bias),
    each followed by ReLU and 2x2 average pooling, on the image resized to 32x32 in [-1, 1]."""

    name = "random-conv"

    def __init__(self, seed: int = RANDOM_CONV_SEED):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.weights = nn.ParameterList()
        for c_in, c_out in ((3, 32), (32, 64), (64, 128)):
            std = (2.0 / (c_in * 9)) ** 0.5
            w = torch.randn(c_out, c_in, 3, 3, generator=generator, dtype=torch.float64) * std
            self.weights.append(nn.Parameter(w, requires_grad=False))

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.double() / 255 if images.dtype == torch.uint8 else images.double()
        if x.shape[-2:] != (RANDOM_CONV_SIZE, RANDOM_CONV_SIZE):
            x = F.interpolate(x, size=(RANDOM_CONV_SIZE, RANDOM_CONV_SIZE), mode="bilinear",
                              antialias=True, align_corners=False)
        x = x * 2 - 1
        for w in self.weights:
            x = F.avg_pool2d(F.relu(F.conv2d(x, w, padding=1)), 2)
        return x.flatten(1)


class InceptionFeatures(nn.Module):
    """[0, 1] float or uint8 images -> (N, 2048) FID Inception pool3 features."""

    name = "inception"

    def __init__(self, weights: str | None = None):
        super().__init__()
        import os

        from ..eval.inception_weights import (InceptionWeightsUnavailable, cache_candidates,
                                              load_fid_inception)

        # Never downloaded from here: only a file already on this machine is used.
        path = weights or next((p for p in cache_candidates() if os.path.isfile(p)), None)
        if path is None:
            raise InceptionWeightsUnavailable(
                f"--kid-features inception: the FID Inception weights are not on this machine (looked "
                f"for {' and '.join(cache_candidates())}); use --kid-features random-conv")
        self.model = load_fid_inception(path)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8:
            images = (images.clamp(0, 1) * 255).round().to(torch.uint8)
        return self.model(images).double()


def feature_extractor(name: str) -> nn.Module:
    """The named feature network (see the module docstring); raises ValueError for other names
    and the eval package's ModelUnavailable when the Inception weights are not on this machine."""
    if name == "random-conv":
        return RandomConvFeatures().eval()
    if name == "inception":
        return InceptionFeatures().eval()
    raise ValueError(f"--kid-features: unknown '{name}' (choose from {', '.join(FEATURES)})")


@torch.no_grad()
def image_features(extractor: nn.Module, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """(N, D) float64 features of (N, 3, H, W) images, in batches."""
    return torch.cat([extractor(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])

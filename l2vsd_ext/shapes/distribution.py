"""The distribution score: how much a run's renders look like the prior's own samples for its
prompt, per view (KID, kid.py), rather than how close they are to one true object.

For each object and view label (front, side, back) the prior is sampled for the text a run
conditions on for that view ("<prompt>, <view> view"): DDIM, 30 steps, guidance 3 (the shapes
runs' guidance), a seed fixed by the text. The samples are cached in BENCH/prior_samples/ as one
PNG per object and view with a JSON of the settings and a fingerprint of the prior's weight files;
a changed prior or setting redraws them.

The run is rendered from as many random run cameras of that view label (CameraSampler's
distribution, a fixed seed: every run sees the same cameras) at the samples' resolution. The prior
draws its objects over white or over a random solid colour (it was trained on both), so each render
is re-composited from white onto the background colour of one prior sample (the mean of its
border), render i onto sample i's: both sets then share one distribution of backgrounds, and KID
compares the objects. The true object scored the same way gives the reference a perfect result
would get (`truth_kid_scores`)."""
from __future__ import annotations

import hashlib
import json
import os
import zlib

import torch

from ..checkpoint import atomic_write_bytes
from .augment import over_background
from .dataset import view_text
from .kid import image_features, kid
from .objects import OBJECTS
from .quality import border_colour

KID_VIEWS = ("front", "side", "back")
SAMPLE_STEPS = 30
SAMPLE_GUIDANCE = 3.0
CAMERA_SEED = 4242  # the cameras a run is rendered from for KID: the same for every run
SAMPLES_FOLDER = "prior_samples"


def prior_fingerprint(pretrained: str) -> str:
    """sha256 (first 16 digits) of the prior folder's weight and config files: cached samples
    are redrawn when the prior changes."""
    from ..prior.loading import resolve_shipped

    root = resolve_shipped(pretrained)
    digest = hashlib.sha256()
    for folder, _, files in sorted(os.walk(root)):
        for name in sorted(files):
            if name.endswith((".safetensors", ".json", ".txt", ".bin")):
                path = os.path.join(folder, name)
                digest.update(os.path.relpath(path, root).encode())
                with open(path, "rb") as fh:
                    digest.update(fh.read())
    return digest.hexdigest()[:16]


def _save_grid(images: torch.Tensor, path: str, columns: int = 8) -> None:
    import io

    from PIL import Image

    n, _, h, w = images.shape
    rows = -(-n // columns)
    grid = torch.full((3, rows * h, columns * w), 255, dtype=torch.uint8)
    for i in range(n):
        r, c = divmod(i, columns)
        grid[:, r * h:(r + 1) * h, c * w:(c + 1) * w] = images[i]
    buffer = io.BytesIO()
    Image.fromarray(grid.permute(1, 2, 0).numpy()).save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())


def _load_grid(path: str, n: int, size: int, columns: int = 8) -> torch.Tensor:
    import numpy as np
    from PIL import Image

    grid = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)
    out = []
    for i in range(n):
        r, c = divmod(i, columns)
        out.append(grid[:, r * size:(r + 1) * size, c * size:(c + 1) * size])
    return torch.stack(out)


class PriorSamples:
    """The prior's samples per (object, view), drawn once and cached under `folder`."""

    def __init__(self, folder: str, pretrained: str = "shapes", n: int = 32,
                 steps: int = SAMPLE_STEPS, guidance_scale: float = SAMPLE_GUIDANCE):
        self.folder, self.pretrained, self.n = folder, pretrained, n
        self.steps, self.guidance_scale = steps, guidance_scale
        self._fingerprint = None
        self._prior = None

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = prior_fingerprint(self.pretrained)
        return self._fingerprint

    def settings(self, obj_key: str, view: str) -> dict:
        text = view_text(OBJECTS[obj_key].prompt, view)
        return {"text": text, "n": self.n, "steps": self.steps, "guidance_scale": self.guidance_scale,
                "seed": zlib.crc32(text.encode()) & 0x7FFFFFFF, "pretrained": self.pretrained,
                "prior_fingerprint": self.fingerprint(), "sampler": "DDIM, shapes.sample.sample_images"}

    def get(self, obj_key: str, view: str) -> torch.Tensor:
        """uint8 (n, 3, H, W) samples, from the cache or freshly drawn (and cached)."""
        settings = self.settings(obj_key, view)
        stem = os.path.join(self.folder, f"{obj_key}_{view}")
        try:
            with open(stem + ".json") as fh:
                saved = json.load(fh)
            if {k: saved.get(k) for k in settings} == settings and os.path.isfile(stem + ".png"):
                return _load_grid(stem + ".png", self.n, saved["resolution"])
        except (OSError, ValueError, KeyError):
            pass  # missing or unreadable: draw again
        images = self._draw(settings)
        os.makedirs(self.folder, exist_ok=True)
        _save_grid(images, stem + ".png")
        atomic_write_bytes(stem + ".json", json.dumps({**settings, "resolution": images.shape[-1]},
                                                      indent=2).encode())
        return images

    def _draw(self, settings: dict) -> torch.Tensor:
        from ..prior import DiffusionPrior
        from .sample import sample_images

        if self._prior is None:
            self._prior = DiffusionPrior.from_pretrained(self.pretrained, device="cpu")
        images = sample_images(self._prior, [settings["text"]] * settings["n"], steps=settings["steps"],
                               guidance_scale=settings["guidance_scale"], seed=settings["seed"])
        return (images.clamp(0, 1) * 255).round().to(torch.uint8)


def view_cameras(n_per_view: int, resolution: int, seed: int = CAMERA_SEED) -> dict:
    """{view: CameraBatch of n_per_view random run cameras with that label} for KID_VIEWS."""
    from dataclasses import fields, replace

    from ..scene import CameraSampler

    generator = torch.Generator().manual_seed(seed)
    sampler = CameraSampler(height=resolution, width=resolution, batch_size=64)
    chosen = {v: [] for v in KID_VIEWS}
    while any(len(c) < n_per_view for c in chosen.values()):
        cams = sampler.sample(generator)
        for i, label in enumerate(cams.view_labels):
            if label in chosen and len(chosen[label]) < n_per_view:
                chosen[label].append(replace(cams, **{f.name: getattr(cams, f.name)[i:i + 1]
                                                      for f in fields(cams)}))
    out = {}
    for view, singles in chosen.items():
        out[view] = replace(singles[0], **{
            f.name: (sum((getattr(s, f.name) for s in singles), []) if f.name == "view_labels"
                     else torch.cat([getattr(s, f.name) for s in singles]))
            for f in fields(singles[0])})
    return out


def _recomposited(renderer, cams, samples: torch.Tensor) -> torch.Tensor:
    """The renders from `cams` (over white), re-composited onto the samples' border colours,
    as uint8."""
    from .score import render_over_white

    out = render_over_white(renderer, cams)
    colours = torch.stack([border_colour(s.float() / 255) for s in samples])
    colours = colours[torch.arange(len(out["rgb"])) % len(colours)]
    images = over_background(out["rgb"], out["opacity"][:, None], colours)
    return (images * 255).round().to(torch.uint8)


class DistributionScorer:
    """KID per view of a scene's renders against the prior's samples for an object. Prior-sample
    features are computed once per (object, view)."""

    def __init__(self, samples: PriorSamples, extractor):
        self.samples, self.extractor = samples, extractor
        self._features: dict = {}
        self._cameras: dict = {}

    def settings(self) -> dict:
        """What the scores depend on besides the scene: a saved score with other settings is
        recomputed."""
        return {"features": self.extractor.name, "samples": self.samples.n,
                "sample_steps": self.samples.steps, "sample_guidance": self.samples.guidance_scale,
                "pretrained": self.samples.pretrained,
                "prior_fingerprint": self.samples.fingerprint(),
                "camera_seed": CAMERA_SEED}

    def reference(self, obj_key: str, view: str):
        if (obj_key, view) not in self._features:
            images = self.samples.get(obj_key, view)
            self._features[obj_key, view] = (images, image_features(self.extractor, images))
        return self._features[obj_key, view]

    def cameras(self, resolution: int) -> dict:
        if resolution not in self._cameras:
            self._cameras[resolution] = view_cameras(self.samples.n, resolution)
        return self._cameras[resolution]

    @torch.no_grad()
    def score(self, renderer, obj_key: str) -> dict:
        """{kid_front, kid_side, kid_back, kid (their mean), kid_features}."""
        result = {}
        for view in KID_VIEWS:
            images, features = self.reference(obj_key, view)
            cams = self.cameras(images.shape[-1])[view]
            renders = _recomposited(renderer, cams, images)
            result[f"kid_{view}"] = kid(image_features(self.extractor, renders), features)
        result["kid"] = sum(result[f"kid_{v}"] for v in KID_VIEWS) / len(KID_VIEWS)
        result["kid_features"] = self.extractor.name
        return result


def truth_kid_scores(scorer: DistributionScorer, obj_key: str) -> dict:
    """The KID scores the true object itself gets: what a perfect distillation would score."""
    from .field import truth_renderer

    return scorer.score(truth_renderer(OBJECTS[obj_key]), obj_key)

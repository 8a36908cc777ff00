"""The prior's training set: renders of every object from the run's camera distribution, each
with the text a run conditions on for that camera (PromptEmbeddings' "<prompt>, <view> view")."""
from __future__ import annotations

import os

import torch

from ..checkpoint import atomic_write_bytes
from ..prior.prompts import VIEW_LABELS
from ..scene import CameraSampler
from .field import truth_renderer
from .objects import OBJECTS


def view_text(prompt: str, view: str) -> str:
    """Exactly the text PromptEmbeddings builds for a camera with this view label."""
    return f"{prompt}, {view} view"


def all_texts() -> list[str]:
    """Conditioning texts, object-major then view (index = object * 4 + view); the empty
    (unconditional) text last."""
    return [view_text(obj.prompt, v) for obj in OBJECTS.values() for v in VIEW_LABELS] + [""]


@torch.no_grad()
def render_views(obj, cams, chunk: int = 16, with_alpha: bool = False):
    """(B, 3, H, W) albedo renders over white in [0, 1] of the true object from a camera batch;
    with_alpha: also their opacity (B, 1, H, W), to re-composite them over other backgrounds."""
    renderer = truth_renderer(obj)
    frames, alphas = [], []
    for i in range(0, cams.batch_size, chunk):
        out = renderer(cams.rays_o[i:i + chunk], cams.rays_d[i:i + chunk])
        frames.append(out["rgb"].permute(0, 3, 1, 2).clamp(0, 1))
        alphas.append(out["opacity"].permute(0, 3, 1, 2).clamp(0, 1))
    rgb = torch.cat(frames)
    return (rgb, torch.cat(alphas)) if with_alpha else rgb


def build_dataset(views_per_object: int, resolution: int, seed: int, progress=None) -> dict:
    """Renders `views_per_object` random cameras (CameraSampler's run distribution, jitter
    included) per object. Returns uint8 images over white (N, 3, H, W), their uint8 opacity
    (N, 1, H, W) and, per image, its text index."""
    generator = torch.Generator().manual_seed(seed)
    sampler = CameraSampler(height=resolution, width=resolution, batch_size=16)
    images, alphas, text_index, elevation, azimuth = [], [], [], [], []
    for k, obj in enumerate(OBJECTS.values()):
        for _ in range(-(-views_per_object // 16)):
            cams = sampler.sample(generator)
            rgb, alpha = render_views(obj, cams, with_alpha=True)
            images.append((rgb * 255).round().to(torch.uint8))
            alphas.append((alpha * 255).round().to(torch.uint8))
            text_index += [k * len(VIEW_LABELS) + VIEW_LABELS.index(v) for v in cams.view_labels]
            elevation.append(cams.elevation)
            azimuth.append(cams.azimuth)
            if progress is not None:
                progress(16)
    return {"images": torch.cat(images), "alpha": torch.cat(alphas), "text_index": torch.tensor(text_index),
            "elevation": torch.cat(elevation), "azimuth": torch.cat(azimuth),
            "texts": all_texts(), "resolution": resolution, "seed": seed}


def load_or_build_dataset(path: str, views_per_object: int, resolution: int, seed: int,
                          progress=None) -> dict:
    """The cached data set at `path` if it was built with these settings, else a fresh one
    (written atomically, so an interrupted build is simply redone)."""
    if os.path.isfile(path):
        data = torch.load(path, weights_only=False)
        same = ("alpha" in data and data["resolution"] == resolution and data["seed"] == seed and
                data["texts"] == all_texts() and
                data["images"].shape[0] == len(OBJECTS) * 16 * -(-views_per_object // 16))
        if same:
            return data
    data = build_dataset(views_per_object, resolution, seed, progress)
    import io

    buffer = io.BytesIO()
    torch.save(data, buffer)
    atomic_write_bytes(path, buffer.getvalue())
    return data

"""The prior's training set: renders of every object from the run's camera distribution, each
with the text a run conditions on for that camera (PromptEmbeddings' "<prompt>, <view> view").

Cached as an .npz of plain arrays, read with allow_pickle=False: a data set file from someone else
can hold only numbers and strings, never code (a pickle would run on load)."""
from __future__ import annotations

import io
import os
import sys
import zipfile

import numpy as np
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
    # Contiguous (the renders come channels-last): a fresh and a reloaded data set then give the
    # same memory layout downstream, and so bit-identical training.
    return {"images": torch.cat(images).contiguous(), "alpha": torch.cat(alphas).contiguous(),
            "text_index": torch.tensor(text_index),
            "elevation": torch.cat(elevation), "azimuth": torch.cat(azimuth),
            "texts": all_texts(), "resolution": resolution, "seed": seed}


_TENSORS = ("images", "alpha", "text_index", "elevation", "azimuth")


def save_dataset(data: dict, path: str) -> None:
    """Writes `data` atomically as an .npz of plain arrays (texts as a unicode array)."""
    arrays = {k: data[k].numpy() for k in _TENSORS}
    arrays.update(texts=np.array(data["texts"], dtype=str), resolution=np.array(data["resolution"]),
                  seed=np.array(data["seed"]))
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


class UnreadableDataset(ValueError):
    """The file is not a data set this module wrote (foreign, truncated, or holding a pickle)."""


def read_dataset(path: str) -> dict:
    """The data set at `path`. Nothing in the file is executed: a pickle anywhere in it (the whole
    file, or an object array inside the .npz) is refused with UnreadableDataset."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            if not isinstance(npz, np.lib.npyio.NpzFile):
                raise UnreadableDataset("a single array, not an .npz data set")
            missing = [k for k in _TENSORS + ("texts", "resolution", "seed") if k not in npz.files]
            if missing:
                raise UnreadableDataset(f"no {', '.join(missing)}")
            data = {k: torch.from_numpy(npz[k].copy()) for k in _TENSORS}
            data.update(texts=[str(t) for t in npz["texts"]], resolution=int(npz["resolution"]),
                        seed=int(npz["seed"]))
    except UnreadableDataset:
        raise
    except (ValueError, OSError, EOFError, KeyError, TypeError, zipfile.BadZipFile) as err:
        detail = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UnreadableDataset(f"{type(err).__name__}: {detail}") from None
    return data


def load_or_build_dataset(path: str, views_per_object: int, resolution: int, seed: int,
                          progress=None) -> dict:
    """The cached data set at `path` if it was built with these settings, else a fresh one
    (written atomically, so an interrupted build is simply redone). A file that is not a plain
    .npz data set (a pickle, say) is never executed: it is reported in one line and rebuilt."""
    if os.path.isfile(path):
        try:
            data = read_dataset(path)
        except UnreadableDataset as err:
            print(f"l2vsd_ext.shapes: '{path}' is not a readable data set ({err}); nothing in it was "
                  "executed; rendering it again", file=sys.stderr)
        else:
            same = (data["resolution"] == resolution and data["seed"] == seed and
                    data["texts"] == all_texts() and
                    data["images"].shape[0] == len(OBJECTS) * 16 * -(-views_per_object // 16))
            if same:
                return data
    data = build_dataset(views_per_object, resolution, seed, progress)
    save_dataset(data, path)
    return data

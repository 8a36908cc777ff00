"""A front-or-back classifier for the shapes objects, trained on true renders: the prior-quality
report's test of whether "front view" samples show fronts.

Nearest-view PSNR cannot answer that at 32 px. Held-out true front renders are nearer the true
front views than the back views only 38 % of the time against 128 reference views per object (53 %
against 1024): pose alignment dominates PSNR, and a plain back is "nearer" than a slightly
misaligned face. So a small CNN with one front-vs-back output per object learns the front features
themselves, from random run cameras labelled front or back, with the prior training set's
background augmentation and a blur of up to 1.5 px (samples are softer than renders). Its accuracy
on held-out true renders is reported with it: its verdict on samples reads against that."""
from __future__ import annotations

import dataclasses
import functools

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..scene import CameraSampler
from .augment import random_backgrounds
from .dataset import render_views
from .objects import OBJECTS

PROBE_SEED = 4242  # neither the training set's, the references' nor the true-render sampler's
WHITE_PROBABILITY = 0.75  # the prior training set's share of white backgrounds
MAX_BLUR = 1.5
RESOLUTION = 32  # the shapes prior's image size; other sizes are resized to it


class ViewProbe(nn.Module):
    """(B, 3, H, W) images in [0, 1] -> (B, n_objects) front-vs-back logits."""

    def __init__(self, n_objects: int = len(OBJECTS)):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
            nn.Flatten(), nn.Linear(256, n_objects))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images * 2 - 1)


@dataclasses.dataclass
class ProbeData:
    rgb: torch.Tensor  # (N, 3, H, W) over white
    alpha: torch.Tensor  # (N, 1, H, W)
    is_front: torch.Tensor  # (N,) float 1 / 0
    object_index: torch.Tensor  # (N,) long, OBJECTS order


def probe_data(views_per_object: int, resolution: int, seed: int, keys=None,
               view_labels=("front", "back")) -> ProbeData:
    """True renders of the cameras labelled with one of view_labels (default front and back) among
    views_per_object random run cameras per object."""
    keys = list(OBJECTS) if keys is None else list(keys)
    parts = []
    for key in keys:
        generator = torch.Generator().manual_seed(seed * 1000 + list(OBJECTS).index(key))
        cams = CameraSampler(height=resolution, width=resolution, batch_size=views_per_object).sample(generator)
        keep = [i for i, v in enumerate(cams.view_labels) if v in view_labels]
        chosen = dataclasses.replace(cams, **{f.name: _take(getattr(cams, f.name), keep)
                                              for f in dataclasses.fields(cams)})
        rgb, alpha = render_views(OBJECTS[key], chosen, with_alpha=True)
        front = torch.tensor([1.0 if chosen.view_labels[i] == "front" else 0.0 for i in range(len(keep))])
        parts.append((rgb, alpha, front, torch.full((len(keep),), list(OBJECTS).index(key))))
    return ProbeData(*(torch.cat(p) for p in zip(*parts)))


def _take(value, index: list[int]):
    return [value[i] for i in index] if isinstance(value, list) else value[index]


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    if sigma <= 0:
        return images
    radius = max(1, int(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=images.dtype)
    kernel = torch.exp(-x ** 2 / (2 * sigma ** 2))
    kernel = kernel / kernel.sum()
    c = images.shape[1]
    out = F.pad(images, (radius,) * 4, mode="replicate")
    out = F.conv2d(out, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(out, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def augmented(data: ProbeData, index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A batch over the training set's backgrounds, blurred by one random sigma in [0, MAX_BLUR]."""
    images = random_backgrounds(data.rgb[index], data.alpha[index], WHITE_PROBABILITY, generator)
    sigma = float(torch.rand((), generator=generator)) * MAX_BLUR
    return gaussian_blur(images, sigma if sigma > 0.3 else 0.0)


def train_view_probe(views_per_object: int = 2000, epochs: int = 30, resolution: int = RESOLUTION,
                     seed: int = PROBE_SEED, batch_size: int = 64, progress=None) -> ViewProbe:
    """Trains the probe (Adam 2e-3, binary cross-entropy on each image's own object's output)."""
    torch.manual_seed(seed)
    probe = ViewProbe()
    data = probe_data(views_per_object, resolution, seed)
    optimizer = torch.optim.Adam(probe.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(seed + 1)
    n = data.is_front.shape[0]
    for epoch in range(epochs):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, batch_size):
            index = order[start:start + batch_size]
            logits = probe(augmented(data, index, generator))[torch.arange(len(index)), data.object_index[index]]
            loss = F.binary_cross_entropy_with_logits(logits, data.is_front[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if progress is not None:
            progress(epoch, float(loss.detach()))
    return probe.eval()


def at_probe_resolution(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) images as float at the probes' RESOLUTION (resized with antialiasing if needed)."""
    images = images.float()
    if images.shape[-2:] != (RESOLUTION, RESOLUTION):
        images = F.interpolate(images, size=(RESOLUTION, RESOLUTION), mode="bilinear", antialias=True,
                               align_corners=False)
    return images


@torch.no_grad()
def front_probability(probe: ViewProbe, images: torch.Tensor, object_keys: list[str]) -> torch.Tensor:
    """(N,) the probe's probability that each image shows its object's front (rather than back)."""
    index = torch.tensor([list(OBJECTS).index(k) for k in object_keys])
    return torch.sigmoid(probe(at_probe_resolution(images))[torch.arange(len(index)), index])


@torch.no_grad()
def held_out_accuracy(probe: ViewProbe, views_per_object: int = 400, resolution: int = RESOLUTION,
                      seed: int = PROBE_SEED + 1, sigmas=(0.0, 1.0)) -> dict:
    """Accuracy on fresh true renders over the augmentation's backgrounds, per blur sigma and per
    object (at sigma 0)."""
    keys = list(OBJECTS)

    def right(images, data):
        p = front_probability(probe, images, [keys[i] for i in data.object_index])
        return (p > 0.5).float() == data.is_front

    return accuracy_over_blurs(probe_data(views_per_object, resolution, seed), seed, sigmas, right)


def accuracy_over_blurs(data: ProbeData, seed: int, sigmas, right) -> dict:
    """A probe's accuracy on `data` composited over the augmentation's backgrounds (drawn from
    `seed`), per blur sigma, and per object at sigma 0; right(images, data) -> (N,) bool verdicts."""
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for sigma in sigmas:
        images = gaussian_blur(random_backgrounds(data.rgb, data.alpha, WHITE_PROBABILITY, generator), sigma)
        correct = right(images, data).float()
        out[f"accuracy_blur{sigma:g}"] = float(correct.mean())
        if sigma == 0:
            out["accuracy_per_object"] = {k: float(correct[data.object_index == i].mean())
                                          for i, k in enumerate(OBJECTS)}
    return out


PROBE_FILE = "view_probe.safetensors"


def shipped_probe_path() -> str:
    import os

    return os.path.join(os.path.dirname(__file__), "probe", PROBE_FILE)


def save_view_probe(probe: ViewProbe, path: str) -> None:
    """Weights as safetensors, written atomically (no pickle)."""
    import os

    from safetensors.torch import save_file

    tmp = path + ".tmp"
    save_file({k: v.contiguous() for k, v in probe.state_dict().items()}, tmp,
              metadata={"objects": ",".join(OBJECTS)})
    os.replace(tmp, path)


@functools.lru_cache(maxsize=1)
def shipped_view_probe() -> ViewProbe:
    """The shipped probe, loaded once per process (the scorer calls it per run)."""
    return load_view_probe()


def load_view_probe(path: str | None = None) -> ViewProbe:
    """The probe from `path` (default: the shipped one). Raises ValueError naming the path if it is
    missing or was trained for another object list."""
    return load_probe_weights(ViewProbe(), shipped_probe_path() if path is None else path,
                              "view probe", "l2vsd_ext.shapes.view_probe")


def load_probe_weights(probe: nn.Module, path: str, what: str, module: str) -> nn.Module:
    """`probe` with the safetensors weights at `path`, in eval mode; ValueError naming the path if
    the file is missing or was trained for another object list (`module` trains it)."""
    import os

    from safetensors import safe_open
    from safetensors.torch import load_file

    if not os.path.isfile(path):
        raise ValueError(f"{what} '{path}' does not exist (python -m {module} --out {path} trains it)")
    with safe_open(path, framework="pt") as fh:
        objects = (fh.metadata() or {}).get("objects", "")
    if objects != ",".join(OBJECTS):
        raise ValueError(f"{what} '{path}' was trained for objects '{objects}', not "
                         f"'{','.join(OBJECTS)}'")
    probe.load_state_dict(load_file(path))
    return probe.eval()


def train_probe_cli(argv, module: str, default_out: str, default_views: int, seed: int, train,
                    held_out) -> int:
    """python -m MODULE --out PATH [--views N] [--epochs E]: trains a probe with train(views, epochs,
    progress=...), writes it and PATH's .json with held_out(probe, sigmas=...)'s accuracy."""
    import argparse
    import json
    import time

    p = argparse.ArgumentParser(prog=f"python -m {module}")
    p.add_argument("--out", default=default_out)
    p.add_argument("--views", type=int, default=default_views, help="random cameras per object")
    p.add_argument("--epochs", type=int, default=30)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    start = time.time()
    probe = train(args.views, args.epochs, progress=lambda e, loss: print(
        f"epoch {e + 1}/{args.epochs}: loss {loss:.3f} ({time.time() - start:.0f} s)", flush=True))
    save_view_probe(probe, args.out)
    accuracy = held_out(probe, sigmas=(0.0, 1.0, 1.5))
    accuracy.update(views_per_object=args.views, epochs=args.epochs, seed=seed)
    with open(args.out.rsplit(".", 1)[0] + ".json", "w") as fh:
        json.dump(accuracy, fh, indent=2)
    print(json.dumps(accuracy, indent=2))
    return 0


def main(argv=None) -> int:
    """python -m l2vsd_ext.shapes.view_probe --out PATH [--views N] [--epochs E]: trains the probe
    (about 5 minutes on one thread), writes it and PATH's .json with its held-out accuracy."""
    return train_probe_cli(argv, "l2vsd_ext.shapes.view_probe", shipped_probe_path(), 2000, PROBE_SEED,
                           train_view_probe, held_out_accuracy)


if __name__ == "__main__":
    import sys

    sys.exit(main())

"""Which of the eight objects an image shows: a classifier trained on true renders, the prior
report's test that a sample is recognisably its own object.

Nearest-view PSNR cannot answer that reliably at 32 px: held-out TRUE renders are nearest their
own object only 0.84-0.86 of the time (pose alignment dominates PSNR), so "own object nearest
>= 0.95" is a target truth misses, while soft samples score higher than truth. This probe is the
view probe's CNN (shapes/view_probe.py) with one output per object and a softmax, trained on random
run cameras of every view label with the same background augmentation and blur. It recognises an
object by its colours and outline: it says a sample is that object, not that its details are right
(the view probe tests the front features)."""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from ..prior.prompts import VIEW_LABELS
from .objects import OBJECTS
from .view_probe import (PROBE_SEED, RESOLUTION, ViewProbe, accuracy_over_blurs, at_probe_resolution, augmented,
                         load_probe_weights, probe_data, train_probe_cli)

PROBE_FILE = "object_probe.safetensors"
SEED = PROBE_SEED + 7  # its own cameras, not the view probe's


class ObjectProbe(ViewProbe):
    """(B, 3, H, W) images in [0, 1] -> (B, n_objects) logits over the objects (OBJECTS order)."""


def train_object_probe(views_per_object: int = 1000, epochs: int = 30, resolution: int = RESOLUTION,
                       seed: int = SEED, batch_size: int = 64, progress=None) -> ObjectProbe:
    """Trains the probe (Adam 2e-3, cross-entropy over the objects)."""
    torch.manual_seed(seed)
    probe = ObjectProbe()
    data = probe_data(views_per_object, resolution, seed, view_labels=VIEW_LABELS)
    optimizer = torch.optim.Adam(probe.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(seed + 1)
    n = data.object_index.shape[0]
    for epoch in range(epochs):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, batch_size):
            index = order[start:start + batch_size]
            loss = F.cross_entropy(probe(augmented(data, index, generator)), data.object_index[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if progress is not None:
            progress(epoch, float(loss.detach()))
    return probe.eval()


@torch.no_grad()
def classify_objects(probe: ObjectProbe, images: torch.Tensor) -> list[str]:
    """The object key the probe assigns to each (N, 3, H, W) image in [0, 1]."""
    keys = list(OBJECTS)
    return [keys[i] for i in probe(at_probe_resolution(images)).argmax(dim=1).tolist()]


@torch.no_grad()
def held_out_accuracy(probe: ObjectProbe, views_per_object: int = 200, resolution: int = RESOLUTION,
                      seed: int = SEED + 1, sigmas=(0.0, 1.0)) -> dict:
    """Accuracy on fresh true renders of every view label over the augmentation's backgrounds, per
    blur sigma and per object (at sigma 0)."""
    keys = list(OBJECTS)

    def right(images, data):
        return torch.tensor([keys.index(k) for k in classify_objects(probe, images)]) == data.object_index

    data = probe_data(views_per_object, resolution, seed, view_labels=VIEW_LABELS)
    return accuracy_over_blurs(data, seed, sigmas, right)


def shipped_probe_path() -> str:
    return os.path.join(os.path.dirname(__file__), "probe", PROBE_FILE)


def load_object_probe(path: str | None = None) -> ObjectProbe:
    """The probe from `path` (default: the shipped one); ValueError naming the path if it is missing
    or was trained for another object list."""
    return load_probe_weights(ObjectProbe(), shipped_probe_path() if path is None else path,
                              "object probe", "l2vsd_ext.shapes.object_probe")


def main(argv=None) -> int:
    """python -m l2vsd_ext.shapes.object_probe --out PATH [--views N] [--epochs E]: trains the probe
    (about 7 minutes on one thread), writes it and PATH's .json with its held-out accuracy."""
    return train_probe_cli(argv, "l2vsd_ext.shapes.object_probe", shipped_probe_path(), 1000, SEED,
                           train_object_probe, held_out_accuracy)


if __name__ == "__main__":
    import sys

    sys.exit(main())

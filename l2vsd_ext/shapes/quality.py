"""The prior's own quality: samples for each prompt and view, scored by nearest-view PSNR against
dense sets of true renders (random cameras from the run's distribution, a seed the training set
did not use). A good prior's sample is closer to its own object than to any other, and a
"back view" sample is closer to the object's true back views than to its front views.

The prior draws objects over white or over a solid colour (it was trained on both, as a run shows
it both), so each sample is compared with the true renders composited over the sample's own
background: the mean colour of its border, where no object reaches."""
from __future__ import annotations

import torch

from ..prior.prompts import VIEW_LABELS
from ..scene import CameraSampler
from .augment import over_background
from .dataset import render_views, view_text
from .metrics import psnr
from .objects import OBJECTS

REFERENCE_SEED = 12345  # the training set uses the training seed (0 by default)
TRUTH_SEED = 777  # the true-render "sampler": neither the training set's seed nor a reference set's


def reference_renders(n_views: int = 256, resolution: int = 32, seed: int = REFERENCE_SEED) -> dict:
    """{object key: (images over white (n, 3, H, W), view labels, opacity (n, 1, H, W))} from
    random run cameras."""
    generator = torch.Generator().manual_seed(seed)
    sampler = CameraSampler(height=resolution, width=resolution, batch_size=n_views)
    out = {}
    for key, obj in OBJECTS.items():
        cams = sampler.sample(generator)
        rgb, alpha = render_views(obj, cams, with_alpha=True)
        out[key] = (rgb, list(cams.view_labels), alpha)
    return out


def border_colour(image: torch.Tensor) -> torch.Tensor:
    """(3,) mean colour of a (3, H, W) image's one-pixel border."""
    border = torch.cat([image[:, 0], image[:, -1], image[:, 1:-1, 0], image[:, 1:-1, -1]], dim=1)
    return border.mean(dim=1)


def nearest_psnr(sample: torch.Tensor, references: torch.Tensor, alphas: torch.Tensor) -> float:
    """The best PSNR of one (3, H, W) sample against any of the (n, 3, H, W) references (over
    white, opacity (n, 1, H, W)), each re-composited over the sample's background colour."""
    colour = border_colour(sample).expand(references.shape[0], 3)
    recomposited = over_background(references, alphas, colour)
    return float(psnr(sample[None].expand_as(recomposited), recomposited).max())


def evaluate_prior(prior, samples_per_case: int = 2, views=("front", "back"), steps: int = 30,
                   guidance_scale: float = 3.0, seed: int = 0, references: dict | None = None,
                   sampler=None, probe=None, object_probe=None):
    """Samples every (object, view) case and scores it. Returns (rows, images): one row per
    sample with the nearest-view PSNR to its own object, the best other object, and to its own
    object's front / back views; images (N, 3, H, W) in row order.

    sampler(texts, steps, guidance_scale, seed) -> images replaces the DDIM sampler through
    `prior` (e.g. sample.sample_images_diffusers on the prior's folder); prior may then be None
    if `references` is given. probe: a view_probe.ViewProbe; each row then also has its
    probability that the sample shows its object's front ("p_front"). object_probe: an
    object_probe.ObjectProbe; each row then also has the object it recognises ("probe_object")."""
    from .sample import sample_images

    if references is None:
        references = reference_renders(resolution=prior.unet.config.sample_size * prior.vae_scale_factor)
    if sampler is None:
        sampler = lambda texts, steps, guidance_scale, seed: sample_images(  # noqa: E731
            prior, texts, steps=steps, guidance_scale=guidance_scale, seed=seed)
    cases = [(key, view) for key in OBJECTS for view in views for _ in range(samples_per_case)]
    images = sampler([view_text(OBJECTS[k].prompt, v) for k, v in cases], steps=steps,
                     guidance_scale=guidance_scale, seed=seed)
    p_front = None
    if probe is not None:
        from .view_probe import front_probability

        p_front = front_probability(probe, images, [key for key, _ in cases]).tolist()
    recognised = None
    if object_probe is not None:
        from .object_probe import classify_objects

        recognised = classify_objects(object_probe, images)
    rows = []
    for n, ((key, view), image) in enumerate(zip(cases, images)):
        to_object = {other: nearest_psnr(image, refs, alphas)
                     for other, (refs, _, alphas) in references.items()}
        refs, labels, alphas = references[key]
        by_view = {}
        for label in VIEW_LABELS:
            chosen = [i for i, v in enumerate(labels) if v == label]
            by_view[label] = nearest_psnr(image, refs[chosen], alphas[chosen])
        best_other = max(v for k, v in to_object.items() if k != key)
        rows.append({"object": key, "view": view, "psnr_own": to_object[key],
                     "psnr_best_other": best_other,
                     "nearest_object": max(to_object, key=to_object.get),
                     "psnr_front_views": by_view["front"], "psnr_back_views": by_view["back"]})
        if p_front is not None:
            rows[-1]["p_front"] = p_front[n]
        if recognised is not None:
            rows[-1]["probe_object"] = recognised[n]
    return rows, images


def summarize(rows: list[dict]) -> dict:
    """The closeness relations as fractions of samples."""
    own = [r["nearest_object"] == r["object"] for r in rows]
    back = [r["psnr_back_views"] > r["psnr_front_views"] for r in rows if r["view"] == "back"]
    front = [r["psnr_front_views"] > r["psnr_back_views"] for r in rows if r["view"] == "front"]
    mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")
    out = {"samples": len(rows), "own_object_nearest": mean(own),
           "back_sample_nearer_back_views": mean(back),
           "front_sample_nearer_front_views": mean(front),
           "mean_psnr_own": mean([r["psnr_own"] for r in rows]),
           "mean_psnr_best_other": mean([r["psnr_best_other"] for r in rows])}
    if rows and all("p_front" in r for r in rows):
        # the view probe's verdict: a "front view" sample classified front, a "back view" one back
        out["front_sample_classified_front"] = mean([r["p_front"] > 0.5 for r in rows if r["view"] == "front"])
        out["back_sample_classified_back"] = mean([r["p_front"] < 0.5 for r in rows if r["view"] == "back"])
    if rows and all("probe_object" in r for r in rows):
        out["own_object_classified"] = mean([r["probe_object"] == r["object"] for r in rows])
    return out


def true_render_sampler(resolution: int = 32, seed: int = TRUTH_SEED, pool: int = 256):
    """A sampler (the evaluate_prior interface) that returns held-out true renders instead of
    samples: for each "<prompt>, <view> view" text, the next random run camera with that view label.
    Scoring it like a prior gives what a perfect prior would score with the same references: the
    ceiling of every figure in summarize(). Cameras come from one generator in text order."""
    by_text = {view_text(obj.prompt, view): (key, view) for key, obj in OBJECTS.items()
               for view in VIEW_LABELS}

    from ..trainer import _index

    def sample(texts, **_):
        generator = torch.Generator().manual_seed(seed)
        cameras = CameraSampler(height=resolution, width=resolution, batch_size=pool)
        unused = {view: [] for view in VIEW_LABELS}  # per label: single cameras not used yet
        images = []
        for text in texts:
            if text not in by_text:
                raise ValueError(f"true_render_sampler: '{text}' is not an object's view text")
            key, view = by_text[text]
            while not unused[view]:
                batch = cameras.sample(generator)
                for i, label in enumerate(batch.view_labels):
                    unused[label].append(_index(batch, i))
            images.append(render_views(OBJECTS[key], unused[view].pop(0)))
        return torch.cat(images)

    return sample


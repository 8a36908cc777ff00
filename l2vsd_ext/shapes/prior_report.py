"""The prior's quality figures for its model card: python -m l2vsd_ext.shapes.prior_report
[--pretrained shapes] [--sampler prior|diffusers] --out DIR. Writes DIR/prior_quality.json (per-sample rows and the summary of
shapes.quality, and "true_renders": the same figures for held-out true renders scored as if they
were samples, the ceiling no prior can pass with these references) and DIR/prior_samples.png (per object: a true front and back view, then samples
for the front, side, back and overhead prompts)."""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch


def main(argv=None) -> int:
    from ..prior import DiffusionPrior
    from ..prior.loading import PriorWeightsUnavailable
    from ..prior.prompts import VIEW_LABELS
    from ..trainer import save_png
    from .dataset import view_text
    from .objects import OBJECTS
    from .quality import evaluate_prior, reference_renders, summarize, true_render_sampler
    from .sample import sample_images
    from .score import fixed_cameras, render_over_white
    from .field import truth_renderer
    from .object_probe import load_object_probe
    from .view_probe import load_view_probe

    p = argparse.ArgumentParser(prog="python -m l2vsd_ext.shapes.prior_report")
    p.add_argument("--pretrained", default="shapes")
    p.add_argument("--out", required=True)
    p.add_argument("--samples", type=int, default=4, help="samples per (object, view) case")
    p.add_argument("--steps", type=int, default=50, help="DDIM steps")
    p.add_argument("--guidance-scale", type=float, default=3.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--probe", default=None,
                   help="front/back view probe weights (default: the shipped probe, shapes/probe/)")
    p.add_argument("--object-probe", default=None,
                   help="object probe weights (default: the shipped probe, shapes/probe/)")
    p.add_argument("--reference-views", type=int, default=256,
                   help="true renders per object that samples are matched against")
    p.add_argument("--sampler", choices=("prior", "diffusers"), default="prior",
                   help="draw the scored samples through this package's DiffusionPrior, or through "
                        "diffusers alone (StableDiffusionPipeline, or the plain loop for a "
                        "pixel-space folder); needs a local folder")
    args = p.parse_args(argv)
    if args.reference_views < 1 or args.samples < 1:
        print("l2vsd_ext.shapes.prior_report: error: --reference-views and --samples must be >= 1",
              file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    sampler = None
    if args.sampler == "diffusers":
        from ..prior.loading import resolve_shipped
        from .sample import sample_images_diffusers

        folder = resolve_shipped(args.pretrained)
        if not os.path.isdir(folder):
            print(f"l2vsd_ext.shapes.prior_report: error: --sampler diffusers needs a local folder, "
                  f"not '{args.pretrained}'", file=sys.stderr)
            return 2
        sampler = lambda texts, **kw: sample_images_diffusers(folder, texts, **kw)  # noqa: E731
    try:
        probe = load_view_probe(args.probe)
        object_probe = load_object_probe(args.object_probe)
        prior = DiffusionPrior.from_pretrained(args.pretrained, device="cpu")
    except (PriorWeightsUnavailable, ValueError) as err:
        print(f"l2vsd_ext.shapes.prior_report: error: {err}", file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
    resolution = prior.unet.config.sample_size * prior.vae_scale_factor
    references = reference_renders(n_views=args.reference_views, resolution=resolution)
    rows, _ = evaluate_prior(prior, samples_per_case=args.samples, steps=args.steps,
                             guidance_scale=args.guidance_scale, seed=args.seed, sampler=sampler,
                             references=references, probe=probe, object_probe=object_probe)
    summary = summarize(rows)
    truth_rows, _ = evaluate_prior(None, samples_per_case=args.samples, references=references,
                                   sampler=true_render_sampler(resolution), probe=probe,
                                   object_probe=object_probe)
    with open(os.path.join(args.out, "prior_quality.json"), "w") as fh:
        json.dump({"settings": vars(args), "summary": summary, "true_renders": summarize(truth_rows),
                   "rows": rows}, fh, indent=2)

    cams = fixed_cameras([15, 15], [0, 180], resolution)
    tiles = []
    for obj in OBJECTS.values():
        tiles.append(render_over_white(truth_renderer(obj), cams)["rgb"])
        tiles.append(sample_images(prior, [view_text(obj.prompt, v) for v in VIEW_LABELS],
                                   steps=args.steps, guidance_scale=args.guidance_scale,
                                   seed=args.seed + 1))
    save_png(torch.cat(tiles), os.path.join(args.out, "prior_samples.png"), columns=6)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

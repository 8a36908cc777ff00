"""Command line: python -m l2vsd_ext.eval RUN_DIR [--clip-model ID|DIR] [--pretrained ID|DIR]
[--inception-weights PATH] ...

The paper's Table 1 protocol: CLIP similarity between --n-views rendered views and the prompt, and
FID (Inception-v3 pool3 features, or CLIP's with --fid-features clip) between those renders and
--n-prior-samples images sampled from the prior for the same prompt.
Writes RUN_DIR/eval.json, and RUN_DIR/eval/views.png and prior_samples.png (12 of the images compared). Bad arguments, an unreadable run folder or models that cannot be loaded
named explicitly (e.g. offline without weights): one line on stderr, exit code 2. A score whose
default weights are unavailable (offline, nothing cached) is skipped with one line saying which
and how to get them; the other scores are still computed and written."""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

from ..config import ConfigError
from .clip_model import DEFAULT_CLIP_MODEL, ModelUnavailable
from .inception_weights import WEIGHTS_FILE

EVAL_FILE = "eval.json"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m l2vsd_ext.eval",
        description="CLIP similarity and FID of a trained run (the paper's Table 1), into RUN_DIR/eval.json.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run folder (holds checkpoints/last.pt)")
    p.add_argument("--clip-model", default=None,
                   help=f"CLIP hub id or local folder (default: {DEFAULT_CLIP_MODEL}; skipped with a note "
                        "when it is not available)")
    p.add_argument("--pretrained", default=None,
                   help="diffusion model for the FID reference samples (default: the run's --pretrained)")
    p.add_argument("--n-views", type=int, default=120, help="rendered views around the object (default: 120)")
    p.add_argument("--n-prior-samples", type=int, default=120, help="images sampled from the prior (default: 120)")
    p.add_argument("--resolution", type=int, default=None,
                   help="render size in pixels (default: the input size of the metrics that run: "
                        "CLIP's 224, Inception's 299)")
    p.add_argument("--elevation", type=float, default=15.0, help="camera elevation in degrees (default: 15)")
    p.add_argument("--prior-steps", type=int, default=50, help="DDIM steps per prior sample (default: 50)")
    p.add_argument("--guidance-scale", type=float, default=7.5, help="prior sampling CFG scale (default: 7.5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the prior samples (default: 0)")
    p.add_argument("--no-fid", action="store_true", help="CLIP similarity only (no prior sampling)")
    p.add_argument("--fid-features", choices=("inception", "clip"), default="inception",
                   help="FID's features: Inception-v3 pool3 as in the paper, or the --clip-model's image "
                        "embeddings (FID_CLIP) (default: inception)")
    p.add_argument("--inception-weights", default=None, metavar="PATH",
                   help=f"the FID Inception weights file {WEIGHTS_FILE} (default: torch hub's cache, "
                        "downloaded there when online)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    return p


def check_arguments(args) -> None:
    for name in ("n_views", "resolution", "prior_steps", "n_prior_samples"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')}: must be >= 1, got {getattr(args, name)}")
    if not args.no_fid and args.n_views < 2:
        raise ConfigError(f"--n-views: FID needs >= 2 views, got {args.n_views}")
    if not args.no_fid and args.n_prior_samples < 2:
        raise ConfigError(f"--n-prior-samples: FID needs >= 2 samples, got {args.n_prior_samples}")
    if args.inception_weights is not None and args.fid_features != "inception":
        raise ConfigError(f"--inception-weights: only used with --fid-features inception, "
                          f"got --fid-features {args.fid_features}")
    if not -90 <= args.elevation <= 90:
        raise ConfigError(f"--elevation: must be in [-90, 90] degrees, got {args.elevation}")
    if not math.isfinite(args.guidance_scale):
        raise ConfigError(f"--guidance-scale: must be a finite number, got {args.guidance_scale}")
    if not 0 <= args.seed < 2**63:
        raise ConfigError(f"--seed: must be in [0, 2**63), got {args.seed}")


CLIP_INPUT_SIZE = 224  # ViT-L/14's crop


def metric_resolution(clip_processor, inception) -> int:
    """The render size the metrics look at: rendering larger only to be resized down costs time."""
    sizes = []
    if clip_processor is not None:
        crop = getattr(getattr(clip_processor, "image_processor", None), "crop_size", None)
        sizes.append(int(crop["height"]) if isinstance(crop, dict) and "height" in crop else CLIP_INPUT_SIZE)
    if inception is not None:
        from .inception import INPUT_SIZE

        sizes.append(INPUT_SIZE)
    return max(sizes or [CLIP_INPUT_SIZE])


def evaluate(args) -> dict:
    from ..export.cli import pick_device
    from ..export.loading import open_run
    from ..export.views import render_orbit, to_uint8
    from ..prior.loading import PriorWeightsUnavailable
    from ..run_folder import RunFolder
    from .clip_model import load_clip
    from .clip_similarity import clip_similarity

    device = pick_device(args.device)
    renderer, config, step = open_run(args.run_dir, device)
    pretrained = args.pretrained or config.pretrained
    skipped = {}

    def skip(score: str, why: str) -> None:
        skipped[score] = why

    def say_skipped() -> None:
        for score, why in skipped.items():
            print(f"l2vsd_ext.eval: skipped {score}: {why}", file=sys.stderr, flush=True)

    clip_model = args.clip_model or DEFAULT_CLIP_MODEL
    clip = processor = None
    try:
        clip, processor = load_clip(clip_model, device)
    except ModelUnavailable as err:
        if args.clip_model is not None:  # named by the user: an error, not a skip
            raise ConfigError(f"--clip-model: {err}") from err
        skip("clip_similarity", str(err))
    want_fid = not args.no_fid
    inception = None
    if want_fid and args.fid_features == "inception":  # before rendering: missing weights fail fast
        try:
            inception, inception_path = _load_inception(args.inception_weights, device)
        except ConfigError as err:
            if args.inception_weights is not None:
                raise
            skip("fid", f"{str(err).removeprefix('--inception-weights: ')} Or use --fid-features clip, or --no-fid")
            want_fid = False
    if want_fid and args.fid_features == "clip" and clip is None:
        skip("fid", "--fid-features clip needs the CLIP model (see clip_similarity)")
        want_fid = False
    started = time.perf_counter()
    result = {"run_dir": os.path.abspath(args.run_dir), "prompt": config.prompt, "mode": config.mode,
              "step": step, "n_views": args.n_views, "elevation": args.elevation,
              "clip_model": clip_model if clip is not None else None}
    if clip is None and not want_fid:  # no metric can run: rendering 120 views would be for nothing
        reasons = "; ".join(f"{score}: {why}" for score, why in skipped.items())
        print(f"l2vsd_ext.eval: no score can be computed, nothing rendered ({reasons})", file=sys.stderr,
              flush=True)
        return {**result, "skipped": skipped, "seconds": time.perf_counter() - started}
    say_skipped()
    if args.pretrained is not None and want_fid and args.pretrained != config.pretrained:
        print(f"l2vsd_ext.eval: note: FID against --pretrained '{args.pretrained}', not the run's prior "
              f"'{config.pretrained}'", file=sys.stderr)
        result["fid_prior_differs_from_run"] = True
    resolution = args.resolution or metric_resolution(processor, inception)
    result["resolution"] = resolution
    renders = to_uint8(render_orbit(renderer, args.n_views, resolution, elevation=args.elevation,
                                    progress=True, desc="eval views"))
    if clip is not None:
        result.update(clip_similarity(clip, processor, renders, config.prompt))
    _save_sheet(renders, RunFolder(args.run_dir).claim("eval", "views.png"))
    pipe = None
    if want_fid:
        from .prior_samples import build_pipeline

        try:
            pipe = build_pipeline(pretrained, device)
        except PriorWeightsUnavailable as err:
            if args.pretrained is not None:
                raise ConfigError(f"--pretrained: {err}") from err
            skip("fid", f"the run's prior is not available for the reference samples: {err}")
            print(f"l2vsd_ext.eval: skipped fid: {skipped['fid']}", file=sys.stderr, flush=True)
    if pipe is not None:
        from .fid import ClipImageFeatures, frechet_distance
        from .inception_weights import FEATURES_NAME
        from .prior_samples import sample_prior

        samples = sample_prior(pipe, config.prompt, args.n_prior_samples, args.prior_steps,
                               args.guidance_scale, config.negative_prompt, args.seed)
        del pipe
        _save_sheet(samples, RunFolder(args.run_dir).claim("eval", "prior_samples.png"))
        if inception is not None:
            features, features_name = inception, FEATURES_NAME
            result["inception_weights"] = os.path.abspath(inception_path)
        else:
            features, features_name = ClipImageFeatures(clip, processor), f"clip:{clip_model}"
        result.update(fid=frechet_distance(samples, renders, features), fid_features=features_name,
                      pretrained=pretrained, n_prior_samples=args.n_prior_samples,
                      prior_steps=args.prior_steps, guidance_scale=args.guidance_scale,
                      seed=args.seed)
    if skipped:
        result["skipped"] = skipped
    result["seconds"] = time.perf_counter() - started
    return result


def _load_inception(weights, device):
    """(FID Inception on `device`, the weights file it loaded)."""
    from .inception_weights import InceptionWeightsUnavailable, load_fid_inception

    try:
        model = load_fid_inception(weights, device)
        return model, model.weights_path
    except InceptionWeightsUnavailable as err:
        raise ConfigError(f"--inception-weights: {err}") from err


def _save_sheet(images, path: str) -> None:
    """12 of the compared images as one PNG, so a number can be checked against what it measured."""
    import torch

    from ..export.turntable import write_contact_sheet

    write_contact_sheet(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255, path)


def _quiet_libraries() -> None:
    # Progress bars and advice from transformers/diffusers would bury the one-line result or error.
    import diffusers
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    diffusers.logging.set_verbosity_error()


def main(argv=None) -> int:
    from ..cli_errors import one_line, one_line_parser

    lock = None
    try:
        args = one_line_parser(build_parser()).parse_args(argv)
        _quiet_libraries()
        check_arguments(args)
        from ..export.cli import writable_target
        from ..run_lock import lock_folder

        from ..export.loading import check_run_dir

        check_run_dir(args.run_dir)
        # eval.json and eval/ go into the run folder: refuse a read-only one before rendering.
        writable_target(args.run_dir, "RUN_DIR", " (eval writes eval.json and eval/ into it)")
        lock = lock_folder(args.run_dir, "RUN_DIR")
        result = evaluate(args)
        from ..checkpoint import atomic_write_bytes
        from ..run_folder import RunFolder

        path = RunFolder(args.run_dir).claim(EVAL_FILE)
        _note_other_prior(path, result)
        atomic_write_bytes(path, json.dumps(result, indent=2).encode())
    except ConfigError as err:
        print(f"l2vsd_ext.eval: error: {one_line(err)}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"l2vsd_ext.eval: error: cannot write the evaluation: {err.strerror or err}", file=sys.stderr)
        return 2
    finally:
        if lock is not None:
            lock.release()
    parts = []
    if "clip_cosine_mean" in result:
        parts.append(f"CLIP cosine {result['clip_cosine_mean']:.4f} ({result['clip_angle_deg']:.2f} deg)")
    if "fid" in result:
        parts.append(f"FID {result['fid']:.2f}")
    if result.get("skipped"):
        parts.append(f"skipped: {', '.join(result['skipped'])}")
    summary = ", ".join(parts) or "no score computed"
    print(f"{summary} -> {path}")
    return 0


def _note_other_prior(path: str, result: dict) -> None:
    """Says so when this FID's reference samples come from another prior than the last eval.json's
    (e.g. --pretrained tiny-random on a shapes run): the two numbers are not comparable."""
    if "fid" not in result:
        return
    try:
        with open(path, encoding="utf-8") as fh:
            previous = json.load(fh)
    except (OSError, ValueError):
        return
    before = previous.get("pretrained") if isinstance(previous, dict) else None
    if before and "fid" in previous and before != result.get("pretrained"):
        print(f"l2vsd_ext.eval: note: replacing an eval.json whose FID was taken against the prior "
              f"'{before}'; this FID is against '{result.get('pretrained')}'", file=sys.stderr)

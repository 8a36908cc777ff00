"""The ground-truth benchmark: python -m l2vsd_ext.shapes.bench --modes sds vsd lvsd l2vsd
--objects all --seeds 0 1 --out DIR

Each (object, mode, seed) is an ordinary run of `python -m l2vsd_ext.run` on the shipped shapes
prior, in DIR/runs/<object>/<case>/seed<k>; rerunning the command resumes unfinished runs and
skips scored ones. Each finished run is scored against its true object (shapes.score) into
shapes_eval.json; DIR/results.csv and DIR/results.md aggregate them (mean and spread over seeds)
and DIR/comparison.png shows the truth beside every case from the same cameras.

A case is a mode, optionally with variants: 'l2vsd+last-layer', 'l2vsd+eta=0.1',
'vsd+esd-lambda=0.5'. --last-layer / --eta / --esd-lambda apply to every case."""
from __future__ import annotations

import argparse
import json
import math
import os
import sys

import torch

from ..checkpoint import atomic_write_bytes
from ..config import MODES, ConfigError
from .objects import OBJECTS

METRICS = ("psnr", "ssim", "silhouette_iou", "depth_error", "chamfer", "janus", "seconds_per_it")
VARIANTS = {"last-layer": "--last-layer", "eta": "--eta", "esd-lambda": "--esd-lambda"}
EVAL_FILE = "shapes_eval.json"


class BenchError(ValueError):
    """Bad input: printed as one line, exit code 2."""


def parse_case(spec: str) -> list[str]:
    """'l2vsd+eta=0.1+last-layer' -> run flags ['--mode', 'l2vsd', '--eta', '0.1', '--last-layer']."""
    mode, *variants = spec.split("+")
    if mode not in MODES:
        raise BenchError(f"--modes: unknown mode '{mode}' in '{spec}' (choose from {', '.join(MODES)})")
    flags = ["--mode", mode]
    for variant in variants:
        name, _, value = variant.partition("=")
        if name not in VARIANTS:
            raise BenchError(f"--modes: unknown variant '{name}' in '{spec}' "
                             f"(choose from {', '.join(VARIANTS)})")
        if name == "last-layer":
            if value:
                raise BenchError(f"--modes: 'last-layer' takes no value in '{spec}'")
            flags.append(VARIANTS[name])
        else:
            try:
                float(value)
            except ValueError:
                raise BenchError(f"--modes: variant '{name}' needs a number, e.g. '{mode}+{name}=0.1'")
            flags += [VARIANTS[name], value]
    return flags


def resolve_objects(names: list[str]) -> list[str]:
    if names == ["all"]:
        return list(OBJECTS)
    unknown = [n for n in names if n not in OBJECTS]
    if unknown:
        raise BenchError(f"--objects: unknown object(s) {', '.join(unknown)} "
                         f"(choose from all, {', '.join(OBJECTS)})")
    return names


def check_prior(pretrained: str) -> None:
    """Loads the prior once, so that missing or corrupt weights stop the bench before any run."""
    from ..prior import DiffusionPrior
    from ..prior.loading import PriorWeightsUnavailable

    if pretrained != "shapes" and not os.path.isdir(pretrained):
        raise BenchError(f"--pretrained: '{pretrained}' is not a folder")
    try:
        DiffusionPrior.from_pretrained(pretrained, device="cpu")
    except PriorWeightsUnavailable as err:
        raise BenchError(f"--pretrained: {err}") from err


def run_case(run_dir: str, obj_key: str, case_flags: list[str], seed: int, args) -> None:
    """Trains (or resumes) one run through the ordinary run CLI."""
    from ..run import main as run_main
    from ..trainer import CHECKPOINT

    argv = ["--prompt", OBJECTS[obj_key].prompt, "--pretrained", args.pretrained, "--seed", str(seed),
            "--out", run_dir, *case_flags, *args.run_flags]
    if args.steps:
        argv += ["--steps", str(args.steps)]
    if os.path.isfile(os.path.join(run_dir, CHECKPOINT)):
        argv.append("--resume")
    code = run_main(argv)
    if code != 0:
        raise BenchError(f"run {run_dir} failed (exit code {code}; its error is printed above)")


def evaluate_run(run_dir: str, obj_key: str) -> dict:
    """Scores a finished run folder against its object; written to RUN/shapes_eval.json."""
    import trimesh

    from ..export import EmptyMeshError, extract_mesh, open_run
    from .score import score_renderer

    renderer, config, step = open_run(run_dir)
    mesh_path = os.path.join(run_dir, "export", "mesh.ply")
    mesh = None
    if os.path.isfile(mesh_path):
        mesh = trimesh.load(mesh_path, force="mesh")
    else:
        try:
            mesh = extract_mesh(renderer.field)
        except EmptyMeshError:
            mesh = None
    if mesh is not None and len(mesh.faces) == 0:
        mesh = None
    result = score_renderer(renderer, OBJECTS[obj_key], mesh=mesh)
    seconds = []
    with open(os.path.join(run_dir, "metrics.jsonl")) as fh:
        seconds = [json.loads(line)["seconds"] for line in fh if line.strip()]
    result.update(object=obj_key, prompt=OBJECTS[obj_key].prompt, mode=config.mode, seed=config.seed,
                  steps=step, seconds_per_it=sum(seconds) / max(len(seconds), 1),
                  eta=config.eta, last_layer=config.last_layer, esd_lambda=config.esd_lambda)
    atomic_write_bytes(os.path.join(run_dir, EVAL_FILE), json.dumps(result, indent=2).encode())
    return result


def _mean_std(values):
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return math.nan, math.nan
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, std


def aggregate(results: list[dict], out: str) -> str:
    """results.csv (per object and case: mean and std over seeds) and results.md (the same, plus
    the mean over objects per case, its spread taken over seeds)."""
    import csv

    cases = list(dict.fromkeys(r["case"] for r in results))
    objects = list(dict.fromkeys(r["object"] for r in results))
    rows = []
    for obj in objects:
        for case in cases:
            runs = [r for r in results if r["object"] == obj and r["case"] == case]
            if not runs:
                continue
            row = {"object": obj, "case": case, "seeds": len(runs)}
            for m in METRICS:
                row[f"{m}_mean"], row[f"{m}_std"] = _mean_std([r[m] for r in runs])
            rows.append(row)
    with open(os.path.join(out, "results.csv"), "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    fmt = lambda m, s: "n/a" if math.isnan(m) else f"{m:.3g} ± {s:.2g}"
    lines = ["| case | objects | runs | " + " | ".join(METRICS) + " |",
             "|---" * (len(METRICS) + 3) + "|"]
    for case in cases:
        runs = [r for r in results if r["case"] == case]
        seeds = sorted({r["seed"] for r in runs})
        cells = []
        for m in METRICS:  # mean over objects for each seed, then mean and spread over seeds
            per_seed = [_mean_std([r[m] for r in runs if r["seed"] == s])[0] for s in seeds]
            cells.append(fmt(*_mean_std(per_seed)))
        lines.append(f"| {case} | {len({r['object'] for r in runs})} | {len(runs)} | " +
                     " | ".join(cells) + " |")
    lines += ["", "| object | case | seeds | " + " | ".join(METRICS) + " |",
              "|---" * (len(METRICS) + 3) + "|"]
    for row in rows:
        lines.append(f"| {row['object']} | {row['case']} | {row['seeds']} | " + " | ".join(
            fmt(row[f"{m}_mean"], row[f"{m}_std"]) for m in METRICS) + " |")
    text = "\n".join(lines) + "\n"
    with open(os.path.join(out, "results.md"), "w") as fh:
        fh.write(text)
    return text


@torch.no_grad()
def comparison_picture(out: str, objects: list[str], cases: list[str], seed: int,
                       resolution: int = 64) -> str:
    """DIR/comparison.png: per object, a row of the truth and a row per case (the first seed),
    from the same four cameras (front, left side, back, overhead-ish)."""
    from PIL import Image, ImageDraw

    from ..export import open_run
    from .field import truth_renderer
    from .score import fixed_cameras, render_over_white

    cams = fixed_cameras([15, 15, 15, 50], [0, 90, 180, -45], resolution)
    label_w, rows = 110, []
    for obj in objects:
        named = [("truth: " + obj, render_over_white(truth_renderer(OBJECTS[obj]), cams)["rgb"])]
        for case in cases:
            run_dir = os.path.join(out, "runs", obj, case, f"seed{seed}")
            if os.path.isfile(os.path.join(run_dir, EVAL_FILE)):
                named.append((case, render_over_white(open_run(run_dir)[0], cams)["rgb"]))
        rows += named
    sheet = Image.new("RGB", (label_w + 4 * resolution, len(rows) * resolution), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (name, images) in enumerate(rows):
        strip = (images.permute(2, 0, 3, 1).reshape(resolution, -1, 3) * 255).round().byte().numpy()
        sheet.paste(Image.fromarray(strip), (label_w, r * resolution))
        draw.text((4, r * resolution + resolution // 2 - 6), name, fill="black")
    path = os.path.join(out, "comparison.png")
    sheet.save(path)
    return path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m l2vsd_ext.shapes.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--modes", nargs="+", default=list(MODES),
                   help="cases: modes, optionally with +last-layer, +eta=X, +esd-lambda=X")
    p.add_argument("--objects", nargs="+", default=["all"], help=f"'all' or some of: {', '.join(OBJECTS)}")
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--out", required=True, help="benchmark folder")
    p.add_argument("--steps", type=int, help="iterations per run (default: the shapes prior's run default)")
    p.add_argument("--pretrained", default="shapes", help="prior: 'shapes' (shipped) or a folder")
    p.add_argument("--last-layer", action="store_true", help="every case: L²-VSD last-layer tangent")
    p.add_argument("--eta", type=float, help="every case: L²-VSD lookahead step")
    p.add_argument("--esd-lambda", type=float, help="every case: ESD weight (vsd, l2vsd)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1 is fastest on a shared, busy CPU)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        objects = resolve_objects(args.objects)
        cases = {spec: parse_case(spec) for spec in dict.fromkeys(args.modes)}
        if args.steps is not None and args.steps < 1:
            raise BenchError(f"--steps: must be >= 1, got {args.steps}")
        if args.threads < 1:
            raise BenchError(f"--threads: must be >= 1, got {args.threads}")
        args.run_flags = (["--last-layer"] if args.last_layer else []) + \
            (["--eta", str(args.eta)] if args.eta is not None else []) + \
            (["--esd-lambda", str(args.esd_lambda)] if args.esd_lambda is not None else [])
        os.makedirs(args.out, exist_ok=True)
        torch.set_num_threads(args.threads)
        check_prior(args.pretrained)
        results = []
        # Seed-major, then object, then case: a partial table already compares every case.
        for seed in args.seeds:
            for obj in objects:
                for spec, flags in cases.items():
                    run_dir = os.path.join(args.out, "runs", obj, spec, f"seed{seed}")
                    eval_path = os.path.join(run_dir, EVAL_FILE)
                    if not os.path.isfile(eval_path):
                        run_case(run_dir, obj, flags, seed, args)
                        evaluate_run(run_dir, obj)
                    with open(eval_path) as fh:
                        results.append({**json.load(fh), "case": spec})
                    print(f"shapes.bench: {obj} {spec} seed {seed}: "
                          f"PSNR {results[-1]['psnr']:.2f} IoU {results[-1]['silhouette_iou']:.3f}",
                          flush=True)
        print(aggregate(results, args.out))
        print(f"comparison picture: {comparison_picture(args.out, objects, list(cases), args.seeds[0])}")
    except (BenchError, ConfigError) as err:
        print(f"l2vsd_ext.shapes.bench: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

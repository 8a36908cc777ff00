"""The ground-truth benchmark: python -m l2vsd_ext.shapes.bench --modes sds vsd lvsd l2vsd
--objects all --seeds 0 1 2 --out DIR

Each (object, case, seed) is an ordinary run of `python -m l2vsd_ext.run` on the shipped shapes
prior, in DIR/runs/<object>/<case>/seed<k>; rerunning the command resumes unfinished runs and
skips scored ones (a run scored by an older version of the bench is re-scored, not retrained; a
larger --steps continues scored runs to the new length).
Each finished run is scored against its true object (shapes.score), against the prior's own
samples for its prompt (KID per view, shapes.distribution) and along its validation renders
(shapes.curves) into shapes_eval.json and shapes_curve.json. DIR/results.csv and DIR/results.md
aggregate them (mean and spread over seeds), DIR/paired.csv holds every case's paired differences
against the baseline case with 95 % intervals (shapes.paired), DIR/curves/*.png and
DIR/curves.csv the convergence curves, and DIR/comparison.png shows the truth beside every case
from the same cameras.

--stages 1 2 3 also runs the mesh stages on every stage-1 run: the geometry stage in
RUN/geometry (--init-from RUN) and the texture stage in RUN/texture (--init-from RUN/geometry),
resumed and scored the same way (shapes.stage_bench; --stage-steps, --tet-resolution). Every
stage's mesh gets the Chamfer distance, the normal consistency (mean |cos| of face normals against
the true SDF gradient) and F-scores at 1 % and 2 % of the object's bounding-box diagonal
(shapes.mesh_score); the texture stage also PSNR / SSIM of its renders. The tables show them side
by side per stage (s2_*, s3_* columns).

A case is a mode plus run settings (shapes.cases): 'l2vsd:eta=0.1,last_layer=1', or in the older
form 'l2vsd+eta=0.1+last-layer'. --last-layer / --eta / --esd-lambda apply to every case."""
from __future__ import annotations

import argparse
import json
import math
import os
import sys

import torch

from ..checkpoint import atomic_write_bytes
from ..config import MODES, ConfigError
from .cases import CaseError, parse_cases
from .objects import OBJECTS
from .stage_bench import mesh_silhouette_iou, stage_scores, stage_summary
from .tables import METRICS, aggregate  # noqa: F401  (METRICS: the original columns, for callers)

EVAL_FILE = "shapes_eval.json"
# 2: front_recovered, front_margin_db and the metrics.jsonl diagnostics (diag_*) are in the file.
# 3: the mesh's normal consistency, F-scores (mesh_score) and mesh_silhouette_iou are, and
# z_variance (HiFA's depth variance over rays with opacity > 0.5).
EVAL_VERSION = 3
DIAGNOSTICS_TAIL = 0.2  # diagnostics: mean over the last 20 % of a run's steps
KID_TRUTH_FILE = "kid_truth.json"
DEFAULT_BASELINE = "vsd"
DEFAULT_STAGE_STEPS = (300, 300)
DEFAULT_TET_RESOLUTION = 32


class BenchError(ValueError):
    """Bad input: printed as one line, exit code 2."""


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
    from ..prior.loading import SHIPPED_SHAPES_FOLDERS, PriorWeightsUnavailable

    if pretrained not in SHIPPED_SHAPES_FOLDERS and not os.path.isdir(pretrained):
        raise BenchError(f"--pretrained: '{pretrained}' is not a folder")
    try:
        DiffusionPrior.from_pretrained(pretrained, device="cpu")
    except PriorWeightsUnavailable as err:
        raise BenchError(f"--pretrained: {err}") from err


def run_case(run_dir: str, obj_key: str, case_flags: list[str], seed: int, args) -> None:
    """Trains (or resumes) one run through the ordinary run CLI."""
    from ..run import main as run_main
    from ..trainer import CHECKPOINT

    argv = run_argv(run_dir, obj_key, case_flags, seed, args)
    if os.path.isfile(os.path.join(run_dir, CHECKPOINT)):
        argv.append("--resume")
    code = run_main(argv)
    if code != 0:
        raise BenchError(f"run {run_dir} failed (exit code {code}; its error is printed above)")


def run_argv(run_dir: str, obj_key: str, case_flags: list[str], seed: int, args) -> list[str]:
    argv = ["--prompt", OBJECTS[obj_key].prompt, "--pretrained", args.pretrained, "--seed", str(seed),
            "--out", run_dir, *case_flags]
    if args.steps:
        argv += ["--steps", str(args.steps)]
    if args.val_every:
        argv += ["--val-every", str(args.val_every)]
    return argv


def check_case_settings(cases: dict, args) -> None:
    """Resolves and validates every case's run settings before any run starts, so that a bad
    combination (e.g. 'sds:last_layer=1') stops the bench with one line."""
    from ..config import validate
    from ..run import resolve_config

    for label, case in cases.items():
        argv = run_argv(os.path.join(args.out, "runs"), next(iter(OBJECTS)), case.run_flags(), 0, args)
        try:
            validate(resolve_config(argv), vae_scale_factor=1)
        except ConfigError as err:
            raise BenchError(f"--modes: case '{label}': {err}") from err


def run_diagnostics(run_dir: str) -> dict:
    """seconds_per_it (mean over all steps) and, for every other numeric column of metrics.jsonl,
    diag_<column>: its mean over the run's last 20 % of steps (at least the last record). Read
    generically: whatever diagnostics the run writes become columns."""
    with open(os.path.join(run_dir, "metrics.jsonl")) as fh:
        records = [json.loads(line) for line in fh if line.strip()]
    seconds = [r["seconds"] for r in records if isinstance(r.get("seconds"), (int, float))]
    out = {"seconds_per_it": sum(seconds) / max(len(seconds), 1)}
    if not records:
        return out
    last = max(r.get("step", 0) for r in records)
    tail = [r for r in records if r.get("step", 0) > (1 - DIAGNOSTICS_TAIL) * last] or records[-1:]
    for key in dict.fromkeys(k for r in tail for k in r):
        if key in ("step", "seconds"):
            continue
        values = [r[key] for r in tail if isinstance(r.get(key), (int, float)) and not isinstance(r[key], bool)]
        values = [float(v) for v in values if math.isfinite(v)]
        if values:
            out[f"diag_{key}"] = sum(values) / len(values)
    return out


def evaluate_run(run_dir: str, obj_key: str) -> dict:
    """Scores a finished run folder against its object; written to RUN/shapes_eval.json."""
    import trimesh

    from ..export import EmptyMeshError, extract_mesh, open_run
    from .mesh_score import score_mesh
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
    result = score_renderer(renderer, OBJECTS[obj_key])
    # Chamfer, normal consistency, F-scores: the same code as the mesh stages' (mesh_score).
    empty = torch.zeros(0, 3, dtype=torch.long)
    vertices = torch.as_tensor(mesh.vertices, dtype=torch.float32) if mesh is not None else empty.float()
    faces = torch.as_tensor(mesh.faces) if mesh is not None else empty
    result.update({k: v for k, v in score_mesh(vertices, faces, OBJECTS[obj_key]).items() if k != "faces"})
    # the mesh's silhouette against the rasterized true mesh, as the mesh stages' (stage_bench)
    result["mesh_silhouette_iou"] = mesh_silhouette_iou(vertices, faces, obj_key)
    result.update(object=obj_key, prompt=OBJECTS[obj_key].prompt, mode=config.mode, seed=config.seed,
                  steps=step, eta=config.eta, last_layer=config.last_layer,
                  esd_lambda=config.esd_lambda, eval_version=EVAL_VERSION, **run_diagnostics(run_dir))
    atomic_write_bytes(os.path.join(run_dir, EVAL_FILE), json.dumps(result, indent=2).encode())
    return result


def add_distribution_scores(run_dir: str, result: dict, scorer) -> dict:
    """result with KID per view (shapes.distribution) added and saved, unless it already holds
    them under the same settings."""
    from ..export import open_run

    settings = scorer.settings()
    if result.get("kid_settings") == settings:
        return result
    result = {**result, **scorer.score(open_run(run_dir)[0], result["object"]), "kid_settings": settings}
    atomic_write_bytes(os.path.join(run_dir, EVAL_FILE), json.dumps(result, indent=2).encode())
    return result


def add_probe_scores(run_dir: str, result: dict) -> dict:
    """result with the view probe's scores (score.view_probe_score) added and saved, for runs
    scored before the probe existed; a scored run is not evaluated again for them."""
    from ..export import open_run
    from .score import held_out_cameras, render_over_white, view_probe_score

    if "probe_separation" in result:
        return result
    cams = held_out_cameras()
    rgb = render_over_white(open_run(run_dir)[0], cams)["rgb"]
    result = {**result, **view_probe_score(rgb, cams, result["object"])}
    atomic_write_bytes(os.path.join(run_dir, EVAL_FILE), json.dumps(result, indent=2).encode())
    return result


def truth_kid(out: str, objects: list[str], scorer) -> dict:
    """{object: KID scores of the true object}, cached in OUT/kid_truth.json per settings."""
    from .distribution import truth_kid_scores

    path = os.path.join(out, KID_TRUTH_FILE)
    saved = {}
    if os.path.isfile(path):
        with open(path) as fh:
            data = json.load(fh)
        if data.get("settings") == scorer.settings():
            saved = data.get("objects", {})
    missing = [o for o in objects if o not in saved]
    for obj in missing:
        saved[obj] = truth_kid_scores(scorer, obj)
    if missing:
        atomic_write_bytes(path, json.dumps({"settings": scorer.settings(), "objects": saved},
                                            indent=2).encode())
    return saved


def label_lines(name: str, width: float, draw) -> list[str]:
    """A case label broken after its commas and colons (a long token by characters) into lines no
    wider than `width`, so that it stays left of the images."""
    import re

    tokens = [t for t in re.split(r"(?<=[,:])", name) if t]
    lines, line = [], ""
    for token in tokens:
        while draw.textlength(token) > width:  # a token wider than the column: cut it
            cut = 1
            while draw.textlength(token[:cut + 1]) <= width:
                cut += 1
            if line:
                lines.append(line)
                line = ""
            lines.append(token[:cut])
            token = token[cut:]
        if line and draw.textlength(line + token) > width:
            lines.append(line)
            line = ""
        line += token
    return lines + ([line] if line else [])


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
        lines = label_lines(name, label_w - 8, draw)
        top = r * resolution + max(resolution // 2 - 6 * len(lines), 0)
        draw.multiline_text((4, top), "\n".join(lines), fill="black", spacing=2)
    path = os.path.join(out, "comparison.png")
    sheet.save(path)
    return path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m l2vsd_ext.shapes.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--modes", nargs="+", default=list(MODES), metavar="CASE",
                   help="cases: a mode, optionally with run settings: 'l2vsd:eta=0.1,last_layer=1' "
                        "(any setting of python -m l2vsd_ext.run by its field name) or the older "
                        "'l2vsd+eta=0.1+last-layer'")
    p.add_argument("--objects", nargs="+", default=["all"], help=f"'all' or some of: {', '.join(OBJECTS)}")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2],
                   help="seeds per object and case (default 0 1 2; paired intervals need >= 3)")
    p.add_argument("--baseline", help=f"the case every other case is compared with, pair by pair "
                                      f"(default: {DEFAULT_BASELINE} when it is among the cases)")
    p.add_argument("--out", required=True, help="benchmark folder")
    p.add_argument("--steps", type=int, help="iterations per run (default: the shapes prior's run default)")
    p.add_argument("--val-every", type=int,
                   help="validation renders (the convergence curves' points) every N steps "
                        "(default: the run's, 100 on the shapes prior)")
    p.add_argument("--pretrained", default="shapes",
                   help="prior: 'shapes' (shipped, version 3), 'shapes-v2' (version 2) or a folder")
    p.add_argument("--kid-features", default="random-conv", choices=("random-conv", "inception", "none"),
                   help="features for the KID against the prior's samples (inception: only with its "
                        "weights already on this machine; none: no KID)")
    p.add_argument("--kid-samples", type=int, default=32,
                   help="prior samples, and run renders, per object and view for the KID")
    p.add_argument("--last-layer", action="store_true", help="every case: L²-VSD last-layer tangent")
    p.add_argument("--eta", type=float, help="every case: L²-VSD lookahead step")
    p.add_argument("--esd-lambda", type=float, help="every case: ESD weight (vsd, l2vsd)")
    p.add_argument("--stages", nargs="+", type=int, default=[1], choices=(1, 2, 3),
                   help="1 (default): the NeRF runs only; 1 2: also the geometry stage on each run "
                        "(RUN/geometry); 1 2 3: also the texture stage (RUN/texture)")
    p.add_argument("--stage-steps", nargs=2, type=int, default=list(DEFAULT_STAGE_STEPS),
                   metavar=("GEOMETRY", "TEXTURE"),
                   help=f"iterations of the geometry and texture stage runs (default: "
                        f"{' '.join(map(str, DEFAULT_STAGE_STEPS))}, small for a CPU)")
    p.add_argument("--tet-resolution", type=int, default=DEFAULT_TET_RESOLUTION,
                   help=f"the geometry stage's tet-grid cells per side (default {DEFAULT_TET_RESOLUTION})")
    p.add_argument("--stage-val-every", type=int,
                   help="the stage runs' validation images every N steps (default: the stage's)")
    p.add_argument("--stage-turntable-views", type=int, default=0,
                   help="turntable frames of each stage run (default 0: none, to save time)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1 is fastest on a shared, busy CPU)")
    p.add_argument("--scored-only", action="store_true",
                   help="train nothing: build the tables from the runs already scored (a study cut short "
                        "is reported over the pairs it has; the others are listed as skipped)")
    return p


def check_args(args) -> dict:
    """Checks the numbers and returns the cases ({label: Case})."""
    for name, low in (("steps", 1), ("val_every", 1), ("threads", 1), ("kid_samples", 2)):
        value = getattr(args, name)
        if value is not None and value < low:
            raise BenchError(f"--{name.replace('_', '-')}: must be >= {low}, got {value}")
    for name, low in (("stage_val_every", 1), ("stage_turntable_views", 0), ("tet_resolution", 2)):
        value = getattr(args, name)
        if value is not None and value < low:
            raise BenchError(f"--{name.replace('_', '-')}: must be >= {low}, got {value}")
    if min(args.stage_steps) < 1:
        raise BenchError(f"--stage-steps: must be >= 1, got {' '.join(map(str, args.stage_steps))}")
    if sorted(set(args.stages)) not in ([1], [1, 2], [1, 2, 3]):
        raise BenchError(f"--stages: each stage starts from the one before: give 1, 1 2 or 1 2 3, "
                         f"got {' '.join(map(str, args.stages))}")
    args.stages = sorted(set(args.stages))
    if 2 in args.stages:  # refused now, not after the stage-1 runs have trained
        from ..mesh.memory import check_tet_grid_memory
        from ..mesh.stage_geometry import GeometryConfig

        if args.tet_resolution > 256:
            raise BenchError(f"--tet-resolution: must be in [2, 256], got {args.tet_resolution}")
        try:
            check_tet_grid_memory(args.tet_resolution, GeometryConfig.max_memory_fraction, 64, 1)
        except ValueError as err:
            raise BenchError(str(err).replace("--max-memory-fraction", "the geometry stage's --max-memory-fraction")
                             .replace("; lower --tet-resolution or raise the geometry stage's --max-memory-fraction",
                                      "; lower --tet-resolution")) from None
    if len(set(args.seeds)) != len(args.seeds) or min(args.seeds) < 0:
        raise BenchError(f"--seeds: must be distinct and >= 0, got {' '.join(map(str, args.seeds))}")
    extra = {**({"last_layer": "true"} if args.last_layer else {}),
             **({"eta": repr(args.eta)} if args.eta is not None else {}),
             **({"esd_lambda": repr(args.esd_lambda)} if args.esd_lambda is not None else {})}
    try:
        cases = parse_cases(args.modes, extra)
    except CaseError as err:
        raise BenchError(str(err)) from err
    if args.baseline is not None and args.baseline not in cases:
        raise BenchError(f"--baseline: '{args.baseline}' is not one of the cases ({', '.join(cases)})")
    return cases


def distribution_scorer(args):
    """The KID scorer, or None with --kid-features none."""
    if args.kid_features == "none":
        return None
    from ..eval.clip_model import ModelUnavailable
    from .distribution import DistributionScorer, PriorSamples
    from .kid import feature_extractor

    try:
        extractor = feature_extractor(args.kid_features)
    except ModelUnavailable as err:
        raise BenchError(str(err).splitlines()[0]) from err
    samples = PriorSamples(os.path.join(args.out, "prior_samples"), args.pretrained, args.kid_samples)
    return DistributionScorer(samples, extractor)


def is_scored(run_dir: str, args, mode: str | None = None) -> bool:
    """Whether the run (and each later stage asked for, with the case's guidance mode when given)
    has been trained and scored."""
    from .stage_bench import STAGE_EVAL_FILE, stage_folder, stage_mode

    if not os.path.isfile(os.path.join(run_dir, EVAL_FILE)):
        return False
    return all(os.path.isfile(os.path.join(stage_folder(run_dir, stage), STAGE_EVAL_FILE))
               and (mode is None or stage_mode(stage_folder(run_dir, stage)) == mode)
               for stage in args.stages if stage > 1)


def score_case_run(run_dir: str, obj: str, case, seed: int, args, scorer, truth_views) -> tuple[dict, dict]:
    """Trains the run unless it is scored, then (re)scores what is missing; (result, curve)."""
    from .curves import run_curve, threshold_columns

    eval_path = os.path.join(run_dir, EVAL_FILE)
    result = None
    if os.path.isfile(eval_path):
        with open(eval_path) as fh:
            result = json.load(fh)
    if result is None or (args.steps is not None and result.get("steps") != args.steps):
        # Not trained yet, or scored at another length: --steps N continues it to N (resume).
        run_case(run_dir, obj, case.run_flags(), seed, args)
        result = None
    if result is None or result.get("eval_version") != EVAL_VERSION:
        result = evaluate_run(run_dir, obj)
    result = add_probe_scores(run_dir, result)
    if scorer is not None:
        result = add_distribution_scores(run_dir, result, scorer)
    curve = run_curve(run_dir, obj, truth_views)
    return {**result, **threshold_columns(curve), "case": case.label}, {**curve, "case": case.label, "seed": seed}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        objects = resolve_objects(args.objects)
        cases = check_args(args)
        baseline = args.baseline or (DEFAULT_BASELINE if DEFAULT_BASELINE in cases else None)
        os.makedirs(args.out, exist_ok=True)
        torch.set_num_threads(args.threads)
        check_case_settings(cases, args)
        scorer = distribution_scorer(args)
        check_prior(args.pretrained)
        from .curves import TruthViews, write_curves

        truth_views = TruthViews()
        results, curves, skipped = [], [], []
        # Seed-major, then object, then case: a partial table already compares every case.
        for seed in args.seeds:
            for obj in objects:
                for label, case in cases.items():
                    run_dir = os.path.join(args.out, "runs", obj, label, f"seed{seed}")
                    if args.scored_only and not is_scored(run_dir, args, case.mode):
                        skipped.append(f"{obj} {label} seed {seed}")
                        continue
                    result, curve = score_case_run(run_dir, obj, case, seed, args, scorer, truth_views)
                    if len(args.stages) > 1:
                        result.update(stage_scores(run_dir, obj, args.stages,
                                                   dict(zip((2, 3), args.stage_steps)), args, case.mode))
                    results.append(result)
                    curves.append(curve)
                    kid = f" KID {result['kid']:.3g}" if "kid" in result else ""
                    print(f"shapes.bench: {obj} {label} seed {seed}: PSNR {result['psnr']:.2f} "
                          f"IoU {result['silhouette_iou']:.3f} probe separation "
                          f"{result['probe_separation']:.2f}{kid}",
                          flush=True)
                    if len(args.stages) > 1:
                        print(f"shapes.bench: {obj} {label} seed {seed}: {stage_summary(result)}", flush=True)
        if skipped:
            print(f"--scored-only: {len(skipped)} runs not scored yet, left out: {'; '.join(skipped)}")
        if not results:
            raise BenchError("--scored-only: no run is scored yet")
        reference = truth_kid(args.out, objects, scorer) if scorer is not None else None
        print(aggregate(results, args.out, baseline, reference))
        if baseline is None:
            print(f"no paired differences: the baseline '{DEFAULT_BASELINE}' is not among the cases "
                  "(add it, or name another with --baseline)")
        for path in write_curves(curves, args.out):
            print(f"curve: {path}")
        print(f"comparison picture: {comparison_picture(args.out, objects, list(cases), args.seeds[0])}")
    except (BenchError, ConfigError) as err:
        print(f"l2vsd_ext.shapes.bench: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

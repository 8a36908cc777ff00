"""Convergence curves: scores against steps, from the validation renders a run writes.

Every `val_every` steps (and at the last step) a run writes RUN/validation/step_NNNNNN.png: four
views from a fixed orbit (elevation 15°, distance 1.5, 50° field of view; azimuths -180, -90, 0, 90
= back, side, front, side) drawn over the run's background in eval mode. Each is scored against the
true object from the same cameras (over white, so with the shapes prior's default white background
the two compare like for like; a run with a learned background is compared as drawn): PSNR and SSIM
(mean over the four views), front_recovered (1 when the front view is closer to the true front
than to the true back, see score.front_recovered_score) and probe_separation (the view probe's
P(front) on the front view minus on the back view, see score.view_probe_score). Step 0 is the untrained scene as the
first step draws it (initial_scene), rebuilt from the run's config and seed.

steps-to-threshold, per run and score: the first step from which the curve stays at or past
s_0 + 0.9·(s_final − s_0), s_0 being the step-0 score and s_final the last: the step by which the
run has made 90 % of its total change and never falls back. A noisy early peak does not count.

Plots (one PNG per score): a line per case, the mean over objects and seeds, and a band from the
lowest to the highest seed (each seed's curve is first averaged over objects)."""
from __future__ import annotations

import glob
import json
import math
import os
import re

import torch

from ..checkpoint import atomic_write_bytes
from .metrics import psnr, ssim
from .objects import OBJECTS

CURVE_FILE = "shapes_curve.json"
CURVE_SCORES = ("psnr", "ssim", "front_recovered", "probe_separation")
THRESHOLD_SCORES = ("psnr", "ssim")
THRESHOLD_FRACTION = 0.9
VALIDATION_VIEWS = 4
_STEP_PNG = re.compile(r"step_(\d+)\.png$")


def steps_to_threshold(steps: list[int], values: list[float], fraction: float = THRESHOLD_FRACTION) -> float:
    """The first step from which `values` stay at or past values[0] + fraction·(values[-1] −
    values[0]) (in the direction the curve moved overall); NaN for an empty or non-finite curve."""
    if not values or any(not math.isfinite(v) for v in values):
        return math.nan
    start, final = values[0], values[-1]
    threshold = start + fraction * (final - start)
    rising = final >= start
    past = [(v >= threshold) if rising else (v <= threshold) for v in values]
    k = len(values) - 1  # the last point is always past the threshold
    while k > 0 and past[k - 1]:
        k -= 1
    return float(steps[k])


def orbit_cameras(resolution: int):
    """The validation orbit the trainer renders (Trainer.render_views)."""
    from ..scene import CameraSampler

    return CameraSampler(height=resolution, width=resolution).orbit(VALIDATION_VIEWS, elevation=15.0)


def split_views(path: str, resolution: int) -> torch.Tensor:
    """A validation PNG (the views side by side) as (n, 3, res, res) floats in [0, 1]."""
    import numpy as np
    from PIL import Image

    grid = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1).float() / 255
    n = grid.shape[-1] // resolution
    return torch.stack([grid[:, :resolution, i * resolution:(i + 1) * resolution] for i in range(n)])


@torch.no_grad()
def initial_scene(config):
    """The scene the run's first step renders: the field initialised as the trainer does it
    (torch.manual_seed(seed), then build_renderer), and the occupancy grid after the step-0
    update with the trainer's render generator. (Before that update the grid is empty and every
    view is white.)"""
    from ..trainer import build_renderer

    state = torch.get_rng_state()
    try:
        torch.manual_seed(config.seed)
        render_rng = torch.Generator().manual_seed(config.seed + 20)
        renderer = build_renderer(config, render_rng)
        renderer.update_occupancy(0, generator=render_rng)
    finally:
        torch.set_rng_state(state)
    return renderer.eval()


@torch.no_grad()
def initial_views(config, cams) -> torch.Tensor:
    """The step-0 point of the curves: initial_scene drawn as Trainer.render_views draws."""
    renderer = initial_scene(config)
    frames = [renderer(cams.rays_o[i:i + 1], cams.rays_d[i:i + 1],
                       light_positions=cams.light_positions[i:i + 1])["rgb"] for i in range(cams.batch_size)]
    return torch.cat(frames).permute(0, 3, 1, 2).clamp(0, 1)


def score_views(views: torch.Tensor, truth: torch.Tensor, cams, obj_key: str) -> dict:
    from .score import front_recovered_score, view_probe_score

    return {"psnr": float(psnr(views, truth).mean()), "ssim": float(ssim(views, truth).mean()),
            "front_recovered": front_recovered_score(views, truth, cams)["front_recovered"],
            "probe_separation": view_probe_score(views, cams, obj_key)["probe_separation"]}


class TruthViews:
    """The true object's validation views per (object, resolution), rendered once."""

    def __init__(self):
        self._cache = {}

    def get(self, obj_key: str, resolution: int):
        if (obj_key, resolution) not in self._cache:
            from .field import truth_renderer
            from .score import render_over_white

            cams = orbit_cameras(resolution)
            self._cache[obj_key, resolution] = (render_over_white(truth_renderer(OBJECTS[obj_key]), cams)["rgb"],
                                                cams)
        return self._cache[obj_key, resolution]


def run_curve(run_dir: str, obj_key: str, truth_views: TruthViews) -> dict:
    """{steps, <score>: [values], steps_to_threshold: {score: step}} of one run, cached in
    RUN/shapes_curve.json until its validation images change."""
    import yaml

    from ..config import RunConfig

    pngs = sorted(glob.glob(os.path.join(run_dir, "validation", "step_*.png")))
    names = [os.path.basename(p) for p in pngs]
    cache = os.path.join(run_dir, CURVE_FILE)
    if os.path.isfile(cache):
        with open(cache) as fh:
            saved = json.load(fh)
        current = saved.get("images") == names and saved.get("object") == obj_key
        if current and all(name in saved for name in CURVE_SCORES):  # else scored before a new score
            return saved
    with open(os.path.join(run_dir, "config.yaml")) as fh:
        config = RunConfig.from_dict(yaml.safe_load(fh))
    truth, cams = truth_views.get(obj_key, config.resolution)
    points = [(0, score_views(initial_views(config, cams), truth, cams, obj_key))]
    for path in pngs:
        points.append((int(_STEP_PNG.search(path).group(1)),
                       score_views(split_views(path, config.resolution), truth, cams, obj_key)))
    curve = {"object": obj_key, "images": names, "background": config.background,
             "steps": [s for s, _ in points]}
    for name in CURVE_SCORES:
        curve[name] = [p[name] for _, p in points]
    curve["steps_to_threshold"] = {name: steps_to_threshold(curve["steps"], curve[name])
                                   for name in THRESHOLD_SCORES}
    atomic_write_bytes(cache, json.dumps(curve, indent=1).encode())
    return curve


def threshold_columns(curve: dict) -> dict:
    """The per-run steps-to-threshold as score columns: steps90_psnr, steps90_ssim."""
    pct = int(round(THRESHOLD_FRACTION * 100))
    return {f"steps{pct}_{name}": curve["steps_to_threshold"][name] for name in THRESHOLD_SCORES}


def case_curves(curves: list[dict]) -> dict:
    """{case: {score: (steps, mean, lo, hi, n_seeds)}} from per-run curves (dicts with 'case',
    'seed' and a curve). Steps are those every run of the case has; each seed's curve is the mean
    over its objects; mean is over seeds, lo/hi the lowest and highest seed."""
    out = {}
    for case in dict.fromkeys(c["case"] for c in curves):
        runs = [c for c in curves if c["case"] == case]
        common = sorted(set.intersection(*(set(r["steps"]) for r in runs)))
        seeds = sorted({r["seed"] for r in runs})
        out[case] = {}
        for name in CURVE_SCORES:
            per_seed = []
            for seed in seeds:
                mine = [dict(zip(r["steps"], r[name])) for r in runs if r["seed"] == seed]
                per_seed.append([sum(m[s] for m in mine) / len(mine) for s in common])
            columns = list(zip(*per_seed)) if per_seed else []
            out[case][name] = (common, [sum(c) / len(c) for c in columns], [min(c) for c in columns],
                               [max(c) for c in columns], len(seeds))
    return out


def write_curves(curves: list[dict], out: str) -> list[str]:
    """OUT/curves.csv (per case, score and step: mean, seed band), OUT/curves_runs.csv (every
    run's points) and OUT/curves/<score>.png. Returns the PNG paths."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = case_curves(curves)
    with open(os.path.join(out, "curves.csv"), "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["case", "score", "step", "mean", "seed_min", "seed_max", "seeds"])
        for case, scores in summary.items():
            for name, (steps, mean, lo, hi, n) in scores.items():
                writer.writerows([case, name, s, m, a, b, n] for s, m, a, b in zip(steps, mean, lo, hi))
    with open(os.path.join(out, "curves_runs.csv"), "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["case", "object", "seed", "step", *CURVE_SCORES])
        for c in curves:
            for i, step in enumerate(c["steps"]):
                writer.writerow([c["case"], c["object"], c["seed"], step, *(c[n][i] for n in CURVE_SCORES)])
    folder = os.path.join(out, "curves")
    os.makedirs(folder, exist_ok=True)
    paths = []
    n_objects = len({c["object"] for c in curves})
    labels = {"psnr": "PSNR (dB) vs truth, 4 validation views",
              "ssim": "SSIM vs truth, 4 validation views",
              "front_recovered": "front view nearer true front than true back (fraction)",
              "probe_separation": "view probe: P(front) on the front view minus on the back view"}
    for name in CURVE_SCORES:
        fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
        for k, (case, scores) in enumerate(summary.items()):
            steps, mean, lo, hi, n = scores[name]
            # Line styles as well as colours: equal curves (often, early in a run) stay visible.
            line, = ax.plot(steps, mean, marker=".", linestyle=("-", "--", ":", "-.")[k % 4],
                            label=f"{case} ({n} seeds)")
            if n > 1:
                ax.fill_between(steps, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
        ax.set_xlabel("step")
        ax.set_ylabel(labels[name])
        ax.set_title(f"{name}: mean over {n_objects} object(s) and seeds; band: seed min-max", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = os.path.join(folder, f"{name}.png")
        fig.savefig(path)
        plt.close(fig)
        paths.append(path)
    return paths

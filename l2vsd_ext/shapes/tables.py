"""The benchmark's tables: BENCH/results.csv and results.md (scores per case and per object, mean
and spread over seeds) and BENCH/paired.csv with the paired differences against the baseline
case (paired.py)."""
from __future__ import annotations

import csv
import math
import os

from .paired import paired_differences

# The original columns, kept first and unchanged.
METRICS = ("psnr", "ssim", "silhouette_iou", "depth_error", "chamfer", "janus", "seconds_per_it")
NEW_METRICS = ("front_recovered", "front_margin_db", "probe_front", "probe_back", "probe_separation", "kid", "kid_front", "kid_side", "kid_back",
               "steps90_psnr", "steps90_ssim", "z_variance")
# Mesh scores of every stage: stage 1's (its marching-cubes mesh) unprefixed, the geometry and
# texture stages' (shapes.stage_bench) as s2_ / s3_, grouped by metric so that the stages of one
# metric stand side by side. Stage 1's image scores join the group only when a later stage ran.
# Silhouettes: stage 1's mesh_silhouette_iou (its mesh, rasterized) stands beside the later stages'
# (the volume render's silhouette_iou is against the volume-rendered truth: another reference).
MESH_METRICS = ("chamfer", "normal_consistency", "fscore_1pct", "fscore_2pct", "mesh_silhouette_iou")
STAGE_METRICS = (tuple(f"{p}{m}" for m in ("chamfer", "normal_consistency", "fscore_1pct", "fscore_2pct")
                       for p in ("", "s2_", "s3_"))
                 + ("mesh_silhouette_iou", "s2_silhouette_iou", "s3_silhouette_iou", "psnr", "s3_psnr", "ssim",
                    "s3_ssim"))
HIGHER_IS_BETTER = {"psnr", "ssim", "silhouette_iou", "front_recovered", "front_margin_db", "probe_front",
                    "probe_back", "probe_separation", "normal_consistency",
                    "fscore_1pct", "fscore_2pct", "mesh_silhouette_iou"}
LOWER_IS_BETTER = {"depth_error", "chamfer", "janus", "seconds_per_it", "kid", "kid_front", "kid_side",
                   "kid_back", "steps90_psnr", "steps90_ssim", "z_variance"}
HIGHER_IS_BETTER |= {p + m for m in HIGHER_IS_BETTER for p in ("s2_", "s3_")}
LOWER_IS_BETTER |= {p + m for m in LOWER_IS_BETTER for p in ("s2_", "s3_")}
DIAGNOSTIC_PREFIX = "diag_"


def direction(metric: str) -> str:
    return "↑" if metric in HIGHER_IS_BETTER else "↓" if metric in LOWER_IS_BETTER else ""


def _number(value) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


def mean_std(values) -> tuple[float, float]:
    values = [v for v in map(_number, values) if not math.isnan(v)]
    if not values:
        return math.nan, math.nan
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, std


def diagnostic_metrics(results: list[dict]) -> list[str]:
    """The diagnostics columns any run has (diag_<metrics.jsonl column>), in first-seen order."""
    return list(dict.fromkeys(k for r in results for k in r if k.startswith(DIAGNOSTIC_PREFIX)))


def _fmt(mean: float, spread: float) -> str:
    return "n/a" if math.isnan(mean) else f"{mean:.3g} ± {spread:.2g}"


def _case_cell(runs: list[dict], metric: str) -> str:
    """Mean over objects for each seed, then mean and spread over seeds."""
    seeds = sorted({r["seed"] for r in runs})
    per_seed = [mean_std([r.get(metric) for r in runs if r["seed"] == s])[0] for s in seeds]
    return _fmt(*mean_std(per_seed))


def _case_table(results, cases, metrics, extra_rows=()) -> list[str]:
    lines = ["| case | objects | runs | " + " | ".join(f"{m} {direction(m)}".strip() for m in metrics) + " |",
             "|---" * (len(metrics) + 3) + "|"]
    for case in cases:
        runs = [r for r in results if r["case"] == case]
        if runs:
            lines.append(f"| {case} | {len({r['object'] for r in runs})} | {len(runs)} | " +
                         " | ".join(_case_cell(runs, m) for m in metrics) + " |")
    lines += list(extra_rows)
    return lines


def _signed(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:+.3g}"


def paired_rows(results: list[dict], cases: list[str], baseline: str, metrics: list[str]) -> list[dict]:
    rows = []
    for case in cases:
        if case == baseline:
            continue
        for metric in metrics:
            rows.append({"case": case, "baseline": baseline, "metric": metric,
                         **paired_differences(results, metric, case, baseline)})
    return rows


def paired_markdown(rows: list[dict], baseline: str, n_seeds: int) -> list[str]:
    lines = [f"## Paired differences against {baseline}", "",
             f"case − {baseline} for each (object, seed) run under both; mean with its 95 % t-interval "
             "over the pairs, the pairs that went up / down, and the exact sign test's p. `*`: the "
             "interval excludes 0. ↑/↓: which way is better."]
    if n_seeds < 3:
        lines.append(f"Only {n_seeds} seed(s): a claim needs >= 3 seeds per object.")
    for case in dict.fromkeys(r["case"] for r in rows):
        lines += ["", f"### {case} − {baseline}", "",
                  "| metric | pairs | mean difference | 95 % interval | up / down | sign p |",
                  "|---|---|---|---|---|---|"]
        for r in rows:
            if r["case"] != case or r["n"] == 0:
                continue
            resolved = not math.isnan(r["lo"]) and (r["lo"] > 0 or r["hi"] < 0)
            interval = "n/a" if math.isnan(r["lo"]) else f"[{r['lo']:+.3g}, {r['hi']:+.3g}]"
            lines.append(f"| {r['metric']} {direction(r['metric'])} | {r['n']} | {_signed(r['mean'])}"
                         f"{' *' if resolved else ''} | {interval} | {r['up']} / {r['down']} | "
                         f"{r['sign_p']:.2g} |")
    return lines


def aggregate(results: list[dict], out: str, baseline: str | None = None,
              truth_kid: dict | None = None) -> str:
    """Writes results.csv, results.md and (with a baseline among the cases) paired.csv; returns
    the markdown. `results`: score dicts with 'object', 'case', 'seed'; `truth_kid`: {object:
    KID scores of the true object} for the reference row."""
    cases = list(dict.fromkeys(r["case"] for r in results))
    objects = list(dict.fromkeys(r["object"] for r in results))
    diagnostics = diagnostic_metrics(results)
    present = lambda m: any(not math.isnan(_number(r.get(m))) for r in results)  # noqa: E731
    new = [m for m in NEW_METRICS if present(m)]
    later_stages = any(present(m) for m in STAGE_METRICS if m.startswith(("s2_", "s3_")))
    stage_columns = [m for m in STAGE_METRICS if present(m) and (later_stages or m in MESH_METRICS)]
    columns = list(METRICS) + new + [m for m in stage_columns if m not in METRICS] + diagnostics
    rows = []
    for obj in objects:
        for case in cases:
            runs = [r for r in results if r["object"] == obj and r["case"] == case]
            if not runs:
                continue
            row = {"object": obj, "case": case, "seeds": len(runs)}
            for m in columns:
                row[f"{m}_mean"], row[f"{m}_std"] = mean_std([r.get(m) for r in runs])
            rows.append(row)
    with open(os.path.join(out, "results.csv"), "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    lines = _case_table(results, cases, METRICS)
    if new:
        truth_rows = []
        if truth_kid and any(m.startswith("kid") for m in new):
            # One value per object (the truth has no seeds): the mean over objects, no spread.
            means = {m: mean_std([truth_kid[o].get(m) for o in objects if o in truth_kid])[0] for m in new}
            cells = [f"{means[m]:.3g}" if m.startswith("kid") and not math.isnan(means[m]) else ""
                     for m in new]
            n_objects = len([o for o in objects if o in truth_kid])
            truth_rows = [f"| truth (the true object) | {n_objects} | | " + " | ".join(cells) + " |"]
        lines += ["", "Distribution, front and convergence scores (same layout):", ""]
        lines += _case_table(results, cases, new, truth_rows)
    seeds = sorted({r["seed"] for r in results})
    paired_path = os.path.join(out, "paired.csv")
    if baseline is not None and baseline in cases and len(cases) > 1:
        paired = paired_rows(results, cases, baseline, columns)
        with open(paired_path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(paired[0]))
            writer.writeheader()
            writer.writerows(paired)
        lines += [""] + paired_markdown(paired, baseline, len(seeds))
    elif os.path.isfile(paired_path):
        os.remove(paired_path)  # from an earlier call with other cases: it would be stale
    if stage_columns:
        lines += ["", "## Stages: mesh scores (no prefix: stage 1's marching-cubes mesh; s2_: the geometry "
                  "stage's mesh; s3_: the texture stage's, with its colour renders' PSNR / SSIM)", ""]
        lines += _case_table(results, cases, stage_columns)
    if diagnostics:
        lines += ["", "## Run diagnostics (metrics.jsonl, mean over each run's last 20 % of steps)", ""]
        lines += _case_table(results, cases, diagnostics)
    shown = METRICS + tuple(new) + tuple(m for m in stage_columns if m not in METRICS)
    lines += ["", "## Per object", "", "| object | case | seeds | " + " | ".join(shown) + " |",
              "|---" * (len(shown) + 3) + "|"]
    for row in rows:
        lines.append(f"| {row['object']} | {row['case']} | {row['seeds']} | " + " | ".join(
            _fmt(row[f"{m}_mean"], row[f"{m}_std"]) for m in shown) + " |")
    text = "\n".join(lines) + "\n"
    with open(os.path.join(out, "results.md"), "w") as fh:
        fh.write(text)
    return text

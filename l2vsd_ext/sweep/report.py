"""python -m l2vsd_ext.sweep.report SWEEP_DIR: the sweep's results in the layout of the paper's
Table 1 (per method: mean CLIP-similarity angle and FID, mean ± spread over seeds), as
SWEEP_DIR/report/{runs.csv, table1.csv, table1.md}, plus contact_sheet.png: every run's turntable
strip, prompts as rows and methods as columns. Also written at the end of every sweep."""
from __future__ import annotations

import argparse
import csv
import glob
import math
import os
import sys
from collections import defaultdict

from ..config import ConfigError
from .state import SWEEP_FILE, load_sweep
from .task import read_result

REPORT_DIR = "report"
# (key in a run's scores, column title); lower is better for both, as in the paper.
METRICS = (("clip_angle_deg", "CLIP angle (deg) ↓"), ("fid", "FID ↓"))
STRIP_FRAMES = 4
# The paper's Table 1 columns (and Sec. 5.5's L²-HiFA) as sweep methods, in the paper's order:
# ESD is `--esd-lambda 0.5`, HiFA `--hifa` (threestudio's prolificdreamer-hifa). Other methods follow.
TABLE1 = {"sds": "SDS", "vsd-esd0.5": "ESD", "vsd": "VSD", "lvsd": "L-VSD", "vsd-hifa": "HiFA",
          "l2vsd": "L²-VSD", "l2vsd-hifa": "L²-HiFA", "sds-hifa": "HiFA (SDS form)", "hlvsd": "HL-VSD"}


def collect(sweep_dir: str) -> list[dict]:
    """One row per run of the grid: identity, status, scores (None where not measured)."""
    sweep = load_sweep(sweep_dir)
    if not sweep.get("runs"):
        raise ConfigError(f"SWEEP_DIR: '{sweep_dir}' holds no readable {SWEEP_FILE}")
    rows = []
    for run in sweep["runs"]:
        folder = os.path.join(sweep_dir, run["folder"])
        result = read_result(folder) or {}
        scores = {k: v for k, v in (result.get("eval") or {}).items() if k != "skipped"}
        truth = {f"gt_{k}": v for k, v in (result.get("ground_truth") or {}).items() if k != "skipped"}
        notes = [part.get("skipped") for part in (result.get("eval"), result.get("ground_truth"))
                 if part and part.get("skipped")]
        last_error = run["errors"][-1]["error"] if run.get("errors") and run["status"] != "done" else ""
        rows.append({"name": run["name"], "prompt": run["prompt"], "prompt_index": run["prompt_index"],
                     "mode": run["mode"], "method": run["method"], "seed": run["seed"],
                     "status": "done" if result.get("complete") else run["status"],
                     "attempts": run.get("attempts", 0), "folder": folder, **scores, **truth,
                     "notes": " | ".join(notes), "error": last_error})
    return rows


def _mean_std(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, std


def table(rows: list[dict]) -> tuple[list[str], list[dict]]:
    """(metric keys, one summary per method): each metric averaged over prompts per seed, then
    mean and sample standard deviation over seeds (the paper's spread)."""
    metric_keys = [k for k, _ in METRICS] + sorted({k for r in rows for k in r if k.startswith("gt_")
                                                     and isinstance(r[k], (int, float))})
    methods = list(dict.fromkeys(r["method"] for r in rows))
    order = list(TABLE1)
    methods.sort(key=lambda m: order.index(_plain(m)) if _plain(m) in order else len(order))  # stable
    summaries = []
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        summary = {"method": method, "runs": len(mine), "done": sum(r["status"] == "done" for r in mine),
                   "seeds": len({r["seed"] for r in mine}), "paper": TABLE1.get(_plain(method), "")}
        for key in metric_keys:
            per_seed = defaultdict(list)
            for r in mine:
                if isinstance(r.get(key), (int, float)):
                    per_seed[r["seed"]].append(r[key])
            if per_seed:
                means = [sum(v) / len(v) for v in per_seed.values()]
                summary[key], summary[key + "_std"] = _mean_std(means)
                summary[key + "_n"] = sum(len(v) for v in per_seed.values())
        summaries.append(summary)
    return metric_keys, summaries


def _plain(method: str) -> str:
    """The method without a no-op variant: ESD λ = 0 is plain VSD (a sweep over --esd-lambda 0 0.5)."""
    return "-".join(part for part in method.split("-") if part != "esd0")


def _title(key: str) -> str:
    return dict(METRICS).get(key, key.replace("gt_", "truth: "))


def _cell(summary: dict, key: str) -> str:
    if key not in summary:
        return "n/a"
    return f"{summary[key]:.2f} ± {summary[key + '_std']:.2f}" if summary["seeds"] > 1 else f"{summary[key]:.2f}"


def markdown(rows: list[dict], metric_keys: list[str], summaries: list[dict]) -> str:
    prompts = len({r["prompt"] for r in rows})
    seeds = sorted({r["seed"] for r in rows})
    lines = [f"Table 1 layout: {prompts} prompts, seeds {', '.join(map(str, seeds))}. Each score is the "
             "mean over prompts" + (", then mean ± standard deviation over seeds." if len(seeds) > 1 else "."),
             "", "| Method | " + " | ".join(_title(k) for k in metric_keys) + " | Runs done | Paper |",
             "|---|" + "---|" * len(metric_keys) + "---|---|"]
    for s in summaries:
        lines.append(f"| {s['method']} | " + " | ".join(_cell(s, k) for k in metric_keys)
                     + f" | {s['done']}/{s['runs']} | {s['paper']} |")
    notes = sorted({n for r in rows for n in r["notes"].split(" | ") if n})
    failed = [r for r in rows if r["status"] == "failed"]
    if notes or failed:
        lines += ["", "Notes:"]
        lines += [f"- {n}" for n in notes]
        lines += [f"- failed: {r['name']}: {r['error']}" for r in failed]
    return "\n".join(lines) + "\n"


def write_csv(path: str, records: list[dict]) -> None:
    columns = list(dict.fromkeys(k for r in records for k in r))
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(records)


def turntable_strip(folder: str, n_frames: int = STRIP_FRAMES):
    """(H, n*W, 3) uint8 of n evenly spaced turntable frames, or None when the run has none."""
    import imageio.v3 as iio
    import numpy as np

    frames = sorted(glob.glob(os.path.join(folder, "turntable", "frame_*.png")))
    if not frames:
        return None
    picks = sorted({int(i) for i in np.linspace(0, len(frames), min(n_frames, len(frames)), endpoint=False)})
    images = [iio.imread(frames[i])[..., :3] for i in picks]
    return np.concatenate(images, axis=1)


def contact_sheet(rows: list[dict], path: str, label_width: int = 220, header: int = 24,
                  min_cell: int = 64) -> str | None:
    """Prompts as rows, methods as columns, each cell the run's turntable strip (seeds stacked);
    None when no run has a turntable yet."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont

    strips = {(r["prompt"], r["method"], r["seed"]): turntable_strip(r["folder"]) for r in rows}
    shown = [s for s in strips.values() if s is not None]
    if not shown:
        return None
    strip_h = max(min_cell, max(s.shape[0] for s in shown))
    strip_w = max(s.shape[1] * strip_h // s.shape[0] for s in shown)
    prompts = list(dict.fromkeys(r["prompt"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    seeds = sorted({r["seed"] for r in rows})
    gap = 4
    cell_w, cell_h = strip_w + gap, len(seeds) * strip_h + gap
    sheet = Image.new("RGB", (label_width + len(methods) * cell_w, header + len(prompts) * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for j, method in enumerate(methods):
        draw.text((label_width + j * cell_w + 2, 4), method, fill="black", font=font)
    for i, prompt in enumerate(prompts):
        y = header + i * cell_h
        draw.multiline_text((4, y + 2), _wrap(prompt, 24), fill="black", font=font, spacing=2)
        if len(seeds) > 1:
            for k, seed in enumerate(seeds):
                draw.text((label_width - 52, y + k * strip_h + strip_h // 2 - 6), f"seed {seed}",
                          fill="gray", font=font)
        for j, method in enumerate(methods):
            for k, seed in enumerate(seeds):
                strip = strips.get((prompt, method, seed))
                if strip is None:
                    continue
                tile = Image.fromarray(np.ascontiguousarray(strip)).resize(
                    (strip.shape[1] * strip_h // strip.shape[0], strip_h), Image.NEAREST)
                sheet.paste(tile, (label_width + j * cell_w, y + k * strip_h))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sheet.save(path)
    return path


def _wrap(text: str, width: int) -> str:
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "\n".join(lines + [line])


def write_report(sweep_dir: str) -> dict:
    """Writes SWEEP_DIR/report/*; returns {what: path}."""
    rows = collect(sweep_dir)
    metric_keys, summaries = table(rows)
    out = os.path.join(sweep_dir, REPORT_DIR)
    os.makedirs(out, exist_ok=True)
    written = {"runs_csv": os.path.join(out, "runs.csv"), "table_csv": os.path.join(out, "table1.csv"),
               "table_md": os.path.join(out, "table1.md")}
    write_csv(written["runs_csv"], [{k: v for k, v in r.items() if k != "folder"} for r in rows])
    write_csv(written["table_csv"], summaries)
    with open(written["table_md"], "w") as fh:
        fh.write(markdown(rows, metric_keys, summaries))
    sheet = contact_sheet(rows, os.path.join(out, "contact_sheet.png"))
    if sheet:
        written["contact_sheet"] = sheet
    return written


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m l2vsd_ext.sweep.report",
                                description="Aggregate a sweep's runs into Table 1 (CSV, markdown) and a contact sheet.")
    p.add_argument("sweep_dir", metavar="SWEEP_DIR", help="the sweep's --out folder (holds sweep.json)")
    args = p.parse_args(argv)
    try:
        written = write_report(args.sweep_dir)
    except ConfigError as err:
        print(f"l2vsd_ext.sweep.report: error: {err}", file=sys.stderr)
        return 2
    print(f"report: {', '.join(written.values())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

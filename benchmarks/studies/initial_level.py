"""Stage 2's starting surface: threestudio's fixed density level 25 against --auto-level (the level
whose surface has the stage-1 silhouettes), scored against the true object before any stage-2 step.

    python benchmarks/studies/initial_level.py BENCH_FOLDER [BENCH_FOLDER ...] [--tet-resolution 64]

For every finished stage-1 run under BENCH/runs/OBJECT/CASE/seedN, the initial tet mesh at each
level is scored with the shapes bench's mesh scores (Chamfer, normal consistency, F-scores) and its
silhouette IoU against the rasterized true mesh from the held-out cameras. Prints a markdown table,
one row per run and level, then the per-level means."""
from __future__ import annotations

import argparse
import glob
import math
import os
import statistics

import torch


def initial_mesh(renderer, level: float, tet_resolution: int):
    from l2vsd_ext.mesh.marching_tets import marching_tets
    from l2vsd_ext.mesh.sdf_init import placed_grid, sdf_from_density, tight_box

    grid = placed_grid(tet_resolution, tight_box(renderer.field, level))
    return marching_tets(grid.vertices, sdf_from_density(renderer.field, grid, level), grid)


def main() -> None:
    from l2vsd_ext.mesh.level_search import stage1_silhouette_level
    from l2vsd_ext.mesh.sdf_init import DEFAULT_LEVEL
    from l2vsd_ext.shapes.mesh_score import score_mesh
    from l2vsd_ext.shapes.objects import OBJECTS
    from l2vsd_ext.shapes.stage_bench import mesh_silhouette_iou
    from l2vsd_ext.trainer import load_scene

    p = argparse.ArgumentParser()
    p.add_argument("benches", nargs="+")
    p.add_argument("--tet-resolution", type=int, default=64)
    args = p.parse_args()
    torch.set_num_threads(1)
    rows = []
    for bench in args.benches:
        for run in sorted(glob.glob(os.path.join(bench, "runs", "*", "*", "seed*"))):
            if not os.path.isfile(os.path.join(run, "checkpoints", "last.pt")):
                continue
            obj_key = run.split(os.sep)[-3]
            renderer, _, _ = load_scene(run)
            for name, level in (("fixed", DEFAULT_LEVEL), ("auto", stage1_silhouette_level(renderer).level)):
                mesh = initial_mesh(renderer, level, args.tet_resolution)
                scores = score_mesh(mesh.vertices, mesh.faces, OBJECTS[obj_key])
                scores["silhouette_iou"] = mesh_silhouette_iou(mesh.vertices, mesh.faces, obj_key)
                rows.append({"run": os.path.relpath(run, bench), "level_rule": name, "level": level, **scores})
                print(rows[-1], flush=True)
    keys = ["chamfer", "normal_consistency", "fscore_1pct", "silhouette_iou"]
    keys = [k for k in keys if k in rows[0]]
    print("\n| run | level rule | level | " + " | ".join(keys) + " |")
    print("|---|---|---|" + "---|" * len(keys))
    for r in rows:
        print(f"| {r['run']} | {r['level_rule']} | {r['level']:.3g} | "
              + " | ".join(f"{r[k]:.4f}" for k in keys) + " |")
    for name in ("fixed", "auto"):
        chosen = [r for r in rows if r["level_rule"] == name]
        means = {k: statistics.mean(r[k] for r in chosen if not math.isnan(r[k])) for k in keys}
        print(f"mean {name} ({len(chosen)} runs): " + ", ".join(f"{k} {v:.4f}" for k, v in means.items()))


if __name__ == "__main__":
    main()

"""The benchmark's mesh stages (--stages 1 2 3): for each stage-1 run RUN = DIR/runs/<object>/<case>/
seed<k>, the geometry stage in RUN/geometry (--init-from RUN) and the texture stage in RUN/texture
(--init-from RUN/geometry), each an ordinary `python -m l2vsd_ext.run --stage ...` run, resumed
and scored like the stage-1 runs. Each stage run is scored into its folder's stage_eval.json;
the scores join the stage-1 run's result row with an s2_ / s3_ prefix. Every stage runs the
case's guidance mode (--mode; its options come with the stage-1 run's settings), so an l2vsd case
is L²-VSD through all three stages, as in the paper's Figs. 16-17 (the texture stage's own default
would be vsd).

A stage run remembers which checkpoint it was started from (bench_origin.json, written before the
run starts): when that upstream run has changed since (a larger --steps continued it), the stage
run is moved aside to <name>.stale and started again from the new upstream."""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil

import torch

from ..checkpoint import atomic_write_bytes

STAGE_NAMES = {2: "geometry", 3: "texture"}
STAGE_EVAL_FILE = "stage_eval.json"
# 2: silhouettes and colours compared with the rasterized true mesh, not the volume-rendered truth.
STAGE_EVAL_VERSION = 2
ORIGIN_FILE = "bench_origin.json"


def stage_prefix(stage: int) -> str:
    return f"s{stage}_"


def stage_folder(run_dir: str, stage: int) -> str:
    return os.path.join(run_dir, STAGE_NAMES[stage])


def upstream_folder(run_dir: str, stage: int) -> str:
    return run_dir if stage == 2 else stage_folder(run_dir, stage - 1)


def checkpoint_digest(run_dir: str) -> str:
    from ..trainer import CHECKPOINT

    digest = hashlib.sha256()
    with open(os.path.join(run_dir, CHECKPOINT), "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def stage_argv(stage: int, init_from: str, out: str, steps: int, args, mode: str) -> list[str]:
    argv = ["--stage", STAGE_NAMES[stage], "--init-from", init_from, "--out", out, "--steps", str(steps),
            "--turntable-views", str(args.stage_turntable_views), "--mode", mode]
    if stage == 2:
        argv += ["--tet-resolution", str(args.tet_resolution)]
    if args.stage_val_every:
        argv += ["--val-every", str(args.stage_val_every)]
    return argv


def _read_json(path: str):
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def stage_mode(folder: str) -> str | None:
    """The guidance mode a stage run was started with (its config.yaml), None if unreadable."""
    from ..run_folder import RunFolder

    mode = (RunFolder(folder).saved_settings() or {}).get("mode")
    return mode if isinstance(mode, str) else None


def _set_aside_if_stale(folder: str, upstream_digest: str, mode: str) -> bool:
    """Moves a stage run that cannot be continued to <folder>.stale: one started from another
    upstream checkpoint, one trained with another guidance mode than its case's, or one stopped
    before its first checkpoint (its run files would make the run CLI refuse the folder). True
    if moved."""
    from ..run_folder import RunFolder

    if not os.path.isdir(folder):
        return False
    origin = _read_json(os.path.join(folder, ORIGIN_FILE)) or {}
    run = RunFolder(folder)
    found = stage_mode(folder)
    if origin.get("upstream_checkpoint_sha256") != upstream_digest:
        why = "was started from an older upstream run"
    elif found is not None and found != mode:
        why = f"was trained with mode {found}, not the case's {mode}"
    elif not run.has_checkpoint() and run.run_files():
        why = "stopped before its first checkpoint"
    else:
        return False
    stale = folder + ".stale"
    shutil.rmtree(stale, ignore_errors=True)
    os.replace(folder, stale)
    print(f"shapes.bench: {folder} {why}; moved to {stale}", flush=True)
    return True


def run_stage(run_dir: str, stage: int, steps: int, args, mode: str) -> None:
    """Trains (or resumes, or continues to `steps`) one stage run through the ordinary run CLI,
    with the guidance mode of its case."""
    from ..run import main as run_main
    from ..trainer import CHECKPOINT
    from .bench import BenchError

    folder = stage_folder(run_dir, stage)
    upstream = upstream_folder(run_dir, stage)
    digest = checkpoint_digest(upstream)  # hashes the whole checkpoint: once per stage run
    _set_aside_if_stale(folder, digest, mode)
    if os.path.isfile(os.path.join(folder, CHECKPOINT)):
        argv = ["--stage", STAGE_NAMES[stage], "--out", folder, "--resume", "--steps", str(steps)]
    else:
        os.makedirs(folder, exist_ok=True)
        atomic_write_bytes(os.path.join(folder, ORIGIN_FILE),
                           json.dumps({"upstream": upstream,
                                       "upstream_checkpoint_sha256": digest}).encode())
        argv = stage_argv(stage, upstream, folder, steps, args, mode)
    code = run_main(argv)
    if code != 0:
        raise BenchError(f"{STAGE_NAMES[stage]} run {folder} failed (exit code {code}; its error is printed above)")


@torch.no_grad()
def evaluate_stage(run_dir: str, stage: int, obj_key: str) -> dict:
    """Scores a finished stage run against its object: the mesh scores (mesh_score), and from the
    held-out cameras (score.py's) the silhouette IoU and, for the texture stage, PSNR and SSIM of
    its colour renders over white. Both against the true surface rasterized the same way
    (truth_mesh_renders): the volume-rendered truth's silhouette lies ~0.02 outside the surface
    (its density is a sigmoid of the SDF), which alone costs a perfect mesh ~10 % IoU."""
    from ..checkpoint import load_checkpoint
    from ..trainer import CHECKPOINT
    from .mesh_score import score_mesh
    from .metrics import psnr, silhouette_iou, ssim
    from .objects import OBJECTS
    from .score import held_out_cameras

    folder = stage_folder(run_dir, stage)
    state = load_checkpoint(os.path.join(folder, CHECKPOINT))
    obj = OBJECTS[obj_key]
    if stage == 2:
        from ..mesh.stage_geometry import mesh_from_state

        vertices, faces, _, _ = mesh_from_state(state)
    else:
        vertices, faces = state["vertices"].float(), state["faces"].to(torch.int32)
    result = score_mesh(vertices, faces, obj)
    cams = held_out_cameras()
    truth_rgb, truth_mask = truth_mesh_renders(obj_key, cams)
    if faces.shape[0] == 0:
        result.update(silhouette_iou=math.nan, psnr=math.nan, ssim=math.nan)
    elif stage == 2:
        result["silhouette_iou"] = mesh_silhouette_iou(vertices, faces, obj_key, cams, truth_mask)
    else:
        rgb, coverage = textured_renders(state, vertices, faces, cams)
        result.update(silhouette_iou=silhouette_iou(coverage, truth_mask),
                      psnr=float(psnr(rgb, truth_rgb).mean()), ssim=float(ssim(rgb, truth_rgb).mean()))
    result.update(stage=STAGE_NAMES[stage], steps=state["step"], stage_eval_version=STAGE_EVAL_VERSION)
    atomic_write_bytes(os.path.join(folder, STAGE_EVAL_FILE), json.dumps(result, indent=2).encode())
    return result


@torch.no_grad()
def mesh_silhouette_iou(vertices, faces, obj_key: str, cams=None, truth_mask=None) -> float:
    """Silhouette IoU of a mesh against the rasterized true mesh from the held-out cameras (NaN
    for an empty mesh): comparable across stages 1 (its marching-cubes mesh), 2 and 3."""
    from ..mesh.render import render_mesh
    from .metrics import silhouette_iou
    from .score import held_out_cameras

    if faces.shape[0] == 0:
        return math.nan
    cams = cams if cams is not None else held_out_cameras()
    if truth_mask is None:
        truth_mask = truth_mesh_renders(obj_key, cams)[1]
    coverage = render_mesh(vertices.float(), faces, cams.c2w, cams.fovy, cams.height, cams.width).mask[..., 0]
    return silhouette_iou(coverage, truth_mask)


@torch.no_grad()
def truth_mesh_renders(obj_key: str, cams) -> tuple[torch.Tensor, torch.Tensor]:
    """((N, 3, H, W) colours over white, (N, H, W) coverage) of the true surface mesh
    (mesh_score.true_mesh) coloured by the object's albedo at the surface points, rasterized as
    the texture stage renders: what a perfect stage 2 / 3 would show."""
    from .mesh_score import true_mesh
    from .objects import OBJECTS

    mesh = true_mesh(obj_key)
    obj = OBJECTS[obj_key]
    return _mesh_renders(torch.as_tensor(mesh.vertices, dtype=torch.float32),
                         torch.as_tensor(mesh.faces, dtype=torch.int32),
                         lambda points: obj.sdf_and_albedo(points)[1], cams)


def _mesh_renders(vertices, faces, colour, cams) -> tuple[torch.Tensor, torch.Tensor]:
    """One camera at a time (memory)."""
    from ..mesh.stage_texture import render_textured
    from ..trainer import _index

    rgbs, masks = [], []
    for i in range(cams.batch_size):
        rgb, covered = render_textured(vertices, faces, colour, _index(cams, i), torch.ones(1, 3))
        rgbs.append(rgb)
        masks.append(covered)
    return torch.cat(rgbs).clamp(0, 1).float(), torch.cat(masks)


def textured_renders(state: dict, vertices, faces, cams) -> tuple[torch.Tensor, torch.Tensor]:
    """The texture checkpoint's colour renders over white and their coverage."""
    from ..config import from_saved
    from ..mesh.texture_field import TextureField

    g = from_saved(state["config"]["guidance"])
    box = state["box"]
    texture = TextureField(tuple(box["center"]), box["half_extent"], n_levels=g.n_levels,
                           log2_hashmap_size=g.log2_hashmap_size)
    texture.load_state_dict(state["texture"])
    return _mesh_renders(vertices, faces, texture.eval(), cams)


def stage_scores(run_dir: str, obj_key: str, stages: list[int], stage_steps: dict, args,
                 mode: str) -> dict:
    """{s<stage>_<metric>: value} of the stage runs of one stage-1 run of a case with guidance
    `mode`, training and scoring what is missing: a stage run is (re)trained unless it is scored
    at the wanted number of steps from its upstream's current checkpoint with the case's mode,
    and re-scored (not retrained) when scored by an older version of this module."""
    out = {}
    for stage in stages:
        if stage == 1:
            continue
        folder = stage_folder(run_dir, stage)
        result = _read_json(os.path.join(folder, STAGE_EVAL_FILE))
        origin = _read_json(os.path.join(folder, ORIGIN_FILE)) or {}
        trained = (result is not None and result.get("steps") == stage_steps[stage]
                   and origin.get("upstream_checkpoint_sha256") == checkpoint_digest(upstream_folder(run_dir, stage))
                   and stage_mode(folder) == mode)
        if not trained:
            run_stage(run_dir, stage, stage_steps[stage], args, mode)
        if not trained or result.get("stage_eval_version") != STAGE_EVAL_VERSION:
            result = evaluate_stage(run_dir, stage, obj_key)
        prefix = stage_prefix(stage)
        out.update({prefix + k: v for k, v in result.items()
                    if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "stage_eval_version"})
    return out


def stage_summary(result: dict) -> str:
    """One line: each stage's Chamfer and normal consistency, and stage 3's PSNR."""
    parts = []
    for stage, prefix in ((1, ""), (2, stage_prefix(2)), (3, stage_prefix(3))):
        if prefix + "chamfer" in result:
            parts.append(f"stage {stage} Chamfer {result[prefix + 'chamfer']:.4f} "
                         f"normals {result[prefix + 'normal_consistency']:.3f}")
    if stage_prefix(3) + "psnr" in result:
        parts.append(f"stage 3 PSNR {result[stage_prefix(3) + 'psnr']:.2f}")
    return ", ".join(parts)

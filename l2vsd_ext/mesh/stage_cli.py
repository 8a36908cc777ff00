"""The mesh stages' command line:
python -m l2vsd_ext.run --stage geometry --init-from STAGE1_RUN --out GEOM_RUN [--mode MODE]
[--steps N] [--tet-resolution R] [--level L] [--set KEY=VALUE ...];
python -m l2vsd_ext.run --stage texture --init-from GEOM_RUN --out TEX_RUN [--mode MODE] ...;
python -m l2vsd_ext.run --stage STAGE --out RUN --resume [--steps N].

The run-folder rules of stage 1: one process per folder (run_lock), refused settings leave no
folder behind, config.yaml, metrics.jsonl (its first record, step 0, is the conversion's Chamfer),
atomic checkpoints, validation normal maps, --resume with the saved settings (only how long and
how watched may change). The --init-from folder is only read: no lock, no file is written there.
Guidance settings are the stage-1 run's; --mode and --set KEY=VALUE (any stage-1 setting, e.g.
--set guidance_scale=20 lora_lr=1e-4) change them for this stage. At the end the geometry stage
writes export/mesh.obj, export/mesh.glb and export/normals.png (normal maps from an orbit), the
texture stage export/mesh.obj/.glb with vertex colours and export/renders.png; both write a
turntable of --turntable-views frames (geometry: shaded | normal map; texture: shaded | normal
map | textured, side by side) into turntable/ and its
video into export/ (export/turntable.mp4, .gif, contact_sheet.png). --no-export: only the
turntable frames."""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys

from ..config import MODES, ConfigError, RunConfig, coerce, from_saved, validate
from .stage_base import CHANGEABLE_ON_RESUME, StageConfig

# Stage-1 options that belong to one family of modes: reset when --mode changes the family.
_MODE_OPTIONS = ("eta_relative", "last_layer", "high_order_diagnostics", "esd_lambda")
_METAVARS = {"int": "N", "float": "X", "str": "TEXT", "bool": "BOOL"}
DESCRIPTIONS = {
    "geometry": "Stage 2: refine the stage-1 geometry on a tet-grid mesh (SDF + offsets) with score "
                "distillation on normal maps.",
    "texture": "Stage 3: a texture field on the fixed stage-2 mesh, started from the stage-1 colours, "
               "trained by score distillation (VSD by default) on rendered colours.",
}


def stage_classes(stage: str):
    """(config class, trainer class, final-output writer) of a mesh stage."""
    if stage == "geometry":
        from .stage_geometry import GeometryConfig, GeometryTrainer

        return GeometryConfig, GeometryTrainer, write_geometry_outputs
    from .stage_texture import TextureConfig, TextureTrainer

    return TextureConfig, TextureTrainer, write_texture_outputs


def _fields(config_cls):
    return [f for f in dataclasses.fields(config_cls) if f.name not in ("guidance", "logger")]


def build_parser(stage: str, config_cls) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"python -m l2vsd_ext.run --stage {stage}",
                                argument_default=argparse.SUPPRESS, description=DESCRIPTIONS[stage])
    for f in _fields(config_cls):
        flag = "--" + f.name.replace("_", "-")
        if f.name == "stop_after":
            p.add_argument(flag, help=argparse.SUPPRESS)
        elif f.name == "export_at_end":
            p.add_argument("--no-export", dest="export_at_end", action="store_false", help=f.metadata["help"])
        elif f.name == "resume":
            p.add_argument(flag, action="store_true", help=f.metadata["help"])
        else:
            default = f.default
            shown = "" if default in (None, "") else f" (default: {default})"
            choices = {"mode": MODES, "color_init": ("stage1", "none")}.get(f.name)
            metavar = None if choices else _METAVARS.get(f.type.split("|")[0].strip())
            p.add_argument(flag, dest=f.name, choices=choices, metavar=metavar,
                           help=f.metadata["help"] + shown)
    p.add_argument("--set", nargs="+", action="extend", metavar="KEY=VALUE",
                   help="change a stage-1 guidance setting for this stage, e.g. --set guidance_scale=20")
    return p


def given_settings(stage: str, config_cls, argv) -> tuple[dict, dict]:
    """(stage settings given, typed; guidance overrides given by --set, as text)."""
    from ..cli_errors import one_line_parser

    args = vars(one_line_parser(build_parser(stage, config_cls)).parse_args(argv))
    guidance = {}
    for item in args.pop("set", []):
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in RunConfig.field_names():
            raise ConfigError(f"--set: expected KEY=VALUE with KEY a stage-1 setting, got '{item}'")
        if key in ("out", "resume", "steps", "stop_after", "device", "resolution", "mode"):
            raise ConfigError(f"--set {key}: give it as this stage's own flag (--{key.replace('_', '-')})")
        guidance[key] = value
    types = {f.name: f.type for f in _fields(config_cls)}
    return {k: coerce(k, v, types[k]) for k, v in args.items()}, guidance


def _read_previous(stage: str, init_from: str) -> RunConfig:
    """The guidance settings the previous run used, from --init-from's checkpoint:
    a stage-1 run for the geometry stage, a geometry run for the texture stage."""
    from ..checkpoint import load_checkpoint
    from ..run_folder import CHECKPOINT

    wanted = {"geometry": "stage-1", "texture": "geometry"}[stage]
    if not init_from:
        raise ConfigError(f"--init-from: the {wanted} run folder is required for a new {stage} run")
    if not os.path.isdir(init_from):
        raise ConfigError(f"--init-from: '{init_from}' is not a folder")
    path = os.path.join(init_from, CHECKPOINT)
    if not os.path.isfile(path):
        raise ConfigError(f"--init-from: '{init_from}' is not a run folder: no {CHECKPOINT} in it")
    saved = load_checkpoint(path).get("config")
    if not isinstance(saved, dict):
        raise ConfigError(f"--init-from: '{path}' holds no readable run config")
    found = saved.get("stage", "stage-1")
    if found != wanted:
        raise ConfigError(f"--init-from: '{init_from}' is a {found} run, not a {wanted} run")
    try:
        previous = from_saved(saved) if stage == "geometry" else from_saved(saved["guidance"])
    except (KeyError, TypeError) as err:
        raise ConfigError(f"--init-from: '{path}' holds no readable run config ({err})") from None
    return previous


def new_config(stage: str, config_cls, given: dict, overrides: dict) -> StageConfig:
    init_from = given.get("init_from", "")
    stage1 = _read_previous(stage, init_from)
    config = config_cls(**given)
    guidance = dict(overrides)
    mode = config.mode or config_cls.DEFAULT_MODE or stage1.mode
    if mode != stage1.mode:  # the previous mode's own options do not carry over
        defaults = RunConfig()
        guidance = {**{k: getattr(defaults, k) for k in _MODE_OPTIONS}, **guidance}
    changes = {"mode": mode, "steps": config.steps,
               "resolution": config.resolution or stage1.resolution, "out": config.out, "resume": False,
               "stop_after": None, "device": config.device, "anneal_step": None, "sqrt_anneal_steps": None}
    values = {**stage1.to_dict(), **guidance, **changes}
    config.guidance = RunConfig.from_dict(values)
    config.mode, config.resolution = config.guidance.mode, config.guidance.resolution
    if config.turntable_views is None:
        config.turntable_views = stage1.turntable_views
    if os.path.realpath(config.out) == os.path.realpath(init_from):
        raise ConfigError(f"--out: '{config.out}' is the --init-from run; choose another folder")
    return config


def resumed_config(config_cls, given: dict, overrides: dict) -> tuple[StageConfig, dict]:
    from ..checkpoint import load_checkpoint
    from ..run_folder import RunFolder

    out = given.get("out", config_cls.out)
    folder = RunFolder(out)
    if not folder.has_checkpoint():
        raise ConfigError(f"--resume: no checkpoint at '{folder.checkpoint}'")
    state = load_checkpoint(folder.checkpoint)
    try:
        saved = config_cls.from_saved(state["config"])
    except (ConfigError, KeyError, TypeError) as err:
        raise ConfigError(f"--resume: '{folder.checkpoint}' is not a {config_cls.STAGE}-stage checkpoint "
                          f"({err})") from None
    refused = [k for k, v in given.items() if k not in CHANGEABLE_ON_RESUME + ("resume", "out", "stop_after")
               and v != getattr(saved, k)]
    if overrides:
        refused.append("--set")
    if refused:
        flags = [k if k.startswith("--") else "--" + k.replace("_", "-") for k in refused]
        allowed = ", ".join("--" + k.replace("_", "-") for k in CHANGEABLE_ON_RESUME if hasattr(saved, k))
        raise ConfigError(f"--resume: the run keeps the settings it was started with; these differ: "
                          f"{', '.join(flags)}. Only {allowed} may change")
    changes = {k: [getattr(saved, k), given[k]] for k in CHANGEABLE_ON_RESUME
               if k in given and given[k] != getattr(saved, k)}
    if "steps" in changes and changes["steps"][1] < state["step"]:
        raise ConfigError(f"--steps: the checkpoint is at step {state['step']}; give --steps >= {state['step']}")
    config = dataclasses.replace(saved, **{k: new for k, (_, new) in changes.items()}, resume=True, out=out,
                                 stop_after=given.get("stop_after"))
    g = saved.guidance
    pinned = {"steps": config.steps, "device": config.device}
    if "steps" in changes:  # the timestep schedule keeps annealing where it was planned
        if g.anneal_step is None:
            pinned["anneal_step"] = math.ceil(g.anneal_at * g.steps - 1e-9)  # as stage 1's resume
        if g.timestep_schedule == "sqrt" and g.sqrt_anneal_steps is None:
            pinned["sqrt_anneal_steps"] = g.steps
    config.guidance = dataclasses.replace(g, **pinned, out=out, resume=True)
    return config, changes


def write_turntable(trainer, config) -> tuple[dict, object]:
    """({name: path}, frames or None): the stage's orbit of --turntable-views frames (the run's
    render size rounded up to even, for H.264) into RUN/turntable/frame_NNN.png, and unless
    --no-export the video, GIF and contact sheet into RUN/export/ (as stage 1's turntable)."""
    from ..export.turntable import write_contact_sheet, write_gif, write_mp4
    from ..run_folder import RunFolder
    from ..trainer import save_png

    folder = RunFolder(config.out)
    # An earlier write (a finished run resumed): no stale frames left behind.
    folder.remove_own_files("turntable", "frame_", ".png")
    if not config.turntable_views:
        return {}, None
    resolution = config.resolution + config.resolution % 2
    frames = trainer.turntable_views(config.turntable_views, resolution=resolution)
    for i, frame in enumerate(frames):
        save_png(frame[None], folder.claim("turntable", f"frame_{i:03d}.png"))
    written = {"turntable": os.path.join(config.out, "turntable", "frame_NNN.png")}
    if config.export_at_end:
        for name, file, write in (("mp4", "turntable.mp4", write_mp4), ("gif", "turntable.gif", write_gif),
                                  ("contact_sheet", "contact_sheet.png", write_contact_sheet)):
            final = folder.claim("export", file)
            partial = os.path.join(os.path.dirname(final), ".partial-" + file)  # same extension: same format
            try:
                write(frames, partial)
                os.replace(partial, final)  # a killed write never leaves a truncated video in place
            finally:
                if os.path.exists(partial):
                    os.remove(partial)
            written[name] = final
    return written, frames


def write_stage_outputs(trainer, config, sheet: str) -> dict:
    """The stage's turntable, and (unless --no-export) its mesh (OBJ, GLB) and a sheet of 8 views
    as export/<sheet>.png."""
    from ..export.mesh import write_mesh
    from ..run_folder import RunFolder
    from ..trainer import save_png

    written, _ = write_turntable(trainer, config)
    if not config.export_at_end:
        return written
    folder = RunFolder(config.out)
    for fmt in ("obj", "glb"):
        folder.claim("export", f"mesh.{fmt}")
    paths = write_mesh(trainer.trimesh(), folder.path("export", "mesh"), ("obj", "glb"))
    sheet_path = folder.claim("export", f"{sheet}.png")
    save_png(trainer.render_views(8), sheet_path, columns=4)
    return {**written, "mesh": paths[0], "mesh_glb": paths[1], sheet: sheet_path}


def write_geometry_outputs(trainer, config) -> dict:
    """The turntable of normal renders, the mesh and a normal-map sheet."""
    return write_stage_outputs(trainer, config, "normals")


def write_texture_outputs(trainer, config) -> dict:
    """The turntable of textured renders, the coloured mesh and a sheet of renders; unless
    --texture-size 0, also the mesh with a UV atlas: export/textured.glb, and export/textured.obj
    with textured.mtl and textured_albedo.png."""
    written = write_stage_outputs(trainer, config, "renders")
    if config.export_at_end and config.texture_size:
        written.update(write_uv_textured(trainer, config))
    return written


def write_uv_textured(trainer, config) -> dict:
    from trimesh.exchange.obj import export_obj

    from ..checkpoint import atomic_write_bytes
    from ..run_folder import RunFolder
    from .uv_atlas import bake, textured_trimesh, unwrap

    atlas = unwrap(trainer.vertices, trainer.faces, config.texture_size)
    image = bake(atlas, lambda points: trainer.texture(points.to(trainer.device)), config.texture_size)
    mesh = textured_trimesh(atlas, image)
    folder = RunFolder(config.out)
    glb = folder.claim("export", "textured.glb")
    atomic_write_bytes(glb, mesh.export(file_type="glb"))
    text, extra = export_obj(mesh, return_texture=True, mtl_name="textured.mtl")
    for name, data in extra.items():  # textured.mtl and the texture image it names
        atomic_write_bytes(folder.claim("export", name), data)
    obj = folder.claim("export", "textured.obj")
    atomic_write_bytes(obj, text.encode())
    return {"textured_glb": glb, "textured_obj": obj}


def main(stage: str, argv, prior=None) -> int:
    from ..cli_errors import run_command

    prog = f"python -m l2vsd_ext.run --stage {stage}"
    # the resume line RunInterrupted prints names stage 1's command: add this stage
    hint = lambda message: message.replace("l2vsd_ext.run --out", f"l2vsd_ext.run --stage {stage} --out")  # noqa: E731
    return run_command(prog, lambda folder: _run_stage(stage, argv, prior, prog, folder), hint)


def _run_stage(stage: str, argv, prior, prog: str, folder_lock) -> int:
    from ..run import check_out_writable
    from ..run_lock import lock_folder

    config_cls, trainer_cls, write_outputs = stage_classes(stage)
    given, overrides = given_settings(stage, config_cls, argv)
    if given.get("resume"):
        out = given.get("out", config_cls.out)
        if not os.path.isdir(out):
            raise ConfigError(f"--resume: no run folder at '{out}'")
    else:
        config = new_config(stage, config_cls, given, overrides)  # reads --init-from, writes nothing
        validate(config.guidance)
        config.validate()
        config.check_memory()  # before the folder, the lock or the conversion
    out = given.get("out", config_cls.out)
    check_out_writable(out)
    folder_lock.hold(lock_folder(out, "--out"))
    changes = {}
    if given.get("resume"):
        config, changes = resumed_config(config_cls, given, overrides)
        config.validate()
        config.check_memory()
    else:
        from ..run_folder import RunFolder

        folder = RunFolder(out)
        if folder.has_checkpoint():
            raise ConfigError(f"--out: '{out}' already holds a run; pass --resume to continue it "
                              "or choose another folder")
        present = folder.run_files()
        if present:
            raise ConfigError(f"--out: '{out}' holds {', '.join(present)}; choose an empty or new folder")
    from ..run import quiet_libraries
    from ..trainer import TrainingDiverged, run_training

    quiet_libraries()
    try:
        trainer = run_training(config, prior, changes=changes, make_trainer=trainer_cls)
    except TrainingDiverged as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 1
    for key, value in (trainer.initial_metrics[0] if trainer.initial_metrics else {}).items():
        if key != "step":
            print(f"  {key}: {value}", file=sys.stderr)
    if trainer.step == config.steps:
        written = write_outputs(trainer, config)
        print(f"{stage} stage finished at step {trainer.step}: '{config.out}'", file=sys.stderr)
        for name, path in written.items():
            print(f"  {name:10s} {path}", file=sys.stderr)
    return 0

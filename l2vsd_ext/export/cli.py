"""Command line: python -m l2vsd_ext.export RUN_DIR [--video] [--mesh] [--resolution 256] ...

With neither --video nor --mesh, both are written. Bad arguments or an unreadable run folder:
one line on stderr, exit code 2."""
from __future__ import annotations

import argparse
import math
import os
import sys

from ..config import ConfigError
from .mesh import DEFAULT_THRESHOLD, EmptyMeshError


GPU_DEFAULTS = {"n_views": 120, "resolution": 256}
CPU_DEFAULTS = {"n_views": 60, "resolution": 128}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m l2vsd_ext.export",
        description="Turntable video (MP4, GIF, contact sheet) and mesh (OBJ, PLY, GLB) of a "
                    "trained run, written to RUN_DIR/export/.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run folder (holds checkpoints/last.pt)")
    p.add_argument("--video", action="store_true", help="write the turntable (default: both)")
    p.add_argument("--mesh", action="store_true", help="write the mesh (default: both)")
    p.add_argument("--resolution", type=int, default=None,
                   help=f"frame size in pixels, even (default: {GPU_DEFAULTS['resolution']} on a GPU, "
                        f"{CPU_DEFAULTS['resolution']} on a CPU)")
    p.add_argument("--n-views", type=int, default=None,
                   help=f"turntable frames (default: {GPU_DEFAULTS['n_views']} on a GPU, "
                        f"{CPU_DEFAULTS['n_views']} on a CPU)")
    p.add_argument("--elevation", type=float, default=15.0, help="camera elevation in degrees (default: 15)")
    p.add_argument("--fps", type=int, default=30, help="video frame rate (default: 30)")
    p.add_argument("--mesh-resolution", type=int, default=128,
                   help="marching-cubes grid cells per side (default: 128)")
    p.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                   help=f"density of the surface (default: {DEFAULT_THRESHOLD:g}, threestudio's)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="write the files into DIR instead of RUN_DIR/export/ (e.g. a read-only run folder)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    return p


def apply_device_defaults(args, device) -> None:
    """Fills --n-views/--resolution left out: the GPU defaults keep full quality; on a CPU, where a
    256-px frame takes seconds, a default export must finish in a couple of minutes."""
    defaults = GPU_DEFAULTS if device.type == "cuda" else CPU_DEFAULTS
    chosen = []
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
            chosen.append(f"--{name.replace('_', '-')} {value}")
    if chosen and device.type != "cuda":
        print(f"l2vsd_ext.export: on the CPU: {', '.join(chosen)} (GPU default: --n-views "
              f"{GPU_DEFAULTS['n_views']} --resolution {GPU_DEFAULTS['resolution']})", file=sys.stderr)


def check_arguments(args) -> None:
    if args.resolution is not None and (args.resolution < 2 or args.resolution % 2):
        raise ConfigError(f"--resolution: must be an even number >= 2 (H.264 frames), got {args.resolution}")
    if args.n_views is not None and args.n_views < 1:
        raise ConfigError(f"--n-views: must be >= 1, got {args.n_views}")
    if args.fps < 1:
        raise ConfigError(f"--fps: must be >= 1, got {args.fps}")
    if args.mesh_resolution < 2:
        raise ConfigError(f"--mesh-resolution: must be >= 2, got {args.mesh_resolution}")
    if not -90 <= args.elevation <= 90:
        raise ConfigError(f"--elevation: must be in [-90, 90] degrees, got {args.elevation}")
    if not math.isfinite(args.threshold):
        raise ConfigError(f"--threshold: must be a finite density, got {args.threshold}")


def pick_device(name: str | None):
    import torch

    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ConfigError(f"--device: {err}") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device: '{name}' requested but no CUDA device is visible")
    return device


def writable_target(folder: str, flag: str, hint: str = "") -> None:
    """Refuses, before any rendering, a folder this command could not write into."""
    from ..config import _is_pseudo_fs, _nearest_existing_parent

    parent = _nearest_existing_parent(folder)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK) or _is_pseudo_fs(parent):
        raise ConfigError(f"{flag}: '{folder}' is not writable{hint}")


def main(argv=None) -> int:
    from ..cli_errors import one_line, one_line_parser

    lock = None
    try:
        args = one_line_parser(build_parser()).parse_args(argv)
        check_arguments(args)
        from ..run_lock import lock_folder
        from .loading import check_run_dir, open_run
        from .outputs import export_run

        device = pick_device(args.device)
        check_run_dir(args.run_dir)
        target = args.out or args.run_dir
        writable_target(target, "--out" if args.out else "RUN_DIR",
                        "" if args.out else "; export elsewhere with --out DIR")
        # The folder written into is this command's alone while it works (a run, a sweep or another
        # export in it is refused).
        lock = lock_folder(target, "--out" if args.out else "RUN_DIR")
        renderer, _, step = open_run(args.run_dir, device)
        apply_device_defaults(args, device)
        both = not (args.video or args.mesh)
        written = export_run(args.run_dir, renderer, video=both or args.video, mesh=both or args.mesh,
                             n_views=args.n_views, resolution=args.resolution,
                             elevation=args.elevation, fps=args.fps,
                             mesh_resolution=args.mesh_resolution, threshold=args.threshold,
                             progress=True, dest=args.out,
                             skip_empty_field=both)  # both asked: an empty field still gets its video
        if not written:
            raise ConfigError("--threshold: nothing was exported")
    except EmptyMeshError as err:
        print(f"l2vsd_ext.export: error: --threshold: {err}; the previous export, if any, is untouched",
              file=sys.stderr)
        return 2
    except ConfigError as err:
        print(f"l2vsd_ext.export: error: {one_line(err)}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"l2vsd_ext.export: error: cannot write the export: {err.strerror or err}", file=sys.stderr)
        return 2
    finally:
        if lock is not None:
            lock.release()
    print(f"exported step {step} of '{args.run_dir}':")
    for name, path in written.items():
        print(f"  {name:14s} {path}")
    return 0

"""What export writes into a run folder (RUN/export/...), from a renderer already in memory.

Everything is written into a temporary folder next to RUN/export/ and moved into place only when
all of it succeeded: a failed export (e.g. no surface above --threshold) leaves the previous
outputs untouched."""
from __future__ import annotations

import os
import shutil
import tempfile

from .mesh import DEFAULT_THRESHOLD, MESH_FORMATS, EmptyMeshError, extract_mesh, write_mesh
from .turntable import write_contact_sheet, write_gif, write_mp4
from .views import render_orbit

EXPORT_DIR = "export"


def export_run(run_dir: str, renderer, video: bool = True, mesh: bool = True, n_views: int = 120,
               resolution: int = 256, elevation: float = 15.0, fps: int = 30,
               mesh_resolution: int = 128, threshold: float = DEFAULT_THRESHOLD, frames=None,
               progress: bool = False, skip_empty_mesh: bool = False, dest: str | None = None,
               skip_empty_field: bool = False) -> dict:
    """Writes RUN/export/turntable.{mp4,gif}, contact_sheet.png (video) and mesh.{obj,ply,glb}
    (mesh); returns {name: path}. `frames` (N, 3, H, W): an already rendered orbit to use instead
    of rendering one. With skip_empty_mesh, a field without surface skips the mesh (a warning)
    instead of failing the whole export; with skip_empty_field, only a field with no density at all
    does (a too-high --threshold on a real surface is still an error). `dest`: write there instead of RUN/export/ (a run folder
    that is read-only); files written into the run folder are listed in its manifest."""
    from ..chaos_hook import point as chaos_point
    from ..run_folder import RunFolder

    folder = None if dest else RunFolder(run_dir)
    out = dest or os.path.join(run_dir, EXPORT_DIR)
    if folder is not None:
        folder.claim_dir(EXPORT_DIR)  # records export/ itself when the run creates it
    os.makedirs(out, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".partial-", dir=out)
    os.chmod(staging, 0o755)
    staged = {}
    try:
        if mesh:  # first: it is the part that can fail on a bad --threshold, and it is quick
            try:
                surface = extract_mesh(renderer.field, mesh_resolution, threshold)
                for fmt, path in zip(MESH_FORMATS, write_mesh(surface, os.path.join(staging, "mesh"))):
                    staged[fmt] = path
            except EmptyMeshError as err:
                if not (skip_empty_mesh or (skip_empty_field and err.field_empty)):
                    raise
                import sys

                print(f"warning: export: mesh skipped: {err}", file=sys.stderr)
        if video:
            if frames is None:
                frames = render_orbit(renderer, n_views, resolution, elevation=elevation, progress=progress,
                                      desc="export turntable")
            staged["mp4"] = write_mp4(frames, os.path.join(staging, "turntable.mp4"), fps)
            staged["gif"] = write_gif(frames, os.path.join(staging, "turntable.gif"), fps)
            staged["contact_sheet"] = write_contact_sheet(frames, os.path.join(staging, "contact_sheet.png"))
        chaos_point("export")
        written = {}
        for name, path in staged.items():
            final = os.path.join(out, os.path.basename(path))
            if folder is not None:
                folder.claim(EXPORT_DIR, os.path.basename(path))
            os.replace(path, final)
            written[name] = final
        return written
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def export_at_end_of_run(renderer, config, frames=None) -> dict:
    """The export a finished training run writes: turntable at the training resolution (rounded up
    to even for H.264) with config.turntable_views frames (or the given `frames`), and the mesh. A
    field with no surface yet (e.g. a very short run) gets a warning, not an error: the checkpoint
    is already safe."""
    n_views = config.turntable_views or 30
    resolution = config.resolution + config.resolution % 2
    return export_run(config.out, renderer, n_views=n_views, resolution=resolution, frames=frames,
                      progress=True, skip_empty_mesh=True)

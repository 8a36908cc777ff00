"""What export writes into a run folder (RUN/export/...), from a renderer already in memory."""
from __future__ import annotations

import os

from .mesh import DEFAULT_THRESHOLD, MESH_FORMATS, EmptyMeshError, extract_mesh, write_mesh
from .turntable import write_contact_sheet, write_gif, write_mp4
from .views import render_orbit

EXPORT_DIR = "export"


def export_run(run_dir: str, renderer, video: bool = True, mesh: bool = True, n_views: int = 120,
               resolution: int = 256, elevation: float = 15.0, fps: int = 30,
               mesh_resolution: int = 128, threshold: float = DEFAULT_THRESHOLD) -> dict:
    """Writes RUN/export/turntable.{mp4,gif}, contact_sheet.png (video) and mesh.{obj,ply,glb}
    (mesh); returns {name: path}."""
    out = os.path.join(run_dir, EXPORT_DIR)
    written = {}
    if video:
        frames = render_orbit(renderer, n_views, resolution, elevation=elevation)
        written["mp4"] = write_mp4(frames, os.path.join(out, "turntable.mp4"), fps)
        written["gif"] = write_gif(frames, os.path.join(out, "turntable.gif"), fps)
        written["contact_sheet"] = write_contact_sheet(frames, os.path.join(out, "contact_sheet.png"))
    if mesh:
        surface = extract_mesh(renderer.field, mesh_resolution, threshold)
        for fmt, path in zip(MESH_FORMATS, write_mesh(surface, os.path.join(out, "mesh"))):
            written[fmt] = path
    return written


def export_at_end_of_run(renderer, config) -> dict:
    """The export a finished training run writes: turntable at the training resolution (rounded up
    to even for H.264) with config.turntable_views frames, and the mesh. A field with no surface
    yet (e.g. a very short run) gets a warning, not an error: the checkpoint is already safe."""
    import warnings

    n_views = config.turntable_views or 30
    resolution = config.resolution + config.resolution % 2
    written = export_run(config.out, renderer, mesh=False, n_views=n_views, resolution=resolution)
    try:
        written.update(export_run(config.out, renderer, video=False))
    except EmptyMeshError as err:
        warnings.warn(f"export: mesh skipped: {err}")
    return written

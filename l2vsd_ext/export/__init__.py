"""Results users can look at: turntable video (MP4, GIF, contact sheet) and mesh (OBJ, PLY, GLB)
of a trained run. CLI: python -m l2vsd_ext.export RUN_DIR."""
from .loading import open_run
from .mesh import DEFAULT_THRESHOLD, EmptyMeshError, density_grid, extract_mesh, write_mesh
from .outputs import export_at_end_of_run, export_run
from .turntable import contact_sheet, write_contact_sheet, write_gif, write_mp4
from .views import render_orbit

__all__ = ["open_run", "DEFAULT_THRESHOLD", "EmptyMeshError", "density_grid", "extract_mesh",
           "write_mesh", "export_run", "export_at_end_of_run", "contact_sheet",
           "write_contact_sheet", "write_gif", "write_mp4", "render_orbit"]

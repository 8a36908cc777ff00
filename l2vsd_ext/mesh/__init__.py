"""Stages 2-3 building blocks: our own tetrahedral grid and marching tetrahedra."""
from .marching_tets import TetMesh, marching_tets, vertex_positions
from .tetgrid import TetGrid, make_tet_grid

__all__ = ["TetGrid", "TetMesh", "make_tet_grid", "marching_tets", "vertex_positions"]

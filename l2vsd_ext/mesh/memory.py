"""How much memory the geometry stage's tet grid needs at a --tet-resolution, estimated from the
element counts before anything is built, so that a resolution too large for this machine is
refused with one line instead of being killed by the OOM killer (or swapping) minutes later.

Counts (tetgrid.py, R cells per side): V = (R+1)^3 vertices, T = 6 R^3 tets, E = 3R(R+1)^2 axis +
3R^2(R+1) face-diagonal + R^3 body-diagonal edges (the Kuhn split's). Bytes per element come from
the code, checked against peak RSS on torch 2.13 CPU (make_tet_grid at R = 16..48: 370-380 B per
tet; test_stage_geometry measures it again):
- the grid kept (int64 tets and tet-to-edge table, edges, float32 vertices); the geometry stage
  holds two copies while it converts (its own and the placed one),
- building it: make_tet_grid's sort / unique temporaries over the 6 T edge pairs, ~400 B a tet,
- a step: the parameters (SDF, offsets: values, gradients, Adam's two moments, the offset
  positions and their autograd buffers), marching_tets's per-tet sign codes and per-edge tables,
  and the render buffers of a batch of images,
- the conversion: the (2R+1)^3 density samples of the reference marching cubes.
The estimate is the grids kept plus the largest of build, step and conversion."""
from __future__ import annotations

import os
from dataclasses import dataclass

GRID_BYTES_PER_TET = 4 * 8 + 6 * 8          # tets (T, 4) + tet_edges (T, 6), int64
GRID_BYTES_PER_EDGE = 2 * 8                 # edges (E, 2), int64
GRID_BYTES_PER_VERTEX = 3 * 4               # vertices (V, 3), float32
BUILD_BYTES_PER_TET = 400                   # make_tet_grid's peak over what it returns
STEP_BYTES_PER_TET = 96                     # marching_tets: sign codes (bool, int64, shifted, summed), masks
STEP_BYTES_PER_EDGE = 10                    # crossing mask + edge -> surface vertex (int64)
PARAM_BYTES_PER_VERTEX = 16 * 4 + 48        # SDF + offsets (16 B): value, grad, 2 Adam moments; positions + autograd
RENDER_BYTES_PER_PIXEL = 512                # rasterize / interpolate / antialias buffers and their gradients
CONVERSION_BYTES_PER_SAMPLE = 16            # float32 densities + marching cubes' working arrays


@dataclass
class GridMemory:
    resolution: int
    vertices: int
    tets: int
    edges: int
    grid_bytes: int      # one grid kept
    build_bytes: int     # building one grid, on top of what is kept
    step_bytes: int      # one training step, on top of the grid
    conversion_bytes: int

    @property
    def total_bytes(self) -> int:
        return 2 * self.grid_bytes + max(self.build_bytes, self.step_bytes, self.conversion_bytes)


def tet_grid_counts(resolution: int) -> tuple[int, int, int]:
    """(vertices, tets, edges) of make_tet_grid(resolution)."""
    r = resolution
    return (r + 1) ** 3, 6 * r ** 3, 3 * r * (r + 1) ** 2 + 3 * r * r * (r + 1) + r ** 3


def estimate_tet_grid_memory(resolution: int, render_resolution: int = 64, batch_size: int = 1) -> GridMemory:
    v, t, e = tet_grid_counts(resolution)
    grid = GRID_BYTES_PER_TET * t + GRID_BYTES_PER_EDGE * e + GRID_BYTES_PER_VERTEX * v
    step = (STEP_BYTES_PER_TET * t + STEP_BYTES_PER_EDGE * e + PARAM_BYTES_PER_VERTEX * v
            + RENDER_BYTES_PER_PIXEL * batch_size * render_resolution ** 2)
    conversion = CONVERSION_BYTES_PER_SAMPLE * (2 * resolution + 1) ** 3
    return GridMemory(resolution, v, t, e, grid, BUILD_BYTES_PER_TET * t, step, conversion)


def available_memory_bytes() -> int | None:
    """Memory available to a new allocation now (Linux MemAvailable: free plus reclaimable cache);
    None where it cannot be read."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _gib(n: float) -> str:
    return f"{n / 2 ** 30:.2f} GiB"


def check_tet_grid_memory(resolution: int, fraction: float, render_resolution: int, batch_size: int,
                          available: int | None = None) -> GridMemory:
    """The estimate, or ValueError (one line, naming --tet-resolution) when it exceeds `fraction`
    of the available memory. The grid is built on the host (then moved to the device), so host
    memory is what is checked. Unreadable available memory: no check."""
    estimate = estimate_tet_grid_memory(resolution, render_resolution, batch_size)
    available = available_memory_bytes() if available is None else available
    if available is not None and estimate.total_bytes > fraction * available:
        raise ValueError(
            f"--tet-resolution: {resolution} needs about {_gib(estimate.total_bytes)} for the tet grid "
            f"({estimate.vertices:,} vertices, {estimate.tets:,} tets, {estimate.edges:,} edges, per-step "
            f"tensors), over the limit of {_gib(fraction * available)} (--max-memory-fraction {fraction:g} "
            f"of the {_gib(available)} available); lower --tet-resolution or raise --max-memory-fraction")
    return estimate

"""Stage 2 (geometry), ProlificDreamer/threestudio's prolificdreamer-geometry in our pieces: a tet
grid with an SDF and a bounded offset per vertex, started from the stage-1 density (sdf_init.py),
trained with the run's guidance mode on rendered normal maps (black background, as threestudio's
normal render), plus normal consistency and Laplacian smoothing (each weighted 1e4), Adam lr 0.005.
The loop, guidance, checkpoints and resume are stage_base's (and so the stage-1 trainer's)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import ConfigError
from .marching_tets import marching_tets, vertex_positions
from .render import render_mesh
from .sdf_init import DEFAULT_LEVEL, Box, NoSurfaceError, conversion_chamfer, placed_grid, sdf_from_density, tight_box
from .stage_base import StageConfig, StageTrainer, _f


@dataclass
class GeometryConfig(StageConfig):
    STAGE = "geometry"

    init_from: str = _f("", "the stage-1 run folder whose density starts the SDF")
    out: str = _f("runs/geometry", "this stage's run folder")
    steps: int = _f(15000, "iterations (threestudio: 15000)")
    mode: str | None = _f(None, "guidance mode (default: the stage-1 run's)")
    resolution: int | None = _f(None, "normal-map render size in pixels (default: the stage-1 run's; "
                                      "threestudio: 512)")
    lr: float = _f(0.005, "Adam learning rate of the SDF and offsets (threestudio: 0.005)")
    tet_resolution: int = _f(64, "tet-grid cells per side (threestudio: 256 on a GPU)")
    level: float = _f(DEFAULT_LEVEL, "stage-1 density level that becomes the SDF's zero level")
    auto_level: bool = _f(False, "choose the level instead: the one whose surface's silhouettes best "
                                 "match the stage-1 renders' opacity > 0.5 (overrides --level; "
                                 "threestudio: off, level 25)")
    normal_consistency_weight: float = _f(1e4, "weight of the mesh normal consistency")
    laplacian_weight: float = _f(1e4, "weight of the uniform Laplacian smoothing")
    max_offset_cells: float = _f(0.5, "vertex offsets are tanh-bounded to this many cells, in (0, 1]")
    max_memory_fraction: float = _f(0.8, "refuse a --tet-resolution whose estimated memory exceeds this "
                                         "fraction of the memory available now, in (0, 1]")

    def validate(self) -> None:
        super().validate()
        if not 2 <= self.tet_resolution <= 256:
            raise ConfigError(f"--tet-resolution: must be in [2, 256], got {self.tet_resolution}")
        if not (self.level > 0 and self.level < float("inf")):
            raise ConfigError(f"--level: must be a finite number > 0, got {self.level}")
        for name in ("normal_consistency_weight", "laplacian_weight"):
            value = getattr(self, name)
            if not (value >= 0 and value < float("inf")):
                raise ConfigError(f"--{name.replace('_', '-')}: must be a finite number >= 0, got {value}")
        if not 0 < self.max_offset_cells <= 1:
            raise ConfigError(f"--max-offset-cells: must be in (0, 1], got {self.max_offset_cells}")
        if not 0 < self.max_memory_fraction <= 1:
            raise ConfigError(f"--max-memory-fraction: must be in (0, 1], got {self.max_memory_fraction}")

    def check_memory(self) -> None:
        """A tet grid too large for this machine's memory is refused before anything is written."""
        from .memory import check_tet_grid_memory

        try:
            check_tet_grid_memory(self.tet_resolution, self.max_memory_fraction,
                                  self.resolution or self.guidance.resolution, self.guidance.batch_size)
        except ValueError as err:
            raise ConfigError(str(err)) from None


class GeometryTrainer(StageTrainer):
    """SDF + offsets of a tet grid, trained by the guidance mode on normal renders."""

    # -- the representation ---------------------------------------------------------------------
    def _convert(self) -> None:
        from ..trainer import load_scene

        c = self.config
        renderer, _, _ = load_scene(c.init_from, self.device)
        field_ = renderer.field
        level, search = c.level, None
        if c.auto_level:
            search = self._search_level(renderer)
            level = search.level
        try:
            box = tight_box(field_, level)
        except NoSurfaceError as err:
            raise ConfigError(f"--init-from: '{c.init_from}': {err}; give a lower --level") from None
        grid = placed_grid(c.tet_resolution, box)
        sdf = sdf_from_density(field_, grid, level)
        mesh = marching_tets(grid.vertices, sdf, grid)
        if mesh.faces.shape[0] == 0:
            raise ConfigError(f"--init-from: '{c.init_from}': the density at level {level:g} leaves no "
                              f"surface on a {c.tet_resolution}^3 tet grid; raise --tet-resolution")
        # the reference: marching cubes at twice the tet resolution over the same box
        chamfer, floor = conversion_chamfer(field_, level, mesh.vertices, mesh.faces, box,
                                            resolution=2 * c.tet_resolution + 1)
        self._set_parameters(box, sdf, torch.zeros_like(grid.vertices))
        record = {"step": 0, "conversion_chamfer": chamfer, "conversion_chamfer_floor": floor,
                  "conversion_cell": grid.cell_size, "conversion_faces": int(mesh.faces.shape[0]),
                  "box_center": list(box.center), "box_half_extent": box.half_extent, "level": level}
        if search is not None:
            record["level_silhouette_iou"] = search.iou
        self.initial_metrics = [record]

    def _search_level(self, renderer):
        from .level_search import stage1_silhouette_level

        try:
            return stage1_silhouette_level(renderer, self.device)
        except ValueError as err:
            raise ConfigError(f"--auto-level: '{self.config.init_from}': {err}; give --level instead") from None

    def _restore(self, state: dict) -> None:
        box = Box(tuple(float(v) for v in state["box"]["center"]), float(state["box"]["half_extent"]))
        self._set_parameters(box, state["sdf"], state["offsets"])

    def _extra_state(self) -> dict:
        return {"box": {"center": list(self.box.center), "half_extent": self.box.half_extent},
                "sdf": self.sdf.detach().cpu(), "offsets": self.offsets.detach().cpu()}

    def _set_parameters(self, box: Box, sdf: torch.Tensor, offsets: torch.Tensor) -> None:
        self.box = box
        self.grid = placed_grid(self.config.tet_resolution, box).to(self.device)
        self.sdf = torch.nn.Parameter(sdf.to(self.device).float().clone())
        self.offsets = torch.nn.Parameter(offsets.to(self.device).float().clone())
        # threestudio's prolificdreamer-geometry optimiser: Adam, lr 0.005, betas (0.9, 0.99), eps 1e-15.
        self.optimizer = torch.optim.Adam([self.sdf, self.offsets], lr=self.config.lr, betas=(0.9, 0.99),
                                          eps=1e-15)

    def mesh(self):
        positions = vertex_positions(self.grid, self.offsets, self.config.max_offset_cells)
        return marching_tets(positions, self.sdf, self.grid)

    # -- rendering and regularisers ---------------------------------------------------------------
    def render(self, cams, training: bool = True):
        mesh = self.mesh()
        if mesh.faces.shape[0] == 0:
            from ..trainer import TrainingDiverged

            raise TrainingDiverged(f"stopped at step {self.step}: the surface vanished (no SDF sign change "
                                   "left); the last checkpoint is kept. Lower the guidance scale or raise "
                                   "the regulariser weights")
        out = render_mesh(mesh.vertices, mesh.faces, cams.c2w, cams.fovy, cams.height, cams.width)
        return out.normal.permute(0, 3, 1, 2).contiguous(), mesh

    def turntable_panels(self, cams) -> list:
        """Shaded | normal map."""
        from .render import shade_normals

        mesh = self.mesh()
        out = render_mesh(mesh.vertices, mesh.faces, cams.c2w, cams.fovy, cams.height, cams.width)
        return [shade_normals(out, cams.rays_d), out.normal.permute(0, 3, 1, 2)]

    def regularization(self, mesh):
        from ..scene.regularizers import mesh_laplacian_smoothing, mesh_normal_consistency

        c = self.config
        consistency = mesh_normal_consistency(mesh.vertices, mesh.faces)
        laplacian = mesh_laplacian_smoothing(mesh.vertices, mesh.faces)
        loss = c.normal_consistency_weight * consistency + c.laplacian_weight * laplacian
        return loss, {"normal_consistency": consistency.detach(), "laplacian": laplacian.detach(),
                      "faces": mesh.faces.shape[0]}

    @torch.no_grad()
    def trimesh(self):
        import trimesh

        mesh = self.mesh()
        return trimesh.Trimesh(vertices=mesh.vertices.double().cpu().numpy(),
                               faces=mesh.faces.cpu().numpy(), process=False)


@torch.no_grad()
def mesh_from_state(state: dict):
    """(vertices (V, 3), faces (F, 3), GeometryConfig, box) of a geometry checkpoint's state: what
    the texture stage and the shapes benchmark read, without building a trainer (no prior)."""
    config = GeometryConfig.from_saved(state["config"])
    box = Box(tuple(float(v) for v in state["box"]["center"]), float(state["box"]["half_extent"]))
    grid = placed_grid(config.tet_resolution, box)
    positions = vertex_positions(grid, state["offsets"].float(), config.max_offset_cells)
    mesh = marching_tets(positions, state["sdf"].float(), grid)
    return mesh.vertices, mesh.faces, config, box

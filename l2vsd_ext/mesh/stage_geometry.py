"""Stage 2 (geometry), ProlificDreamer/threestudio's prolificdreamer-geometry in our pieces: a tet
grid with an SDF and a bounded offset per vertex, started from the stage-1 density (sdf_init.py),
trained with the run's guidance mode on rendered normal maps, plus normal consistency and
Laplacian smoothing (each weighted 1e4), Adam lr 0.005.

GeometryTrainer has the stage-1 Trainer's interface (train_step, state_dict, load_state_dict,
render_views, step, device), so trainer.run_training drives it: the same metrics, validation
images, atomic checkpoints, resume and stop handling. The guidance (prompts, score model, mode)
and the loss from an image come from trainer.build_guidance / distillation_loss: the geometry
stage only swaps the NeRF render for the mesh normal render and the NeRF parameters for the
SDF and offset tensors."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

from ..config import ConfigError, RunConfig, from_saved
from .marching_tets import marching_tets, vertex_positions
from .render import render_mesh
from .sdf_init import DEFAULT_LEVEL, Box, NoSurfaceError, conversion_chamfer, placed_grid, sdf_from_density, tight_box

STAGE = "geometry"


def _f(default, meaning: str):
    return field(default=default, metadata={"help": meaning})


@dataclass
class GeometryConfig:
    init_from: str = _f("", "the stage-1 run folder whose density starts the SDF")
    out: str = _f("runs/geometry", "this stage's run folder")
    resume: bool = _f(False, "continue the geometry run in --out from its checkpoint")
    steps: int = _f(15000, "iterations (threestudio: 15000)")
    mode: str | None = _f(None, "guidance mode (default: the stage-1 run's)")
    tet_resolution: int = _f(64, "tet-grid cells per side (threestudio: 256 on a GPU)")
    level: float = _f(DEFAULT_LEVEL, "stage-1 density level that becomes the SDF's zero level")
    resolution: int | None = _f(None, "normal-map render size in pixels (default: the stage-1 run's)")
    lr: float = _f(0.005, "Adam learning rate of the SDF and offsets")
    normal_consistency_weight: float = _f(1e4, "weight of the mesh normal consistency")
    laplacian_weight: float = _f(1e4, "weight of the uniform Laplacian smoothing")
    max_offset_cells: float = _f(0.5, "vertex offsets are tanh-bounded to this many cells, in (0, 1]")
    val_every: int = _f(200, "normal-map images every N steps")
    ckpt_every: int = _f(500, "checkpoint every N steps")
    max_nonfinite_steps: int = _f(3, "stop after this many steps whose gradient is mostly non-finite")
    device: str | None = _f(None, "cpu, cuda or cuda:N (default: cuda if available)")
    stop_after: int | None = _f(None, "stop as if killed after this step's checkpoint (tests)")
    # The stage-1 run's settings with this stage's guidance changes (--set): the guidance machinery's input.
    guidance: RunConfig = field(default_factory=RunConfig)
    logger: str = "none"  # run_training's interface; the mesh stages log to metrics.jsonl only

    def to_dict(self) -> dict:
        values = dataclasses.asdict(self)
        values.pop("logger")
        return {"stage": STAGE, **values}

    @classmethod
    def from_saved(cls, values: dict) -> "GeometryConfig":
        values = dict(values)
        if values.pop("stage", None) != STAGE:
            raise ConfigError("not a geometry-stage config")
        guidance = from_saved(values.pop("guidance"))
        return cls(**values, guidance=guidance)


# Changeable on --resume (how long and how watched, not what a step computes).
CHANGEABLE_ON_RESUME = ("steps", "val_every", "ckpt_every", "max_nonfinite_steps", "device")


def validate_geometry(c: GeometryConfig) -> None:
    if c.steps < 1:
        raise ConfigError(f"--steps: must be >= 1, got {c.steps}")
    if not 2 <= c.tet_resolution <= 256:
        raise ConfigError(f"--tet-resolution: must be in [2, 256], got {c.tet_resolution}")
    if not (c.level > 0 and c.level < float("inf")):
        raise ConfigError(f"--level: must be a finite number > 0, got {c.level}")
    if not (c.lr > 0 and c.lr < float("inf")):
        raise ConfigError(f"--lr: must be a finite number > 0, got {c.lr}")
    for name in ("normal_consistency_weight", "laplacian_weight"):
        value = getattr(c, name)
        if not (value >= 0 and value < float("inf")):
            raise ConfigError(f"--{name.replace('_', '-')}: must be a finite number >= 0, got {value}")
    if not 0 < c.max_offset_cells <= 1:
        raise ConfigError(f"--max-offset-cells: must be in (0, 1], got {c.max_offset_cells}")
    for name in ("val_every", "ckpt_every", "max_nonfinite_steps"):
        if getattr(c, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')}: must be >= 1, got {getattr(c, name)}")


class GeometryTrainer:
    """SDF + offsets of a tet grid, trained by the guidance mode on normal renders."""

    def __init__(self, config: GeometryConfig, prior=None):
        from ..prior import DiffusionPrior
        from ..scene import CameraSampler
        from ..trainer import DTYPES, build_guidance, resolve_device

        self.config = config
        g = config.guidance
        self.device = resolve_device(g)
        self.initial_metrics = []
        self.grid = None
        if not config.resume:  # on resume, load_state_dict brings the grid and parameters
            self._convert_stage1()  # before the prior loads: a field with no surface fails fast
        dtype = DTYPES[g.dtype] if g.dtype else None
        self.prior = prior or DiffusionPrior.from_pretrained(g.pretrained, dtype, self.device)
        torch.manual_seed(g.seed)
        self.camera_rng = torch.Generator().manual_seed(g.seed + 10)
        self.cameras = CameraSampler(height=g.resolution, width=g.resolution, batch_size=g.batch_size,
                                     device=self.device)
        self.prompts, self.score_model, self.mode = build_guidance(g, self.prior)
        self.step = 0
        self.nonfinite_param_grads = 0
        self.nonfinite_steps = 0

    # -- the representation ---------------------------------------------------------------------
    def _convert_stage1(self) -> None:
        from ..trainer import load_scene
        from .marching_tets import marching_tets as extract

        c = self.config
        renderer, _, _ = load_scene(c.init_from, self.device)
        field_ = renderer.field
        try:
            box = tight_box(field_, c.level)
        except NoSurfaceError as err:
            raise ConfigError(f"--init-from: '{c.init_from}': {err}; give a lower --level") from None
        grid = placed_grid(c.tet_resolution, box)
        sdf = sdf_from_density(field_, grid, c.level)
        mesh = extract(grid.vertices, sdf, grid)
        if mesh.faces.shape[0] == 0:
            raise ConfigError(f"--init-from: '{c.init_from}': the density at level {c.level:g} leaves no "
                              f"surface on a {c.tet_resolution}^3 tet grid; raise --tet-resolution")
        # the reference: marching cubes at twice the tet resolution over the same box
        chamfer, floor = conversion_chamfer(field_, c.level, mesh.vertices, mesh.faces, box,
                                            resolution=2 * c.tet_resolution + 1)
        self._set_parameters(box, sdf, torch.zeros_like(grid.vertices))
        self.initial_metrics = [{"step": 0, "conversion_chamfer": chamfer, "conversion_chamfer_floor": floor,
                                 "conversion_cell": grid.cell_size,
                                 "conversion_faces": int(mesh.faces.shape[0]),
                                 "box_center": list(box.center), "box_half_extent": box.half_extent}]

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

    def render_normals(self, cams):
        mesh = self.mesh()
        if mesh.faces.shape[0] == 0:
            from ..trainer import TrainingDiverged

            raise TrainingDiverged(f"stopped at step {self.step}: the surface vanished (no SDF sign change "
                                   "left); the last checkpoint is kept. Lower the guidance scale or raise "
                                   "the regulariser weights")
        out = render_mesh(mesh.vertices, mesh.faces, cams.c2w, cams.fovy, cams.height, cams.width)
        return out.normal.permute(0, 3, 1, 2).contiguous(), mesh

    # -- one iteration --------------------------------------------------------------------------
    def train_step(self) -> dict:
        from ..scene.regularizers import mesh_laplacian_smoothing, mesh_normal_consistency
        from ..trainer import distillation_loss

        c = self.config
        cams = self.cameras.sample(self.camera_rng)
        images, mesh = self.render_normals(cams)
        loss, stats, ctx = distillation_loss(c.guidance, self.prior, self.mode, images, cams, self.step)
        guidance_loss = loss.detach()
        consistency = mesh_normal_consistency(mesh.vertices, mesh.faces)
        laplacian = mesh_laplacian_smoothing(mesh.vertices, mesh.faces)
        loss = loss + c.normal_consistency_weight * consistency + c.laplacian_weight * laplacian
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self._zero_nonfinite_param_grads()
        self.optimizer.step()
        stats.update(self.mode.after_step(ctx))
        self.step += 1
        stats.update(step=self.step, loss=loss.detach(), guidance_loss=guidance_loss,
                     normal_consistency=consistency.detach(), laplacian=laplacian.detach(),
                     faces=mesh.faces.shape[0], nonfinite_param_grads=self.nonfinite_param_grads,
                     nonfinite_total=self.mode.nonfinite_count)
        return stats

    def _zero_nonfinite_param_grads(self):
        for p in (self.sdf, self.offsets):
            if p.grad is not None:
                bad = ~torch.isfinite(p.grad)
                self.nonfinite_param_grads = bad.sum() + self.nonfinite_param_grads
                p.grad.masked_fill_(bad, 0.0)

    # -- state ----------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "step": self.step,
            "config": self.config.to_dict(),
            "box": {"center": list(self.box.center), "half_extent": self.box.half_extent},
            "sdf": self.sdf.detach().cpu(),
            "offsets": self.offsets.detach().cpu(),
            "optimizer": self.optimizer.state_dict(),
            "score_model": self.score_model.state_dict() if self.score_model else None,
            "mode_rng": self.mode.rng_state(),
            "camera_rng": self.camera_rng.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "nonfinite_param_grads": int(self.nonfinite_param_grads),
            "nonfinite_steps": self.nonfinite_steps,
        }

    def load_state_dict(self, state: dict) -> None:
        try:
            box = Box(tuple(float(v) for v in state["box"]["center"]), float(state["box"]["half_extent"]))
            self._set_parameters(box, state["sdf"], state["offsets"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            raise ConfigError(f"--resume: the checkpoint does not hold a readable geometry stage: {err}") from None
        self.step = state["step"]
        if self.score_model is not None:
            self.score_model.load_state_dict(state["score_model"])
        self.mode.load_rng_state(state["mode_rng"])
        self.camera_rng.set_state(state["camera_rng"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.nonfinite_param_grads = state["nonfinite_param_grads"]
        self.nonfinite_steps = state.get("nonfinite_steps", 0)

    # -- outputs --------------------------------------------------------------------------------
    @torch.no_grad()
    def render_views(self, n_views: int, elevation: float = 15.0) -> torch.Tensor:
        """(n_views, 3, H, W) normal maps in [0, 1] from a fixed orbit."""
        from ..trainer import _index

        cams = self.cameras.orbit(n_views, elevation=elevation)
        return torch.cat([self.render_normals(_index(cams, i))[0] for i in range(n_views)]).clamp(0, 1).cpu()

    @torch.no_grad()
    def trimesh(self):
        import trimesh

        mesh = self.mesh()
        return trimesh.Trimesh(vertices=mesh.vertices.double().cpu().numpy(),
                               faces=mesh.faces.cpu().numpy(), process=False)

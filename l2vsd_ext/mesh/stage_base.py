"""What the mesh stages (geometry, texture) share: the settings every stage has, and a trainer
base with the stage-1 Trainer's interface (train_step, state_dict, load_state_dict, render_views,
step, device) so that trainer.run_training drives it: the same metrics, validation images, atomic
checkpoints, resume and stop handling. The guidance (prompts, score model, mode) and the loss
from an image come from trainer.build_guidance / distillation_loss: a stage only says how it
renders an image and which tensors it trains."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

from ..config import ConfigError, RunConfig, from_saved


def _f(default, meaning: str):
    return field(default=default, metadata={"help": meaning})


@dataclass
class StageConfig:
    """Settings of every mesh stage; a stage's config adds its own after these."""
    STAGE = ""  # the stage's name, saved as config["stage"]
    DEFAULT_MODE = None  # guidance mode when --mode is not given (None: the previous run's)

    init_from: str = _f("", "the previous stage's run folder")
    out: str = _f("runs/stage", "this stage's run folder")
    resume: bool = _f(False, "continue the run in --out from its checkpoint")
    steps: int = _f(15000, "iterations")
    mode: str | None = _f(None, "guidance mode")
    resolution: int | None = _f(None, "render size in pixels (default: the stage-1 run's)")
    lr: float = _f(0.005, "Adam learning rate")
    val_every: int = _f(200, "validation images every N steps")
    ckpt_every: int = _f(500, "checkpoint every N steps")
    max_nonfinite_steps: int = _f(3, "stop after this many steps whose gradient is mostly non-finite")
    device: str | None = _f(None, "cpu, cuda or cuda:N (default: cuda if available)")
    stop_after: int | None = _f(None, "stop as if killed after this step's checkpoint (tests)")
    turntable_views: int | None = _f(None, "turntable frames written at the end into RUN/turntable/ (0: none; "
                                           "default: the stage-1 run's)")
    export_at_end: bool = _f(True, "mesh, pictures and turntable video into RUN/export/ at the end "
                                   "(--no-export: off)")
    # The stage-1 run's settings with this stage's guidance changes (--mode, --set): the guidance input.
    guidance: RunConfig = field(default_factory=RunConfig)
    logger: str = "none"  # run_training's interface; the mesh stages log to metrics.jsonl only

    def to_dict(self) -> dict:
        values = dataclasses.asdict(self)
        values.pop("logger")
        return {"stage": self.STAGE, **values}

    @classmethod
    def from_saved(cls, values: dict):
        values = dict(values)
        if values.pop("stage", None) != cls.STAGE:
            raise ConfigError(f"not a {cls.STAGE}-stage config")
        guidance = from_saved(values.pop("guidance"))
        return cls(**values, guidance=guidance)

    def validate(self) -> None:
        if self.steps < 1:
            raise ConfigError(f"--steps: must be >= 1, got {self.steps}")
        if not (self.lr > 0 and self.lr < float("inf")):
            raise ConfigError(f"--lr: must be a finite number > 0, got {self.lr}")
        if self.turntable_views is not None and self.turntable_views < 0:
            raise ConfigError(f"--turntable-views: must be >= 0, got {self.turntable_views}")
        for name in ("val_every", "ckpt_every", "max_nonfinite_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')}: must be >= 1, got {getattr(self, name)}")

    def check_memory(self) -> None:
        """Refuses (ConfigError) settings this machine has not the memory for; a stage that builds
        something large overrides it."""


# Changeable on --resume (how long and how watched, not what a step computes).
CHANGEABLE_ON_RESUME = ("steps", "val_every", "ckpt_every", "max_nonfinite_steps", "device", "turntable_views",
                        "export_at_end", "max_memory_fraction", "texture_size")


def _trainer():
    """The stage-1 trainer module, imported when first needed (it loads the diffusion stack)."""
    from .. import trainer

    return trainer


class StageTrainer:
    """Subclasses set up their tensors in _convert (a new run) or _restore (resume), and define
    parameters(), render(cams) -> ((B, 3, H, W) images in [0, 1], extras), regularization(extras)
    -> (loss or None, stats), _extra_state()."""

    def __init__(self, config: StageConfig, prior=None):
        from ..prior import DiffusionPrior
        from ..scene import CameraSampler
        from ..trainer import DTYPES, build_guidance, resolve_device

        self.config = config
        g = config.guidance
        self.device = resolve_device(g)
        self.initial_metrics = []
        torch.manual_seed(g.seed)
        if not config.resume:  # on resume, load_state_dict brings the tensors
            self._convert()  # before the prior loads: bad input fails fast
        dtype = DTYPES[g.dtype] if g.dtype else None
        self.prior = prior or DiffusionPrior.from_pretrained(g.pretrained, dtype, self.device)
        torch.manual_seed(g.seed + 1)
        self.camera_rng = torch.Generator().manual_seed(g.seed + 10)
        self.cameras = CameraSampler(height=g.resolution, width=g.resolution, batch_size=g.batch_size,
                                     device=self.device)
        self.prompts, self.score_model, self.mode = build_guidance(g, self.prior)
        self.step = 0
        self.nonfinite_param_grads = 0
        self.nonfinite_steps = 0

    # -- one iteration --------------------------------------------------------------------------
    def train_step(self) -> dict:
        from ..trainer import distillation_loss

        cams = self.cameras.sample(self.camera_rng)
        images, extras = self.render(cams)
        loss, stats, ctx = distillation_loss(self.config.guidance, self.prior, self.mode, images, cams, self.step)
        stats["guidance_loss"] = loss.detach()
        regularization, reg_stats = self.regularization(extras)
        if regularization is not None:
            loss = loss + regularization
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self._zero_nonfinite_param_grads()
        self.optimizer.step()
        stats.update(self.mode.after_step(ctx))
        self.step += 1
        stats.update(reg_stats)
        stats.update(step=self.step, loss=loss.detach(), nonfinite_param_grads=self.nonfinite_param_grads,
                     nonfinite_total=self.mode.nonfinite_count)
        return stats

    def _zero_nonfinite_param_grads(self):
        from ..trainer import zero_nonfinite_grads

        self.nonfinite_param_grads = zero_nonfinite_grads(self.optimizer, self.nonfinite_param_grads)

    # -- state ----------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "step": self.step,
            "config": self.config.to_dict(),
            **self._extra_state(),
            "optimizer": self.optimizer.state_dict(),
            **_trainer().guidance_state(self),
        }

    def load_state_dict(self, state: dict) -> None:
        try:
            self._restore(state)
            self.optimizer.load_state_dict(state["optimizer"])
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            raise ConfigError(f"--resume: the checkpoint does not hold a readable {self.config.STAGE} stage: "
                              f"{err}") from None
        self.step = state["step"]
        _trainer().restore_guidance_state(self, state)

    # -- outputs --------------------------------------------------------------------------------
    @torch.no_grad()
    def render_views(self, n_views: int, elevation: float = 15.0, resolution: int | None = None) -> torch.Tensor:
        """(n_views, 3, H, W) in [0, 1] from a fixed orbit (H = W = resolution, default the run's)."""
        return self._orbit_frames(n_views, elevation, resolution, lambda cams: [self.render(cams, training=False)[0]])

    @torch.no_grad()
    def turntable_views(self, n_views: int, elevation: float = 15.0, resolution: int | None = None) -> torch.Tensor:
        """(n_views, 3, H, k W): the turntable's frames, the stage's k panels side by side."""
        return self._orbit_frames(n_views, elevation, resolution, self.turntable_panels)

    def turntable_panels(self, cams) -> list:
        """The turntable frame's panels for one camera, each (1, 3, H, W) in [0, 1]."""
        return [self.render(cams, training=False)[0]]

    def _orbit_frames(self, n_views, elevation, resolution, panels) -> torch.Tensor:
        from ..scene import CameraSampler
        from ..trainer import _index

        cameras = self.cameras
        if resolution is not None:
            cameras = CameraSampler(height=resolution, width=resolution, device=self.device)
        cams = cameras.orbit(n_views, elevation=elevation)
        return torch.cat([torch.cat(panels(_index(cams, i)), dim=-1)
                          for i in range(n_views)]).clamp(0, 1).cpu()

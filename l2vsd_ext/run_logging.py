"""Experiment loggers behind --logger: TensorBoard (RUN/logs/, the `tensorboard` package) or
Weights & Biases (the `wandb` package), or none. Each writes the per-step scalars, the validation
grids (labelled with step and view) and the final turntable (as frames). The writer is opened on first use, so
a run that fails before its first step leaves no logs/ folder behind."""
from __future__ import annotations

import os

import torch

VIEW_NAMES = ("view0", "view1", "view2", "view3")


def _missing(package: str, logger: str) -> str:
    # Only tensorboard is in the [logging] extra; wandb is installed on its own.
    extra = ", or pip install 'l2vsd_ext[logging]'" if package == "tensorboard" else ""
    return f"--logger {logger}: the '{package}' package is not installed (pip install {package}{extra})"


def make_logger(kind: str, out: str, config):
    """A logger for `kind` ('none' -> None). Checks that its package imports before the run starts."""
    from .config import ConfigError

    if kind in (None, "none"):
        return None
    if kind == "tensorboard":
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            raise ConfigError(_missing("tensorboard", kind)) from None
        return TensorBoardLogger(os.path.join(out, "logs"))
    if kind == "wandb":
        try:
            import wandb  # noqa: F401
        except ImportError:
            raise ConfigError(_missing("wandb", kind)) from None
        return WandbLogger(out, config)
    raise ConfigError(f"--logger: unknown logger '{kind}'")


def scalars_of(stats: dict) -> dict:
    """The numbers of a metrics record (loss, grad_norm, the Fig. 4 diagnostics, seconds, ...)."""
    out = {}
    for key, value in stats.items():
        if key == "step":
            continue
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = float(value)
    if "seconds" in out:
        out["s_per_it"] = out.pop("seconds")
    return out


class TensorBoardLogger:
    def __init__(self, folder: str):
        self.folder = folder
        self._writer = None

    @property
    def writer(self):
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            from .run_folder import RunFolder

            run = RunFolder(os.path.dirname(self.folder))
            run.claim_dir(os.path.basename(self.folder))
            before = set(os.listdir(self.folder)) if os.path.isdir(self.folder) else set()
            self._writer = SummaryWriter(self.folder)
            for name in sorted(set(os.listdir(self.folder)) - before):  # the event file it opened
                run.claim(os.path.basename(self.folder), name)
        return self._writer

    def log_scalars(self, step: int, stats: dict) -> None:
        for key, value in scalars_of(stats).items():
            self.writer.add_scalar(f"train/{key}", value, step)

    def log_images(self, tag: str, step: int, images: torch.Tensor) -> None:
        """images (N, 3, H, W) in [0, 1]: one image per view, tagged `tag/viewK`, at `step`."""
        for i, image in enumerate(images):
            self.writer.add_image(f"{tag}/view{i}", image.clamp(0, 1), step)

    def log_video(self, tag: str, step: int, frames: torch.Tensor) -> None:
        # As a strip of frames: TensorBoard's video support needs moviepy, which we do not require.
        self.writer.add_images(tag, frames.clamp(0, 1), step, dataformats="NCHW")

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


class WandbLogger:
    def __init__(self, out: str, config):
        self.out, self.config = out, config
        self._run = None

    @property
    def run(self):
        if self._run is None:
            import wandb

            self._run = wandb.init(project="l2vsd_ext", dir=self.out, name=os.path.basename(
                os.path.abspath(self.out)), config=self.config.to_dict(), resume="allow")
        return self._run

    def log_scalars(self, step: int, stats: dict) -> None:
        self.run.log({f"train/{k}": v for k, v in scalars_of(stats).items()}, step=step)

    def log_images(self, tag: str, step: int, images: torch.Tensor) -> None:
        import wandb

        self.run.log({f"{tag}/view{i}": wandb.Image(img.permute(1, 2, 0).clamp(0, 1).numpy(),
                                                   caption=f"step {step}, view {i}")
                      for i, img in enumerate(images)}, step=step)

    def log_video(self, tag: str, step: int, frames: torch.Tensor) -> None:
        import wandb

        video = (frames.clamp(0, 1) * 255).to(torch.uint8).numpy()
        self.run.log({tag: wandb.Video(video, fps=30)}, step=step)

    def close(self) -> None:
        if self._run is not None:
            self._run.finish()

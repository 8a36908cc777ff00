"""The thin distillation loop (shared DESIGN.md, "The loop"): render, encode, ask the guidance mode
for ∂L/∂latents, step the field, let the mode update its score model; plus the run folder's
metrics, validation images, atomic checkpoints, bit-exact resume, a clean stop on Ctrl-C/SIGTERM
and a stop when gradients go non-finite. What happens after training (turntable, export) is the
caller's business (l2vsd_ext.run): nothing here imports export."""
from __future__ import annotations

import os
import time

import torch
import torch.nn.functional as F

from .chaos_hook import point as chaos_point
from .checkpoint import load_checkpoint, save_checkpoint
from .config import ConfigError, RunConfig, from_saved, save_yaml
from .interrupts import RunInterrupted, StopRequests
from .run_folder import CHECKPOINT, RunFolder
from .distill import GuidanceContext, GuidanceOptions, make_mode
from .distill.hifa import ZVarianceAdapter, image_gradient, image_loss, resize_for_vae
from .prior import DiffusionPrior, LoraScoreModel, PromptEmbeddings, SqrtTimestepSchedule, TimestepSchedule
from .scene import CameraSampler, MLPBackground, NeRFField, SolidBackground, VolumeRenderer
from .scene.regularizers import silhouette_regularization
from .ops import OccupancyGrid
from .step_stats import StatsBuffer

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# A step whose guidance gradient has more non-finite entries than this fraction counts as diverged.
MOSTLY_NONFINITE = 0.5


class TrainingDiverged(RuntimeError):
    """Too many steps with mostly non-finite gradients: the run stops (exit code 1)."""


def resolve_device(config: RunConfig) -> torch.device:
    if config.device:
        device = torch.device(config.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"--device: '{config.device}' requested but no CUDA device is visible")
        return device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def build_renderer(config: RunConfig, render_rng: torch.Generator | None = None) -> VolumeRenderer:
    """The run's scene: NeRF field, background (a random colour with probability
    config.random_background while training) and occupancy grid, as configured; untrained."""
    field = NeRFField(n_levels=config.n_levels, log2_hashmap_size=config.log2_hashmap_size)
    if config.background == "white":
        background = SolidBackground(random_probability=config.random_background)
    else:
        background = MLPBackground(random_probability=config.random_background)
    background.generator = render_rng
    grid = OccupancyGrid(field.aabb, resolution=config.occupancy_resolution)
    return VolumeRenderer(field, background, grid, max_samples_per_ray=config.max_samples_per_ray)


def load_scene(run_dir: str, device="cpu") -> tuple[VolumeRenderer, RunConfig, int]:
    """(renderer in eval mode, config, step) from a run folder's checkpoint, without loading the
    diffusion prior: what export and evaluation need."""
    path = os.path.join(run_dir, CHECKPOINT)
    if not os.path.isfile(path):
        raise ConfigError(f"'{run_dir}' is not a run folder: no {CHECKPOINT} in it")
    state = load_checkpoint(path)
    try:
        config = from_saved(state["config"])
        renderer = build_renderer(config)
        renderer.load_state_dict(state["renderer"])
    except ConfigError:
        raise
    except (KeyError, RuntimeError, ValueError, TypeError) as err:
        raise ConfigError(f"'{path}' is not a readable l2vsd_ext checkpoint: {err}") from err
    return renderer.to(device).eval(), config, state["step"]


def build_guidance(config: RunConfig, prior: DiffusionPrior):
    """(prompts, score model or None for sds, guidance mode) as configured: the part of a run
    that turns a rendered image into a gradient, shared by stage 1 and the mesh stages. Draws the
    LoRA initialisation from torch's global generator."""
    prompts = PromptEmbeddings(prior, config.prompt, config.negative_prompt)
    score_model = None
    if config.mode != "sds":
        score_model = LoraScoreModel(
            prior, rank=config.lora_rank, lr=config.lora_lr, condition_dropout=config.condition_dropout,
            weight_decay=config.lora_weight_decay, betas=(config.lora_beta1, config.lora_beta2),
            eps=config.lora_eps, lora_init=config.lora_init, camera_init=config.camera_init)
    anneal_at = config.anneal_at if config.anneal_step is None else config.anneal_step / config.steps
    schedule = TimestepSchedule(prior.num_train_timesteps, config.min_step, config.max_step,
                                config.max_step_after, anneal_at)
    if config.timestep_schedule == "sqrt":  # N pinned by --resume with another --steps
        horizon = 1.0 if config.sqrt_anneal_steps is None else config.sqrt_anneal_steps / config.steps
        schedule = SqrtTimestepSchedule(prior.num_train_timesteps, config.min_step, config.max_step, horizon)
    options = GuidanceOptions(guidance_scale=config.guidance_scale, eta=config.eta,
                              last_layer=config.last_layer, lora_steps=config.lora_steps,
                              esd_lambda=config.esd_lambda, lookahead_camera=config.lookahead_camera,
                              lookahead_direction=config.lookahead_direction,
                              eta_relative=config.eta_relative,
                              high_order_diagnostics=config.high_order_diagnostics,
                              lora_text=config.lora_text)
    mode = make_mode(config.mode, prior, prompts, schedule, score_model, options, seed=config.seed)
    return prompts, score_model, mode


def distillation_loss(config: RunConfig, prior: DiffusionPrior, mode, images: torch.Tensor, cams, step: int):
    """(loss, stats, guidance context) for rendered images (B, 3, H, W) in [0, 1]: encode, ask the
    guidance mode for dL/dlatents, and turn it into a loss whose latent gradient is exactly that
    (plus HiFA's image-space term when configured). Shared by stage 1 and the mesh stages."""
    vae_input = resize_for_vae(images, config.encode_resolution)  # kept (differentiable) for HiFA's image term
    latents = prior.encode_images(vae_input, config.encode_resolution).float()
    ctx = GuidanceContext(latents, cams.c2w, cams.view_labels, step / config.steps)
    grad, stats = mode.gradient(ctx)
    stats["nonfinite_fraction"] = stats.get("nonfinite", 0) / grad.numel()
    # The grad -> MSE trick: d(loss)/d(latents) = grad.
    loss = 0.5 * F.mse_loss(latents, (latents - grad).detach(), reduction="sum") / latents.shape[0]
    if config.lambda_img:
        grad_img = image_gradient(prior, mode.last_terms, vae_input)
        loss = loss + image_loss(vae_input, grad_img, config.lambda_img)
        stats["img_grad_norm"] = grad_img.norm()
    return loss, stats, ctx


# Steps between reads of the per-step stats from the device (also at every validation and
# checkpoint step, so that metrics.jsonl always reaches the checkpoint's step).
METRICS_FLUSH_EVERY = 10



def zero_nonfinite_grads(optimizer, count):
    """Zeroes the non-finite entries of every gradient the optimiser will apply; returns `count`
    plus how many there were. Counted and zeroed on the device: `if bad.any()` per parameter would
    sync with the GPU every step."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            if p.grad is not None:
                bad = ~torch.isfinite(p.grad)
                count = bad.sum() + count
                p.grad.masked_fill_(bad, 0.0)
    return count


def guidance_state(trainer) -> dict:
    """What a run's guidance needs to continue bit for bit, for stage 1 and the mesh stages alike:
    the score model, the random streams (mode, cameras, torch, CUDA) and the non-finite counters."""
    return {
        "score_model": trainer.score_model.state_dict() if trainer.score_model else None,
        "mode_rng": trainer.mode.rng_state(),
        "camera_rng": trainer.camera_rng.get_state(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "nonfinite_param_grads": int(trainer.nonfinite_param_grads),
        "nonfinite_steps": trainer.nonfinite_steps,
    }


def restore_guidance_state(trainer, state: dict) -> None:
    """The inverse of guidance_state."""
    if trainer.score_model is not None:
        trainer.score_model.load_state_dict(state["score_model"])
    trainer.mode.load_rng_state(state["mode_rng"])
    trainer.camera_rng.set_state(state["camera_rng"])
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    trainer.nonfinite_param_grads = state["nonfinite_param_grads"]
    trainer.nonfinite_steps = state.get("nonfinite_steps", 0)

class Trainer:
    def __init__(self, config: RunConfig, prior: DiffusionPrior | None = None):
        self.config = config
        self.device = resolve_device(config)
        dtype = DTYPES[config.dtype] if config.dtype else None
        self.prior = prior or DiffusionPrior.from_pretrained(config.pretrained, dtype, self.device)
        torch.manual_seed(config.seed)  # field/background initialisation
        self.camera_rng = torch.Generator().manual_seed(config.seed + 10)
        self.render_rng = torch.Generator().manual_seed(config.seed + 20)
        self.renderer = build_renderer(config, self.render_rng).to(self.device)
        self.cameras = CameraSampler(height=config.resolution, width=config.resolution,
                                     batch_size=config.batch_size, device=self.device)
        self.prompts, self.score_model, self.mode = build_guidance(config, self.prior)
        field = self.renderer.field
        self.optimizer = torch.optim.Adam([
            {"params": field.encoding.parameters(), "lr": config.lr},
            {"params": list(field.mlp.parameters()) + list(self.renderer.background.parameters()),
             "lr": config.lr / 10},
        ], betas=(0.9, 0.99), eps=1e-15)
        # HiFA's z-variance: a ConfigError here (at start) when this build's renderer lacks it.
        self.z_variance = ZVarianceAdapter(self.renderer, config.z_variance_weight) \
            if config.z_variance_weight else None
        self.step = 0
        self.nonfinite_param_grads = 0
        self.nonfinite_steps = 0  # steps whose guidance gradient was mostly non-finite

    # -- one iteration ------------------------------------------------------------------------
    def render(self, cams, **extra):
        out = self.renderer(cams.rays_o, cams.rays_d, light_positions=cams.light_positions,
                            generator=self.render_rng, **extra)
        return out["rgb"].permute(0, 3, 1, 2).contiguous(), out

    def train_step(self) -> dict:
        c = self.config
        self.renderer.train()
        self.renderer.update_occupancy(self.step, generator=self.render_rng)
        cams = self.cameras.sample(self.camera_rng)
        images, out = self.render(cams, **(self.z_variance.render_kwargs() if self.z_variance else {}))
        loss, stats, ctx = distillation_loss(c, self.prior, self.mode, images, cams, self.step)
        entropy_weight = c.entropy_weight if self.step >= c.entropy_start_step else 0.0
        regularization = silhouette_regularization(out["opacity"], c.sparsity_weight, entropy_weight)
        if regularization is not None:
            loss = loss + regularization
        if self.z_variance is not None:
            z_loss = self.z_variance.loss(out)
            loss = loss + z_loss
            stats["z_variance_loss"] = z_loss.detach()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self._zero_nonfinite_param_grads()
        self.optimizer.step()
        stats.update(self.mode.after_step(ctx))
        self.step += 1
        # Device scalars, read once per logging interval (step_stats.py): no host sync per step.
        stats.update(step=self.step, loss=loss.detach(), samples_per_ray=out["samples_per_ray"],
                     nonfinite_param_grads=self.nonfinite_param_grads,
                     nonfinite_total=self.mode.nonfinite_count)
        return stats

    def _zero_nonfinite_param_grads(self):
        self.nonfinite_param_grads = zero_nonfinite_grads(self.optimizer, self.nonfinite_param_grads)

    # -- state --------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "step": self.step,
            "config": self.config.to_dict(),
            "renderer": self.renderer.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "render_rng": self.render_rng.get_state(),
            **guidance_state(self),
        }

    def load_state_dict(self, state: dict) -> None:
        self.step = state["step"]
        self.renderer.load_state_dict(state["renderer"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.render_rng.set_state(state["render_rng"])
        restore_guidance_state(self, state)

    # -- outputs ------------------------------------------------------------------------------
    @torch.no_grad()
    def render_views(self, n_views: int, elevation: float = 15.0) -> torch.Tensor:
        """(n_views, 3, H, W) in [0,1] from a fixed orbit, for validation and turntables."""
        self.renderer.eval()
        cams = self.cameras.orbit(n_views, elevation=elevation)
        frames = [self.render(_index(cams, i))[0] for i in range(n_views)]
        self.renderer.train()
        return torch.cat(frames).clamp(0, 1).cpu()


def _index(cams, i):
    """Camera i of a batch, as a batch of one."""
    from dataclasses import fields, replace

    return replace(cams, **{f.name: getattr(cams, f.name)[i:i + 1] for f in fields(cams)})


def save_png(images: torch.Tensor, path: str, columns: int | None = None) -> None:
    """images (N, 3, H, W) in [0,1] -> one PNG grid."""
    import imageio.v3 as iio

    n, _, h, w = images.shape
    columns = columns or n
    rows = -(-n // columns)
    grid = torch.ones(3, rows * h, columns * w)
    for i in range(n):
        r, col = divmod(i, columns)
        grid[:, r * h:(r + 1) * h, col * w:(col + 1) * w] = images[i]
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    iio.imwrite(path, (grid.permute(1, 2, 0).numpy() * 255).round().astype("uint8"))


def _check_gradients(trainer: Trainer, stats: dict, config: RunConfig, say) -> None:
    """Says so on the console when most of a step's gradient was non-finite (those entries are
    zeroed, so the run would otherwise 'succeed' while learning nothing), and stops the run after
    config.max_nonfinite_steps such steps."""
    if stats["nonfinite_fraction"] <= MOSTLY_NONFINITE:
        return
    trainer.nonfinite_steps += 1
    say(f"warning: step {stats['step']}: {stats['nonfinite_fraction']:.0%} of the guidance gradient is "
        f"non-finite (zeroed); {trainer.nonfinite_steps} such step(s) of {config.max_nonfinite_steps} allowed")
    if trainer.nonfinite_steps >= config.max_nonfinite_steps:
        raise TrainingDiverged(
            f"stopped at step {stats['step']}: {trainer.nonfinite_steps} steps with mostly non-finite "
            f"gradients (max_nonfinite_steps={config.max_nonfinite_steps}); the last checkpoint is kept. "
            "Check --eta, --lr, --guidance-scale and --dtype")


def run_training(config: RunConfig, prior: DiffusionPrior | None = None, progress: bool = True,
                 logger=None, changes: dict | None = None, make_trainer=None) -> Trainer:
    """Runs (config.resume: resumes from RUN/checkpoints/last.pt) the configured run to its last
    step and returns the trainer. The config is taken as final: l2vsd_ext.run decides what a resumed
    run may change. Raises RunInterrupted after checkpointing on SIGINT/SIGTERM, and
    TrainingDiverged when gradients keep coming out non-finite. `make_trainer(config, prior)`: another
    trainer with Trainer's interface (the mesh stages'); its `initial_metrics` records, if any, open a
    new run's metrics.jsonl."""
    from tqdm import tqdm

    folder = RunFolder(config.out)
    if config.resume:
        if not folder.has_checkpoint():
            raise ConfigError(f"--resume: no checkpoint at '{folder.checkpoint}'")
        state = load_checkpoint(folder.checkpoint)
    elif folder.has_checkpoint():
        raise ConfigError(f"--out: '{config.out}' already holds a run; pass --resume to continue it "
                          "or choose another folder")
    trainer = (make_trainer or Trainer)(config, prior)
    if config.resume:
        trainer.load_state_dict(state)
        folder.truncate_metrics(trainer.step)
    try:
        os.makedirs(config.out, exist_ok=True)
        save_yaml(config, folder.claim("config.yaml"))
        if changes:
            folder.record_changes(trainer.step, changes)
        if not config.resume:
            for record in getattr(trainer, "initial_metrics", ()):
                folder.append_metrics(record)
    except OSError as err:
        raise ConfigError(f"--out: cannot write to '{config.out}': {err.strerror}") from err

    bar = tqdm(total=config.steps, initial=trainer.step, disable=not progress, unit="it",
               dynamic_ncols=True)
    say = bar.write if progress else print
    pending = StatsBuffer()
    # On the CPU a stat is read for free; on a GPU each read waits for the queue, so read once per interval.
    flush_every = 1 if trainer.device.type == "cpu" else METRICS_FLUSH_EVERY

    def flush_metrics():
        # One device->host read for the whole interval; metrics.jsonl is complete up to this step.
        records = pending.flush()
        for record in records:
            folder.append_metrics(record)
            if logger is not None:
                logger.log_scalars(record["step"], record)
        if records:
            bar.set_postfix(loss=f"{records[-1]['loss']:.3g}", t=int(records[-1]["t"]))
        for record in records:
            _check_gradients(trainer, record, config, say)

    with StopRequests() as stop:
        while trainer.step < config.steps:
            started = time.perf_counter()
            stats = trainer.train_step()
            # On CUDA this is the host's time per step (the GPU runs asynchronously); the interval's
            # total is exact, since flush_metrics waits for the GPU.
            stats["seconds"] = time.perf_counter() - started
            pending.add(stats)
            chaos_point("step")
            bar.update(1)
            at_val = trainer.step % config.val_every == 0 or trainer.step == config.steps
            at_ckpt = trainer.step % config.ckpt_every == 0 or trainer.step == config.steps or stop.signum
            if at_val or at_ckpt or len(pending) >= flush_every:
                flush_metrics()
            if at_val:
                views = trainer.render_views(4)
                save_png(views, folder.claim("validation", f"step_{trainer.step:06d}.png"))
                if logger is not None:
                    logger.log_images("validation", trainer.step, views)
            if at_ckpt:
                save_checkpoint(trainer.state_dict(), folder.claim(CHECKPOINT))
                if stop.signum:
                    bar.close()
                    raise RunInterrupted(stop.signum, trainer.step, folder.checkpoint, config.out)
                if config.stop_after is not None and trainer.step >= config.stop_after:
                    break  # test hook: behave as if killed right after this checkpoint
    bar.close()
    return trainer

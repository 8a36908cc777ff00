"""The distillation loop, every mode: a short run on the tiny random pipeline, and seconds per
iteration at the paper's setting (64x64 render, 512x512 VAE encode, SD 2.1-base's UNet, batch 1)
as a ratio to vsd, with absolute s/it and peak GPU memory.

A short run passes when its losses are finite, every step rendered samples (an empty occupancy
grid or a broken marcher renders nothing, and its losses stay finite), and the last step lowered
the objective it applied. The MSE trick's loss value 0.5|g|^2 says nothing about progress (it is
not a function of the parameters the step moves), so the check evaluates the step's own
objective, <g, latents(theta)> with its gradient g held fixed, on the same cameras, sampling
draws and VAE noise before and after the update (StepProbe)."""
from __future__ import annotations

import math
import tempfile
import time

import torch

from ..config import RunConfig
from ..prior.tiny import tiny_random_path
from ..step_stats import to_host
from .report import Report

# (label, mode, extra config): every mode the CLI offers, L2-VSD also with its last-layer option.
MODES = (("sds", "sds", {}), ("vsd", "vsd", {}), ("lvsd", "lvsd", {}), ("l2vsd", "l2vsd", {}),
         ("l2vsd last-layer", "l2vsd", {"last_layer": True}))
TINY_SCENE = dict(log2_hashmap_size=12, n_levels=8, occupancy_resolution=16,
                  max_samples_per_ray=64, resolution=16, encode_resolution=32)


def _config(mode, extra, device, out, **scene) -> RunConfig:
    return RunConfig(prompt="a small wooden boat", mode=mode, steps=10_000, device=device,
                     out=out, **scene, **extra)


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


class StepProbe:
    """Wraps one Trainer.train_step: records the cameras and random states of its render and VAE
    encode and the guidance gradient it applied, so that `objective()` can evaluate
    <g, latents(theta)> again, with the very same draws, after the update."""

    def __init__(self, trainer):
        self.trainer = trainer
        self.grad = self.latents = self.cams = None

    def __enter__(self):
        t = self.trainer
        render, encode, gradient = t.render, t.prior.encode_images, t.mode.gradient

        def recording_render(cams):
            self.cams, self.render_state = cams, t.render_rng.get_state()
            return render(cams)

        def recording_encode(images, resolution=None):
            self.rng_states = _global_rng_states(images.device)
            return encode(images, resolution)

        def recording_gradient(ctx):
            grad, stats = gradient(ctx)
            self.grad, self.latents = grad.detach().float(), ctx.latents.detach().float()
            return grad, stats

        # Instance attributes shadow the methods; __exit__ deletes them again.
        t.render, t.prior.encode_images, t.mode.gradient = (recording_render, recording_encode,
                                                            recording_gradient)
        return self

    def __exit__(self, *exc):
        t = self.trainer
        for owner, name in ((t, "render"), (t.prior, "encode_images"), (t.mode, "gradient")):
            owner.__dict__.pop(name, None)
        return False

    def objective(self) -> tuple[float, float]:
        """(<g, latents> at the step, <g, latents> re-rendered with the updated parameters)."""
        t = self.trainer
        before = float((self.grad * self.latents).sum())
        saved = t.render_rng.get_state()
        device = self.latents.device
        try:
            with torch.no_grad(), torch.random.fork_rng(
                    devices=[device] if device.type == "cuda" else []):
                t.render_rng.set_state(self.render_state)
                images, _ = t.render(self.cams)
                _set_global_rng_states(self.rng_states, device)
                latents = t.prior.encode_images(images, t.config.encode_resolution).float()
        finally:
            t.render_rng.set_state(saved)
        return before, float((self.grad * latents).sum())


def _global_rng_states(device):
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _set_global_rng_states(states, device):
    torch.set_rng_state(states[0])
    if states[1] is not None:
        torch.cuda.set_rng_state(states[1], device)


def judge_run(records, objective) -> tuple[bool, str]:
    """Pass when every loss is finite, every step rendered samples, and the last step lowered
    its own objective; returns (passed, why-not, empty when passed)."""
    problems = []
    if not all(math.isfinite(r["loss"]) for r in records):
        problems.append("NON-FINITE loss")
    samples = [float(r["samples_per_ray"]) for r in records]
    if not all(v > 0 for v in samples):
        problems.append(f"no samples rendered at step(s) {[i for i, v in enumerate(samples) if not v > 0]}")
    before, after = objective
    if not after < before:
        problems.append(f"the step did not lower its objective <g, latents> ({before:.6g} -> {after:.6g})")
    return not problems, ", ".join(problems)


def tiny_runs(report: Report, device: str, steps: int) -> None:
    from ..trainer import Trainer

    section = f"loop: {steps} steps, tiny pipeline"
    root = tiny_random_path()
    with tempfile.TemporaryDirectory() as out:
        for label, mode, extra in MODES:
            try:
                config = _config(mode, extra, device, out, pretrained=root, **TINY_SCENE)
                trainer = Trainer(config)
                started = time.perf_counter()
                records = [trainer.train_step() for _ in range(steps - 1)]
                with StepProbe(trainer) as probe:
                    records.append(trainer.train_step())
                records = to_host(records)
                _sync(device)
                elapsed = (time.perf_counter() - started) / steps
                objective = probe.objective()
                passed, why = judge_run(records, objective)
                samples = min(float(r["samples_per_ray"]) for r in records)
                report.add(section, label, "pass" if passed else "fail",
                           f"{elapsed:.3f} s/it, last loss {records[-1]['loss']:.4g}, "
                           f">= {samples:.1f} samples/ray, last step's objective "
                           f"{objective[0]:.4g} -> {objective[1]:.4g}" + (f"; {why}" if why else ""),
                           seconds_per_it=elapsed, objective_before=objective[0],
                           objective_after=objective[1], min_samples_per_ray=samples)
            except Exception as err:
                report.add(section, label, "fail", f"{type(err).__name__}: {err}"[:300])


def paper_setting_speed(report: Report, device: str, steps: int, dtype) -> None:
    from ..trainer import Trainer
    from .sd_models import sd21_shaped_prior

    section = "loop: paper setting (SD 2.1-base shapes, 64x64 render, 512 encode)"
    root = tiny_random_path()
    results = {}
    with tempfile.TemporaryDirectory() as out:
        for label, mode, extra in MODES:
            try:
                prior = sd21_shaped_prior(device, dtype, root)
                config = _config(mode, extra, device, out)
                trainer = Trainer(config, prior=prior)
                trainer.train_step()  # warm-up: allocations, cuBLAS/cuDNN plans
                _sync(device)
                if device == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                started = time.perf_counter()
                records = to_host([trainer.train_step() for _ in range(steps)])
                _sync(device)
                seconds = (time.perf_counter() - started) / steps
                peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None
                finite = all(math.isfinite(r["loss"]) for r in records)
                results[label] = (seconds, peak, finite)
                del trainer, prior
                if device == "cuda":
                    torch.cuda.empty_cache()
            except Exception as err:
                report.add(section, label, "fail", f"{type(err).__name__}: {err}"[:300])
    vsd = results.get("vsd", (None,))[0]
    for label, (seconds, peak, finite) in results.items():
        ratio = f"{seconds / vsd:.2f}x vsd, " if vsd else ""
        mem = f", peak {peak:.1f} GiB" if peak is not None else ""
        report.add(section, label, "info" if finite else "fail",
                   f"{ratio}{seconds:.3f} s/it{mem}" + ("" if finite else ", NON-FINITE loss"),
                   seconds_per_it=seconds, ratio_to_vsd=(seconds / vsd if vsd else None),
                   peak_gib=peak)

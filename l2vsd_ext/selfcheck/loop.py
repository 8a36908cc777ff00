"""The distillation loop, every mode: a short run on the tiny random pipeline (finite losses), and
seconds per iteration at the paper's setting (64x64 render, 512x512 VAE encode, SD 2.1-base's
UNet, batch 1) as a ratio to vsd, with absolute s/it and peak GPU memory."""
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
                records = [trainer.train_step() for _ in range(steps)]
                records = to_host(records)
                _sync(device)
                elapsed = (time.perf_counter() - started) / steps
                losses = [r["loss"] for r in records]
                finite = all(math.isfinite(v) for v in losses)
                report.add(section, label, "pass" if finite else "fail",
                           f"{elapsed:.3f} s/it, last loss {losses[-1]:.4g}"
                           + ("" if finite else ", NON-FINITE loss"), seconds_per_it=elapsed)
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

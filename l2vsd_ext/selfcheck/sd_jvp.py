"""The JVP engine on SD 2.1-base's UNet (random weights) at a 64x64 latent, batch 1: wall time of
the full engine and of the last-layer mode as ratios to the plain forward, and agreement of the
engine's primal output with that forward."""
from __future__ import annotations

import time

import torch

from ..jvp import lora_jvp
from .report import Report
from .sd_models import sd21_lora_unet


def _time(fn, device, repeats):
    fn()  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - started) / repeats, out


def run(report: Report, device: str, dtype, repeats: int) -> None:
    name = str(dtype).replace("torch.", "")
    section = "JVP engine, SD 2.1-base UNet, 64x64 latent"
    try:
        unet = sd21_lora_unet(device, dtype)
        gen = torch.Generator().manual_seed(0)
        sample = torch.randn(1, 4, 64, 64, generator=gen).to(device, dtype)
        text = torch.randn(1, 77, 1024, generator=gen).to(device, dtype)
        t = torch.tensor([500], device=device)
        direction = {n: torch.randn(p.shape, generator=gen).to(device, p.dtype)
                     for n, p in unet.named_parameters() if "lora_" in n}
        with torch.no_grad():
            plain_s, plain = _time(lambda: unet(sample, t, text, return_dict=False)[0], device,
                                   repeats)
            full_s, (eps, eps_dot) = _time(lambda: lora_jvp(unet, direction, sample, t, text),
                                           device, repeats)
            last_s, _ = _time(lambda: lora_jvp(unet, direction, sample, t, text,
                                               last_layer_only=True), device, repeats)
        primal_err = ((eps.double() - plain.double()).norm() / plain.double().norm()).item()
        finite = bool(torch.isfinite(eps_dot).all())
        tol = {torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 5e-2}[dtype]
        ok = finite and primal_err <= tol
        report.add(section, f"engine / forward [{name}]", "pass" if ok else "fail",
                   f"{full_s / plain_s:.2f}x ({full_s:.3f} s vs {plain_s:.3f} s); primal rel err "
                   f"{primal_err:.1e}" + ("" if finite else "; NON-FINITE tangent"),
                   ratio=full_s / plain_s, forward_s=plain_s, engine_s=full_s,
                   primal_rel_err=primal_err)
        report.add(section, f"last-layer / forward [{name}]", "info",
                   f"{last_s / plain_s:.2f}x ({last_s:.3f} s)", ratio=last_s / plain_s,
                   last_layer_s=last_s)
    except Exception as err:
        report.add(section, f"engine [{name}]", "fail", f"{type(err).__name__}: {err}"[:300])

"""Op parity: on a GPU, each op's CUDA result against the CPU kernel's on the same (rounded)
inputs, plus both against the float64 reference; on CPU, the CPU kernels against the reference."""
from __future__ import annotations

import torch

from .cases import all_cases
from .report import Report

SECTION = "op parity"
# Max |a - b| / max |b|, by the lower precision of the two sides.
TOLERANCE = {torch.float64: 1e-9, torch.float32: 2e-4, torch.float16: 3e-2, torch.bfloat16: 8e-2}


def _dtype_name(dtype) -> str:
    return dtype if isinstance(dtype, str) else str(dtype).replace("torch.", "")


def _tolerance(dtype) -> float:
    return TOLERANCE[torch.float16] if isinstance(dtype, str) else TOLERANCE[dtype]


def _cpu_twin(dtype):
    """The CPU kernels run float32/float64: low-precision inputs are compared in float32."""
    return torch.float32 if isinstance(dtype, str) or dtype in (torch.float16, torch.bfloat16) \
        else dtype


def rel_error(got: dict, want: dict) -> tuple[float, str]:
    worst, where = 0.0, ""
    for key, w in want.items():
        g = got[key]
        if g is None or w is None:
            continue
        g, w = g.detach().double().cpu(), w.detach().double().cpu()
        if g.shape != w.shape:
            return float("inf"), f"{key}: shape {tuple(g.shape)} vs {tuple(w.shape)}"
        if w.numel() == 0:
            continue
        err = ((g - w).abs().max() / (w.abs().max() + 1e-12)).item()
        if not err <= worst:  # NaN counts as worst
            worst, where = err, key
    return worst, where


def _round_inputs(inputs: dict, dtype) -> dict:
    """Inputs rounded to `dtype` and back, so that every side sees the very same values."""
    if isinstance(dtype, str) or dtype == torch.float64:
        target = torch.float16 if isinstance(dtype, str) else dtype
    else:
        target = dtype
    return {k: (v.to(target).double() if isinstance(v, torch.Tensor) and v.is_floating_point()
                else v) for k, v in inputs.items()}


def run(report: Report, device: str, size: str, seed: int = 0) -> None:
    for case in all_cases():
        dtypes = case.cuda_dtypes if device == "cuda" else case.cpu_dtypes
        for dtype in dtypes:
            label = f"{case.name} [{_dtype_name(dtype)}]"
            try:
                gen = torch.Generator().manual_seed(seed)
                inputs = case.inputs(gen, size)
                if not isinstance(dtype, str) and dtype != torch.float64:
                    inputs = _round_inputs(inputs, dtype)
                got = case.run(inputs, device, dtype, torch.Generator().manual_seed(seed + 1))
                want = case.run(inputs, "cpu", torch.float64, torch.Generator().manual_seed(seed + 1),
                                compiled=False)
                err_ref, where_ref = rel_error(got, want)
                detail = {"vs_reference": err_ref}
                worst, where = err_ref, where_ref
                if device == "cuda":
                    twin = _cpu_twin(dtype)
                    cpu = case.run(inputs, "cpu", twin, torch.Generator().manual_seed(seed + 1))
                    err_cpu, where_cpu = rel_error(got, cpu)
                    detail["vs_cpu_kernel"] = err_cpu
                    if not err_cpu <= worst:
                        worst, where = err_cpu, where_cpu
                tol = _tolerance(dtype)
                status = "pass" if worst <= tol else "fail"
                value = f"max rel err {worst:.2e} (tol {tol:.0e})" + (f" in {where}" if where else "")
                report.add(SECTION, label, status, value, tolerance=tol, **detail)
            except Exception as err:  # a crash is a failed check, reported, not a dead selfcheck
                report.add(SECTION, label, "fail", f"{type(err).__name__}: {err}"[:300])

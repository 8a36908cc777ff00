"""Op parity: on a GPU, each op's CUDA result against the CPU kernel's on the same (rounded)
inputs, plus both against the float64 reference; on CPU, the CPU kernels against the reference.
Then every case once more with non-contiguous inputs (an op either handles them or refuses them
with a ValueError that says so), and, on a machine with a second GPU, every case on cuda:1 (the
kernels must follow their tensors' device, not the current one)."""
from __future__ import annotations

import torch

from .cases import all_cases, noncontiguous_inputs
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


def extra_devices(device: str) -> list[str]:
    """Devices checked besides the first one: cuda:1 when a second GPU is present."""
    if device == "cuda" and torch.cuda.device_count() > 1:
        return ["cuda:1"]
    return []


def _compare(case, got, want):
    result = case.compare(got, want)
    return rel_error(got, want) if result is None else result


def check_case(report: Report, case, device: str, dtype, size: str, seed: int = 0,
               noncontiguous: bool = False, section: str = SECTION, suffix: str = "") -> None:
    label = f"{case.name} [{_dtype_name(dtype)}]{suffix}"
    try:
        gen = torch.Generator().manual_seed(seed)
        inputs = case.inputs(gen, size)
        if not isinstance(dtype, str) and dtype != torch.float64:
            inputs = _round_inputs(inputs, dtype)
        if noncontiguous:
            try:
                with noncontiguous_inputs():
                    got = case.run(inputs, device, dtype, torch.Generator().manual_seed(seed + 1))
            except ValueError as err:
                if "contiguous" not in str(err):
                    raise
                report.add(section, label, "pass", f"refused with a clear error: {err}"[:300],
                           refused=True)
                return
        else:
            got = case.run(inputs, device, dtype, torch.Generator().manual_seed(seed + 1))
        want = case.run(inputs, "cpu", torch.float64, torch.Generator().manual_seed(seed + 1),
                        compiled=False)
        err_ref, where_ref = _compare(case, got, want)
        detail = {"vs_reference": err_ref}
        worst, where = err_ref, where_ref
        if device != "cpu":
            twin = _cpu_twin(dtype)
            cpu = case.run(inputs, "cpu", twin, torch.Generator().manual_seed(seed + 1))
            err_cpu, where_cpu = _compare(case, got, cpu)
            detail["vs_cpu_kernel"] = err_cpu
            if not err_cpu <= worst:
                worst, where = err_cpu, where_cpu
        tol = _tolerance(dtype)
        status = "pass" if worst <= tol else "fail"
        value = f"max rel err {worst:.2e} (tol {tol:.0e})" + (f" in {where}" if where else "")
        report.add(section, label, status, value, tolerance=tol, **detail)
    except Exception as err:  # a crash is a failed check, reported, not a dead selfcheck
        report.add(section, label, "fail", f"{type(err).__name__}: {err}"[:300])


def run(report: Report, device: str, size: str, seed: int = 0) -> None:
    cases = all_cases()
    for case in cases:
        for dtype in (case.cuda_dtypes if device == "cuda" else case.cpu_dtypes):
            check_case(report, case, device, dtype, size, seed)
    # Strided inputs: one dtype per case (float32, the dtype every op takes on every device).
    for case in cases:
        check_case(report, case, device, torch.float32, "small", seed, noncontiguous=True,
                   section="op parity: non-contiguous inputs")
    for other in extra_devices(device):
        for case in cases:
            for dtype in case.cuda_dtypes:
                check_case(report, case, other, dtype, "small", seed,
                           section=f"op parity: {other}", suffix=f" on {other}")

"""CLI: python -m l2vsd_ext.selfcheck [--out DIR] [--full] [--device cpu|cuda]."""
from __future__ import annotations

import argparse
import sys

import torch

from .._ext import ExtensionUnavailable, load_extension
from . import loop, parity, sd_jvp
from .report import Report


def _parser():
    p = argparse.ArgumentParser(
        prog="python -m l2vsd_ext.selfcheck",
        description="Checks this machine: op parity, every mode of the loop, the JVP engine at "
                    "Stable Diffusion scale and the loop's speed. Writes selfcheck.json and "
                    "selfcheck.md; exits 1 when a check fails.")
    p.add_argument("--out", default="selfcheck", help="folder for the report (default: selfcheck)")
    p.add_argument("--full", action="store_true",
                   help="on CPU, also run the Stable-Diffusion-scale parts (minutes to hours) and "
                        "large op sizes; on a GPU they always run")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="device to check (default: cuda when a GPU and a CUDA build are present)")
    return p


def _environment(device: str) -> dict:
    info = dict(load_extension().build_info())
    env = {"device": device, "torch": torch.__version__, "build": info}
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        env.update(device_name=props.name, capability=f"{props.major}.{props.minor}",
                   memory_gib=round(props.total_memory / 2**30, 1))
    else:
        env.update(device_name="CPU", threads=torch.get_num_threads())
    return env


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        cuda_build = bool(load_extension().build_info()["cuda"])
    except ExtensionUnavailable as err:
        print(f"selfcheck: {err}", file=sys.stderr)
        return 2
    gpu = torch.cuda.is_available() and cuda_build
    if args.device == "cuda" and not gpu:
        why = "no CUDA device is visible" if not torch.cuda.is_available() else \
            "l2vsd_ext was built without CUDA kernels (see l2vsd_ext.build_info())"
        print(f"selfcheck: --device cuda: {why}", file=sys.stderr)
        return 2
    device = "cuda" if (gpu and args.device != "cpu") else "cpu"
    report = Report(_environment(device))
    heavy = device == "cuda" or args.full

    print(f"selfcheck on {report.environment['device_name']} ({device})", flush=True)
    parity.run(report, device, "large" if heavy else "small")
    loop.tiny_runs(report, device, steps=20 if heavy else 2)
    if heavy:
        dtypes = (torch.float16, torch.bfloat16) if device == "cuda" else (torch.float32,)
        for dtype in dtypes:
            sd_jvp.run(report, device, dtype, repeats=5 if device == "cuda" else 1)
        loop.paper_setting_speed(report, device, steps=5 if device == "cuda" else 1,
                                 dtype=torch.float16 if device == "cuda" else torch.float32)
    else:
        for name in ("JVP engine on SD 2.1-base's UNet", "s/it of every mode at the paper's setting"):
            report.skip("Stable Diffusion scale", name, "CPU without --full")
    if device == "cpu":
        report.skip("op parity", "CUDA vs CPU kernels", "no GPU (or a CPU-only build)")
    json_path, md_path = report.write(args.out)
    failures = report.failures
    for row in report.rows:
        print(f"  [{row.status:4}] {row.section}: {row.name}: {row.value}")
    print(f"{len(failures)} failure(s); report: {json_path}, {md_path}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

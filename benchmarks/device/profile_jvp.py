"""Where the JVP engine's time goes on a GPU: SD 2.1-base's UNet (random weights, 64x64 latent,
batch 1), the plain forward, the engine and its last-layer mode. Prints median times (CUDA events,
rotating over 3 input sets) and, per variant, the kernels that took the most GPU time.

    python benchmarks/device/profile_jvp.py [--dtype float16] [--repeats 20] [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics

import torch
from torch.profiler import ProfilerActivity, profile

from l2vsd_ext.jvp import lora_jvp
from l2vsd_ext.ops.attention_jvp import BACKEND_ENV
from l2vsd_ext.selfcheck.sd_models import sd21_lora_unet


def _median_ms(fn, repeats):
    times = []
    for i in range(repeats + 3):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn(i % 3)
        end.record()
        torch.cuda.synchronize()
        if i >= 3:  # warm-up
            times.append(start.elapsed_time(end))
    return statistics.median(times), min(times), max(times)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dtype", default="float16", choices=("float16", "bfloat16", "float32"))
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--out", default=os.environ.get("OUT", "."))
    args = p.parse_args()
    dtype = getattr(torch, args.dtype)
    unet = sd21_lora_unet("cuda", dtype)
    gen = torch.Generator().manual_seed(0)
    inputs = [(torch.randn(1, 4, 64, 64, generator=gen).to("cuda", dtype),
               torch.randn(1, 77, 1024, generator=gen).to("cuda", dtype)) for _ in range(3)]
    t = torch.tensor([500], device="cuda")
    direction = {n: torch.randn(p.shape, generator=gen).to("cuda", p.dtype)
                 for n, p in unet.named_parameters() if "lora_" in n}
    def blocked_attention(i):
        os.environ[BACKEND_ENV] = "blocked"
        try:
            return lora_jvp(unet, direction, inputs[i][0], t, inputs[i][1])
        finally:
            del os.environ[BACKEND_ENV]

    variants = {
        "forward": lambda i: unet(inputs[i][0], t, inputs[i][1], return_dict=False)[0],
        "engine": lambda i: lora_jvp(unet, direction, inputs[i][0], t, inputs[i][1]),
        # the attention rule through cuBLAS bmm (S and P materialised per block of queries)
        "engine_blocked_attention": blocked_attention,
        "engine_last_layer": lambda i: lora_jvp(unet, direction, inputs[i][0], t, inputs[i][1],
                                                last_layer_only=True),
    }
    results, report = {}, []
    with torch.no_grad():
        for name, fn in variants.items():
            med, lo, hi = _median_ms(fn, args.repeats)
            results[name] = {"median_ms": med, "min_ms": lo, "max_ms": hi}
        for name, fn in variants.items():
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                fn(0)
                torch.cuda.synchronize()
            try:
                table = prof.key_averages().table(sort_by="self_device_time_total", row_limit=30,
                                                  max_name_column_width=70)
            except (KeyError, AttributeError, ValueError):  # older torch names it cuda
                table = prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=30,
                                                  max_name_column_width=70)
            report.append(f"--- {name} [{args.dtype}] top kernels\n{table}")
    fwd = results["forward"]["median_ms"]
    lines = []
    for name, r in results.items():
        r["ratio_to_forward"] = r["median_ms"] / fwd
        lines.append(f"{name:18s} {r['median_ms']:8.2f} ms (min {r['min_ms']:.2f}, max "
                     f"{r['max_ms']:.2f})  {r['ratio_to_forward']:.2f}x forward")
    summary = json.dumps({"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
                          "dtype": args.dtype, "results": results}, indent=1)
    with open(os.path.join(args.out, f"jvp_profile_{args.dtype}.txt"), "w") as f:
        f.write("\n\n".join(report + lines + [summary]) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

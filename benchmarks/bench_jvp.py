"""JVP of a LoRA UNet's noise prediction w.r.t. its LoRA parameters: the engine vs PyTorch's own
forward-mode AD, next to the plain forward they are measured against.

    pytest benchmarks/bench_jvp.py               # pytest-benchmark, tiny and 64x64 configs
    python benchmarks/bench_jvp.py [--rounds 3]  # the markdown table of docs/jvp.md (interleaved
                                                 # rounds, min time, peak RSS per variant)

The Stable Diffusion 2.1-base case (its UNet architecture with random weights, 64x64 latent) takes
minutes on a CPU, so it is left out unless asked for: L2VSD_BENCH_SD=1 adds it to the pytest run,
`--cases sd21-base-64` to the table (e.g. `python benchmarks/bench_jvp.py --cpu-time --rounds 3
--cases sd21-base-64`). It runs the forward and the engine only: stock forward AD would take
minutes per call and tens of GiB there.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import pytest
import torch
import torch.autograd.forward_ad as fwAD

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from l2vsd_ext.jvp import lora_jvp  # noqa: E402
from l2vsd_ext.jvp.tiny_unets import (BENCHMARK_CONFIG, SD21_BASE_CONFIG, TINY_CONFIGS,  # noqa: E402
                                      lora_parameters, make_lora_unet, random_direction,
                                      random_inputs)

CASES = {  # name -> (config, latent size, text tokens)
    "tiny": (TINY_CONFIGS["cross_attention"], 16, 8),
    "sd-like-64": (BENCHMARK_CONFIG, 64, 77),
    "sd21-base-64": (SD21_BASE_CONFIG, 64, 77),
}
SLOW_CASES = ("sd21-base-64",)  # skipped unless asked for (module docstring)
DEFAULT_CASES = tuple(c for c in CASES if c not in SLOW_CASES)
VARIANTS = ("forward", "func_jvp_math_attn", "forward_ad_math_attn", "engine", "engine_last_layer")
ENGINE_VARIANTS = ("forward", "engine", "engine_last_layer")


def variants_of(case):
    return ENGINE_VARIANTS if case in SLOW_CASES else VARIANTS


def build(case):
    config, size, seq = CASES[case]
    unet = make_lora_unet(config)
    return unet, random_direction(unet), random_inputs(unet, size=size, seq=seq)


def _math_attention(unet):
    """Stock forward AD cannot go through scaled_dot_product_attention: use the math processor."""
    from diffusers.models.attention_processor import AttnProcessor
    unet.set_attn_processor(AttnProcessor())


def make_runner(variant, unet, direction, inputs):
    sample, timestep, ehs, labels = inputs
    kwargs = {"class_labels": labels, "return_dict": False}
    if variant == "forward":
        def run():
            with torch.no_grad():
                return unet(sample, timestep, ehs, **kwargs)[0]
    elif variant == "engine":
        def run():
            return lora_jvp(unet, direction, sample, timestep, ehs, class_labels=labels)
    elif variant == "engine_last_layer":
        def run():
            return lora_jvp(unet, direction, sample, timestep, ehs, class_labels=labels,
                            last_layer_only=True)
    elif variant == "func_jvp_math_attn":
        _math_attention(unet)
        params = lora_parameters(unet)
        names = list(params)

        def f(*values):
            return torch.func.functional_call(unet, dict(zip(names, values)), (sample, timestep, ehs),
                                              kwargs)[0]

        def run():
            with torch.no_grad():
                return torch.func.jvp(f, tuple(params[n] for n in names),
                                      tuple(direction[n] for n in names))
    elif variant == "forward_ad_math_attn":
        _math_attention(unet)
        params = lora_parameters(unet)

        def run():
            with torch.no_grad(), fwAD.dual_level():
                duals = {n: fwAD.make_dual(p, direction[n]) for n, p in params.items()}
                out = torch.func.functional_call(unet, duals, (sample, timestep, ehs), kwargs)[0]
                return fwAD.unpack_dual(out)
    else:
        raise ValueError(variant)
    return run


# --- pytest-benchmark ----------------------------------------------------------------------------

_SKIP_SLOW = pytest.mark.skipif(os.environ.get("L2VSD_BENCH_SD") != "1",
                                reason="Stable Diffusion scale takes minutes: set L2VSD_BENCH_SD=1")


@pytest.fixture(scope="module", params=[pytest.param(c, marks=_SKIP_SLOW) if c in SLOW_CASES else c
                                        for c in CASES])
def case(request):
    return request.param, build(request.param)


@pytest.mark.parametrize("variant", VARIANTS)
def test_jvp(benchmark, case, variant):
    name, (unet, direction, inputs) = case
    if variant not in variants_of(name):
        pytest.skip(f"{variant} is not run at {name}'s scale")
    from diffusers.models.attention_processor import AttnProcessor2_0
    unet.set_attn_processor(AttnProcessor2_0())  # the default; the stock variants switch to math
    run = make_runner(variant, unet, direction, inputs)
    benchmark.group = f"jvp-{name}"
    rounds = 5 if name == "tiny" else 2
    benchmark.pedantic(run, rounds=rounds, iterations=1, warmup_rounds=1)


# --- the attention rule alone: the 64x64 level's self-attention (8 heads of 8, 4096 tokens) -------

ATTENTION_VARIANTS = ("sdpa_primal_only", "reference_func_jvp", "blocked_aten", "kernel")


def attention_runner(variant, bh=8, n=4096, d=8):
    from l2vsd_ext.ops import reference
    from l2vsd_ext.ops.attention_jvp import attention_jvp_blocked, attention_jvp_kernel
    gen = torch.Generator().manual_seed(0)
    q, q_dot, k, k_dot, v, v_dot = (torch.randn(bh, n, d, generator=gen) for _ in range(6))
    scale = d ** -0.5
    return {
        # 4-D (batch, heads, tokens, dim) as diffusers calls it: that is what takes the flash kernel
        "sdpa_primal_only": lambda: torch.nn.functional.scaled_dot_product_attention(
            q[None], k[None], v[None], scale=scale),
        "reference_func_jvp": lambda: reference.attention_jvp(q, q_dot, k, k_dot, v, v_dot, scale),
        "blocked_aten": lambda: attention_jvp_blocked(q, q_dot, k, k_dot, v, v_dot, scale),
        "kernel": lambda: attention_jvp_kernel(q, q_dot, k, k_dot, v, v_dot, scale),
    }[variant]


@pytest.mark.parametrize("variant", ATTENTION_VARIANTS)
def test_attention_rule(benchmark, variant):
    benchmark.group = "attention-jvp-8x4096x8"
    benchmark.pedantic(attention_runner(variant), rounds=3, iterations=1, warmup_rounds=1)


# --- table for docs/jvp.md -----------------------------------------------------------------------

def _peak_rss_child(case, variant):
    """Peak resident memory (MiB) above the pre-call level, in a fresh process."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="65536")
    out = subprocess.run([sys.executable, __file__, "--memory-child", case, variant], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"]


def _status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _memory_child(case, variant):
    unet, direction, inputs = build(case)
    run = make_runner(variant, unet, direction, inputs)
    run()  # warm-up (and the last-layer mode's one-off forward-order trace)
    # Reset the peak-RSS mark (it survives fork/exec, so it would hold the parent's peak).
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _status_kib("VmRSS")
    run()
    peak = _status_kib("VmHWM")
    print(json.dumps({"peak_mib": max(0.0, (peak - before) / 1024)}))


def attention_table(rounds):
    runners = {v: attention_runner(v) for v in ATTENTION_VARIANTS}
    best = {}
    for _ in range(rounds):
        for variant, run in runners.items():
            run()
            t0 = time.perf_counter()
            run()
            best[variant] = min(best.get(variant, float("inf")), time.perf_counter() - t0)
    print("| attention (8 heads, 4096 tokens, head dim 8) | time (s) | × SDPA primal |")
    print("|---|---|---|")
    for variant in ATTENTION_VARIANTS:
        print(f"| {variant} | {best[variant]:.3f} | {best[variant] / best['sdpa_primal_only']:.2f} |")
    print()


def table(rounds, cases=DEFAULT_CASES, memory=True, clock=time.perf_counter):
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{'CPU time' if clock is time.process_time else 'wall time'}\n")
    if memory:
        attention_table(rounds)
    print("| case | variant | time (s) | × forward | peak extra RSS (MiB) |")
    print("|---|---|---|---|---|")
    for case in cases:
        unet, direction, inputs = build(case)
        best = {}
        variants = variants_of(case)
        for round_ in range(rounds):  # interleaved, so load from other jobs hits all variants alike
            for variant in variants:
                from diffusers.models.attention_processor import AttnProcessor2_0
                unet.set_attn_processor(AttnProcessor2_0())
                run = make_runner(variant, unet, direction, inputs)
                if round_ == 0:
                    run()  # warm-up (and the last-layer mode's one-off trace)
                t0 = clock()
                run()
                best[variant] = min(best.get(variant, float("inf")), clock() - t0)
        for variant in variants:
            mem = _peak_rss_child(case, variant) if memory else float("nan")
            print(f"| {case} | {variant} | {best[variant]:.3f} | {best[variant] / best['forward']:.2f} "
                  f"| {mem:.0f} |", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--memory-child", nargs=2)
    parser.add_argument("--cpu-time", action="store_true",
                        help="one thread, process CPU time: robust on a machine shared with other jobs")
    parser.add_argument("--cases", nargs="+", default=list(DEFAULT_CASES), choices=list(CASES),
                        help="default: all but the Stable Diffusion one (minutes on a CPU)")
    args = parser.parse_args()
    if args.memory_child:
        _memory_child(*args.memory_child)
    elif args.cpu_time:
        torch.set_num_threads(1)
        table(args.rounds, args.cases, memory=False, clock=time.process_time)
    else:
        table(args.rounds, args.cases)

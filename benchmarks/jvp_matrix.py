"""The JVP engine's cost over a matrix of UNet configurations, and against another checkout of the
package (issue 23 §4: a change that helps one configuration must not hurt another).

    python benchmarks/jvp_matrix.py                        # this checkout, the default matrix
    python benchmarks/jvp_matrix.py --tree before=/path/to/old/checkout --tree after=.
    python benchmarks/jvp_matrix.py --configs sd21-base-64 --rounds 2
    # a tree may carry environment settings, to take one change out at a time:
    python benchmarks/jvp_matrix.py --tree after=. --tree no-stacking=.,STACK_MAX_PIXELS=0 \
        --tree avx2=.,L2VSD_CPU_ISA=avx2 --tree head-split=.,ATTENTION_HEAD_SPLIT=1

Each (tree, configuration) is measured in a child process that imports the package from that tree
(its Python code and its built extension), on one thread, timing process CPU time: the plain
forward and the engine alternate within the child, so their ratio sees the same machine state.
The children of the trees alternate too (tree A, tree B, tree A, ...; --repeats), and each
variant's minimum over all its calls is reported. The configurations are defined here, not
imported, so that every tree builds the same UNets.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

_DOWN2 = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D")
_UP2 = ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")
_SD_LIKE = dict(block_out_channels=(64, 128, 256), cross_attention_dim=64,
                down_block_types=_DOWN2, up_block_types=_UP2)

# name -> (UNet2DConditionModel config, latent size, text tokens)
CONFIGS = {
    # bench_jvp's 64x64 case (17.7M parameters; 8 heads of 8-32 channels, attention at 64 and 32 px)
    "sd-like-64": (_SD_LIKE, 64, 77),
    # the same at a 32 px latent: every level 4x smaller, where batched small convolutions kick in
    "sd-like-32": (_SD_LIKE, 32, 77),
    # one resnet/transformer per level: 12.5M parameters, the size of issue 23's regressed UNet
    "sd-like-1layer-64": (dict(_SD_LIKE, layers_per_block=1), 64, 77),
    # attention at every level (64, 32, 16 px) and heads of 64 channels, as in Stable Diffusion
    "attn-every-level-heads64-32": (dict(_SD_LIKE, attention_head_dim=(1, 2, 4),
                                         down_block_types=("CrossAttnDownBlock2D",) * 3,
                                         up_block_types=("CrossAttnUpBlock2D",) * 3), 32, 77),
    # four levels, narrow channels (32..256): many small convolutions at 8x8 and 16x16
    "narrow-4level-64": (dict(_SD_LIKE, block_out_channels=(32, 64, 128, 256),
                              down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                              up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3), 64, 77),
    # the shipped shapes prior's UNet architecture at its latent size (what the shapes bench runs)
    "shapes-prior-8": (dict(block_out_channels=(64, 128), cross_attention_dim=64, layers_per_block=1,
                             norm_num_groups=16, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                             up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")), 8, 77),
    # Stable Diffusion 2.1-base's architecture (random weights): minutes per round
    "sd21-base-64": (dict(sample_size=64, block_out_channels=(320, 640, 1280, 1280), layers_per_block=2,
                          attention_head_dim=(5, 10, 20, 20), cross_attention_dim=1024,
                          use_linear_projection=True,
                          down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                          up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3), 64, 77),
}
DEFAULT_CONFIGS = tuple(c for c in CONFIGS if c != "sd21-base-64")
VARIANTS = ("forward", "engine", "engine_last_layer")


def _split_heads_around_attention():
    """Diagnosis: the CPU attention kernel on contiguous (B * heads, N, d) copies, as before it read
    the projections' (B, N, heads * d) layout in place."""
    from l2vsd_ext.jvp import attention_processor
    from l2vsd_ext.ops.attention_jvp import attention_jvp_kernel, merge_heads, split_heads

    def split_then_kernel(q, q_dot, k, k_dot, v, v_dot, heads, scale):
        out, out_dot = attention_jvp_kernel(*(None if t is None else split_heads(t, heads)
                                              for t in (q, q_dot, k, k_dot, v, v_dot)), scale)
        return merge_heads(out, q.shape[0]), merge_heads(out_dot, q.shape[0])

    attention_processor.attention_jvp_heads = split_then_kernel


def _child(config_name: str, rounds: int, variants=VARIANTS) -> dict:
    import torch
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig

    import l2vsd_ext
    from l2vsd_ext.jvp import lora_jvp

    torch.set_num_threads(1)
    if "STACK_MAX_PIXELS" in os.environ:  # the engine's small-convolution batching, for diagnosis
        from l2vsd_ext.jvp import affine_rules
        affine_rules.STACK_MAX_PIXELS = int(os.environ["STACK_MAX_PIXELS"])
    if os.environ.get("ATTENTION_HEAD_SPLIT") == "1":  # the attention kernel on head-split copies
        _split_heads_around_attention()
    config, size, seq = CONFIGS[config_name]
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**{"in_channels": 4, "out_channels": 4, "sample_size": 8, **config})
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"],
                                init_lora_weights="gaussian"))
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if "lora_" in name:
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))
    unet.eval()
    direction = {n: torch.randn(p.shape, generator=gen) for n, p in unet.named_parameters() if "lora_" in n}
    sample = torch.randn(1, 4, size, size, generator=gen)
    ehs = torch.randn(1, seq, config.get("cross_attention_dim", 1280), generator=gen)
    timestep = torch.tensor([500])
    runs = {
        "forward": lambda: unet(sample, timestep, ehs, return_dict=False)[0],
        "engine": lambda: lora_jvp(unet, direction, sample, timestep, ehs),
        "engine_last_layer": lambda: lora_jvp(unet, direction, sample, timestep, ehs, last_layer_only=True),
    }
    times = {v: [] for v in variants}
    with torch.no_grad():
        for v in variants:  # warm-up (oneDNN primitives, the last-layer trace)
            runs[v]()
        for _ in range(rounds):
            for v in variants:
                t0 = time.process_time()
                runs[v]()
                times[v].append(time.process_time() - t0)
    params = sum(p.numel() for n, p in unet.named_parameters() if "lora_" not in n)
    return {"times": times, "params": params, "package": os.path.dirname(l2vsd_ext.__file__)}


def measure(tree_spec: str, config_name: str, rounds: int, variants=VARIANTS) -> dict:
    tree, *settings = tree_spec.split(",")
    env = dict(os.environ, PYTHONPATH=os.path.abspath(tree), OMP_NUM_THREADS="1",
               **dict(s.split("=", 1) for s in settings))
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", config_name, str(rounds),
                          ",".join(variants)],
                         env=env, cwd=os.path.abspath(tree), capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{tree} {config_name}: {out.stderr[-2000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    expected = os.path.join(os.path.abspath(tree), "l2vsd_ext")
    if os.path.realpath(result["package"]) != os.path.realpath(expected):
        raise RuntimeError(f"{tree} {config_name}: the child imported {result['package']}, not {expected}")
    return result


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tree", action="append", default=[], metavar="NAME=PATH[,VAR=VALUE...]",
                   help="a checkout with its extension built in place, and environment settings for its "
                        "children (repeatable; default: this checkout)")
    p.add_argument("--configs", nargs="+", default=list(DEFAULT_CONFIGS), choices=list(CONFIGS))
    p.add_argument("--rounds", type=int, default=3, help="timed calls of each variant per child")
    p.add_argument("--repeats", type=int, default=2, help="children per (tree, configuration), alternating")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS),
                   help="what to time (forward is always timed: the ratios are to it)")
    p.add_argument("--json", help="also write the raw times here")
    args = p.parse_args(argv)
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    trees = dict(t.split("=", 1) for t in args.tree) or {"this": here}
    variants = ["forward"] + [v for v in args.variants if v != "forward"]
    engines = variants[1:]

    best, params, raw = {}, {}, []
    for config_name in args.configs:
        for _ in range(args.repeats):
            for name, path in trees.items():
                result = measure(path, config_name, args.rounds, variants)
                params[config_name] = result["params"]
                raw.append({"tree": name, "config": config_name, **result})
                for v, ts in result["times"].items():
                    key = (name, config_name, v)
                    best[key] = min([best.get(key, float("inf"))] + ts)
        print(f"  measured {config_name}", file=sys.stderr, flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(raw, f, indent=1)

    label = {"engine": "engine", "engine_last_layer": "last layer"}
    header = "| configuration | parameters | forward (s) |"
    for name in trees:
        header += "".join(f" {label[v]} × forward ({name}) |" for v in engines)
    print(header)
    print("|" + "---|" * (3 + len(engines) * len(trees)))
    for config_name in args.configs:
        first = next(iter(trees))
        row = f"| {config_name} | {params[config_name] / 1e6:.1f}M | {best[(first, config_name, 'forward')]:.3f} |"
        for name in trees:
            fwd = best[(name, config_name, "forward")]
            row += "".join(f" {best[(name, config_name, v)] / fwd:.2f} |" for v in engines)
        print(row)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        print(json.dumps(_child(sys.argv[2], int(sys.argv[3]), sys.argv[4].split(","))))
    else:
        main()

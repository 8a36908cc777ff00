"""Command line: python -m l2vsd_ext.run --prompt "a DSLR photo of a hamburger" [--mode l2vsd] ...

The argument surface is final; the distillation loop behind it is the distillation issue's work
and is not in this build yet, so a training run stops with exit code 2 and says so.
"""
from __future__ import annotations

import argparse
import sys

MODES = ("sds", "vsd", "lvsd", "l2vsd")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m l2vsd_ext.run",
        description="Text-to-3D by score distillation from a pretrained 2D diffusion model "
                    "(SDS, VSD, L-VSD, L²-VSD).")
    parser.add_argument("--prompt", help="text prompt describing the object")
    parser.add_argument("--mode", choices=MODES, default="l2vsd", help="guidance mode (default: l2vsd)")
    parser.add_argument("--steps", type=int, default=15000, help="training iterations (paper's coarse stage: 15000)")
    parser.add_argument("--resolution", type=int, default=64, help="render resolution (64 or 256)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/l2vsd", help="run folder (checkpoints, images, metrics)")
    parser.add_argument("--resume", action="store_true", help="continue the run found in --out")
    parser.add_argument("--device", default=None, help="cuda, cuda:1 or cpu (default: cuda if available)")
    parser.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default=None,
                        help="prior dtype (default: float16 on CUDA, float32 on CPU)")
    parser.add_argument("--pretrained", default="stabilityai/stable-diffusion-2-1-base",
                        help="diffusers model id or local folder")
    parser.add_argument("--eta", type=float, default=None, help="L²-VSD lookahead step size")
    parser.add_argument("--last-layer", action="store_true", help="L²-VSD tangent on the last LoRA layer only")
    parser.add_argument("--lora-steps", type=int, default=1, help="LoRA steps per iteration (γ)")
    parser.add_argument("--esd-lambda", type=float, default=0.0, help="ESD's CFG-on-VSD weight λ")
    parser.add_argument("--config", default=None, help="YAML file setting any of these flags")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.prompt or not args.prompt.strip():
        parser.error("argument --prompt: a non-empty prompt is required")
    print("l2vsd_ext.run: the distillation loop is not part of this build yet "
          "(tracked by the distillation issue); only the argument surface exists.", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())

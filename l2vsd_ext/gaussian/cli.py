"""Command line of the 2D Gaussian example: argument parsing and validation, then run and write outputs."""
import argparse
import math
import os
import sys
import time

import torch

from . import plots, report
from .experiment import Config, make_problem, run_method
from .guidance import METHODS, RENAMED

PROG = "python -m l2vsd_ext.gaussian"


class _OneLineParser(argparse.ArgumentParser):
    """Bad arguments end with exit code 2 and a single line on stderr (no usage block)."""

    def error(self, message):
        sys.stderr.write(f"{PROG}: error: {message}\n")
        sys.exit(2)


def parse_seeds(text):
    """'0-4' -> [0..4]; '0,3,7' and mixes like '0-2,9' too. Raises ValueError on anything else."""
    seeds = []
    for part in text.split(","):
        lo, sep, hi = part.strip().partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()):
            raise ValueError(f"bad --seeds {text!r}: use N, A-B or a comma list of those")
        first, last = int(lo), int(hi) if sep else int(lo)
        if last < first:
            raise ValueError(f"bad --seeds {text!r}: range {part} is empty")
        seeds.extend(range(first, last + 1))
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"bad --seeds {text!r}: a seed is repeated")
    return seeds


def build_parser():
    parser = _OneLineParser(prog=PROG, description="The paper's 2D Gaussian example (Appendix F).")
    parser.add_argument("--method", nargs="+", default=list(METHODS), metavar="METHOD",
                        help=f"any of {' '.join(METHODS)} (default: all); named as in l2vsd_ext.run: vsd is "
                             "practical VSD with a LoRA r, ideal-vsd the idealised VSD whose r overfits the renders")
    parser.add_argument("--steps", type=int, default=Config.steps, help=f"q's steps (default: {Config.steps})")
    parser.add_argument("--lora-steps", type=int, default=Config.lora_steps,
                        help=f"gamma: r's steps per step (default: {Config.lora_steps})")
    parser.add_argument("--n-render", type=int, default=Config.n_render,
                        help=f"samples of q per step (default: {Config.n_render})")
    parser.add_argument("--eta", type=float, default=Config.eta,
                        help=f"L2-VSD lookahead step; 0 gives vsd step for step (default: {Config.eta})")
    parser.add_argument("--lora-init", choices=("p", "q"), default=Config.lora_init,
                        help=f"r starts as the target p or the initial q (default: {Config.lora_init})")
    parser.add_argument("--seeds", default="0-4", help="seeds as N, A-B or a comma list (default: 0-4)")
    parser.add_argument("--out", default="runs/gaussian", help="output folder (default: runs/gaussian)")
    return parser


def parse_args(argv):
    parser = build_parser()
    args = parser.parse_args(argv)
    checks = [
        (args.steps >= 1, f"--steps must be a positive integer, got {args.steps}"),
        (args.lora_steps >= 0, f"--lora-steps must be >= 0, got {args.lora_steps}"),
        (args.n_render >= 1, f"--n-render must be >= 1, got {args.n_render}"),
        (math.isfinite(args.eta) and args.eta >= 0, f"--eta must be finite and >= 0, got {args.eta}"),
    ]
    for method in args.method:
        if method in RENAMED:
            parser.error(f"--method: '{method}' is now called '{RENAMED[method]}' (as in l2vsd_ext.run); "
                         "'ideal-vsd' is the idealised VSD")
        if method not in METHODS:
            parser.error(f"--method: unknown method '{method}' (choose from {', '.join(METHODS)})")
    for ok, message in checks:
        if not ok:
            parser.error(message)
    try:
        args.seeds = parse_seeds(args.seeds)
    except ValueError as exc:
        parser.error(str(exc))
    args.method = list(dict.fromkeys(args.method))  # keep order, drop repeats
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    # The tensors are tiny: intra-op threads only add overhead (softmax on 2 threads was 10x slower).
    torch.set_num_threads(1)
    config = Config(steps=args.steps, lora_steps=args.lora_steps, n_render=args.n_render, eta=args.eta,
                    lora_init=args.lora_init)
    try:
        os.makedirs(args.out, exist_ok=True)
        probe = os.path.join(args.out, ".write-test")
        open(probe, "w").close()
        os.unlink(probe)
    except OSError as err:
        sys.stderr.write(f"{PROG}: error: --out: cannot write to '{args.out}': {err.strerror}\n")
        return 2
    problem = make_problem(args.seeds, config.steps, config.n_render)

    histories, seconds = [], {}
    for method in args.method:
        start = time.perf_counter()
        history = run_method(method, problem, config)
        seconds[method] = time.perf_counter() - start
        print(f"{method:9s} {seconds[method]:6.2f}s  median final W2 {history.w2[-1].median():.4f}", flush=True)
        histories.append(history)
        plots.plot_samples(history, problem, os.path.join(args.out, f"samples_{method}.png"))

    plots.plot_w2(histories, os.path.join(args.out, "w2.png"), config.n_render)
    rows = report.final_rows(histories, problem, config)
    report.write_csv(rows, os.path.join(args.out, "final_w2.csv"))
    report.write_json(rows, config, seconds, os.path.join(args.out, "final_w2.json"))
    print(f"\nfinal W2(q, p) over seeds {args.seeds}, n_render={config.n_render}, {config.steps} steps:")
    print(report.format_table(rows))
    print(f"total run time {sum(seconds.values()):.1f}s; outputs in {args.out}")
    return 0

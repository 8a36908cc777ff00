"""s/it of HiFA's image term (two VAE decodes per step) on the shipped shapes prior: vsd against
vsd --hifa (z-variance off: not in this build), blocks of N steps interleaved A B A B ..., one
thread. Prints each block and the ratio of the medians. Usage: python benchmarks/hifa_cost.py [N] [ROUNDS]"""
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout's package

import torch  # noqa: E402

from l2vsd_ext.run import resolve_config  # noqa: E402
from l2vsd_ext.trainer import Trainer  # noqa: E402

PROMPT = "a snowman with an orange carrot nose"
CASES = {"vsd": [], "vsd --hifa": ["--hifa", "--z-variance-weight", "0"]}


def block(flags, steps, out):
    config = resolve_config(["--prompt", PROMPT, "--pretrained", "shapes", "--mode", "vsd", "--device", "cpu",
                             "--out", out, "--steps", str(steps + 3), *flags])
    trainer = Trainer(config)
    for _ in range(3):  # warm-up
        trainer.train_step()
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_step()
    return (time.perf_counter() - start) / steps


def main():
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    torch.set_num_threads(1)
    times = {name: [] for name in CASES}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for name, flags in CASES.items():
                times[name].append(block(flags, steps, f"{tmp}/{name.replace(' ', '')}{r}"))
                print(f"round {r} {name}: {times[name][-1]:.4f} s/it", flush=True)
    medians = {name: statistics.median(v) for name, v in times.items()}
    print({name: round(m, 4) for name, m in medians.items()},
          f"ratio {medians['vsd --hifa'] / medians['vsd']:.2f}x",
          "per-round ratios", [round(b / a, 2) for a, b in zip(times["vsd"], times["vsd --hifa"])])


if __name__ == "__main__":
    main()

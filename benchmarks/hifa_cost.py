"""s/it of HiFA's image term (two VAE decodes per step) on the shipped shapes prior: vsd, vsd with
the image term alone (--lambda-img 0.01: the decodes' cost, all else equal) and vsd --hifa (z-variance
off: not in this build; its sparsity term also thins the field, so fewer samples per ray), blocks of
N steps interleaved A B C A B C ..., one thread. Prints each block (s/it, mean samples per ray) and
the ratios of the medians to vsd. Usage: python benchmarks/hifa_cost.py [N] [ROUNDS]"""
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
CASES = {"vsd": [], "vsd --lambda-img 0.01": ["--lambda-img", "0.01"],
         "vsd --hifa": ["--hifa", "--z-variance-weight", "0"]}


def block(flags, steps, out):
    config = resolve_config(["--prompt", PROMPT, "--pretrained", "shapes", "--mode", "vsd", "--device", "cpu",
                             "--out", out, "--steps", str(steps + 3), *flags])
    trainer = Trainer(config)
    for _ in range(3):  # warm-up
        trainer.train_step()
    samples = 0.0
    start = time.perf_counter()
    for _ in range(steps):
        samples += float(trainer.train_step()["samples_per_ray"])
    return (time.perf_counter() - start) / steps, samples / steps


def fine(steps=40):
    """Step by step in one trainer: a vsd step, then the image term on its terms (the two decodes),
    timed back to back, so that load spikes hit both alike."""
    from l2vsd_ext.distill.hifa import image_gradient

    with tempfile.TemporaryDirectory() as tmp:
        config = resolve_config(["--prompt", PROMPT, "--pretrained", "shapes", "--mode", "vsd", "--device", "cpu",
                                 "--out", tmp, "--steps", str(steps + 3)])
        trainer = Trainer(config)
        for _ in range(3):
            trainer.train_step()
        render = torch.rand(1, 3, config.encode_resolution, config.encode_resolution)
        ratios, step_times, term_times = [], [], []
        for _ in range(steps):
            a = time.perf_counter()
            trainer.train_step()
            b = time.perf_counter()
            image_gradient(trainer.prior, trainer.mode.last_terms, render)
            c = time.perf_counter()
            step_times.append(b - a)
            term_times.append(c - b)
            ratios.append((c - a) / (b - a))
    print(f"back to back: vsd step median {statistics.median(step_times):.4f} s, image term (two decodes) "
          f"median {statistics.median(term_times):.4f} s, median (step + term)/step {statistics.median(ratios):.3f}")


def main():
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    torch.set_num_threads(1)
    fine()
    times = {name: [] for name in CASES}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for name, flags in CASES.items():
                seconds, samples = block(flags, steps, f"{tmp}/{name.replace(' ', '')}{r}")
                times[name].append(seconds)
                print(f"round {r} {name}: {seconds:.4f} s/it, {samples:.1f} samples/ray", flush=True)
    medians = {name: statistics.median(v) for name, v in times.items()}
    for name, median in medians.items():
        per_round = [round(b / a, 2) for a, b in zip(times["vsd"], times[name])]
        print(f"{name}: median {median:.4f} s/it, {median / medians['vsd']:.2f}x vsd, per round {per_round}")


if __name__ == "__main__":
    main()

"""Kill test of run folders (issue 24), after SQLite's crash tests: runs are SIGKILLed at chosen and
at random moments, then continued the way a user would (the same command, with --resume once a
checkpoint exists), and after every kill and at the end the invariants are checked:

  * the folder resumes, or is refused in one line (exit 2, no traceback);
  * metrics.jsonl holds each step once, in order, at least up to the checkpoint's step (and after
    completion exactly steps 1..N);
  * the final weights equal an uninterrupted run's, bit for bit (CPU);
  * no temporary file (.tmp-*, .partial-*) survives completion;
  * no file the run did not write has changed (a user's files are planted in every run folder).

Kill points: the N-th training step, the checkpoint write (after the temporary file is written,
before it is renamed), the config write, the metrics trim on resume, the end-of-run export (staged,
not yet moved), and random times. Runs are forked from one process that has imported everything
and loaded the tiny prior, so a kill and restart costs milliseconds, not an interpreter start.
With --sweep-kills K, sweeps are killed too: the driver at a random moment and a Ray worker at a
training step, each followed by the same sweep command again.

  python python_tests/chaos/run_chaos.py --kills 100            # the CI size (python_tests/chaos/test_chaos.py)
  python python_tests/chaos/run_chaos.py --kills 1000 --sweep-kills 10   # the long run (docs/reliability.md)

Prints progress to stderr and a JSON summary on stdout; exit 1 when an invariant failed."""
from __future__ import annotations

import argparse
import glob
import json
import os
import random
import signal
import sys
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ["HF_HUB_OFFLINE"] = "1"

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

STEPS = 4
CKPT_EVERY = 2  # so that steps run past the checkpoint and a resume has metrics to trim
SCENE = {"log2_hashmap_size": 12, "n_levels": 8, "occupancy_resolution": 16, "max_samples_per_ray": 64,
         "turntable_views": 2, "encode_resolution": 32, "resolution": 16}
# Planted in every run folder before its first attempt: none may change or go.
USER_FILES = {"notes.md": b"# my notes\n", "logs/lab_notebook.txt": b"day 1: a boat\n",
              "export/final_for_paper.png": bytes(range(256)), "validation/mine.png": b"\x89PNG mine",
              "checkpoints/README": b"my checkpoints go elsewhere\n"}
MAX_ATTEMPTS = 40


class InvariantBroken(AssertionError):
    pass


def check(condition: bool, message: str) -> None:
    if not condition:
        raise InvariantBroken(message)


def run_argv(tiny: str, scene: str, out: str) -> list[str]:
    return ["--prompt", "a small wooden boat", "--pretrained", tiny, "--config", scene, "--out", out,
            "--mode", "sds", "--steps", str(STEPS), "--ckpt-every", str(CKPT_EVERY), "--val-every", "2"]


# -- one attempt in a forked child -------------------------------------------------------------
def attempt(argv: list[str], prior, log: str, phase: str | None = None, count: int = 1,
            kill_after: float | None = None) -> tuple[str, int]:
    """Runs `python -m l2vsd_ext.run argv` in a forked child; ('killed', 9), ('exit', code)."""
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 99
        try:
            fh = open(log, "w", buffering=1)
            sys.stdout = sys.stderr = fh
            import torch
            import tqdm
            from tqdm.std import TqdmDefaultWriteLock

            torch.set_num_threads(1)
            tqdm.tqdm.set_lock(TqdmDefaultWriteLock())  # never a lock copied mid-hold by the fork
            from l2vsd_ext import chaos_hook
            from l2vsd_ext.run import main

            chaos_hook.arm(phase, count)
            code = main(argv, prior=prior)
        except BaseException:  # noqa: BLE001 -- any escape is a traceback: the test reports it
            import traceback

            traceback.print_exc()
            code = 98
        finally:
            try:
                sys.stderr.flush()
            finally:
                os._exit(code)
    if kill_after is not None:
        deadline = time.monotonic() + kill_after
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return _outcome(status)
            time.sleep(0.005)
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    return _outcome(status)


def _outcome(status: int) -> tuple[str, int]:
    if os.WIFSIGNALED(status):
        return "killed", os.WTERMSIG(status)
    return "exit", os.WEXITSTATUS(status)


# -- invariants ---------------------------------------------------------------------------------
def plant_user_files(out: str) -> None:
    for rel, data in USER_FILES.items():
        path = os.path.join(out, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(data)


def check_user_files(out: str) -> None:
    for rel, data in USER_FILES.items():
        path = os.path.join(out, rel)
        check(os.path.isfile(path), f"{rel}: a user's file was removed")
        with open(path, "rb") as fh:
            check(fh.read() == data, f"{rel}: a user's file was changed")


def checkpoint_step(out: str) -> int | None:
    from l2vsd_ext.checkpoint import load_checkpoint

    path = os.path.join(out, "checkpoints", "last.pt")
    if not os.path.exists(path):
        return None
    return load_checkpoint(path)["step"]  # a torn checkpoint would raise: the write is atomic


def metric_steps(out: str) -> list[int]:
    from l2vsd_ext.run_folder import read_metrics

    return [int(r["step"]) for r in read_metrics(os.path.join(out, "metrics.jsonl"), warn=lambda m: None)]


def check_after_kill(out: str) -> None:
    check_user_files(out)
    step = checkpoint_step(out)
    steps = metric_steps(out)
    check(steps == list(range(1, len(steps) + 1)), f"metrics steps not 1..n once each: {steps}")
    if step is not None:
        check(len(steps) >= step, f"metrics stop at {len(steps)}, before the checkpoint's step {step}")


def temporaries(out: str) -> list[str]:
    return [p for p in glob.glob(os.path.join(out, "**", ".tmp-*"), recursive=True)] + \
           [p for p in glob.glob(os.path.join(out, "**", ".partial-*"), recursive=True)]


def check_finished(out: str, reference: dict) -> None:
    import torch

    check_user_files(out)
    check(metric_steps(out) == list(range(1, STEPS + 1)), f"metrics after completion: {metric_steps(out)}")
    check(not temporaries(out), f"temporaries survived completion: {temporaries(out)}")
    from l2vsd_ext.checkpoint import load_checkpoint

    state = load_checkpoint(os.path.join(out, "checkpoints", "last.pt"))
    check(state["step"] == STEPS, f"final checkpoint at step {state['step']}")
    for name, tensor in reference.items():
        check(torch.equal(state["renderer"][name], tensor), f"final weights differ from the uninterrupted run: {name}")
    check(os.path.isfile(os.path.join(out, "export", "turntable.mp4")), "the end-of-run export is missing")


def last_line(log: str) -> str:
    with open(log, encoding="utf-8", errors="replace") as fh:
        lines = [line for line in fh.read().splitlines() if line.strip()]
    return lines[-1] if lines else ""


# -- the trials ---------------------------------------------------------------------------------
def one_trial(tiny, scene, prior, work, reference, rng, kills_left, stats) -> int:
    """Kills one run until it completes; returns the kills made."""
    out = os.path.join(work, f"run{stats['trials']:05d}")
    plant_user_files(out)
    argv = run_argv(tiny, scene, out)
    log = os.path.join(work, "attempt.log")
    kills = 0
    for _ in range(MAX_ATTEMPTS):
        resume = ["--resume"] if checkpoint_step(out) is not None else []
        if kills < kills_left and rng.random() < 0.85:
            if rng.random() < 0.3:
                phase, how = "random", rng.uniform(0.05, 3.0)
                outcome = attempt(argv + resume, prior, log, kill_after=how)
            else:
                phase, count = pick_phase(out, rng)
                outcome = attempt(argv + resume, prior, log, phase, count)
        else:
            phase, outcome = None, attempt(argv + resume, prior, log)
        if outcome == ("killed", signal.SIGKILL):
            kills += 1
            stats["kills"] += 1
            stats["phases"][phase] = stats["phases"].get(phase, 0) + 1
            check_after_kill(out)
            continue
        kind, code = outcome
        if code == 0:
            if phase is not None:  # armed, but the run ended before reaching the point
                stats["unreached"] += 1
            check_finished(out, reference)
            stats["completed"] += 1
            return kills
        line = last_line(log)
        check(code == 2 and "Traceback" not in open(log, errors="replace").read(),
              f"attempt ended with {outcome}: {line}")
        raise InvariantBroken(f"the folder was refused after a kill: {line}")
    raise InvariantBroken(f"{out}: not finished after {MAX_ATTEMPTS} attempts")


def pick_phase(out: str, rng) -> tuple[str, int]:
    """A kill point this attempt will reach (as far as the folder tells): the metrics trim when the
    folder has steps past its checkpoint, else a step or checkpoint still ahead, the config or export."""
    done = checkpoint_step(out) or 0
    if done and len(metric_steps(out)) > done and rng.random() < 0.6:
        return "write:metrics.jsonl", 1
    ahead = STEPS - done
    checkpoints_ahead = sum(1 for s in range(done + 1, STEPS + 1) if s % CKPT_EVERY == 0 or s == STEPS)
    choices = [("write:config.yaml", 1), ("export", 1)]
    if ahead:
        choices += [("step", rng.randint(1, ahead))] * 2
    if checkpoints_ahead:
        choices += [("write:last.pt", rng.randint(1, checkpoints_ahead))] * 2
    return rng.choice(choices)


def reference_weights(tiny, scene, prior, work) -> dict:
    out = os.path.join(work, "reference")
    log = os.path.join(work, "reference.log")
    outcome = attempt(run_argv(tiny, scene, out), prior, log)
    check(outcome == ("exit", 0), f"the uninterrupted run failed: {outcome} {last_line(log)}")
    from l2vsd_ext.checkpoint import load_checkpoint

    return load_checkpoint(os.path.join(out, "checkpoints", "last.pt"))["renderer"]


def sweep_trials(tiny, scene, work, reference, rng, n, stats) -> None:
    """Sweep driver and worker kills, each followed by the same sweep command."""
    prompts = os.path.join(work, "prompts.txt")
    with open(prompts, "w") as fh:
        fh.write("# one prompt\na small wooden boat\n")
    for i in range(n):
        out = os.path.join(work, f"sweep{i:03d}")
        argv = [prompts, "--out", out, "--modes", "sds", "--seeds", "0", "--no-eval", "--num-cpus", "1",
                "--pretrained", tiny, "--config", scene, "--steps", str(STEPS), "--ckpt-every", str(CKPT_EVERY),
                "--val-every", "2"]
        run_dir = os.path.join(out, "runs", "p00-a-small-wooden-boat", "sds-seed0")
        plant_user_files(run_dir)
        log = os.path.join(work, "sweep.log")
        what = "sweep-worker" if i % 2 else "sweep-driver"
        env = {}
        if what == "sweep-worker":  # the worker dies at a training step, once
            env = {"L2VSD_KILL_AT": f"step:{rng.randint(1, STEPS)}",
                   "L2VSD_KILL_ONCE": os.path.join(work, f"killed{i}")}
            outcome = sweep_attempt(argv, log, env)
            check(outcome == ("exit", 0), f"sweep with a killed worker: {outcome} {last_line(log)}")
            check(os.path.exists(env["L2VSD_KILL_ONCE"]), "the worker was not killed")
        else:  # the driver dies at a random moment, then the same command again
            outcome = sweep_attempt(argv, log, {}, kill_after=rng.uniform(3.0, 25.0))
            if outcome == ("killed", signal.SIGKILL):
                check_after_kill(run_dir)
                outcome = sweep_attempt(argv, log, {})
            check(outcome == ("exit", 0), f"sweep restart: {outcome} {last_line(log)}")
        stats["kills"] += 1
        stats["phases"][what] = stats["phases"].get(what, 0) + 1
        check_finished(run_dir, reference)
        stats["completed"] += 1


def sweep_attempt(argv, log, env, kill_after=None) -> tuple[str, int]:
    import subprocess

    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "l2vsd_ext.sweep", *argv], stdout=fh, stderr=fh,
                                cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT, **env})
        try:
            proc.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return "killed", signal.SIGKILL
    return _outcome_code(proc.returncode)


def _outcome_code(code: int) -> tuple[str, int]:
    return ("killed", -code) if code < 0 else ("exit", code)


def cheap_end_of_run_mesh() -> None:
    """The end-of-run export's marching cubes on a 16^3 grid instead of 128^3 (seconds per run on
    a loaded CPU): what is tested is that the export's files appear whole or not at all, not the
    mesh. Patched before the forks, so every attempt sees it."""
    from l2vsd_ext.export import outputs

    full = outputs.export_run

    def export_run(*args, **kwargs):
        kwargs.setdefault("mesh_resolution", 16)
        return full(*args, **kwargs)

    outputs.export_run = export_run


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=100, help="SIGKILLs of runs to make (default: 100)")
    p.add_argument("--sweep-kills", type=int, default=0, help="sweep driver/worker kills (default: 0)")
    p.add_argument("--seed", type=int, default=None, help="schedule seed (default: random, printed)")
    p.add_argument("--work", default=None, help="folder for the runs (default: a temporary one)")
    args = p.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    rng = random.Random(seed)
    import torch
    import tqdm

    torch.set_num_threads(1)
    # Children are forked from this process: no helper thread may exist in it, or a fork can copy a
    # lock that thread holds and the child hangs on it. tqdm's monitor thread (started by the first
    # progress bar, e.g. the weights' loading bar) took tqdm's lock every 10 s: a CI run's child
    # hung in its turntable's progress bar after 44 clean attempts.
    tqdm.tqdm.monitor_interval = 0
    from l2vsd_ext.prior import DiffusionPrior
    from l2vsd_ext.prior.tiny import build_tiny_sd

    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir=args.work) as work:
        tiny = build_tiny_sd(os.path.join(work, "tiny_sd"))
        scene = os.path.join(work, "scene.yaml")
        import yaml

        with open(scene, "w") as fh:
            yaml.safe_dump(SCENE, fh)
        prior = DiffusionPrior.from_pretrained(tiny, None, torch.device("cpu"))
        cheap_end_of_run_mesh()
        reference = reference_weights(tiny, scene, prior, work)
        stats = {"seed": seed, "kills": 0, "trials": 0, "completed": 0, "unreached": 0, "phases": {}}
        failure = None
        try:
            while stats["kills"] < args.kills:
                stats["trials"] += 1
                one_trial(tiny, scene, prior, work, reference, rng, args.kills - stats["kills"], stats)
                print(f"chaos: {stats['kills']}/{args.kills} kills, {stats['completed']} runs completed, "
                      f"{time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
            if args.sweep_kills:
                sweep_trials(tiny, scene, work, reference, rng, args.sweep_kills, stats)
        except InvariantBroken as err:
            failure = str(err)
    stats.update(seconds=round(time.monotonic() - started, 1), failure=failure)
    print(json.dumps(stats, indent=2))
    return 1 if failure else 0


if __name__ == "__main__":
    sys.exit(main())

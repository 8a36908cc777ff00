"""One run of a sweep, as executed on a Ray worker: train through the ordinary run entry point
(resuming from the run's checkpoint when it has one), evaluate, score against the ground truth where
the prior has one, and write RUN/sweep_result.json, the mark of a finished run.

The worker's console output goes to OUT/logs/<run>.log, so the driver's terminal keeps its single
progress line; the run's own progress is in its folder (metrics.jsonl, validation/)."""
from __future__ import annotations

import contextlib
import json
import os
import time

RESULT_FILE = "sweep_result.json"
CHECKPOINT = os.path.join("checkpoints", "last.pt")
LOCK_WAIT_SECONDS = 120  # how long a worker waits for a run folder another (orphaned) worker holds
PAUSE_SECONDS = 300  # test hook: how long a paused run waits to be killed before it carries on


class RunError(RuntimeError):
    """A run that failed for a reason retrying cannot fix (a setting the run refuses, weights that
    cannot be loaded): marked failed at once."""


def read_result(folder: str) -> dict | None:
    path = os.path.join(folder, RESULT_FILE)
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def is_finished(folder: str, run_argv: list[str]) -> bool:
    """Trained and scored with these very run flags (a restart with e.g. more --steps is not)."""
    result = read_result(folder)
    return bool(result and result.get("complete") and result.get("run_argv") == run_argv)


def _write_result(folder: str, result: dict) -> None:
    from ..checkpoint import atomic_write_bytes

    from ..run_folder import RunFolder

    atomic_write_bytes(RunFolder(folder).claim(RESULT_FILE), json.dumps(result, indent=2).encode())


class _Tee:
    """stderr for the run: into the log, and kept, so a refused setting's one line can be reported."""

    def __init__(self, log):
        self.log, self.lines = log, []

    def write(self, text):
        self.log.write(text)
        self.lines.extend(line for line in text.replace("\r", "\n").split("\n") if line.strip())
        del self.lines[:-20]
        return len(text)

    def flush(self):
        self.log.flush()

    def isatty(self):
        return False

    def last_line(self) -> str:
        return self.lines[-1] if self.lines else "no message"


def _train(argv: list[str], tee: _Tee) -> None:
    from ..prior.loading import PriorWeightsUnavailable
    from ..run import main, resolve_config
    from ..trainer import DTYPES, resolve_device
    from .prior_cache import prior_for

    # Validated by the driver; on resume the sweep passes the very flags the run started with, so
    # these name the prior its checkpoint was made with.
    config = resolve_config(argv)
    try:
        prior = prior_for(config.pretrained, DTYPES[config.dtype] if config.dtype else None,
                          resolve_device(config))
    except PriorWeightsUnavailable as err:
        raise RunError(f"--pretrained: {err}") from err
    if main(argv, prior=prior) != 0:
        raise RunError(tee.last_line())


PHASE_SUFFIX = ".phase"


def _set_phase(log_path: str, phase: str | None) -> None:
    """OUT/logs/<run>.log.phase: what the run's worker is doing now, beyond training."""
    from ..checkpoint import atomic_write_bytes

    path = log_path + PHASE_SUFFIX
    if phase is None:
        if os.path.exists(path):
            os.unlink(path)
    else:
        atomic_write_bytes(path, phase.encode())


def read_phase(log_path: str) -> str | None:
    try:
        with open(log_path + PHASE_SUFFIX, encoding="utf-8") as fh:
            return fh.read().strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def _pause_for_test(log_path: str) -> None:
    """Test hook: announce this worker's pid next to the log, then wait to be killed."""
    from ..checkpoint import atomic_write_bytes

    atomic_write_bytes(log_path + ".paused", str(os.getpid()).encode())
    deadline = time.monotonic() + PAUSE_SECONDS
    while time.monotonic() < deadline:
        time.sleep(0.2)


def _evaluate(folder: str, eval_argv: list[str] | None, tee: _Tee) -> dict:
    if eval_argv is None:
        return {"skipped": "evaluation turned off (--no-eval)"}
    from ..eval.cli import EVAL_FILE
    from ..eval.cli import main as eval_main

    if eval_main([folder, *eval_argv]) != 0:
        # Typically offline without CLIP/Inception weights: the run itself is fine, say why no scores.
        return {"skipped": tee.last_line()}
    with open(os.path.join(folder, EVAL_FILE)) as fh:
        scores = json.load(fh)
    return {k: scores[k] for k in ("clip_cosine_mean", "clip_angle_deg", "fid", "fid_features") if k in scores}


def run_one(folder: str, run_argv: list[str], eval_argv: list[str] | None, log_path: str,
            pause_after: int | None = None) -> dict:
    """Trains, evaluates and scores one run; returns (and writes) its result."""
    from ..run_folder import RunFolder
    from ..run_lock import lock_folder
    from .ground_truth import ground_truth_scores

    started = time.time()
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    with open(log_path, "a", buffering=1) as log:
        tee = _Tee(log)
        with contextlib.ExitStack() as stack, contextlib.redirect_stdout(log), contextlib.redirect_stderr(tee):
            print(f"== attempt in pid {os.getpid()} on {os.uname().nodename} at {time.ctime()}", flush=True)
            _set_phase(log_path, None)
            # The run's folder is this worker's until it returns: a worker orphaned by a killed
            # driver may still hold it for a moment, so wait for it rather than fail.
            lock = lock_folder(folder, "run folder", wait=LOCK_WAIT_SECONDS)
            stack.callback(lock.release)
            resumable = os.path.isfile(os.path.join(folder, CHECKPOINT))
            if not resumable:
                # An attempt that died before its first checkpoint: start clean, removing only the
                # files that attempt wrote (its manifest), never anything else in the folder.
                RunFolder(folder).clear_run_files()
            if pause_after is not None and not resumable:
                _train(run_argv + ["--stop-after", str(pause_after)], tee)
                _pause_for_test(log_path)
                resumable = True
            result = read_result(folder) or {}
            if not (result.get("trained") and result.get("run_argv") == run_argv):
                _train(run_argv + (["--resume"] if resumable else []), tee)
                result = {"trained": True, "run_argv": run_argv, "train_seconds": time.time() - started}
                _write_result(folder, result)
            _set_phase(log_path, "evaluating")  # the driver's progress line counts these
            result["eval"] = _evaluate(folder, eval_argv, tee)
            result["ground_truth"] = ground_truth_scores(folder)
            result.update(complete=True, seconds=time.time() - started)
            _write_result(folder, result)
            _set_phase(log_path, None)
    return result

"""Runs the sweep's unfinished runs as Ray tasks: one GPU each where the cluster has GPUs, a CPU
slot otherwise; a run whose worker dies (killed, out of memory) or that raises is retried from its
checkpoint up to `max_retries` times, then marked failed, while the others go on."""
from __future__ import annotations

import os

from ..chaos_hook import point as chaos_point
from ..config import ConfigError
from .progress import ProgressLine, eta_seconds
from .task import RunError, read_phase, run_one

INSTALL_HINT = "Ray is not installed; install the sweep extra: pip install 'l2vsd_ext[sweep]' (or: pip install 'ray[default]')"


def import_ray():
    try:
        import ray
    except ImportError as err:
        raise ConfigError(INSTALL_HINT) from err
    return ray


def connect(address: str | None, num_cpus: int | None) -> bool:
    """Starts a local cluster (address None) or joins `address`; True when this call started Ray
    (so the caller shuts it down again). An already initialised Ray (e.g. tests) is reused."""
    ray = import_ray()
    if ray.is_initialized():
        return False
    import logging

    kwargs = {"num_cpus": num_cpus} if address is None and num_cpus else {}
    # Workers' console output goes to each run's log file, not to this terminal.
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.ERROR, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as err:
        where = f"the Ray cluster at '{address}'" if address else "a local Ray cluster"
        raise ConfigError(f"--address: cannot start or join {where}: {err}".splitlines()[0]) from err
    _shut_down_on_exit()
    return True


def shutdown() -> None:
    """Stops the Ray processes this driver started (its local cluster's raylet, GCS, agents)."""
    ray = import_ray()
    if ray.is_initialized():
        ray.shutdown()


def _shut_down_on_exit() -> None:
    """Ray's agents outlive a driver that dies without ray.shutdown() for about a minute: shut it
    down at exit and on SIGTERM/SIGHUP too (SIGINT already unwinds through the driver's finally).
    A SIGKILL cannot be caught; the next start of the sweep waits for the orphaned workers' locks."""
    import atexit
    import signal
    import threading

    atexit.register(shutdown)
    if threading.current_thread() is not threading.main_thread():
        return

    def on_signal(signum, frame):
        shutdown()
        signal.signal(signum, signal.SIG_DFL)
        signal.raise_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) in (signal.SIG_DFL, None):
            signal.signal(signum, on_signal)


def check_reachable(address: str, timeout: float = 10.0) -> None:
    """A HOST:PORT that does not answer fails here in seconds; ray.init would retry for minutes."""
    import socket

    host, sep, port = address.rpartition(":")
    if address == "auto" or "://" in address or not sep or not port.isdigit():
        return  # 'auto', ray:// client addresses: Ray resolves and reports those itself
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as err:
        raise ConfigError(f"--address: no Ray cluster answers at '{address}' ({err})") from err


def task_resources(cpus_per_run: int) -> tuple[dict, int]:
    """(Ray task options, how many runs the cluster can hold at once)."""
    ray = import_ray()
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if gpus:
        return {"num_gpus": 1, "num_cpus": 1}, gpus
    return {"num_cpus": cpus_per_run}, max(1, int(resources.get("CPU", 1)) // cpus_per_run)


def describe_failure(err: BaseException) -> tuple[str, bool]:
    """(one-paragraph error for sweep.json, whether retrying may help)."""
    cause = getattr(err, "cause", None) or err
    if isinstance(cause, RunError) or isinstance(err, RunError):
        return f"RunError: {cause}", False
    text = str(cause).strip().splitlines()
    # Ray's own messages run to a paragraph of advice: keep the first sentence of the first line.
    first = text[0].split(". ")[0] if text else ""
    summary = f"{type(cause).__name__}: {first}"
    if len(text) > 1:
        summary += " ... " + text[-1]
    return summary[:500], True


def run_grid(specs, state, sweep_dir: str, run_common: list[str], eval_argv, cpus_per_run: int,
             max_retries: int, pause_after: int | None = None, stream=None) -> None:
    """Runs every spec whose status is 'queued' in `state`; returns when each is done or failed."""
    ray = import_ray()
    options, slots = task_resources(cpus_per_run)
    # max_calls=0: keep worker processes (and their cached prior) across runs; Ray's default for
    # GPU tasks would start a fresh process for every run.
    remote = ray.remote(max_retries=0, max_calls=0, **options)(run_one)
    logs = os.path.join(sweep_dir, "logs")
    todo = [s for s in specs if state.runs[s.name]["status"] == "queued"]
    first = todo[0].name if todo else None
    inflight, durations = {}, []
    tries = dict.fromkeys((s.name for s in todo), 0)  # this session's attempts: the retry limit's count

    def submit(spec):
        state.runs[spec.name]["attempts"] += 1  # over all sessions, for the record
        tries[spec.name] += 1
        ref = remote.remote(spec.folder(sweep_dir), spec.run_argv(sweep_dir, run_common), eval_argv,
                            os.path.join(logs, spec.name + ".log"),
                            pause_after if spec.name == first else None)
        inflight[ref] = spec

    for spec in todo:
        submit(spec)
    progress = ProgressLine(os.path.basename(os.path.normpath(sweep_dir)), len(specs), stream)
    saved_counts = None
    try:
        while inflight:
            # Ray does not say which queued task has started: count the first `slots` as running.
            running = min(len(inflight), slots)
            for i, spec in enumerate(inflight.values()):
                state.runs[spec.name]["status"] = "running" if i < running else "queued"
            counts = state.counts()
            if counts != saved_counts:
                state.save()
                saved_counts = counts
            evaluating = sum(read_phase(os.path.join(logs, spec.name + ".log")) == "evaluating"
                             for spec in inflight.values() if state.runs[spec.name]["status"] == "running")
            progress.update({**counts, "evaluating": evaluating},
                            eta_seconds(durations, counts["running"] + counts["queued"], slots))
            chaos_point("sweep-driver")
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=1.0)
            for ref in ready:
                spec = inflight.pop(ref)
                try:
                    result = ray.get(ref)
                except Exception as err:  # noqa: BLE001 -- every failure is recorded, none stops the sweep
                    message, retryable = describe_failure(err)
                    state.add_error(spec.name, message)
                    if retryable and tries[spec.name] <= max_retries:
                        submit(spec)
                    else:
                        state.set(spec.name, status="failed")
                    continue
                durations.append(result["seconds"])  # the run's own time, not its wait in the queue
                state.set(spec.name, status="done", result=result)
        progress.update(state.counts(), 0.0)
    finally:
        progress.close()
        for ref, spec in inflight.items():  # only when interrupted: the next start picks these up
            ray.cancel(ref)  # an interrupt, not a kill: runs may still write their checkpoint
            state.runs[spec.name]["status"] = "queued"
        state.save()

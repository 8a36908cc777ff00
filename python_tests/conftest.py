"""Shared pytest fixtures: the devices a test runs on (CUDA only where a GPU and the CUDA kernels
are both present; otherwise those cases are skipped, never silently dropped), and per-test seeding
of the global RNGs: fresh random inputs every run, yet any failure can be replayed."""
import os
import random
import secrets
import zlib

# Tests never reach for the network: hub look-ups fail at once instead of timing out.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402


# One seed per session, printed in the summary; L2VSD_TEST_SEED=<seed> replays a run.
SESSION_SEED = int(os.environ.get("L2VSD_TEST_SEED", secrets.randbelow(2**31)))


def pytest_terminal_summary(terminalreporter):
    # In the summary rather than the header, which -q hides.
    terminalreporter.write_line(f"l2vsd test seed: {SESSION_SEED} "
                                f"(replay with L2VSD_TEST_SEED={SESSION_SEED})")


@pytest.fixture(autouse=True)
def _seed_global_rngs(request):
    """Each test draws from torch/numpy/random seeded by the session seed and its own id, so its
    inputs do not depend on which tests ran before it."""
    seed = (SESSION_SEED + zlib.crc32(request.node.nodeid.encode())) % 2**31
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


from cuda_skip import DEVICES  # noqa: E402  (GPU and a CUDA build, see cuda_skip.py)


@pytest.fixture(params=DEVICES)
def device(request):
    return torch.device(request.param)


@pytest.fixture(scope="session")
def tiny_sd_path(tmp_path_factory):
    """A tiny Stable-Diffusion-shaped pipeline saved in the diffusers layout (random weights)."""
    from l2vsd_ext.prior.tiny import build_tiny_sd

    return build_tiny_sd(str(tmp_path_factory.mktemp("tiny_sd")))


@pytest.fixture(scope="session")
def tiny_stage1_run(tiny_sd_path, tmp_path_factory):
    """A 3-step stage-1 run on the tiny pipeline, shared by the mesh-stage tests, which only read it
    (each checks that it is left unchanged)."""
    from tiny_run import make_tiny_run

    return make_tiny_run(tiny_sd_path, tmp_path_factory.mktemp("stage1"), steps=3)


# -- no test writes into the directory pytest runs from -------------------------------------------
# (a fuzzed relative --out once left '0.0/' and 'False/' run folders in the checkout, and they were
# committed). New visible entries there at the end of the session fail it, naming them.
_CWD_AT_START = None


def pytest_sessionstart(session):
    global _CWD_AT_START
    _CWD_AT_START = (os.getcwd(), {n for n in os.listdir(".") if not n.startswith(".")})


def pytest_sessionfinish(session, exitstatus):
    if _CWD_AT_START is None or os.environ.get("PYTEST_XDIST_WORKER"):
        return  # xdist workers share the controller's directory: the controller checks
    cwd, before = _CWD_AT_START
    if not os.path.isdir(cwd):
        return
    new = sorted({n for n in os.listdir(cwd) if not n.startswith(".")} - before - {"__pycache__"})
    if new:
        print(f"\nerror: tests left new entries in the directory pytest ran from ({cwd}): {new}")
        session.exitstatus = 1

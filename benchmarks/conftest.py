"""Benchmark conventions: every case is one pytest-benchmark `group`, measured once per `impl`
("reference" = the pure-PyTorch op in l2vsd_ext.ops.reference, "l2vsd_ext" = the compiled op),
so `python benchmarks/report.py results.json` can print each case as a ratio measured in one run."""
import pytest
import torch


@pytest.fixture(autouse=True)
def _deterministic_threads():
    # Same thread count for the op and its reference, whatever the environment says.
    torch.set_num_threads(torch.get_num_threads())
    yield


import os as _os

_os.environ.setdefault("HF_HUB_OFFLINE", "1")  # benchmarks never reach for the network

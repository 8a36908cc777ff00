"""Shared pytest fixtures: the devices a test runs on (CUDA only where a GPU and the CUDA kernels
are both present; otherwise those cases are skipped, never silently dropped)."""
import os

# Tests never reach for the network: hub look-ups fail at once instead of timing out.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

from l2vsd_ext._ext import cuda_kernels_available  # noqa: E402


def _cuda_ready():
    return torch.cuda.is_available() and cuda_kernels_available()


CUDA_SKIP_REASON = "needs a GPU and an extension built with CUDA kernels"
requires_cuda = pytest.mark.skipif(not _cuda_ready(), reason=CUDA_SKIP_REASON)
DEVICES = ["cpu", pytest.param("cuda", marks=requires_cuda)]


@pytest.fixture(params=DEVICES)
def device(request):
    return torch.device(request.param)


@pytest.fixture(scope="session")
def tiny_sd_path(tmp_path_factory):
    """A tiny Stable-Diffusion-shaped pipeline saved in the diffusers layout (random weights)."""
    from l2vsd_ext.prior.tiny import build_tiny_sd

    return build_tiny_sd(str(tmp_path_factory.mktemp("tiny_sd")))

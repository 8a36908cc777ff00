"""Shared pytest fixtures: the devices a test runs on (CUDA only where a GPU and the CUDA kernels
are both present; otherwise those cases are skipped, never silently dropped)."""
import pytest
import torch

from l2vsd_ext._ext import cuda_kernels_available


def _cuda_ready():
    return torch.cuda.is_available() and cuda_kernels_available()


CUDA_SKIP_REASON = "needs a GPU and an extension built with CUDA kernels"
requires_cuda = pytest.mark.skipif(not _cuda_ready(), reason=CUDA_SKIP_REASON)
DEVICES = ["cpu", pytest.param("cuda", marks=requires_cuda)]


@pytest.fixture(params=DEVICES)
def device(request):
    return torch.device(request.param)

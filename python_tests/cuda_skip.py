"""When the CUDA variant of a test can run: a visible GPU *and* an extension compiled with its
CUDA kernels. A GPU machine with a CPU-only build (L2VSD_FORCE_CPU=1, or a CPU torch at build
time) must skip those cases, not error in them, so torch.cuda.is_available() alone is not enough."""
import pytest
import torch

from l2vsd_ext._ext import ExtensionUnavailable, cuda_kernels_available

CUDA_SKIP_REASON = "needs a GPU and an extension built with CUDA kernels"


def cuda_ready() -> bool:
    if not torch.cuda.is_available():
        return False
    try:
        return cuda_kernels_available()
    except ExtensionUnavailable:
        return False


requires_cuda = pytest.mark.skipif(not cuda_ready(), reason=CUDA_SKIP_REASON)
DEVICES = ["cpu", pytest.param("cuda", marks=requires_cuda)]

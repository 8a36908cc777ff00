"""The peers users would otherwise run, imported on demand. Each loader returns the peer or calls
pytest.skip with the reason it is unavailable; none of them is a dependency of the package.

Install lines (CPU machine, no CUDA toolkit needed):
    pip install --no-deps nerfstudio jaxtyping wadler_lindig
    BUILD_NO_CUDA=1 pip install --no-deps --no-build-isolation nerfacc==0.5.3
On a GPU machine, tiny-cuda-nn's torch bindings and nerfacc built with CUDA (without
BUILD_NO_CUDA) enable the CUDA rows."""
from __future__ import annotations

import importlib.util
import sys
import types

import pytest
import torch

NERFSTUDIO_INSTALL = "pip install --no-deps nerfstudio jaxtyping wadler_lindig"
NERFACC_INSTALL = "BUILD_NO_CUDA=1 pip install --no-deps --no-build-isolation nerfacc==0.5.3"


def _stub_viser() -> None:
    # nerfstudio's encodings import viser (its web viewer) at module level, only for a transform
    # helper the hash encoding never calls; an empty package stands in when viser is absent.
    if "viser" in sys.modules or importlib.util.find_spec("viser") is not None:
        return
    viser = types.ModuleType("viser")
    viser.__path__ = []
    transforms = types.ModuleType("viser.transforms")
    viser.transforms = transforms
    sys.modules["viser"] = viser
    sys.modules["viser.transforms"] = transforms


def nerfstudio_hash_encoding():
    """nerfstudio.field_components.encodings.HashEncoding, or skip."""
    _stub_viser()
    try:
        from nerfstudio.field_components.encodings import HashEncoding
    except ImportError as exc:
        pytest.skip(f"nerfstudio is not installed ({exc}); install with: {NERFSTUDIO_INSTALL}")
    return HashEncoding


def nerfacc_volrend():
    """nerfacc.volrend (0.5.x), or skip."""
    try:
        from nerfacc import volrend
    except ImportError as exc:
        pytest.skip(f"nerfacc is not installed ({exc}); install with: {NERFACC_INSTALL}")
    return volrend


def nerfacc_cuda_volrend():
    """nerfacc.volrend with its CUDA extension usable, or skip."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    volrend = nerfacc_volrend()
    try:
        # The prebuilt extension only: nerfacc would otherwise JIT-compile it inside the benchmark.
        from nerfacc import csrc  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"nerfacc has no prebuilt CUDA extension ({exc}); reinstall it with the CUDA "
                    "toolkit present and without BUILD_NO_CUDA=1")
    return volrend


def tiny_cuda_nn():
    """tinycudann, or skip."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    try:
        import tinycudann
    except ImportError as exc:
        pytest.skip(f"tiny-cuda-nn's torch bindings are not installed ({exc}); build them with "
                    "pip install git+https://github.com/NVlabs/tiny-cuda-nn/#subdirectory="
                    "bindings/torch")
    return tinycudann

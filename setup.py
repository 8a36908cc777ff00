"""Builds l2vsd_ext._C with torch.utils.cpp_extension.

CPU kernels (OpenMP) are always compiled. CUDA kernels are added when the torch in use is a CUDA
build and nvcc is found (L2VSD_FORCE_CPU=1 turns them off). The architecture list defaults to
csrc/cuda_archs.txt (7.5, 8.0, 8.6, 8.9, 9.0 + PTX: T4/RTX 20xx, A100, RTX 30xx/A10/A40, RTX
40xx/L4/L40, H100, and newer cards through the PTX), never to a visible GPU (torch's automatic choice needs one);
TORCH_CUDA_ARCH_LIST overrides it. CMakeLists.txt reads the same file.
"""
import glob
import os
import re
import shutil
import subprocess

ROOT = os.path.dirname(os.path.abspath(__file__))


def _cuda_home_from_nvcc():
    """The toolkit root nvcc itself reports, when the guess torch would make is wrong.

    Without CUDA_HOME torch takes the parent of the `nvcc` on PATH; where that nvcc is a wrapper
    script (e.g. /usr/local/bin/nvcc exec'ing /usr/local/cuda-13.0/bin/nvcc) the guess has no
    include/cuda_runtime_api.h and the C++ glue fails to compile. nvcc --dryrun prints its TOP."""
    if os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH"):
        return None
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return None
    guess = os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))
    if os.path.exists(os.path.join(guess, "include", "cuda_runtime_api.h")):
        return None
    try:
        dry = subprocess.run([nvcc, "--dryrun", "-c", "-x", "cu", os.devnull, "-o", os.devnull],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"^#\$ TOP=(.+)$", dry.stdout + dry.stderr, re.MULTILINE)
    if match is None:
        return None
    top = os.path.realpath(match.group(1).strip())
    return top if os.path.exists(os.path.join(top, "include", "cuda_runtime_api.h")) else None


# Must be settled before torch.utils.cpp_extension reads CUDA_HOME at import.
_found_cuda_home = _cuda_home_from_nvcc()
if _found_cuda_home is not None:
    os.environ["CUDA_HOME"] = _found_cuda_home

import torch  # noqa: E402
from setuptools import setup  # noqa: E402
from torch.utils import cpp_extension  # noqa: E402


def _sources(pattern):
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))


def default_cuda_archs():
    with open(os.path.join(ROOT, "csrc", "cuda_archs.txt")) as f:
        return f.read().strip()


def _want_cuda():
    if os.environ.get("L2VSD_FORCE_CPU", "0") == "1":
        return False
    return torch.version.cuda is not None and cpp_extension.CUDA_HOME is not None


def _extension():
    with_cuda = _want_cuda()
    # Set before BuildExtension reads it; a user's own TORCH_CUDA_ARCH_LIST wins.
    archs = os.environ.setdefault("TORCH_CUDA_ARCH_LIST", default_cuda_archs())
    sources = _sources("csrc/torch/*.cpp") + _sources("csrc/kernels/*/*_cpu.cpp")
    macros = [("L2VSD_TORCH_VERSION", f'"{torch.__version__}"')]
    cxx = ["-O3", "-std=c++20", "-fopenmp"]
    link = ["-fopenmp"]
    if with_cuda:
        sources += _sources("csrc/kernels/*/*_cuda.cu")
        # Recorded for build_info() and the first-call device check; torch adds the -gencode
        # flags and its -D__CUDA_NO_HALF_*__ defines itself.
        macros += [("WITH_CUDA", None), ("L2VSD_CUDA_ARCHS", f'"{archs}"')]
        return cpp_extension.CUDAExtension(
            "l2vsd_ext._C", sources, define_macros=macros,
            extra_compile_args={"cxx": cxx, "nvcc": ["-O3", "-std=c++17"]},
            extra_link_args=link)
    return cpp_extension.CppExtension(
        "l2vsd_ext._C", sources, define_macros=macros,
        extra_compile_args={"cxx": cxx}, extra_link_args=link)


setup(
    ext_modules=[_extension()],
    cmdclass={"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)},
)

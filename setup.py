"""Builds l2vsd_ext._C with torch.utils.cpp_extension.

CPU kernels (OpenMP) are always compiled. CUDA kernels are added when the torch in use is a CUDA
build and nvcc is found (L2VSD_FORCE_CPU=1 turns them off). The architecture list defaults to
sm_86 and never depends on a visible GPU: torch's automatic choice needs one.
"""
import glob
import os

import torch
from setuptools import setup
from torch.utils import cpp_extension

ROOT = os.path.dirname(os.path.abspath(__file__))


def _sources(pattern):
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))


def _want_cuda():
    if os.environ.get("L2VSD_FORCE_CPU", "0") == "1":
        return False
    return torch.version.cuda is not None and cpp_extension.CUDA_HOME is not None


def _extension():
    with_cuda = _want_cuda()
    # Set before BuildExtension reads it; a user's own TORCH_CUDA_ARCH_LIST wins.
    archs = os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.6")
    sources = _sources("csrc/torch/*.cpp") + _sources("csrc/kernels/*/*_cpu.cpp")
    macros = [("L2VSD_TORCH_VERSION", f'"{torch.__version__}"')]
    cxx = ["-O3", "-std=c++20", "-fopenmp"]
    link = ["-fopenmp"]
    if with_cuda:
        sources += _sources("csrc/kernels/*/*_cuda.cu")
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

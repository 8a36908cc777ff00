"""l2vsd_ext: text-to-3D by score distillation (SDS, VSD, L-VSD, L²-VSD) with C++/CUDA kernels."""

__version__ = "0.1.0"


def build_info():
    """How the compiled extension was built: torch version, CUDA archs (or "cpu"), OpenMP, compiler.

    Adds `torch_runtime` (the torch importing it now) so a mismatch is easy to spot.
    """
    import torch

    from ._ext import load_extension

    info = dict(load_extension().build_info())
    info["torch_runtime"] = torch.__version__
    return info

"""Loads the compiled extension lazily, so importing the package never fails for lack of it."""
import functools


class ExtensionUnavailable(ImportError):
    pass


@functools.lru_cache(maxsize=None)
def load_extension():
    try:
        from . import _C
    except ImportError as err:
        raise ExtensionUnavailable(
            "l2vsd_ext._C is not built or does not match the installed torch "
            f"({err}). Build it with `pip install --no-build-isolation -e .` in the repository, "
            "using the torch you run with."
        ) from err
    return _C


def cuda_kernels_available():
    """True when the extension was compiled with its CUDA kernels."""
    return bool(load_extension().build_info()["cuda"])

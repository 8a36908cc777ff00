"""The FID Inception's weights: a local file, torch hub's cache, or (only when online) a download into
that cache. Every way this fails becomes InceptionWeightsUnavailable, whose message says where we
looked, where the file comes from and how to pass it (--inception-weights PATH)."""
from __future__ import annotations

import os

import torch

from .clip_model import ModelUnavailable
from .inception import FidInceptionV3

WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"  # torch-fidelity's conversion of the TF graph
PYTORCH_FID_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"  # pytorch-fid's, same parameter names
WEIGHTS_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{WEIGHTS_FILE}"
SHA256_PREFIX = "6726825d"  # torch hub naming: the file name ends with its sha256's first digits
FEATURES_NAME = "inception-v3-2015-12-05"  # what eval.json records as fid_features
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "L2VSD_OFFLINE")


class InceptionWeightsUnavailable(ModelUnavailable):
    """The FID Inception weights could not be found, downloaded or read."""


def _offline_variables_set() -> list[str]:
    from ..offline import offline_variables_set

    return offline_variables_set()


def is_offline() -> bool:
    return bool(_offline_variables_set())


def cache_candidates() -> list[str]:
    """Where torch hub's cache ($TORCH_HOME/hub/checkpoints) would hold the file, ours first."""
    folder = os.path.join(torch.hub.get_dir(), "checkpoints")
    return [os.path.join(folder, name) for name in (WEIGHTS_FILE, PYTORCH_FID_WEIGHTS_FILE)]


def _how_to_provide() -> str:
    return (f"On a machine with internet download {WEIGHTS_URL}, then pass --inception-weights PATH "
            f"(Python: weights=PATH) or copy it to {cache_candidates()[0]}")


def _not_found(reason: str) -> InceptionWeightsUnavailable:
    return InceptionWeightsUnavailable(
        f"FID Inception weights {WEIGHTS_FILE} not found; looked in torch hub's cache for "
        f"{' and '.join(cache_candidates())}; {reason}. {_how_to_provide()}")


def _describe(err: BaseException) -> str:
    """Exception type and first line: the error stays one line."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


def _download(destination: str) -> str:
    try:
        os.makedirs(os.path.dirname(destination), exist_ok=True)
        # Writes to a temporary file and moves it into place only once the hash matches.
        torch.hub.download_url_to_file(WEIGHTS_URL, destination, hash_prefix=SHA256_PREFIX, progress=False)
    except Exception as err:  # network, HTTP, disk or hash failures all mean the same to the user
        raise _not_found(f"downloading it failed ({_describe(err)})") from err
    return destination


def resolve_inception_weights(weights: str | None = None) -> str:
    """The weights file to load: `weights` if given, else the cached file, else a download (never
    when HF_HUB_OFFLINE or L2VSD_OFFLINE is set)."""
    if weights is not None:
        if not os.path.isfile(weights):
            raise InceptionWeightsUnavailable(
                f"weights='{weights}' (--inception-weights): no such file; expected {WEIGHTS_FILE}. "
                f"{_how_to_provide()}")
        return weights
    for path in cache_candidates():
        if os.path.isfile(path):
            return path
    if is_offline():
        raise _not_found(f"offline ({', '.join(_offline_variables_set())} set), so not downloading")
    return _download(cache_candidates()[0])


def _is_counter(key: str) -> bool:
    # BatchNorm's batch counter: training bookkeeping, absent from the converted files.
    return key.endswith("num_batches_tracked")


def _check_state_dict(state, model: torch.nn.Module, path: str) -> None:
    def bad(problem: str) -> InceptionWeightsUnavailable:
        return InceptionWeightsUnavailable(f"'{path}' is not the FID Inception weights ({problem}); expected "
                                           f"{WEIGHTS_FILE}. {_how_to_provide()}")

    if not isinstance(state, dict):
        raise bad(f"holds a {type(state).__name__}, not a state dict")
    expected = {k: v.shape for k, v in model.state_dict().items() if not _is_counter(k)}
    given = {k for k in state if not _is_counter(k)}
    missing, unexpected = sorted(set(expected) - given), sorted(given - set(expected))
    if missing or unexpected:
        raise bad(f"{len(missing)} missing parameters {missing[:3]}, {len(unexpected)} unexpected {unexpected[:3]}")
    for key, shape in expected.items():
        if not isinstance(state[key], torch.Tensor) or state[key].shape != shape:
            raise bad(f"'{key}' has shape {tuple(getattr(state[key], 'shape', ()))}, expected {tuple(shape)}")


def load_fid_inception(weights: str | None = None, device="cpu", dtype: torch.dtype = torch.float32) -> FidInceptionV3:
    """The FID Inception-v3 with its weights (see resolve_inception_weights), in eval mode on `device`;
    its `weights_path` is the file loaded.
    `dtype`: float32 as torch-fidelity computes, or float64 throughout (a check on rounding)."""
    path = resolve_inception_weights(weights)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, not a torch file, or pickled objects weights_only refuses
        raise InceptionWeightsUnavailable(
            f"could not read '{path}' as PyTorch weights ({_describe(err)}); "
            f"a partial download? Delete it and fetch it again. {_how_to_provide()}") from err
    model = FidInceptionV3(dtype)
    _check_state_dict(state, model, path)
    model.load_state_dict(state, strict=False)  # keys checked above; only the batch counters may be absent
    model.weights_path = path  # which file was used (eval.json records it)
    return model.to(device)

"""Loads the Stable-Diffusion components through diffusers/transformers `from_pretrained`, from a
hub id or a local folder, and turns every way that can fail offline into one clear error."""
from __future__ import annotations

import os

import torch

from ..config import SHIPPED_SHAPES_FOLDERS

DEFAULT_PRETRAINED = "stabilityai/stable-diffusion-2-1-base"

# (subfolder, what from_pretrained needs there): named in the error when something is missing.
EXPECTED_FILES = (
    ("unet", "config.json + diffusion_pytorch_model.safetensors"),
    ("vae", "config.json + diffusion_pytorch_model.safetensors"),
    ("text_encoder", "config.json + model.safetensors"),
    ("tokenizer", "vocab.json, merges.txt, tokenizer_config.json"),
    ("scheduler", "scheduler_config.json"),
)


# `--pretrained shapes`: the small prior of the ground-truth benchmark, shipped in the package
# (l2vsd_ext/shapes/weights, version 3); `shapes-v2` is version 2 (config.SHIPPED_SHAPES_FOLDERS).
# Found by path, so this module does not import the shapes package.
SHAPES_ID = "shapes"


def shapes_weights_path(name: str = SHAPES_ID) -> str:
    """The folder of a shipped shapes prior ('shapes' or 'shapes-v2')."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return os.path.join(package, "shapes", SHIPPED_SHAPES_FOLDERS[name])


def resolve_shipped(id_or_path: str) -> str:
    """A shipped shapes prior's name turned into its folder; anything else unchanged."""
    return shapes_weights_path(id_or_path) if id_or_path in SHIPPED_SHAPES_FOLDERS else id_or_path


class PriorWeightsUnavailable(RuntimeError):
    """The prior's weights could not be loaded (offline, missing or corrupt files)."""


def _explain(id_or_path: str, cause: BaseException, offline: str | None = None) -> PriorWeightsUnavailable:
    looked_for = "; ".join(f"{sub}/: {files}" for sub, files in EXPECTED_FILES)
    local = os.path.isdir(id_or_path)
    where = f"local folder '{id_or_path}'" if local else f"'{id_or_path}' (not a local folder, so treated as a hub id)"
    # The first line of the cause, without its final full stop (ours follows).
    detail = (str(cause).strip().splitlines() or [""])[0].rstrip(".")
    why = f" (offline: {offline}; not in the Hugging Face cache)" if offline and not local else ""
    return PriorWeightsUnavailable(
        f"could not load the diffusion prior from {where}{why}: {type(cause).__name__}: {detail}. "
        f"Looked for {looked_for}. Download it on a machine with internet (`hf download "
        f"{DEFAULT_PRETRAINED if local else id_or_path} --local-dir DIR`) and pass --pretrained DIR, "
        f"or try the pipeline without weights with --pretrained tiny-random")


try:  # a corrupt .safetensors file raises this, not an OSError
    from safetensors import SafetensorError as _SafetensorError
except ImportError:  # pragma: no cover - older safetensors
    _SafetensorError = OSError


def is_pixel_space_folder(path: str) -> bool:
    """A local diffusers folder without a VAE (Imagen/DeepFloyd-IF style): its model_index.json
    names no vae (absent or [null, null]) and there is no vae/ folder."""
    import json

    index = os.path.join(path, "model_index.json")
    if not os.path.isfile(index) or os.path.isdir(os.path.join(path, "vae")):
        return False
    try:
        with open(index, encoding="utf-8") as fh:
            entry = json.load(fh).get("vae")
    except (OSError, ValueError):
        return False  # the normal loading path below reports the broken folder
    return entry is None or (isinstance(entry, list) and all(part is None for part in entry))


def load_components(id_or_path: str, dtype: torch.dtype):
    """Returns (unet, vae, text_encoder, tokenizer, scheduler), weights in `dtype`; vae is None for
    a pixel-space folder (see is_pixel_space_folder)."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    if id_or_path == "tiny-random":
        from .tiny import tiny_random_path

        id_or_path = tiny_random_path()
    elif id_or_path in SHIPPED_SHAPES_FOLDERS:
        id_or_path = shapes_weights_path(id_or_path)
        if not os.path.isfile(os.path.join(id_or_path, "model_index.json")):
            raise PriorWeightsUnavailable(
                f"the shipped shapes prior is missing from '{id_or_path}' (no model_index.json); "
                "reinstall the package or train it with `python -m l2vsd_ext.shapes.train`")
    local = os.path.isdir(id_or_path)
    if not local and os.path.sep in id_or_path and id_or_path.startswith((".", os.path.sep)):
        raise PriorWeightsUnavailable(f"--pretrained '{id_or_path}' looks like a path but is not a folder")
    # A local folder never touches the network; a hub id uses the cache, and the hub only when online.
    from ..offline import why_offline

    offline = None if local else why_offline()
    kwargs = {"local_files_only": True} if local or offline else {}
    try:
        unet = UNet2DConditionModel.from_pretrained(id_or_path, subfolder="unet", torch_dtype=dtype, **kwargs)
        vae = (None if local and is_pixel_space_folder(id_or_path) else
               AutoencoderKL.from_pretrained(id_or_path, subfolder="vae", torch_dtype=dtype, **kwargs))
        text_encoder = CLIPTextModel.from_pretrained(id_or_path, subfolder="text_encoder", dtype=dtype, **kwargs)
        tokenizer = CLIPTokenizer.from_pretrained(id_or_path, subfolder="tokenizer", **kwargs)
        scheduler = DDPMScheduler.from_pretrained(id_or_path, subfolder="scheduler", **kwargs)
    except (OSError, ValueError, EnvironmentError, _SafetensorError) as err:
        raise _explain(id_or_path, err, offline) from err
    return unet, vae, text_encoder, tokenizer, scheduler

"""The prior's training script at toy size: it writes a diffusers folder both loaders accept, is
deterministic for a seed, and resuming (here: lengthening a finished run) gives the same weights
as training straight through."""
import functools
import json
import os

import pytest
import torch
from safetensors.torch import load_file

import l2vsd_ext.shapes.dataset as dataset
from l2vsd_ext.shapes.field import truth_renderer
from l2vsd_ext.shapes.train import main as train_main

TOY = ["--views-per-object", "16", "--resolution", "16", "--vae-channels", "16", "16",
       "--unet-channels", "32", "32", "--text-width", "32", "--vae-steps", "2", "--ckpt-every", "1"]


@pytest.fixture
def coarse_truth(monkeypatch):
    # A coarse occupancy grid renders the toy data set faster; the images are the same objects.
    monkeypatch.setattr(dataset, "truth_renderer", functools.partial(truth_renderer, grid_resolution=32))


def _weights(folder):
    return {sub: load_file(os.path.join(folder, sub, name)) for sub, name in
            [("unet", "diffusion_pytorch_model.safetensors"), ("vae", "diffusion_pytorch_model.safetensors"),
             ("text_encoder", "model.safetensors")]}


def _same(a, b):
    return all(torch.equal(a[s][k], b[s][k]) for s in a for k in a[s])


def test_toy_training_is_deterministic_resumable_and_loadable(tmp_path, coarse_truth):
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert train_main(TOY + ["--unet-steps", "3", "--out", str(straight)]) == 0
    split.mkdir()
    (split / "dataset.npz").write_bytes((straight / "dataset.npz").read_bytes())  # skip re-rendering
    assert train_main(TOY + ["--unet-steps", "2", "--out", str(split)]) == 0
    assert train_main(TOY + ["--unet-steps", "3", "--out", str(split)]) == 0  # resumes at step 2
    a, b = _weights(straight / "pipeline"), _weights(split / "pipeline")
    assert _same(a, b)
    data = dataset.read_dataset(str(straight / "dataset.npz"))
    assert data["images"].shape == (8 * 16, 3, 16, 16) and data["alpha"].shape == (8 * 16, 1, 16, 16)
    assert data["alpha"].float().mean() > 0  # the objects are there, for re-compositing
    assert data["texts"][0] == "a snowman with an orange carrot nose, front view"

    from diffusers import StableDiffusionPipeline

    from l2vsd_ext.prior import DiffusionPrior

    prior = DiffusionPrior.from_pretrained(str(straight / "pipeline"), device="cpu")
    assert prior.vae_scale_factor == 2 and prior.unet.config.sample_size == 8
    pipe = StableDiffusionPipeline.from_pretrained(str(straight / "pipeline"))
    pipe.set_progress_bar_config(disable=True)
    image = pipe("a snowman with an orange carrot nose, front view", num_inference_steps=2,
                 output_type="np").images
    assert image.shape == (1, 16, 16, 3)
    settings = json.loads((straight / "pipeline" / "training_args.json").read_text())
    assert settings["seed"] == 0


def test_resume_refuses_other_settings(tmp_path, coarse_truth, capsys):
    out = tmp_path / "run"
    assert train_main(TOY + ["--unet-steps", "1", "--out", str(out)]) == 0
    capsys.readouterr()
    assert train_main(TOY + ["--unet-steps", "1", "--kl-weight", "0.5", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "other settings (kl_weight)" in err and len(err.splitlines()) == 1

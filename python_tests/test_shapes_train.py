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


PIXEL_TOY = ["--views-per-object", "16", "--resolution", "16", "--unet-channels", "16", "32",
             "--text-width", "32", "--pixel-space", "--balance-views", "--ckpt-every", "1"]


def test_pixel_space_toy_training_resumes_exactly_and_loads_without_vae(tmp_path, coarse_truth, capsys):
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert train_main(PIXEL_TOY + ["--unet-steps", "3", "--out", str(straight)]) == 0
    split.mkdir()
    (split / "dataset.npz").write_bytes((straight / "dataset.npz").read_bytes())
    assert train_main(PIXEL_TOY + ["--unet-steps", "2", "--out", str(split)]) == 0
    assert train_main(PIXEL_TOY + ["--unet-steps", "3", "--out", str(split)]) == 0
    folder = straight / "pipeline"
    assert not (folder / "vae").exists()
    unet = lambda f: load_file(str(f / "unet" / "diffusion_pytorch_model.safetensors"))  # noqa: E731
    a, b = unet(folder), unet(split / "pipeline")
    assert all(torch.equal(a[k], b[k]) for k in a)

    from l2vsd_ext.prior import DiffusionPrior

    prior = DiffusionPrior.from_pretrained(str(folder), device="cpu")
    assert prior.pixel_space and prior.unet.config.in_channels == 3
    assert prior.unet.config.sample_size == 16 and prior.alphas_cumprod[-1] < 1e-3
    capsys.readouterr()
    # No VAE to train: a VAE step count is a mistake, said in one line.
    assert train_main(PIXEL_TOY + ["--vae-steps", "5", "--out", str(tmp_path / "x")]) == 2
    assert "--pixel-space has no VAE" in capsys.readouterr().err


def test_balanced_draws_equalise_the_views():
    """--balance-views: every text is drawn equally often, however unequal its share of images."""
    from l2vsd_ext.shapes.train import balanced_draw_weights

    text_index = torch.tensor([0] * 10 + [1] * 30 + [2] * 5 + [3] * 55)[torch.randperm(100)]
    weights = balanced_draw_weights(text_index, 5)
    per_text = torch.zeros(4, dtype=torch.double).index_add_(0, text_index, weights)
    torch.testing.assert_close(per_text, torch.ones(4, dtype=torch.double))
    draws = torch.multinomial(weights, 40000, replacement=True, generator=torch.Generator().manual_seed(0))
    shares = torch.bincount(text_index[draws], minlength=4).double() / 40000
    torch.testing.assert_close(shares, torch.full((4,), 0.25, dtype=torch.double), atol=0.015, rtol=0)


def test_init_from_fine_tunes_a_prior_and_keeps_its_vae(tmp_path, coarse_truth, capsys):
    """--init-from: the UNet phase starts from another prior folder's weights (a v3 fine-tuned from
    version 2); 0 steps reproduce that folder, a step changes the UNet but never the VAE."""
    base = tmp_path / "base"
    assert train_main(TOY + ["--unet-steps", "2", "--out", str(base)]) == 0
    zero, tuned = tmp_path / "zero", tmp_path / "tuned"
    for out in (zero, tuned):
        out.mkdir()
        (out / "dataset.npz").write_bytes((base / "dataset.npz").read_bytes())
    fine = [a for a in TOY if a not in ("--vae-steps", "2")] + ["--init-from", str(base / "pipeline")]
    assert train_main(fine + ["--unet-steps", "0", "--out", str(zero)]) == 0
    assert _same(_weights(base / "pipeline"), _weights(zero / "pipeline"))
    vae_config = lambda f: json.loads((f / "vae" / "config.json").read_text())  # noqa: E731
    assert vae_config(zero / "pipeline")["scaling_factor"] == vae_config(base / "pipeline")["scaling_factor"]

    assert train_main(fine + ["--unet-steps", "2", "--balance-views", "--out", str(tuned)]) == 0
    a, b = _weights(base / "pipeline"), _weights(tuned / "pipeline")
    assert all(torch.equal(a["vae"][k], b["vae"][k]) for k in a["vae"])
    assert not all(torch.equal(a["unet"][k], b["unet"][k]) for k in a["unet"])
    # Resuming the finished fine-tune with the same --init-from is a no-op, not a restart.
    assert train_main(fine + ["--unet-steps", "2", "--balance-views", "--out", str(tuned)]) == 0
    assert _same(b, _weights(tuned / "pipeline"))

    capsys.readouterr()
    assert train_main(fine + ["--vae-steps", "3", "--out", str(tmp_path / "x")]) == 2
    assert "--init-from keeps its prior's VAE" in capsys.readouterr().err
    assert train_main(TOY[:-4] + ["--ckpt-every", "1", "--init-from", str(tmp_path), "--vae-steps", "0",
                                  "--out", str(tmp_path / "y")]) == 2
    assert "is not a prior folder" in capsys.readouterr().err
    wider = [a if a != "32" else "48" for a in fine]  # other UNet and text widths
    assert train_main(wider + ["--unet-steps", "1", "--out", str(tmp_path / "z")]) == 2
    err = capsys.readouterr().err.strip()
    assert "has other sizes than this run's" in err and len(err.splitlines()) == 1

"""A pixel-space diffusers folder (no VAE, Imagen/DeepFloyd-IF style) loads through the ordinary
DiffusionPrior.from_pretrained path: the UNet works on the image in [-1, 1], encode/decode are that
scaling, and it predicts exactly what diffusers' own UNet predicts from the same folder."""
import json
import os

import pytest
import torch

from l2vsd_ext.prior import DiffusionPrior, PriorWeightsUnavailable
from l2vsd_ext.prior.loading import is_pixel_space_folder


@pytest.fixture(scope="module")
def pixel_folder(tmp_path_factory):
    """A tiny pixel-space pipeline with random weights, written as the shapes trainer writes one."""
    from l2vsd_ext.shapes.models import (PriorSizes, build_scheduler, build_text_encoder,
                                         build_tokenizer, build_unet, save_pipeline)

    root = tmp_path_factory.mktemp("pixel")
    sizes = PriorSizes(resolution=16, unet_channels=(16, 32), text_width=32, pixel_space=True)
    torch.manual_seed(0)
    tokenizer = build_tokenizer(str(root / "tok"))
    text_encoder = build_text_encoder(sizes, len(tokenizer))
    return save_pipeline(str(root / "pipeline"), build_unet(sizes), None, text_encoder, tokenizer,
                         build_scheduler(pixel_space=True))


@pytest.fixture(scope="module")
def prior(pixel_folder):
    return DiffusionPrior.from_pretrained(pixel_folder, device="cpu", dtype=torch.float32)


def test_folder_has_no_vae_and_is_recognised(pixel_folder, tiny_sd_path):
    assert not os.path.exists(os.path.join(pixel_folder, "vae"))
    with open(os.path.join(pixel_folder, "model_index.json")) as fh:
        assert json.load(fh)["vae"] == [None, None]
    assert is_pixel_space_folder(pixel_folder)
    assert not is_pixel_space_folder(tiny_sd_path)  # a latent folder stays latent


def test_loads_as_pixel_space(prior):
    assert prior.pixel_space and prior.vae is None
    assert prior.vae_scale_factor == 1 and prior.latent_channels == 3
    assert prior.unet.config.sample_size == 16
    assert not any(p.requires_grad for p in prior.unet.parameters())


def test_encode_decode_are_the_identity_with_the_scaling(prior):
    images = torch.rand(2, 3, 16, 16, requires_grad=True)
    latents = prior.encode_images(images)
    torch.testing.assert_close(latents, images * 2 - 1)
    latents.sum().backward()  # differentiable, as SDS needs
    torch.testing.assert_close(images.grad, torch.full_like(images, 2.0))
    torch.testing.assert_close(prior.decode_latents(latents.detach()), images.detach())
    assert prior.decode_latents(torch.full((1, 3, 16, 16), 5.0)).max() == 1.0  # clamped to [0, 1]
    big = torch.rand(1, 3, 32, 32)
    assert prior.encode_images(big, resolution=16).shape == (1, 3, 16, 16)


def test_predictions_match_diffusers_own_unet(prior, pixel_folder):
    from diffusers import UNet2DConditionModel

    reference = UNet2DConditionModel.from_pretrained(pixel_folder, subfolder="unet",
                                                     local_files_only=True).eval()
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([10, 900])
    cond = prior.encode_text(["a duck, front view", "a duck, back view"])
    uncond = prior.encode_text(["", ""])
    with torch.no_grad():
        e_c = reference(x, t, encoder_hidden_states=cond).sample
        e_u = reference(x, t, encoder_hidden_states=uncond).sample
    torch.testing.assert_close(prior.predict_noise(x, t, cond, uncond, 3.0), e_u + 3.0 * (e_c - e_u))
    assert prior.alphas_cumprod[-1] < 1e-3  # DDPM's linear schedule ends (almost) at pure noise


def test_pixel_space_samplers_agree(prior, pixel_folder):
    from l2vsd_ext.shapes.sample import sample_images, sample_images_diffusers

    texts = ["a duck, front view", "a mug, back view"]
    ours = sample_images(prior, texts, steps=3, seed=1)
    theirs = sample_images_diffusers(pixel_folder, texts, steps=3, seed=1)
    assert ours.shape == (2, 3, 16, 16)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-4)


def test_v_prediction_folder_samples_as_diffusers_does(tmp_path):
    """A v-prediction pixel folder (shapes.train --prediction-type v_prediction): the package's
    sampler, which works in ε through DiffusionPrior.to_epsilon, draws what diffusers' DDIM draws
    with its own v handling."""
    from l2vsd_ext.shapes.models import (PriorSizes, build_scheduler, build_text_encoder,
                                         build_tokenizer, build_unet, save_pipeline)
    from l2vsd_ext.shapes.sample import sample_images, sample_images_diffusers

    sizes = PriorSizes(resolution=16, unet_channels=(16, 32), text_width=32, pixel_space=True)
    torch.manual_seed(1)
    tokenizer = build_tokenizer(str(tmp_path / "tok"))
    folder = save_pipeline(str(tmp_path / "pipeline"), build_unet(sizes), None,
                           build_text_encoder(sizes, len(tokenizer)), tokenizer,
                           build_scheduler(pixel_space=True, prediction_type="v_prediction"))
    v_prior = DiffusionPrior.from_pretrained(folder, device="cpu", dtype=torch.float32)
    assert v_prior.prediction_type == "v_prediction"
    texts = ["a duck, front view", "a mug, back view"]
    ours = sample_images(v_prior, texts, steps=4, seed=2)
    theirs = sample_images_diffusers(folder, texts, steps=4, seed=2)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-4)


def test_pixel_folder_with_broken_unet_is_one_clear_error(pixel_folder, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(pixel_folder, broken)
    os.remove(broken / "unet" / "config.json")
    with pytest.raises(PriorWeightsUnavailable, match="could not load the diffusion prior"):
        DiffusionPrior.from_pretrained(str(broken), device="cpu")


@pytest.mark.parametrize("mode", ["sds", "l2vsd"])
def test_a_run_distils_from_a_pixel_space_prior(pixel_folder, tmp_path, mode):
    """The whole run (SDS straight on the image; L²-VSD with its LoRA score model and lookahead on
    the pixel UNet) goes through with no VAE."""
    import json

    from tiny_run import make_tiny_run

    out = make_tiny_run(pixel_folder, tmp_path, steps=2, mode=mode)
    with open(os.path.join(out, "metrics.jsonl")) as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    assert [r["step"] for r in rows if "step" in r][-1] == 2
    numbers = [v for r in rows for v in r.values() if isinstance(v, float)]
    assert numbers and all(torch.isfinite(torch.tensor(numbers)))

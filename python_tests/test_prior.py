"""The diffusion prior, prompts and score model on a tiny SD pipeline loaded like real weights."""
import os

import pytest
import torch

from l2vsd_ext.prior import (DiffusionPrior, LoraScoreModel, PriorWeightsUnavailable,
                             PromptEmbeddings, TimestepSchedule)


@pytest.fixture
def prior(tiny_sd_path):
    return DiffusionPrior.from_pretrained(tiny_sd_path, device="cpu")


def test_loads_through_from_pretrained(prior):
    assert prior.dtype == torch.float32 and prior.vae_scale_factor == 8
    assert not any(p.requires_grad for p in prior.unet.parameters())
    assert prior.num_train_timesteps == 1000


def test_missing_local_weights_name_path_and_files(tmp_path):
    folder = tmp_path / "empty_model"
    folder.mkdir()
    with pytest.raises(PriorWeightsUnavailable) as info:
        DiffusionPrior.from_pretrained(str(folder), device="cpu")
    message = str(info.value)
    assert str(folder) in message and "unet/" in message and "--pretrained" in message


def test_hub_id_offline_is_a_clear_error():
    with pytest.raises(PriorWeightsUnavailable, match="stabilityai/stable-diffusion-2-1-base"):
        DiffusionPrior.from_pretrained("stabilityai/stable-diffusion-2-1-base", device="cpu")


def test_prompt_embeddings_are_view_dependent(prior):
    prompts = PromptEmbeddings(prior, "a red chair", negative_prompt="blurry")
    cond, uncond = prompts.get(["front", "back", "front"])
    assert cond.shape[0] == 3 and uncond.shape == cond.shape
    torch.testing.assert_close(cond[0], cond[2])
    assert not torch.allclose(cond[0], cond[1])
    with pytest.raises(ValueError, match="view labels"):
        prompts.get(["diagonal"])
    with pytest.raises(ValueError, match="prompt"):
        PromptEmbeddings(prior, "  ")


def test_encode_images_is_differentiable_and_sized(prior):
    images = torch.rand(2, 3, 16, 16, requires_grad=True)
    latents = prior.encode_images(images, resolution=32)
    assert latents.shape == (2, 4, 4, 4)
    latents.sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    decoded = prior.decode_latents(latents.detach())
    assert decoded.shape == (2, 3, 32, 32) and decoded.min() >= 0 and decoded.max() <= 1


def test_cfg_combines_conditional_and_unconditional(prior):
    prompts = PromptEmbeddings(prior, "a red chair")
    cond, uncond = prompts.get(["front"])
    noisy, t = torch.randn(1, 4, 8, 8), torch.tensor([400])
    e1 = prior.predict_noise(noisy, t, cond, uncond, 1.0)
    e0 = prior.predict_noise(noisy, t, cond, uncond, 0.0)
    e75 = prior.predict_noise(noisy, t, cond, uncond, 7.5)
    torch.testing.assert_close(e75, e0 + 7.5 * (e1 - e0), rtol=1e-4, atol=1e-5)


def test_score_model_starts_as_prior_and_learns_without_touching_it(prior):
    prompts = PromptEmbeddings(prior, "a red chair")
    cond, _ = prompts.get(["side"])
    noisy, t = torch.randn(1, 4, 8, 8), torch.tensor([300])
    with prior.base_model():
        eps_pre_before = prior.unet_forward(noisy, t, cond)
    # with the camera MLP's output at zero (and LoRA B at zero) ε_φ starts as ε_pre
    score = LoraScoreModel(prior, rank=4, camera_init="zero")
    c2w = torch.randn(1, 4, 4)
    torch.testing.assert_close(score.predict_noise(noisy, t, cond, c2w), eps_pre_before)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        loss = score.step(torch.randn(1, 4, 8, 8), c2w, cond, gen)
        assert torch.isfinite(torch.tensor(loss))
    assert not torch.allclose(score.predict_noise(noisy, t, cond, c2w), eps_pre_before)
    with prior.base_model():
        torch.testing.assert_close(prior.unet_forward(noisy, t, cond), eps_pre_before)
    # after leaving base_model() the adapter and camera embedding are back
    assert not torch.allclose(score.predict_noise(noisy, t, cond, c2w), eps_pre_before)


def test_score_model_defaults_are_threestudios(prior):
    """threestudio's ProlificDreamer VSD: AdamW lr 1e-4, betas (0.9, 0.99), eps 1e-15, weight decay
    0.01; LoRA A ~ N(0, 1/r²) (diffusers' LoRA layers), B = 0; the camera MLP at PyTorch's init."""
    score = LoraScoreModel(prior, rank=4)
    group = score.optimizer.param_groups[0]
    assert (group["lr"], group["betas"], group["eps"], group["weight_decay"]) == (1e-4, (0.9, 0.99), 1e-15, 0.01)
    a = torch.cat([p.flatten() for n, p in score.lora_params.items() if "lora_A" in n])
    b = torch.cat([p.flatten() for n, p in score.lora_params.items() if "lora_B" in n])
    assert abs(a.std().item() - 0.25) < 0.03 and abs(a.mean().item()) < 0.03
    assert torch.count_nonzero(b) == 0
    camera_out = score.camera_params["class_embedding.linear_2.weight"]
    assert camera_out.abs().max() > 0
    with pytest.raises(ValueError, match="lora_init"):
        LoraScoreModel(prior, lora_init="uniform")


def test_score_model_legacy_init(prior):
    """lora_init='kaiming', camera_init='zero': this package's settings before threestudio's."""
    score = LoraScoreModel(prior, rank=4, lora_init="kaiming", camera_init="zero")
    a = torch.cat([p.flatten() for n, p in score.lora_params.items() if "lora_A" in n])
    assert a.std().item() < 0.2
    assert score.camera_params["class_embedding.linear_2.weight"].abs().max() == 0


def test_score_model_state_round_trip(prior):
    score = LoraScoreModel(prior)
    cond = PromptEmbeddings(prior, "a cup").get(["front"])[0]
    score.step(torch.randn(1, 4, 8, 8), torch.randn(1, 4, 4), cond, torch.Generator().manual_seed(1))
    state = score.state_dict()
    with torch.no_grad():
        for p in score.parameters():
            p.add_(1.0)
    score.load_state_dict(state)
    for name, p in {**score.lora_params, **score.camera_params}.items():
        assert torch.equal(p, state["params"][name]), name


def test_timestep_schedule_bounds_and_annealing():
    schedule = TimestepSchedule(1000, 0.02, 0.98, max_step_after=0.5, anneal_at=0.5)
    gen = torch.Generator().manual_seed(0)
    early = schedule.sample(2000, 0.1, gen)
    late = schedule.sample(2000, 0.9, gen)
    assert early.min() >= 20 and early.max() <= 980 and early.max() > 900
    assert late.min() >= 20 and late.max() <= 500
    with pytest.raises(ValueError, match="min_step"):
        TimestepSchedule(1000, min_step=0.9, max_step=0.5)

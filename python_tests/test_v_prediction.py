"""A v-prediction prior (Stable Diffusion 2.1 768-v's kind): every score the modes combine is an
ε (ε = √ᾱ v + √(1−ᾱ) x_t, and √ᾱ v̇ for the JVP's tangent), while the LoRA fits v as in
threestudio. Without the conversion, ε_pre − ε_φ would be √ᾱ-scaled v differences."""
import copy
import json
import os
import shutil

import pytest
import torch

from l2vsd_ext.distill import GuidanceContext, GuidanceOptions, make_mode
from l2vsd_ext.prior import DiffusionPrior, LoraScoreModel, PromptEmbeddings, TimestepSchedule


def copy_with_prediction_type(source: str, root: str, prediction_type: str) -> str:
    """A copy of the pipeline at `source` whose scheduler declares `prediction_type`."""
    shutil.copytree(source, root)
    config_path = os.path.join(root, "scheduler", "scheduler_config.json")
    with open(config_path) as fh:
        config = json.load(fh)
    config["prediction_type"] = prediction_type
    with open(config_path, "w") as fh:
        json.dump(config, fh)
    return root


@pytest.fixture(scope="module")
def v_sd_path(tiny_sd_path, tmp_path_factory):
    return copy_with_prediction_type(tiny_sd_path, str(tmp_path_factory.mktemp("tiny_v") / "pipe"),
                                     "v_prediction")


@pytest.fixture
def setup64(v_sd_path):
    prior = DiffusionPrior.from_pretrained(v_sd_path, dtype=torch.float64, device="cpu")
    prompts = PromptEmbeddings(prior, "a wooden boat")
    score = LoraScoreModel(prior, rank=4, lr=1e-3)
    gen = torch.Generator().manual_seed(7)
    ctx = GuidanceContext(torch.randn(2, 4, 8, 8, dtype=torch.float64, generator=gen),
                          torch.randn(2, 4, 4, dtype=torch.float64, generator=gen), ["front", "back"], 0.3)
    score.step(ctx.latents, ctx.c2w, prompts.plain(2), torch.Generator().manual_seed(4))
    return prior, prompts, score, TimestepSchedule(prior.num_train_timesteps), ctx


def test_prior_returns_epsilon_from_v(setup64):
    prior, prompts, *_ = setup64
    assert prior.prediction_type == "v_prediction"
    gen = torch.Generator().manual_seed(1)
    noisy = torch.randn(2, 4, 8, 8, dtype=torch.float64, generator=gen)
    t = torch.tensor([100, 900])
    cond, uncond = prompts.plain(2), prompts.plain(2) * 0.5
    eps = prior.predict_noise(noisy, t, cond, uncond, 3.0)
    with prior.base_model():
        v_c = prior.unet_forward(noisy, t, cond)
        v_u = prior.unet_forward(noisy, t, uncond)
    a = prior.alphas_cumprod[t].view(-1, 1, 1, 1).double()
    want = a.sqrt() * (v_u + 3.0 * (v_c - v_u)) + (1 - a).sqrt() * noisy
    torch.testing.assert_close(eps, want, rtol=1e-12, atol=1e-12)
    assert (eps - (v_u + 3.0 * (v_c - v_u))).abs().max() > 0.1  # the conversion did something


def test_lora_fits_v_and_predicts_epsilon(setup64):
    prior, prompts, score, _, ctx = setup64
    gen = torch.Generator().manual_seed(2)
    noisy = torch.randn(2, 4, 8, 8, dtype=torch.float64, generator=gen)
    t = torch.tensor([300, 700])
    raw = score.raw_prediction(noisy, t, prompts.plain(2), ctx.c2w)
    eps = score.predict_noise(noisy, t, prompts.plain(2), ctx.c2w)
    torch.testing.assert_close(eps, prior.to_epsilon(raw, noisy, t), rtol=1e-12, atol=1e-12)
    latents, noise = ctx.latents, torch.randn(ctx.latents.shape, dtype=torch.float64, generator=gen)
    target = score.training_target(latents, noise, t)
    torch.testing.assert_close(target, prior.scheduler.get_velocity(latents, noise, t))


def test_linearised_lookahead_is_the_epsilon_taylor_expansion(setup64):
    """ε(φ − ηg) − ε_φ − ε_first = O(η²) with every term in ε: a tangent left in v (or the primal
    converted but the tangent not) would leave an O(η) remainder."""
    state = setup64[2].state_dict()
    out = {}
    for eta in (1e-1, 1e-2):
        setup64[2].load_state_dict(copy.deepcopy(state))
        prior, prompts, score, schedule, ctx = setup64
        m = make_mode("l2vsd", prior, prompts, schedule, score,
                      GuidanceOptions(eta=eta, high_order_diagnostics=True), seed=3)
        out[eta] = m.gradient(ctx)[1]
    first_ratio = float(out[1e-2]["eps_first_norm"] / out[1e-1]["eps_first_norm"])
    high_ratio = float(out[1e-2]["eps_high_taylor_norm"] / out[1e-1]["eps_high_taylor_norm"])
    assert out[1e-1]["eps_high_taylor_norm"] > 0
    assert abs(first_ratio - 0.1) < 1e-6
    assert 0.007 < high_ratio < 0.013, high_ratio


def test_other_prediction_types_are_refused(tiny_sd_path, tmp_path):
    root = copy_with_prediction_type(tiny_sd_path, str(tmp_path / "pipe"), "sample")
    with pytest.raises(ValueError, match="prediction_type"):
        DiffusionPrior.from_pretrained(root, device="cpu")

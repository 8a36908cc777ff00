"""Guidance modes on the tiny pipeline: the equivalences that define them."""
import copy

import pytest
import torch

from l2vsd_ext.distill import GuidanceContext, GuidanceOptions, make_mode
from l2vsd_ext.prior import DiffusionPrior, LoraScoreModel, PromptEmbeddings, TimestepSchedule


@pytest.fixture
def setup(tiny_sd_path):
    prior = DiffusionPrior.from_pretrained(tiny_sd_path, device="cpu")
    prompts = PromptEmbeddings(prior, "a wooden boat")
    score = LoraScoreModel(prior, rank=4)
    # One LoRA step first, so B != 0 and every LoRA parameter has a non-zero gradient.
    score.step(torch.randn(2, 4, 8, 8), torch.randn(2, 4, 4), prompts.get(["front", "side"])[0],
               torch.Generator().manual_seed(5))
    schedule = TimestepSchedule(prior.num_train_timesteps)
    ctx = GuidanceContext(torch.randn(2, 4, 8, 8), torch.randn(2, 4, 4), ["front", "back"], 0.3)
    return prior, prompts, score, schedule, ctx


def mode(name, setup, seed=3, **options):
    prior, prompts, score, schedule, _ = setup
    return make_mode(name, prior, prompts, schedule, score, GuidanceOptions(**options), seed=seed)


def test_unknown_mode_and_missing_score_model(setup):
    prior, prompts, _, schedule, _ = setup
    with pytest.raises(ValueError, match="unknown mode"):
        make_mode("vds", prior, prompts, schedule)
    with pytest.raises(ValueError, match="score model"):
        make_mode("vsd", prior, prompts, schedule, None)


def test_sds_gradient_is_weighted_residual(setup):
    ctx = setup[4]
    grad, stats = mode("sds", setup).gradient(ctx)
    assert grad.shape == ctx.latents.shape and torch.isfinite(grad).all()
    assert stats["nonfinite"] == 0 and 20 <= stats["t"] <= 980


def test_l2vsd_with_eta_zero_gives_the_vsd_gradient(setup):
    score, ctx = setup[2], setup[4]
    state = copy.deepcopy(score.state_dict())
    grad_vsd, _ = mode("vsd", setup).gradient(ctx)
    score.load_state_dict(state)
    grad_l2, stats = mode("l2vsd", setup, eta=0.0).gradient(ctx)
    assert stats["delta_eps_first_norm"] == 0.0
    # Same θ noise stream; ε_φ comes from the JVP engine's primal instead of a plain forward
    # (its attention is the kernel's, not SDPA's), so the two differ by float32 rounding only:
    # ~4e-7 of the gradient's norm, elements up to ~1e-6 (an element-wise atol of 1e-6 was flaky).
    diff = grad_l2 - grad_vsd
    assert (diff.norm() / grad_vsd.norm()).item() <= 1e-5
    assert diff.abs().max().item() <= 1e-5 * grad_vsd.abs().max().item()


def test_lvsd_equals_a_lora_step_then_the_vsd_gradient(setup):
    score, ctx = setup[2], setup[4]
    state = copy.deepcopy(score.state_dict())
    grad_lvsd, _ = mode("lvsd", setup, lora_steps=2).gradient(ctx)
    score.load_state_dict(state)
    vsd = mode("vsd", setup, lora_steps=2)
    vsd.lora_steps(ctx, 2)
    grad_manual, _ = vsd.gradient(ctx)
    assert torch.equal(grad_lvsd, grad_manual)


def test_l2vsd_correction_is_the_first_order_lookahead(tiny_sd_path):
    """ε_lin − ε_φ = J(−ηg) matches ε_{φ−ηg} − ε_φ up to O(η²) (float64, so that the finite
    difference is not drowned in roundoff)."""
    prior = DiffusionPrior.from_pretrained(tiny_sd_path, dtype=torch.float64, device="cpu")
    prompts = PromptEmbeddings(prior, "a wooden boat")
    score = LoraScoreModel(prior, rank=4)
    ctx = GuidanceContext(torch.randn(2, 4, 8, 8, dtype=torch.float64),
                          torch.randn(2, 4, 4, dtype=torch.float64), ["front", "back"], 0.3)
    cond, _ = prompts.get(ctx.view_labels)
    score.step(ctx.latents, ctx.c2w, cond, torch.Generator().manual_seed(4))  # B != 0
    l2 = make_mode("l2vsd", prior, prompts, TimestepSchedule(1000), score, GuidanceOptions(), seed=0)
    score.compute_gradient(ctx.latents, ctx.c2w, cond, torch.Generator().manual_seed(9))
    noisy, t = torch.randn(2, 4, 8, 8, dtype=torch.float64), torch.tensor([300, 600])
    grads = {n: p.grad.clone() for n, p in score.lora_params.items()}
    errors = []
    for eta in (1e-1, 1e-2):
        l2.options.eta = eta
        _, delta = l2.lookahead_noise(noisy, t, ctx)
        with torch.no_grad():
            base = score.predict_noise(noisy, t, cond, ctx.c2w)
            for n, p in score.lora_params.items():
                p.sub_(eta * grads[n])
            moved = score.predict_noise(noisy, t, cond, ctx.c2w)
            for n, p in score.lora_params.items():
                p.add_(eta * grads[n])
        finite = moved - base
        assert delta.norm() > 0
        errors.append(float((delta - finite).norm() / finite.norm()))
    assert errors[1] < 0.2 * errors[0] and errors[1] < 1e-2, errors


def test_l2vsd_after_step_applies_the_same_gradient(setup):
    score, ctx = setup[2], setup[4]
    l2 = mode("l2vsd", setup, eta=0.01)
    l2.gradient(ctx)
    expected = {n: p.grad.clone() for n, p in score.lora_params.items()}
    before = {n: p.detach().clone() for n, p in score.lora_params.items()}
    l2.after_step(ctx)
    moved = [n for n in before if not torch.equal(before[n], score.lora_params[n])]
    assert moved and all(score.lora_params[n].grad is None for n in before)
    # Adam's first step moves each weight by -lr * sign(g) where g is non-zero.
    n = moved[0]
    step = (score.lora_params[n] - before[n])
    nz = expected[n].abs() > 1e-12
    torch.testing.assert_close(step[nz].sign(), -expected[n][nz].sign())


def test_last_layer_lookahead_touches_only_the_last_lora_layer(setup):
    ctx = setup[4]
    full = mode("l2vsd", setup, eta=0.1)
    last = mode("l2vsd", setup, eta=0.1, last_layer=True)
    prompts, score = setup[1], setup[2]
    score.compute_gradient(ctx.latents, ctx.c2w, prompts.get(ctx.view_labels)[0],
                           torch.Generator().manual_seed(2))
    noisy, t = torch.randn(2, 4, 8, 8), torch.tensor([500, 500])
    _, d_full = full.lookahead_noise(noisy, t, ctx)
    _, d_last = last.lookahead_noise(noisy, t, ctx)
    assert d_last.norm() > 0 and not torch.allclose(d_full, d_last)


def test_nonfinite_gradients_are_zeroed_and_counted(setup):
    ctx = setup[4]
    sds = mode("sds", setup)
    bad = GuidanceContext(ctx.latents.clone(), ctx.c2w, ctx.view_labels, 0.1)
    bad.latents[0, 0, 0, 0] = float("nan")
    grad, stats = sds.gradient(bad)
    assert torch.isfinite(grad).all() and stats["nonfinite"] >= 1
    assert sds.nonfinite_count == stats["nonfinite"]

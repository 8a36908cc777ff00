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
    assert stats["eps_first_norm"] == 0.0 and stats["kappa"] == 0.0
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


@pytest.fixture
def setup64(tiny_sd_path):
    """The tiny pipeline in float64, a LoRA step taken (B != 0), the camera MLP at its default init."""
    prior = DiffusionPrior.from_pretrained(tiny_sd_path, dtype=torch.float64, device="cpu")
    prompts = PromptEmbeddings(prior, "a wooden boat")
    score = LoraScoreModel(prior, rank=4, lr=1e-3)
    gen = torch.Generator().manual_seed(7)
    ctx = GuidanceContext(torch.randn(2, 4, 8, 8, dtype=torch.float64, generator=gen),
                          torch.randn(2, 4, 4, dtype=torch.float64, generator=gen), ["front", "back"], 0.3)
    score.step(ctx.latents, ctx.c2w, prompts.plain(2), torch.Generator().manual_seed(4))
    return prior, prompts, score, TimestepSchedule(prior.num_train_timesteps), ctx


def run_from(setup, state, name, **options):
    """(gradient, stats, mode) of one iteration from the score model's `state`, φ left at φ_i+1."""
    setup[2].load_state_dict(copy.deepcopy(state))
    m = mode(name, setup, **options)
    grad, stats = m.gradient(setup[4])
    return grad, stats, m


def test_high_order_term_along_the_sgd_tangent_scales_as_eta_squared(setup64):
    """ε(φ − ηg) − ε_φ − J(−ηg) = O(η²) (float64): the Taylor remainder of the lookahead, and
    ε_first linear in η."""
    state = setup64[2].state_dict()
    out = {eta: run_from(setup64, state, "l2vsd", eta=eta, high_order_diagnostics=True)[1]
           for eta in (1e-1, 1e-2)}
    first_ratio = float(out[1e-2]["eps_first_norm"] / out[1e-1]["eps_first_norm"])
    high_ratio = float(out[1e-2]["eps_high_taylor_norm"] / out[1e-1]["eps_high_taylor_norm"])
    assert out[1e-1]["eps_first_norm"] > 0 and out[1e-1]["eps_high_taylor_norm"] > 0
    assert abs(first_ratio - 0.1) < 1e-6
    assert 0.007 < high_ratio < 0.013, high_ratio
    # the paper's definition, after the real optimiser step, is another quantity (not O(η²))
    assert out[1e-2]["eps_high_step_norm"] > 10 * out[1e-2]["eps_high_taylor_norm"]


def test_optimizer_direction_is_the_actual_update(setup64):
    """--lookahead-direction optimizer: v = φ_i+1 − φ_i, so both definitions of ε_high coincide,
    and the linearisation of the real step leaves a small remainder."""
    state = setup64[2].state_dict()
    _, stats, _ = run_from(setup64, state, "l2vsd", lookahead_direction="optimizer",
                           high_order_diagnostics=True)
    assert stats["eps_first_norm"] > 0
    assert stats["eps_high_step_norm"] == stats["eps_high_taylor_norm"]
    assert stats["eps_high_step_norm"] < 0.1 * stats["eps_first_norm"]


def test_lookahead_tangent_covers_the_camera_mlp(setup64):
    state = setup64[2].state_dict()
    _, with_cam, m_cam = run_from(setup64, state, "l2vsd", eta=0.1)
    _, without, m_lora = run_from(setup64, state, "l2vsd", eta=0.1, lookahead_camera=False)
    camera_part = m_cam.last_eps_first - m_lora.last_eps_first
    assert camera_part.norm() > 0.01 * m_lora.last_eps_first.norm()
    # the camera part is the JVP along the camera MLP's share of −ηg alone
    _, last, m_last = run_from(setup64, state, "l2vsd", eta=0.1, last_layer=True)
    assert 0 < last["eps_first_norm"] < without["eps_first_norm"]


def test_eta_relative_sets_kappa(setup64):
    state = setup64[2].state_dict()
    for direction in ("sgd", "optimizer"):
        _, stats, _ = run_from(setup64, state, "l2vsd", eta_relative=0.05, lookahead_direction=direction)
        assert abs(float(stats["kappa"]) - 0.05) < 1e-9
        assert stats["lookahead_scale"] > 0


def test_random_direction_control_has_the_updates_size_but_not_its_direction(setup64):
    """--lookahead-direction random: per tensor, the optimiser update's norm in a Gaussian direction
    from the mode's own stream; θ's noise and the LoRA step are those of the optimizer direction."""
    from l2vsd_ext.distill.lookahead import Lookahead

    prior, prompts, score, _, ctx = setup64
    state = copy.deepcopy(score.state_dict())
    tangents = {}
    for direction in ("optimizer", "random"):
        score.load_state_dict(copy.deepcopy(state))
        look = Lookahead(score, GuidanceOptions(lookahead_direction=direction),
                         torch.Generator().manual_seed(11))
        look.prepare(ctx.latents, ctx.c2w, prompts.plain(2), torch.Generator().manual_seed(4))
        tangents[direction] = look.tangent()
    opt, rnd = tangents["optimizer"], tangents["random"]
    assert opt.keys() == rnd.keys() and any(n in score.camera_params for n in rnd)
    for n in opt:
        torch.testing.assert_close(rnd[n].norm(), opt[n].norm(), rtol=1e-12, atol=0)
    flat = lambda v: torch.cat([t.flatten() for t in v.values()])  # noqa: E731
    cosine = torch.nn.functional.cosine_similarity(flat(opt), flat(rnd), dim=0)
    assert abs(float(cosine)) < 0.2, float(cosine)

    grad_opt, s_opt, _ = run_from(setup64, state, "l2vsd", eta_relative=0.05, lookahead_direction="optimizer")
    after_opt = copy.deepcopy(score.state_dict())
    grad_rnd, s_rnd, m = run_from(setup64, state, "l2vsd", eta_relative=0.05, lookahead_direction="random")
    assert s_rnd["t"] == s_opt["t"] and abs(float(s_rnd["kappa"]) - 0.05) < 1e-9
    assert not torch.allclose(grad_rnd, grad_opt)
    after = score.state_dict()
    assert all(torch.equal(after_opt["params"][n], after["params"][n]) for n in after["params"])
    # The stream is part of the mode's saved state: restoring it replays the same direction.
    saved = m.rng_state()
    score.load_state_dict(copy.deepcopy(state))
    first, _ = m.gradient(ctx)
    score.load_state_dict(copy.deepcopy(state))
    m.load_rng_state(saved)
    again, _ = m.gradient(ctx)
    assert torch.equal(first, again)


def test_hlvsd_is_lvsd_less_the_first_order_term(setup64, monkeypatch):
    """ε_HL = ε_φi + ε_high = ε_LVSD − ε_first (Appendix C.4), with w(t) = 1 to compare ε directly."""
    prior, state = setup64[0], setup64[2].state_dict()
    monkeypatch.setattr(prior, "weight", lambda t: torch.ones(t.shape[0], 1, 1, 1, dtype=torch.float64))
    grad_hl, _, hl = run_from(setup64, state, "hlvsd", eta=0.1)
    after_hl = {n: p.detach().clone() for n, p in setup64[2].lora_params.items()}
    grad_lv, _, _ = run_from(setup64, state, "lvsd")
    # grad = ε_pre − ε_model: grad_HL − grad_LVSD = ε_first
    torch.testing.assert_close(grad_hl - grad_lv, hl.last_eps_first, rtol=1e-9, atol=1e-12)
    assert hl.last_eps_first.norm() > 0
    # both end at the same φ_i+1
    assert all(torch.equal(after_hl[n], p) for n, p in setup64[2].lora_params.items())


def test_diagnostics_change_nothing_the_run_computes(setup64):
    state = setup64[2].state_dict()
    grad_a, _, _ = run_from(setup64, state, "l2vsd", eta=0.1)
    after_a = copy.deepcopy(setup64[2].state_dict())
    grad_b, stats, _ = run_from(setup64, state, "l2vsd", eta=0.1, high_order_diagnostics=True)
    after_b = setup64[2].state_dict()
    assert "eps_high_step_norm" in stats
    assert torch.equal(grad_a, grad_b)
    assert all(torch.equal(after_a["params"][n], after_b["params"][n]) for n in after_a["params"])


def test_l2vsd_takes_the_optimizer_step_with_g_at_phi_i(setup):
    prompts, score, ctx = setup[1], setup[2], setup[4]
    state = copy.deepcopy(score.state_dict())
    # the mode's LoRA stream is seeded seed + 1: g from the same draw
    score.compute_gradient(ctx.latents, ctx.c2w, prompts.plain(2), torch.Generator().manual_seed(4))
    expected = {n: p.grad.clone() for n, p in score.lora_params.items()}
    score.load_state_dict(copy.deepcopy(state))
    before = {n: p.detach().clone() for n, p in score.lora_params.items()}
    l2 = mode("l2vsd", setup, eta=0.01)
    l2.gradient(ctx)
    moved = [n for n in before if not torch.equal(before[n], score.lora_params[n])]
    assert moved and all(score.lora_params[n].grad is None for n in before)
    n = moved[0]
    step = score.lora_params[n] - before[n]
    nz = expected[n].abs() > 1e-12
    # AdamW: a step against g (plus the small weight decay)
    agree = (step[nz].sign() == -expected[n][nz].sign()).float().mean()
    assert agree > 0.95
    after = {n: p.detach().clone() for n, p in score.lora_params.items()}
    l2.after_step(ctx)  # γ = 1: nothing more
    assert all(torch.equal(after[n], score.lora_params[n]) for n in after)


def test_score_model_text_is_the_plain_prompt_by_default(setup):
    prompts, ctx = setup[1], setup[4]
    plain = mode("vsd", setup).score_text(ctx)
    view = mode("vsd", setup, lora_text="view").score_text(ctx)
    assert torch.equal(plain, prompts.plain(2))
    assert torch.equal(view, prompts.get(ctx.view_labels)[0])
    assert not torch.equal(plain, view)


def test_nonfinite_gradients_are_zeroed_and_counted(setup):
    ctx = setup[4]
    sds = mode("sds", setup)
    bad = GuidanceContext(ctx.latents.clone(), ctx.c2w, ctx.view_labels, 0.1)
    bad.latents[0, 0, 0, 0] = float("nan")
    grad, stats = sds.gradient(bad)
    assert torch.isfinite(grad).all() and stats["nonfinite"] >= 1
    assert sds.nonfinite_count == stats["nonfinite"]


def test_l2vsd_interrupted_after_the_lora_step_leaves_phi_at_phi_next(setup, monkeypatch):
    """An exception between the LoRA step and the θ gradient (Ctrl-C, a failing forward) must
    leave φ at φ_{i+1}, consistent with the optimiser state that already stepped."""
    m = mode("l2vsd", setup, eta=0.1)
    score, ctx = setup[2], setup[4]
    twin = copy.deepcopy(score)  # takes the same step by hand
    twin.step(ctx.latents, ctx.c2w, m.score_text(ctx), copy.deepcopy(m.lora_rng))

    def broken(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(m, "linearised", broken)
    with pytest.raises(KeyboardInterrupt):
        m.gradient(ctx)
    for (name, p), q in zip(score.lora_params.items(), twin.lora_params.values()):
        assert torch.equal(p, q), name

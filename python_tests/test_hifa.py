"""HiFA (issue 22): the image-space score as an option of every mode, the sqrt timestep schedule
(pinned on resume), the preset and its validation, and the z-variance wiring (stubbed here; the
fused compositing op's output plugs in when present)."""
import copy
import json

import pytest
import torch
import yaml

from l2vsd_ext import trainer as trainer_module
from l2vsd_ext.config import LEGACY_VALUES, ConfigError, RunConfig, from_saved, validate
from l2vsd_ext.distill import GuidanceContext, GuidanceOptions, make_mode
from l2vsd_ext.distill.hifa import ScoreTerms, ZVarianceAdapter, image_gradient, image_loss
from l2vsd_ext.prior import DiffusionPrior, LoraScoreModel, PromptEmbeddings, SqrtTimestepSchedule, \
    TimestepSchedule
from l2vsd_ext.run import main, resolve_config
from tiny_run import SMALL_SCENE


@pytest.fixture
def setup(tiny_sd_path):
    prior = DiffusionPrior.from_pretrained(tiny_sd_path, device="cpu")
    prompts = PromptEmbeddings(prior, "a wooden boat")
    score = LoraScoreModel(prior, rank=4)
    score.step(torch.randn(2, 4, 8, 8), torch.randn(2, 4, 4), prompts.plain(2), torch.Generator().manual_seed(5))
    ctx = GuidanceContext(torch.randn(2, 4, 8, 8), torch.randn(2, 4, 4), ["front", "back"], 0.3)
    return prior, prompts, score, TimestepSchedule(prior.num_train_timesteps), ctx


def mode(name, setup, **options):
    prior, prompts, score, schedule, _ = setup
    return make_mode(name, prior, prompts, schedule, score, GuidanceOptions(**options), seed=3)


def hand_decode(prior, latents):
    images = prior.vae.decode(latents / prior.vae.config.scaling_factor).sample
    return ((images + 1) / 2).clamp(0, 1)


def test_image_gradient_is_zero_when_the_model_score_is_the_target(setup):
    prior = setup[0]
    noisy, eps = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    terms = ScoreTerms(noisy, torch.tensor([300, 700]), eps, eps.clone())
    grad = image_gradient(prior, terms, torch.rand(2, 3, 64, 64))
    assert grad.shape == (2, 3, 64, 64) and torch.count_nonzero(grad) == 0
    # and not zero otherwise (the test above is not vacuous)
    other = ScoreTerms(noisy, terms.t, eps, torch.randn(2, 4, 8, 8))
    assert image_gradient(prior, other, torch.rand(2, 3, 64, 64)).abs().max() > 0


@pytest.mark.parametrize("name", ["vsd", "sds", "l2vsd"])
def test_image_gradient_is_the_hand_formula(setup, name):
    prior, ctx = setup[0], setup[4]
    m = mode(name, setup, eta=0.0) if name == "l2vsd" else mode(name, setup)
    m.gradient(ctx)
    terms = m.last_terms
    assert (terms.eps_model is None) == (name == "sds")
    render = torch.rand(2, 3, 64, 64)
    grad = image_gradient(prior, terms, render)
    with torch.no_grad():
        a = prior.alphas_cumprod[terms.t].view(-1, 1, 1, 1)
        alpha, sigma = a.sqrt(), (1 - a).sqrt()
        pre = hand_decode(prior, (terms.noisy - sigma * terms.eps_pre) / alpha)
        model = render if name == "sds" else hand_decode(prior, (terms.noisy - sigma * terms.eps_model) / alpha)
        expected = (1 - a) * alpha / sigma * (model - pre)
    torch.testing.assert_close(grad, expected, rtol=1e-5, atol=1e-6)
    # the MSE trick gives weight · grad on the render
    x = render.clone().requires_grad_(True)
    image_loss(x, grad, 0.01).backward()
    torch.testing.assert_close(x.grad, 0.01 * grad / 2)  # per-sample sum over a batch of 2


def test_l2hifa_at_eta_zero_is_vsd_hifa(setup):
    prior, score, ctx = setup[0], setup[2], setup[4]
    state = copy.deepcopy(score.state_dict())
    vsd = mode("vsd", setup)
    vsd.gradient(ctx)
    score.load_state_dict(state)
    l2 = mode("l2vsd", setup, eta=0.0)
    l2.gradient(ctx)
    render = torch.rand(2, 3, 64, 64)
    g_vsd, g_l2 = image_gradient(prior, vsd.last_terms, render), image_gradient(prior, l2.last_terms, render)
    assert g_vsd.norm() > 0
    assert ((g_l2 - g_vsd).norm() / g_vsd.norm()).item() <= 1e-5


# -- the trainer --------------------------------------------------------------------------------
def tiny_config(tmp_path, **overrides):
    values = {**SMALL_SCENE, "prompt": "a wooden boat", "mode": "vsd", "steps": 4, "seed": 1,
              "out": str(tmp_path / "run"), "device": "cpu", **overrides}
    values.pop("turntable_views")
    return RunConfig.from_dict(values)


def parameters(trainer):
    return [p.detach().clone() for p in trainer.renderer.parameters()]


@pytest.mark.parametrize("name", ["vsd", "sds"])
def test_image_weight_zero_is_bit_identical_to_the_base_mode(tiny_sd_path, tmp_path, monkeypatch, name):
    def run(config, n=2):
        trainer = trainer_module.Trainer(config, DiffusionPrior.from_pretrained(tiny_sd_path, device="cpu"))
        for _ in range(n):
            trainer.train_step()
        return parameters(trainer)

    with_option = run(tiny_config(tmp_path, mode=name, lambda_img=0.0))
    weighted = run(tiny_config(tmp_path, mode=name, lambda_img=0.01))
    # The base mode as before the option existed: encode_images resizes, no image term is computed.
    monkeypatch.setattr(trainer_module, "resize_for_vae", lambda images, resolution: images)
    monkeypatch.setattr(trainer_module, "image_gradient", lambda *a: pytest.fail("image term computed"))
    base = run(tiny_config(tmp_path, mode=name))
    assert all(torch.equal(a, b) for a, b in zip(with_option, base))
    assert not all(torch.equal(a, b) for a, b in zip(weighted, base))  # the term does act


def test_sqrt_schedule_times():
    s = SqrtTimestepSchedule(1000, 0.3, 0.98)
    assert [s.timestep(p) for p in (0.0, 0.25, 1.0)] == [980, 640, 300]
    assert s.timestep(1.5) == 300  # past N it stays at p_min
    # horizon: N as a fraction of the run (resumed with more steps)
    assert SqrtTimestepSchedule(1000, 0.3, 0.98, horizon=0.5).timestep(0.125) == 640
    gen = torch.Generator().manual_seed(0)
    t = s.sample(3, 0.25, gen)
    assert t.tolist() == [640] * 3
    # one draw per sample is taken, as the uniform schedule takes: the θ stream stays aligned
    uniform_gen = torch.Generator().manual_seed(0)
    TimestepSchedule(1000).sample(3, 0.25, uniform_gen)
    assert torch.equal(torch.randn(4, generator=gen), torch.randn(4, generator=uniform_gen))


def read_t(run):
    return {r["step"]: r["t"] for r in map(json.loads, open(run / "metrics.jsonl"))}


def test_resume_with_more_steps_keeps_the_sqrt_schedule_pinned(tiny_sd_path, tmp_path):
    small = tmp_path / "small.yaml"
    small.write_text(yaml.safe_dump({**SMALL_SCENE, "turntable_views": 0}))
    run = tmp_path / "run"
    common = ["--prompt", "a boat", "--pretrained", tiny_sd_path, "--config", str(small), "--out", str(run),
              "--no-export", "--ckpt-every", "2"]
    main(common + ["--mode", "sds", "--timestep-schedule", "sqrt", "--min-step", "0.3", "--steps", "4",
                   "--stop-after", "2"])  # stopped as if killed after step 2's checkpoint
    assert len(read_t(run)) == 2
    assert main(common + ["--resume", "--steps", "8"]) == 0
    saved = yaml.safe_load(open(run / "config.yaml"))
    assert saved["sqrt_anneal_steps"] == 4 and saved["steps"] == 8
    s = SqrtTimestepSchedule(1000, 0.3, 0.98)
    # record k is step k−1's draw: progress (k−1)/N with the original N = 4
    expected = {k: s.timestep(min((k - 1) / 4, 1.0)) for k in range(1, 9)}
    assert read_t(run) == pytest.approx(expected)
    assert expected[3] != SqrtTimestepSchedule(1000, 0.3, 0.98).timestep(2 / 8)  # not the unpinned one


# -- settings -----------------------------------------------------------------------------------
def test_hifa_preset_fills_what_was_not_given():
    c = resolve_config(["--prompt", "a boat", "--mode", "vsd", "--hifa", "--lambda-img", "0.05"])
    assert c.hifa and c.lambda_img == 0.05 and c.timestep_schedule == "sqrt"
    assert (c.min_step, c.max_step) == (0.3, 0.98)
    assert (c.z_variance_weight, c.sparsity_weight, c.entropy_weight, c.entropy_start_step) == (300, 10, 1000, 10000)
    assert resolve_config(["--prompt", "a boat", "--mode", "sds", "--hifa"]).z_variance_weight == 100
    plain = resolve_config(["--prompt", "a boat", "--mode", "vsd"])
    assert (plain.lambda_img, plain.timestep_schedule, plain.z_variance_weight) == (0.0, "uniform", 0.0)


def test_hifa_preset_scales_mean_regularisers_to_the_priors_latent_size():
    c = resolve_config(["--prompt", "a duck", "--pretrained", "shapes", "--mode", "vsd", "--hifa",
                        "--sparsity-weight", "2"])
    assert c.sparsity_weight == 2  # a given weight is kept as given
    assert (c.z_variance_weight, c.entropy_weight) == (300 / 64, 1000 / 64)
    assert c.lambda_img == 0.01  # a per-element sum like the guidance: not rescaled


def test_shapes_latent_count_is_the_shipped_priors():
    """regularizer_scale's count for the shapes prior must match what the shipped prior encodes a
    render at its default resolution into (a new prior with another latent size must update it)."""
    from l2vsd_ext.config import PRETRAINED_DEFAULTS, PRIOR_LATENT_ELEMENTS
    from l2vsd_ext.prior import DiffusionPrior
    from l2vsd_ext.prior.loading import shapes_weights_path

    prior = DiffusionPrior.from_pretrained(shapes_weights_path(), device="cpu", dtype=torch.float32)
    size = PRETRAINED_DEFAULTS["shapes"]["encode_resolution"]
    with torch.no_grad():
        latents = prior.encode_images(torch.rand(1, 3, size, size))
    assert latents.numel() == PRIOR_LATENT_ELEMENTS["shapes"]


def test_runs_saved_before_hifa_keep_it_off():
    old = {k: v for k, v in RunConfig(prompt="a boat").to_dict().items() if k not in LEGACY_VALUES}
    c = from_saved(old)
    assert (c.hifa, c.lambda_img, c.timestep_schedule, c.z_variance_weight, c.entropy_start_step) == \
        (False, 0.0, "uniform", 0.0, 0)


@pytest.mark.parametrize("overrides, message", [
    ({"lambda_img": -0.1}, "--lambda-img: must be >= 0"),
    ({"z_variance_weight": -1.0}, "--z-variance-weight: must be >= 0"),
    ({"timestep_schedule": "cosine"}, "--timestep-schedule: must be one of"),
    ({"sqrt_anneal_steps": 10}, "--sqrt-anneal-steps: only used"),
    ({"timestep_schedule": "sqrt", "sqrt_anneal_steps": 0}, "--sqrt-anneal-steps: must be >= 1"),
    ({"entropy_start_step": -1}, "--entropy-start-step: must be >= 0"),
])
def test_bad_hifa_settings_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate(RunConfig(prompt="a boat", **overrides))


# -- z-variance wiring --------------------------------------------------------------------------
class _NoZVariance(torch.nn.Module):
    def forward(self, rays_o, rays_d, light_positions=None, generator=None):
        return {}


def test_z_variance_without_the_fused_output_is_a_one_line_config_error():
    with pytest.raises(ConfigError, match="z-variance needs the fused compositing z-variance output") as err:
        ZVarianceAdapter(_NoZVariance(), 300.0)
    assert "\n" not in str(err.value)


def test_z_variance_wiring_with_a_stub_renderer_and_regulariser(tiny_sd_path, tmp_path, monkeypatch):
    from l2vsd_ext.scene import regularizers

    calls = []

    class ZRenderer(trainer_module.VolumeRenderer):
        def forward(self, *args, with_z_variance: bool = False, **kwargs):
            out = super().forward(*args, **kwargs)
            if with_z_variance:
                out["z_variance"] = out["opacity"] ** 2  # differentiable stand-in
            return out

    def stub_loss(z_variance, opacity, opacity_threshold=0.5):
        calls.append((z_variance.shape, opacity.shape))
        return z_variance.mean()

    monkeypatch.setattr(trainer_module, "VolumeRenderer", ZRenderer)
    monkeypatch.setattr(regularizers, "z_variance_loss", stub_loss, raising=False)
    trainer = trainer_module.Trainer(tiny_config(tmp_path, z_variance_weight=300.0),
                                     DiffusionPrior.from_pretrained(tiny_sd_path, device="cpu"))
    stats = trainer.train_step()
    assert calls and calls[0][0] == calls[0][1]
    assert stats["z_variance_loss"] > 0
    # the weight multiplies the regulariser's value
    cams = trainer.cameras.sample(torch.Generator().manual_seed(0))
    _, out = trainer.render(cams, with_z_variance=True)
    assert torch.isclose(trainer.z_variance.loss(out), 300.0 * out["z_variance"].mean())


# -- the sweep: Table 1's columns ---------------------------------------------------------------
def test_sweep_hifa_axis_gives_table1s_hifa_and_l2hifa_columns(tmp_path):
    from l2vsd_ext.sweep import cli
    from l2vsd_ext.sweep.report import table
    from l2vsd_ext.sweep.spec import expand_grid

    specs = expand_grid(["a red apple"], ["sds", "vsd", "lvsd", "l2vsd"], [0],
                        {"esd_lambda": [0.0, 0.5], "hifa": [False, True]})
    methods = {s.method for s in specs}
    assert {"vsd-esd0-hifa", "l2vsd-esd0-hifa", "sds-hifa", "vsd-esd0.5", "lvsd"} <= methods
    assert "lvsd-hifa" not in methods
    argv = next(s for s in specs if s.method == "l2vsd-esd0-hifa").run_argv("/o", [])
    assert "--hifa" in argv and argv[argv.index("--mode") + 1] == "l2vsd"
    assert "--hifa" not in next(s for s in specs if s.method == "vsd-esd0").run_argv("/o", [])
    # the flag form: bare --hifa is on
    (tmp_path / "p.txt").write_text("a red apple\n")
    plan = cli.build_plan([str(tmp_path / "p.txt"), "--modes", "vsd", "l2vsd", "--hifa", "off", "on",
                           "--out", str(tmp_path / "s"), "--pretrained", "tiny-random"])
    assert sorted(s.method for s in plan["specs"]) == ["l2vsd", "l2vsd-hifa", "vsd", "vsd-hifa"]
    # the report names and orders them as the paper's Table 1
    rows = [{"method": m, "seed": 0, "status": "done", "clip_angle_deg": 80.0, "prompt": "p"}
            for m in ("l2vsd-esd0-hifa", "l2vsd", "vsd-hifa", "lvsd", "vsd-esd0", "vsd-esd0.5", "sds")]
    _, summaries = table(rows)
    assert [s["paper"] for s in summaries] == ["SDS", "ESD", "VSD", "L-VSD", "HiFA", "L²-VSD", "L²-HiFA"]


def test_l2hifa_run_end_to_end_with_the_real_z_variance(tiny_sd_path, tmp_path):
    """--mode l2vsd --hifa on the tiny pipeline through the fused op's z-variance output and
    z_variance_loss (no stubs): every HiFA term is logged and finite, the sqrt schedule descends."""
    config = tmp_path / "small.yaml"
    config.write_text(yaml.safe_dump({**SMALL_SCENE, "turntable_views": 0}))
    out = tmp_path / "run"
    code = main(["--prompt", "a small wooden boat", "--pretrained", tiny_sd_path, "--config", str(config),
                 "--mode", "l2vsd", "--hifa", "--steps", "4", "--out", str(out), "--no-export"])
    assert code == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    for r in records:
        assert r["z_variance_loss"] > 0 and r["img_grad_norm"] > 0 and r["kappa"] > 0
    ts = [r["t"] for r in records]
    assert ts == sorted(ts, reverse=True) and ts[0] == 980
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["hifa"] and saved["z_variance_weight"] == 300.0 and saved["timestep_schedule"] == "sqrt"


def test_a_prior_folder_from_shapes_train_runs_with_the_shapes_defaults_and_its_own_latent_size(tmp_path):
    """A user-trained shapes prior (a folder with shapes.train's training_args.json, like the
    shipped one) gets the shapes run defaults and the regularizer scale of its own latents."""
    import json

    from l2vsd_ext.config import (PRETRAINED_DEFAULTS, PRIOR_LATENT_ELEMENTS, SD_LATENT_ELEMENTS, latent_elements,
                                  regularizer_scale, with_pretrained_defaults)
    from l2vsd_ext.prior.loading import shapes_weights_path

    shipped = shapes_weights_path()
    assert latent_elements(shipped) == PRIOR_LATENT_ELEMENTS["shapes"]
    values = with_pretrained_defaults({"pretrained": shipped, "steps": 50})
    assert values["steps"] == 50 and values["resolution"] == PRETRAINED_DEFAULTS["shapes"]["resolution"]

    args = json.load(open(f"{shipped}/training_args.json"))
    pixel = tmp_path / "pixel_prior"
    pixel.mkdir()
    (pixel / "training_args.json").write_text(json.dumps({**args, "pixel_space": True, "resolution": 32}))
    assert latent_elements(str(pixel)) == 32 * 32 * 3
    assert regularizer_scale(str(pixel)) == 32 * 32 * 3 / SD_LATENT_ELEMENTS
    assert with_pretrained_defaults({"pretrained": str(pixel)})["background"] == "white"
    # anything else keeps no defaults and scale 1
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "training_args.json").write_text("{not json")
    assert latent_elements(str(tmp_path / "other")) is None and regularizer_scale(str(tmp_path / "other")) == 1.0
    assert with_pretrained_defaults({"pretrained": str(tmp_path / "other")}) == {"pretrained": str(tmp_path / "other")}

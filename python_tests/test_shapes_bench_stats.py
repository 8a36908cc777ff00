"""The shapes benchmark's statistics: paired differences with intervals (against scipy), KID,
the front-recovered score, steps-to-threshold, the case specs and the diagnostics reader."""
import json
import math
import random

import pytest
import torch

scipy_stats = pytest.importorskip("scipy.stats")


# -- paired differences ---------------------------------------------------------------------------
@pytest.mark.parametrize("df", [1, 2, 3, 4, 5, 7, 10, 23, 60, 150])
def test_t_quantile_and_cdf_match_scipy(df):
    from l2vsd_ext.shapes.paired import t_cdf, t_quantile

    for p in (0.5, 0.6, 0.9, 0.975, 0.995, 0.025):
        assert t_quantile(p, df) == pytest.approx(scipy_stats.t.ppf(p, df), rel=1e-9, abs=1e-9)
    for t in (-7.3, -1.1, 0.0, 0.4, 2.5, 31.0):
        assert t_cdf(t, df) == pytest.approx(scipy_stats.t.cdf(t, df), rel=1e-10, abs=1e-13)


def test_paired_interval_matches_scipy_on_known_numbers():
    from l2vsd_ext.shapes.paired import paired_summary

    case = [13.1, 12.4, 15.0, 16.2, 11.9, 14.4]
    base = [12.5, 12.6, 14.1, 15.0, 11.2, 14.5]
    d = [a - b for a, b in zip(case, base)]
    out = paired_summary(d)
    mean = sum(d) / len(d)
    lo, hi = scipy_stats.t.interval(0.95, len(d) - 1, loc=mean, scale=scipy_stats.sem(d))
    assert out["n"] == 6 and out["mean"] == pytest.approx(mean, abs=1e-12)
    assert (out["lo"], out["hi"]) == (pytest.approx(lo, abs=1e-9), pytest.approx(hi, abs=1e-9))
    # The interval excludes 0 exactly when the paired t-test's two-sided p is below 0.05.
    p = scipy_stats.ttest_rel(case, base).pvalue
    assert (out["lo"] > 0 or out["hi"] < 0) == (p < 0.05)
    assert (out["up"], out["down"], out["ties"]) == (4, 2, 0)
    assert out["sign_p"] == pytest.approx(scipy_stats.binomtest(4, 6).pvalue, abs=1e-12)


def test_paired_interval_on_random_differences_matches_scipy():
    from l2vsd_ext.shapes.paired import paired_summary

    rng = random.Random(7)
    for n in (2, 3, 5, 24):
        d = [rng.gauss(0.3, 1.0) for _ in range(n)]
        out = paired_summary(d)
        lo, hi = scipy_stats.t.interval(0.95, n - 1, loc=sum(d) / n, scale=scipy_stats.sem(d))
        assert (out["lo"], out["hi"]) == (pytest.approx(lo, abs=1e-9), pytest.approx(hi, abs=1e-9))


@pytest.mark.parametrize("up, down", [(0, 0), (6, 0), (0, 9), (5, 5), (12, 3), (1, 20)])
def test_sign_test_matches_scipy_binomtest(up, down):
    from l2vsd_ext.shapes.paired import sign_test_p

    expected = 1.0 if up + down == 0 else scipy_stats.binomtest(up, up + down, 0.5).pvalue
    assert sign_test_p(up, down) == pytest.approx(expected, abs=1e-12)


def test_paired_differences_pair_by_object_and_seed_and_drop_ties_and_nan():
    from l2vsd_ext.shapes.paired import paired_differences

    results = [
        {"case": "vsd", "object": "duck", "seed": 0, "psnr": 10.0},
        {"case": "vsd", "object": "duck", "seed": 1, "psnr": 11.0},
        {"case": "vsd", "object": "mug", "seed": 0, "psnr": 12.0},
        {"case": "vsd", "object": "mug", "seed": 1, "psnr": float("nan")},
        {"case": "l2vsd", "object": "mug", "seed": 0, "psnr": 12.0},    # tie
        {"case": "l2vsd", "object": "duck", "seed": 1, "psnr": 11.5},
        {"case": "l2vsd", "object": "duck", "seed": 0, "psnr": 10.25},
        {"case": "l2vsd", "object": "mug", "seed": 1, "psnr": 9.0},     # baseline NaN: dropped
        {"case": "l2vsd", "object": "bear", "seed": 0, "psnr": 30.0},   # no baseline run: unpaired
    ]
    out = paired_differences(results, "psnr", "l2vsd", "vsd")
    assert out["n"] == 3 and (out["up"], out["down"], out["ties"]) == (2, 0, 1)
    assert out["mean"] == pytest.approx((0.25 + 0.5 + 0.0) / 3)


# -- KID ------------------------------------------------------------------------------------------
def _mmd2_unbiased_loops(x, y):
    """The unbiased MMD² estimate written out term by term (Gretton et al. 2012, eq. 3)."""
    d = len(x[0])
    k = lambda a, b: (sum(p * q for p, q in zip(a, b)) / d + 1) ** 3
    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_kid_equals_the_unbiased_mmd_written_out():
    from l2vsd_ext.shapes.kid import kid

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(7, 5, generator=g), torch.randn(9, 5, generator=g) + 0.3
    assert kid(a, b) == pytest.approx(_mmd2_unbiased_loops(a.tolist(), b.tolist()), rel=1e-10)


def test_kid_is_near_zero_for_one_distribution_and_grows_with_a_shift():
    from l2vsd_ext.shapes.kid import kid

    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(400, 16, generator=g), torch.randn(400, 16, generator=g)
    same = kid(a, b)
    shifted = [kid(a, b + s) for s in (0.25, 0.5, 1.0)]
    assert abs(same) < 0.02
    assert same < shifted[0] < shifted[1] < shifted[2]
    assert shifted[0] > 10 * abs(same)
    # Identical feature sets: the unbiased estimate drops the within-set diagonals but not the
    # cross-set one, so it is slightly negative, never positive.
    assert kid(a, a.clone()) <= 0


def test_kid_rejects_bad_shapes():
    from l2vsd_ext.shapes.kid import kid

    with pytest.raises(ValueError, match="same d"):
        kid(torch.zeros(4, 3), torch.zeros(4, 2))
    with pytest.raises(ValueError, match=">= 2 samples"):
        kid(torch.zeros(1, 3), torch.zeros(4, 3))


def test_random_conv_features_are_fixed_and_tell_images_apart():
    from l2vsd_ext.shapes.kid import RandomConvFeatures, feature_extractor, image_features, kid

    g = torch.Generator().manual_seed(2)
    images = (torch.rand(6, 3, 32, 32, generator=g) * 255).to(torch.uint8)
    f1, f2 = image_features(RandomConvFeatures(), images), image_features(feature_extractor("random-conv"), images)
    assert f1.shape == (6, 2048) and torch.equal(f1, f2)  # same seed, same network, any process
    # Larger inputs are resized to 32 px first.
    big = torch.nn.functional.interpolate(images.float(), scale_factor=2, mode="nearest").to(torch.uint8)
    assert image_features(RandomConvFeatures(), big).shape == (6, 2048)
    # Orange discs vs blue squares: far apart; two halves of the same kind: close.
    coords = torch.linspace(-1, 1, 32)
    y, x = torch.meshgrid(coords, coords, indexing="ij")

    def drawn(kind, n, seed):
        gen = torch.Generator().manual_seed(seed)
        out = torch.ones(n, 3, 32, 32)
        for i in range(n):
            c = torch.rand(2, generator=gen) * 0.4 - 0.2
            r = 0.4 + 0.2 * float(torch.rand(1, generator=gen))
            inside = ((x - c[0]) ** 2 + (y - c[1]) ** 2 < r ** 2) if kind == "disc" else \
                (((x - c[0]).abs() < r) & ((y - c[1]).abs() < r))
            colour = torch.tensor([1.0, 0.5, 0.0]) if kind == "disc" else torch.tensor([0.1, 0.2, 0.9])
            out[i] = torch.where(inside, colour.view(3, 1, 1), out[i])
        return out

    net = RandomConvFeatures()
    discs_a, discs_b = image_features(net, drawn("disc", 24, 3)), image_features(net, drawn("disc", 24, 4))
    squares = image_features(net, drawn("square", 24, 5))
    assert kid(discs_a, squares) > 20 * abs(kid(discs_a, discs_b))
    with pytest.raises(ValueError, match="unknown"):
        feature_extractor("clip")


# -- front recovered ------------------------------------------------------------------------------
def test_front_recovered_on_a_synthetic_object():
    from l2vsd_ext.shapes.score import fixed_cameras, front_recovered_score, mirrored_front_views

    # Front cameras (azimuth 0, ±30), side, back cameras (180, ±150): each true image is a flat
    # colour with a marker whose position depends on the azimuth.
    azimuths = [0, 30, -30, 90, -90, 180, 150, -150]
    cams = fixed_cameras([10] * len(azimuths), azimuths, 16)
    truth = torch.zeros(len(azimuths), 3, 16, 16)
    for i, (label, a) in enumerate(zip(cams.view_labels, azimuths)):
        truth[i, 0] = 0.9 if label == "front" else 0.2   # the face is red, the back is dark
        truth[i, 1, 4:8, (a % 90) // 10:(a % 90) // 10 + 3] = 1.0
    assert cams.view_labels[:3] == ["front"] * 3
    assert front_recovered_score(truth, truth, cams)["front_recovered"] == 1.0
    # A run that painted the back onto its front views, either way round, has not recovered it.
    renders = truth.clone()
    renders[:3] = mirrored_front_views(truth, cams)[:3]
    out = front_recovered_score(renders, truth, cams)
    assert out["front_recovered"] == 0.0 and out["front_margin_db"] < 0
    renders[:3] = renders[:3].flip(-1)
    assert front_recovered_score(renders, truth, cams)["front_recovered"] == 0.0
    # One of three front views right: a third.
    renders[0] = truth[0] * 0.95 + 0.02
    assert front_recovered_score(renders, truth, cams)["front_recovered"] == pytest.approx(1 / 3)
    # No front camera: undefined, not 0.
    side = fixed_cameras([10, 10], [90, -90], 16)
    assert math.isnan(front_recovered_score(truth[3:5], truth[3:5], side)["front_recovered"])


def test_view_probe_score_tells_a_drawn_front_from_a_featureless_body():
    from l2vsd_ext.shapes.field import truth_renderer
    from l2vsd_ext.shapes.objects import OBJECTS
    from l2vsd_ext.shapes.score import fixed_cameras, held_out_cameras, render_over_white, view_probe_score

    cams = held_out_cameras(32)
    truth = render_over_white(truth_renderer(OBJECTS["pumpkin"]), cams)["rgb"]
    right = view_probe_score(truth, cams, "pumpkin")
    # The true pumpkin: its carved face on every front view, its plain back on every back view.
    assert right["probe_front"] == 1.0 and right["probe_back"] == 1.0 and right["probe_separation"] > 0.8
    # Fronts and backs swapped: told apart the wrong way round.
    front = [i for i, v in enumerate(cams.view_labels) if v == "front"]
    back = [i for i, v in enumerate(cams.view_labels) if v == "back"]
    swapped = truth.clone()
    swapped[front], swapped[back] = truth[back], truth[front]
    wrong = view_probe_score(swapped, cams, "pumpkin")
    assert wrong["probe_front"] == 0.0 and wrong["probe_separation"] < -0.8
    # A body whose front is its back (every view the same image): separation exactly 0, whatever
    # the probe says about that image.
    same = truth[back[0]].expand_as(truth).clone()
    assert view_probe_score(same, cams, "pumpkin")["probe_separation"] == 0.0
    # No back camera: undefined, not 0.
    fronts_only = fixed_cameras([10, 10], [0, 20], 32)
    assert math.isnan(view_probe_score(truth[front[:2]], fronts_only, "pumpkin")["probe_separation"])


# -- steps to threshold ---------------------------------------------------------------------------
def test_steps_to_threshold_on_synthetic_curves():
    from l2vsd_ext.shapes.curves import steps_to_threshold

    steps = [0, 100, 200, 300, 400, 500, 600]
    # Rising 10 -> 20: the threshold is 19; first reached at 400 and kept.
    assert steps_to_threshold(steps, [10, 14, 17, 18.5, 19.2, 19.8, 20]) == 400
    # A noisy early peak past the threshold does not count: the curve falls back below it.
    assert steps_to_threshold(steps, [10, 19.5, 15, 18, 19.1, 19.9, 20]) == 400
    # Falling (a distance): threshold 0.1 + 0.1 * (1 - 0.1) = 0.19.
    assert steps_to_threshold(steps, [1.0, 0.5, 0.3, 0.185, 0.15, 0.12, 0.1]) == 300
    # Exponential approach with rate k: 90 % of the change is done at ln(10)/k.
    k = 0.01
    grid = list(range(0, 2001, 10))
    values = [5 - 5 * math.exp(-k * s) for s in grid]
    values = [v / (values[-1] / 5) for v in values]  # final value exactly 5
    assert steps_to_threshold(grid, values) == pytest.approx(math.log(10) / k, abs=10)
    # Flat: already there at the first point; other fractions move the threshold.
    assert steps_to_threshold(steps, [3.0] * 7) == 0
    assert steps_to_threshold(steps, [10, 14, 17, 18.5, 19.2, 19.8, 20], fraction=0.5) == 200
    assert math.isnan(steps_to_threshold(steps, [10, float("nan"), 12, 13, 14, 15, 16]))
    assert math.isnan(steps_to_threshold([], []))


def test_case_curves_average_objects_then_band_over_seeds():
    from l2vsd_ext.shapes.curves import case_curves

    def run(obj, seed, psnr):
        return {"case": "vsd", "object": obj, "seed": seed, "steps": [0, 10, 20],
                "psnr": psnr, "ssim": [0.5] * 3, "front_recovered": [0.0, 1.0, 1.0],
                "probe_separation": [0.0, 0.5, 1.0]}

    curves = [run("duck", 0, [10, 12, 14]), run("mug", 0, [12, 14, 16]),
              run("duck", 1, [10, 11, 12]), run("mug", 1, [12, 13, 14])]
    steps, mean, lo, hi, n = case_curves(curves)["vsd"]["psnr"]
    assert steps == [0, 10, 20] and n == 2
    assert mean == [11, 12.5, 14] and lo == [11, 12, 13] and hi == [11, 13, 15]


# -- the run's diagnostics -----------------------------------------------------------------------
def test_diagnostics_are_every_numeric_column_over_the_last_fifth(tmp_path):
    from l2vsd_ext.shapes.bench import run_diagnostics

    with open(tmp_path / "metrics.jsonl", "w") as fh:
        for step in range(1, 11):
            record = {"step": step, "seconds": 0.5, "loss": float(step), "kappa": 0.1 * step,
                      "mode": "vsd", "flag": True, "eps_first_norm": None}
            if step == 10:
                record["only_last"] = 7
            fh.write(json.dumps(record) + "\n")
    out = run_diagnostics(str(tmp_path))
    # last 20 % of 10 steps: steps 9 and 10
    assert out["seconds_per_it"] == 0.5
    assert out["diag_loss"] == pytest.approx(9.5) and out["diag_kappa"] == pytest.approx(0.95)
    assert out["diag_only_last"] == 7
    assert not {"diag_mode", "diag_flag", "diag_eps_first_norm", "diag_step", "diag_seconds"} & set(out)


# -- case specs -----------------------------------------------------------------------------------
def test_case_specs_in_both_spellings():
    from l2vsd_ext.shapes.cases import parse_case

    new = parse_case("l2vsd:eta=0.1,last_layer=1")
    old = parse_case("l2vsd+eta=0.1+last-layer")
    assert new.mode == old.mode == "l2vsd"
    assert new.options == {"eta": "0.1", "last_layer": "1"} and old.options == {"eta": "0.1", "last_layer": "true"}
    assert new.run_flags() == ["--mode", "l2vsd", "--set", "eta=0.1", "last_layer=1"]
    assert parse_case("vsd").run_flags() == ["--mode", "vsd"] and parse_case("vsd").label == "vsd"
    assert parse_case("vsd:lora_lr=1e-2").options == {"lora_lr": "1e-2"}
    # Bench-wide settings join every case; the same value twice is fine.
    assert parse_case("l2vsd", {"eta": "1.0"}).options == {"eta": "1.0"}
    assert parse_case("l2vsd:eta=1", {"eta": "1.0"}).options == {"eta": "1"}


def test_case_settings_reach_the_run(tmp_path):
    from l2vsd_ext.run import resolve_config
    from l2vsd_ext.shapes.cases import parse_case

    argv = ["--prompt", "a duck", "--pretrained", "shapes", "--out", str(tmp_path / "r"),
            *parse_case("l2vsd:eta=0.25,last_layer=1,lora_lr=3e-3").run_flags()]
    config = resolve_config(argv)
    assert (config.mode, config.eta, config.last_layer, config.lora_lr) == ("l2vsd", 0.25, True, 3e-3)


def _one_error_line(capsys, code):
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("modes, expected", [
    (["dreamfusion"], "unknown mode 'dreamfusion'"),
    (["dreamfusion:eta=1"], "unknown mode 'dreamfusion'"),
    (["l2vsd:wings=2"], "unknown setting 'wings'"),
    (["vsd+wings"], "unknown setting 'wings'"),
    (["l2vsd:eta=big"], "--eta: expected a float, got 'big'"),
    (["l2vsd+eta=big"], "--eta: expected a float"),
    (["l2vsd:eta"], "'eta' in 'l2vsd:eta' needs a value"),
    (["l2vsd:eta=1,eta=2"], "'eta' given twice"),
    (["l2vsd:seed=3"], "'seed' in 'l2vsd:seed=3' is set by --seeds"),
    (["l2vsd:steps=3"], "is set by --steps"),
    (["l2vsd:,"], "empty setting"),
    (["l2vsd:eta=1 2"], "without spaces"),
    (["l2vsd:lora_rank=2.5"], "--lora-rank: expected an integer"),
    (["sds:last_layer=1"], "case 'sds:last_layer=1': --last-layer: only used with --mode l2vsd"),
    (["vsd:esd_lambda=2"], "--esd-lambda: must be in [0, 1]"),
    (["l2vsd:eta=0.1", "--eta", "0.2"], "sets eta=0.1 but the bench's --eta is 0.2"),
    (["sds", "--baseline", "vsd"], "--baseline: 'vsd' is not one of the cases (sds)"),
    (["sds", "--seeds", "0", "0"], "--seeds: must be distinct"),
    (["sds", "--kid-samples", "1"], "--kid-samples: must be >= 2"),
    (["sds", "--val-every", "0"], "--val-every: must be >= 1"),
])
def test_bad_case_specs_and_options_fail_with_one_line(tmp_path, capsys, modes, expected):
    from l2vsd_ext.shapes.bench import main

    line = _one_error_line(capsys, main(["--modes", *modes, "--objects", "duck", "--out", str(tmp_path / "b")]))
    assert expected in line, line
    assert not (tmp_path / "b" / "runs").exists()


def test_kid_inception_without_its_weights_fails_with_one_line(tmp_path, capsys, monkeypatch):
    from l2vsd_ext.shapes.bench import main

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    line = _one_error_line(capsys, main(["--modes", "sds", "--objects", "duck", "--kid-features", "inception",
                                         "--out", str(tmp_path / "b")]))
    assert "Inception weights are not on this machine" in line


# -- the step-0 point of the curves ---------------------------------------------------------------
def test_initial_scene_is_the_scene_the_first_step_renders(tmp_path):
    from l2vsd_ext.run import resolve_config
    from l2vsd_ext.shapes.curves import initial_views, orbit_cameras
    from l2vsd_ext.trainer import Trainer

    config = resolve_config(["--prompt", "a yellow rubber duck with an orange beak", "--pretrained", "shapes",
                             "--mode", "sds", "--seed", "3", "--out", str(tmp_path / "run")])
    cams = orbit_cameras(config.resolution)
    torch.manual_seed(123)
    ours = initial_views(config, cams)
    after = torch.rand(1)
    torch.manual_seed(123)
    assert torch.equal(torch.rand(1), after)  # the global random stream is left as it was
    trainer = Trainer(config)
    trainer.renderer.update_occupancy(0, generator=trainer.render_rng)
    theirs = trainer.render_views(4)
    assert torch.equal(ours, theirs)
    assert ours.mean() < 0.99  # not the empty (white) scene of the grid before its first update


def test_scored_only_with_nothing_scored_is_a_one_line_error(tmp_path, capsys):
    from l2vsd_ext.shapes.bench import main

    out = tmp_path / "bench"
    assert main(["--modes", "sds", "--objects", "duck", "--seeds", "0", "--kid-features", "none",
                 "--out", str(out), "--scored-only"]) == 2
    assert "--scored-only: no run is scored yet" in capsys.readouterr().err
    assert not (out / "runs").exists()


def test_comparison_labels_break_to_fit_left_of_the_images():
    from PIL import Image, ImageDraw

    from l2vsd_ext.shapes.bench import label_lines

    draw = ImageDraw.Draw(Image.new("RGB", (8, 8)))
    assert label_lines("vsd", 102, draw) == ["vsd"]
    long = "l2vsd:eta_relative=7.8e-3,lookahead_direction=optimizer"
    lines = label_lines(long, 102, draw)
    assert "".join(lines) == long and len(lines) > 1
    assert all(draw.textlength(line) <= 102 for line in lines)
    token = "x" * 60  # no comma or colon to break at: cut by characters
    lines = label_lines(token, 102, draw)
    assert "".join(lines) == token and all(draw.textlength(line) <= 102 for line in lines)

"""l2vsd_ext.eval: CLIP similarity and FID against independent computations, prior sampling, the
CLI's eval.json on a tiny run, and clear errors (missing run, offline models)."""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.linalg
import torch

from l2vsd_ext.eval import (ClipImageFeatures, build_pipeline, clip_similarity, frechet_distance,
                            load_clip, sample_prior)
from l2vsd_ext.eval.cli import main as eval_main
from l2vsd_ext.export import open_run, render_orbit
from l2vsd_ext.export.views import to_uint8
from tiny_clip import build_tiny_clip
from tiny_run import make_tiny_run


@pytest.fixture(scope="module")
def tiny_clip_path(tmp_path_factory):
    return build_tiny_clip(str(tmp_path_factory.mktemp("tiny_clip")))


@pytest.fixture(scope="module")
def tiny_clip(tiny_clip_path):
    return load_clip(tiny_clip_path)


@pytest.fixture(scope="module")
def tiny_run(tiny_sd_path, tmp_path_factory):
    return make_tiny_run(tiny_sd_path, tmp_path_factory.mktemp("eval_run"), prompt="a red apple")


def random_images(n, size, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_clip_cosine_matches_clips_own_logits(tiny_clip):
    model, processor = tiny_clip
    images = random_images(5, 40, seed=int(torch.randint(0, 10**6, (1,))))
    result = clip_similarity(model, processor, images, "a red apple")
    with torch.no_grad():
        inputs = processor(text=["a red apple"], images=list(images), return_tensors="pt", padding=True)
        out = model(**inputs)
    expected = (out.logits_per_image[:, 0] / model.logit_scale.exp()).numpy()
    assert np.allclose(result["clip_cosine_per_view"], expected, atol=1e-5)
    assert result["clip_cosine_mean"] == pytest.approx(expected.mean(), abs=1e-5)
    assert result["clip_angle_deg"] == pytest.approx(math.degrees(math.acos(expected.mean())), abs=1e-3)


def _scipy_frechet(a, b):
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(cov_a @ cov_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * covmean))


def test_fid_is_the_frechet_distance_of_the_clip_features(tiny_clip):
    features = ClipImageFeatures(*tiny_clip)
    seed = int(torch.randint(0, 10**6, (1,)))
    real, fake = random_images(24, 32, seed), random_images(20, 48, seed + 1) // 2  # darker set
    fid = frechet_distance(real, fake, features)
    to_features = lambda x: features(torch.from_numpy(x).permute(0, 3, 1, 2)).double().numpy()
    assert fid == pytest.approx(_scipy_frechet(to_features(real), to_features(fake)), rel=1e-3)
    assert fid > 0
    assert frechet_distance(real, real, features) == pytest.approx(0.0, abs=1e-3 * fid)


def test_prior_samples_are_deterministic_images_at_the_pipelines_size(tiny_sd_path):
    pipe = build_pipeline(tiny_sd_path, "cpu")
    a = sample_prior(pipe, "a red apple", 3, steps=2, seed=5, batch_size=2)
    b = sample_prior(pipe, "a red apple", 3, steps=2, seed=5, batch_size=2)
    assert a.shape == (3, 64, 64, 3) and a.dtype == np.uint8  # tiny UNet sample_size 8 x VAE factor 8
    assert np.array_equal(a, b)
    assert not np.array_equal(a[0], a[1])  # each sample has its own noise


def test_cli_writes_eval_json_with_the_papers_metrics(tiny_run, tiny_clip_path, tiny_clip, tiny_sd_path):
    code = eval_main([tiny_run, "--clip-model", tiny_clip_path, "--n-views", "4", "--resolution", "16",
                      "--n-prior-samples", "3", "--prior-steps", "2"])
    assert code == 0
    result = json.loads(open(os.path.join(tiny_run, "eval.json")).read())
    for key in ("prompt", "step", "n_views", "clip_model", "clip_cosine_mean", "clip_cosine_std",
                "clip_angle_deg", "clip_cosine_per_view", "fid", "fid_features", "pretrained",
                "n_prior_samples"):
        assert key in result, key
    assert result["prompt"] == "a red apple" and result["step"] == 3
    assert len(result["clip_cosine_per_view"]) == 4
    assert -1 <= result["clip_cosine_mean"] <= 1
    assert result["clip_angle_deg"] == pytest.approx(math.degrees(math.acos(result["clip_cosine_mean"])))
    assert math.isfinite(result["fid"]) and result["fid"] >= 0
    assert result["pretrained"] == tiny_sd_path  # the run's own prior unless --pretrained says otherwise
    assert sorted(os.listdir(os.path.join(tiny_run, "eval"))) == ["prior_samples.png", "views.png"]
    # The score is CLIP's on the run's own orbit renders.
    renderer, _, _ = open_run(tiny_run)
    views = to_uint8(render_orbit(renderer, 4, 16))
    again = clip_similarity(*tiny_clip, views, "a red apple")["clip_cosine_per_view"]
    assert np.allclose(result["clip_cosine_per_view"], again, atol=1e-5)


def test_no_fid_skips_prior_sampling(tiny_run, tiny_clip_path, tmp_path):
    code = eval_main([tiny_run, "--clip-model", tiny_clip_path, "--n-views", "2", "--resolution", "8",
                      "--no-fid", "--pretrained", str(tmp_path / "no-such-model")])
    assert code == 0
    result = json.loads(open(os.path.join(tiny_run, "eval.json")).read())
    assert "fid" not in result and len(result["clip_cosine_per_view"]) == 2


def _cli(*args):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "l2vsd_ext.eval", *args], capture_output=True,
                          text=True, env=env)


def _one_line_error(result, words):
    assert result.returncode == 2, result.stderr
    # Libraries may log above it; ours is the last line, and the only error line.
    errors = [line for line in result.stderr.splitlines() if line.startswith("l2vsd_ext.eval: error:")]
    assert len(errors) == 1 and words in errors[0], result.stderr
    assert result.stderr.strip().splitlines()[-1] == errors[0]


def test_offline_without_clip_weights_is_a_one_line_error(tiny_run):
    _one_line_error(_cli(tiny_run, "--clip-model", "openai/clip-vit-base-patch16", "--n-views", "2",
                         "--resolution", "8"), "--clip-model")


def test_offline_without_prior_weights_is_a_one_line_error(tiny_run, tiny_clip_path):
    _one_line_error(_cli(tiny_run, "--clip-model", tiny_clip_path, "--pretrained",
                         "stabilityai/stable-diffusion-2-1-base", "--n-views", "2", "--resolution", "8"),
                    "--pretrained")


def test_missing_or_corrupt_run_folder_is_a_one_line_error(tmp_path):
    _one_line_error(_cli(str(tmp_path / "nowhere")), "not a folder")
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.pt").write_bytes(os.urandom(128))
    _one_line_error(_cli(str(tmp_path)), "checkpoint")


@pytest.mark.parametrize("args, words", [(["--n-views", "1"], "--n-views"),
                                         (["--n-prior-samples", "1"], "--n-prior-samples"),
                                         (["--resolution", "0"], "--resolution")])
def test_bad_arguments_are_one_line_errors(tmp_path, args, words):
    _one_line_error(_cli(str(tmp_path), *args), words)

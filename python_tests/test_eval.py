"""l2vsd_ext.eval: CLIP similarity and FID against independent computations, the FID Inception
against torch-fidelity's on the same random weights, prior sampling, the CLI's eval.json on a tiny
run, and clear errors (missing run, offline models, missing Inception weights)."""
import importlib
import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
import types
import urllib.error

import numpy as np
import pytest
import scipy.linalg
import torch

from l2vsd_ext.eval import (ClipImageFeatures, FidInceptionV3, InceptionWeightsUnavailable, ModelUnavailable,
                            build_pipeline, clip_similarity, frechet_distance, load_clip, load_fid_inception,
                            sample_prior)
from l2vsd_ext.eval.cli import main as eval_main
from l2vsd_ext.eval.inception_weights import PYTORCH_FID_WEIGHTS_FILE, WEIGHTS_FILE, WEIGHTS_URL
from l2vsd_ext.export import open_run, render_orbit
from l2vsd_ext.export.views import to_uint8
from tiny_clip import build_tiny_clip
from tiny_inception import write_random_inception_weights
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


@pytest.fixture(scope="module")
def inception_weights(tmp_path_factory):
    """A weights file with the published file's names and shapes but freshly drawn values (~95 MB)."""
    seed = fresh_seed("inception weights")
    return write_random_inception_weights(str(tmp_path_factory.mktemp("inception") / "random.pth"), seed)


@pytest.fixture(scope="module")
def fid_inception(inception_weights):
    return load_fid_inception(inception_weights)


def fresh_seed(what):
    seed = int(torch.randint(0, 10**6, (1,)))
    print(f"seed of {what}: {seed}")  # shown by pytest when the test fails
    return seed


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


def _scipy_frechet_in_their_span(a, b):
    """The same distance with SciPy's sqrtm, in an orthonormal basis of the span of all samples:
    with fewer samples than dimensions, everything (both covariances and the mean difference) lies
    there, and the distance is invariant under this change of basis."""
    basis = scipy.linalg.orth(np.concatenate([a, b]).T - b.mean(0)[:, None])
    return _scipy_frechet((a - b.mean(0)) @ basis, (b - b.mean(0)) @ basis)


def test_fid_is_the_frechet_distance_of_the_inception_features(fid_inception):
    seed = fresh_seed("images")
    real, fake = random_images(10, 40, seed), random_images(8, 56, seed + 1) // 2  # darker set
    fid = frechet_distance(real, fake, fid_inception)
    to_features = lambda x: fid_inception(torch.from_numpy(x).permute(0, 3, 1, 2)).double().numpy()
    real_features, fake_features = to_features(real), to_features(fake)
    assert real_features.shape == (10, 2048)
    assert fid == pytest.approx(_scipy_frechet_in_their_span(real_features, fake_features), rel=1e-6)
    assert fid > 0
    assert frechet_distance(real, real, fid_inception) == pytest.approx(0.0, abs=1e-9 * fid)


@pytest.fixture(scope="module")
def torch_fidelity_inception_class():
    """torch-fidelity's FeatureExtractorInceptionV3, imported without running torch_fidelity/__init__
    (which imports torchvision, absent here: a PyPI torchvision would need a CUDA torch). sys.modules
    is restored afterwards so no half-imported torch_fidelity is left for other tests."""
    spec = importlib.util.find_spec("torch_fidelity")
    if spec is None:
        pytest.skip("torch-fidelity is not installed (CI installs it with --no-deps as the reference)")
    ours = lambda name: name == "torch_fidelity" or name.startswith("torch_fidelity.")
    saved = {name: module for name, module in sys.modules.items() if ours(name)}
    try:
        for name in saved:
            del sys.modules[name]
        package = types.ModuleType("torch_fidelity")
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules["torch_fidelity"] = package
        return importlib.import_module("torch_fidelity.feature_extractor_inceptionv3").FeatureExtractorInceptionV3
    finally:
        for name in [name for name in sys.modules if ours(name)]:
            del sys.modules[name]
        sys.modules.update(saved)


def _torch_fidelity_inception(extractor_class, weights, dtype):
    """(torch-fidelity's Inception in `dtype`, list its pool3 outputs are appended to). torch-fidelity
    0.4.0 maps internal dtype 'float64' to float32 and casts its features to float32, so we cast the
    module ourselves and read pool3 from its AvgPool before that cast."""
    model = extractor_class("inception-v3-compat", ["2048"], feature_extractor_weights_path=weights)
    model.to(dtype)
    model.feature_extractor_internal_dtype = dtype
    pooled = []
    model.AvgPool.register_forward_hook(lambda module, inputs, output: pooled.append(output.flatten(1)))
    return model, pooled


# float64 agrees to rounding (1e-16 expected); float32 vs float64 differ by ~5e-7, so 1e-9 tells them apart.
@pytest.mark.parametrize("dtype, rtol", [(torch.float64, 1e-9), (torch.float32, 1e-4)])
def test_inception_features_match_torch_fidelity(torch_fidelity_inception_class, inception_weights, dtype, rtol):
    reference, pooled = _torch_fidelity_inception(torch_fidelity_inception_class, inception_weights, dtype)
    ours = load_fid_inception(inception_weights, dtype=dtype)
    generator = torch.Generator().manual_seed(fresh_seed("images"))
    for height, width in ((64, 64), (300, 200), (299, 299)):
        images = torch.randint(0, 256, (2, 3, height, width), generator=generator, dtype=torch.uint8)
        reference(images)
        expected, got = pooled.pop(), ours(images)
        assert expected.dtype == dtype and got.dtype == dtype and got.shape == (2, 2048)
        assert expected.std(dim=0).max() > 0  # the two images give different features
        relative = float((got - expected).abs().max() / expected.abs().max())
        print(f"{dtype} {height}x{width}: max |ours - torch-fidelity| / max |torch-fidelity| = {relative:.3g}")
        assert relative <= rtol


def test_state_dict_names_and_shapes_are_torch_fidelitys(torch_fidelity_inception_class, inception_weights):
    reference = torch_fidelity_inception_class("inception-v3-compat", ["2048"],
                                               feature_extractor_weights_path=inception_weights)
    ours, theirs = FidInceptionV3().state_dict(), reference.state_dict()
    assert set(ours) == set(theirs)
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in theirs.items()}
    # The stand-in file really is redrawn: every parameter and running statistic varies.
    drawn = torch.load(inception_weights)
    assert all(v.std() > 0 for k, v in drawn.items() if v.is_floating_point())
    assert all((drawn[k] > 0).all() for k in drawn if k.endswith("running_var"))


@pytest.mark.parametrize("file_name", [WEIGHTS_FILE, PYTORCH_FID_WEIGHTS_FILE])
def test_weights_in_torch_hubs_cache_load_without_batchnorm_counters(inception_weights, fid_inception, file_name,
                                                                      tmp_path, monkeypatch):
    # The published files are plain dicts without BatchNorm's num_batches_tracked; write ours the same way.
    state = {k: v for k, v in torch.load(inception_weights).items() if not k.endswith("num_batches_tracked")}
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(state, cache / file_name)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_download)
    images = torch.from_numpy(random_images(2, 48, fresh_seed("images"))).permute(0, 3, 1, 2)
    assert torch.equal(load_fid_inception()(images), fid_inception(images))


def _no_download(*args, **kwargs):
    raise AssertionError("tried to download the Inception weights")


@pytest.mark.parametrize("variable", ["HF_HUB_OFFLINE", "L2VSD_OFFLINE"])
def test_offline_without_cached_inception_weights_is_a_clear_error(variable, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv(variable, "1")
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_download)
    with pytest.raises(InceptionWeightsUnavailable) as info:
        load_fid_inception()
    message = str(info.value)
    for words in ("--inception-weights", WEIGHTS_FILE, PYTORCH_FID_WEIGHTS_FILE, WEIGHTS_URL, variable,
                  str(tmp_path / "hub" / "checkpoints")):
        assert words in message, words
    assert isinstance(info.value, ModelUnavailable) and "\n" not in message


def test_online_download_goes_to_the_cache_and_its_failure_is_a_clear_error(inception_weights, tmp_path,
                                                                            monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    for variable in ("HF_HUB_OFFLINE", "L2VSD_OFFLINE"):
        monkeypatch.delenv(variable, raising=False)

    def unreachable(url, destination, **kwargs):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(torch.hub, "download_url_to_file", unreachable)
    with pytest.raises(InceptionWeightsUnavailable, match="--inception-weights") as info:
        load_fid_inception()
    assert "URLError" in str(info.value) and WEIGHTS_URL in str(info.value)

    downloads = []

    def fake_download(url, destination, hash_prefix=None, **kwargs):
        downloads.append((url, hash_prefix))
        with open(inception_weights, "rb") as source, open(destination, "wb") as target:
            target.write(source.read())

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    load_fid_inception()
    assert downloads == [(WEIGHTS_URL, "6726825d")]
    assert (tmp_path / "hub" / "checkpoints" / WEIGHTS_FILE).is_file()


def test_bad_inception_weights_files_are_clear_errors(tmp_path):
    with pytest.raises(InceptionWeightsUnavailable, match="weights=.*--inception-weights.*no such file"):
        load_fid_inception(str(tmp_path / "missing.pth"))
    (tmp_path / "garbage.pth").write_bytes(os.urandom(256))
    with pytest.raises(InceptionWeightsUnavailable, match="could not read"):
        load_fid_inception(str(tmp_path / "garbage.pth"))
    torch.save({"conv.weight": torch.ones(3)}, tmp_path / "other.pth")
    with pytest.raises(InceptionWeightsUnavailable, match="not the FID Inception weights"):
        load_fid_inception(str(tmp_path / "other.pth"))


def test_bad_images_are_value_errors_naming_the_argument(fid_inception):
    images = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    for bad in (images.float(), images[:, :1], images[0], images.numpy()):
        with pytest.raises(ValueError, match="'images'"):
            fid_inception(bad)
    with pytest.raises(ValueError, match="'dtype'"):
        FidInceptionV3(dtype=torch.float16)
    good = random_images(2, 16, fresh_seed("images"))
    with pytest.raises(ValueError, match="'real'"):
        frechet_distance(good.astype(np.float32), good, fid_inception)
    with pytest.raises(ValueError, match="'fake'"):
        frechet_distance(good, good.transpose(0, 3, 1, 2), fid_inception)


def test_prior_samples_are_deterministic_images_at_the_pipelines_size(tiny_sd_path):
    pipe = build_pipeline(tiny_sd_path, "cpu")
    a = sample_prior(pipe, "a red apple", 3, steps=2, seed=5, batch_size=2)
    b = sample_prior(pipe, "a red apple", 3, steps=2, seed=5, batch_size=2)
    assert a.shape == (3, 64, 64, 3) and a.dtype == np.uint8  # tiny UNet sample_size 8 x VAE factor 8
    assert np.array_equal(a, b)
    assert not np.array_equal(a[0], a[1])  # each sample has its own noise


def test_cli_writes_eval_json_with_the_papers_metrics(tiny_run, tiny_clip_path, tiny_clip, tiny_sd_path,
                                                      inception_weights):
    code = eval_main([tiny_run, "--clip-model", tiny_clip_path, "--n-views", "4", "--resolution", "16",
                      "--n-prior-samples", "3", "--prior-steps", "2", "--inception-weights", inception_weights])
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
    assert result["fid_features"] == "inception-v3-2015-12-05"
    assert result["inception_weights"] == os.path.abspath(inception_weights)
    assert sorted(os.listdir(os.path.join(tiny_run, "eval"))) == ["prior_samples.png", "views.png"]
    # The score is CLIP's on the run's own orbit renders.
    renderer, _, _ = open_run(tiny_run)
    views = to_uint8(render_orbit(renderer, 4, 16))
    again = clip_similarity(*tiny_clip, views, "a red apple")["clip_cosine_per_view"]
    assert np.allclose(result["clip_cosine_per_view"], again, atol=1e-5)


def test_fid_features_clip_uses_the_clip_model(tiny_run, tiny_clip_path, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # no Inception weights anywhere: not needed
    code = eval_main([tiny_run, "--clip-model", tiny_clip_path, "--n-views", "3", "--resolution", "8",
                      "--n-prior-samples", "2", "--prior-steps", "1", "--fid-features", "clip"])
    assert code == 0
    result = json.loads(open(os.path.join(tiny_run, "eval.json")).read())
    assert result["fid_features"] == f"clip:{tiny_clip_path}" and "inception_weights" not in result
    assert math.isfinite(result["fid"]) and result["fid"] >= 0


def test_no_fid_skips_prior_sampling(tiny_run, tiny_clip_path, tmp_path):
    code = eval_main([tiny_run, "--clip-model", tiny_clip_path, "--n-views", "2", "--resolution", "8",
                      "--no-fid", "--pretrained", str(tmp_path / "no-such-model")])
    assert code == 0
    result = json.loads(open(os.path.join(tiny_run, "eval.json")).read())
    assert "fid" not in result and len(result["clip_cosine_per_view"]) == 2


def _cli(*args, torch_home=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if torch_home is not None:
        env["TORCH_HOME"] = str(torch_home)
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


def test_offline_without_prior_weights_is_a_one_line_error(tiny_run, tiny_clip_path, inception_weights):
    _one_line_error(_cli(tiny_run, "--clip-model", tiny_clip_path, "--pretrained",
                         "stabilityai/stable-diffusion-2-1-base", "--n-views", "2", "--resolution", "8",
                         "--inception-weights", inception_weights),
                    "--pretrained")


def test_offline_without_inception_weights_skips_fid_with_one_line(tiny_run, tiny_clip_path, tmp_path):
    # Issue 14 (10): default weights that are not available skip their score, saying how to get them.
    run = shutil.copytree(tiny_run, tmp_path / "run")
    result = _cli(str(run), "--clip-model", tiny_clip_path, "--n-views", "2", "--resolution", "8",
                  torch_home=tmp_path)
    assert result.returncode == 0, result.stderr
    notes = [line for line in result.stderr.splitlines() if line.startswith("l2vsd_ext.eval: skipped")]
    assert len(notes) == 1 and "fid" in notes[0] and WEIGHTS_URL in notes[0] and "--fid-features clip" in notes[0]
    saved = json.loads((run / "eval.json").read_text())
    assert "fid" not in saved and "fid" in saved["skipped"] and "clip_cosine_mean" in saved


def test_offline_eval_with_no_weights_at_all_still_runs(tiny_run, tmp_path):
    # Offline newcomer: neither CLIP nor Inception weights; both scores skipped, exit 0. Issue 24 (10):
    # no metric can run, so nothing is rendered, and one line says so with both reasons.
    run = shutil.copytree(tiny_run, tmp_path / "run")
    shutil.rmtree(run / "eval", ignore_errors=True)  # from the evaluations above, in the shared run
    result = _cli(str(run), "--n-views", "2", "--resolution", "8", torch_home=tmp_path)
    assert result.returncode == 0, result.stderr
    notes = [line for line in result.stderr.splitlines() if line.startswith("l2vsd_ext.eval:")]
    assert len(notes) == 1 and "nothing rendered" in notes[0]
    assert "hf download" in notes[0] and "--clip-model" in notes[0] and "fid:" in notes[0]
    assert set(json.loads((run / "eval.json").read_text())["skipped"]) == {"clip_similarity", "fid"}
    assert not (run / "eval").exists()


def test_bad_inception_weights_arguments_are_one_line_errors(tiny_run, tiny_clip_path, tmp_path, capsys):
    # In process (the subprocess tests above show the exit path); each case stops before any rendering.
    common = [tiny_run, "--clip-model", tiny_clip_path, "--n-views", "2", "--resolution", "8"]
    for args, words in ((["--inception-weights", str(tmp_path / "missing.pth")], "no such file"),
                        (["--fid-features", "clip", "--inception-weights", "x.pth"], "only used with")):
        assert eval_main(common + args) == 2
        errors = capsys.readouterr().err.strip().splitlines()
        assert len(errors) == 1 and errors[0].startswith("l2vsd_ext.eval: error: --inception-weights:")
        assert words in errors[0]


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

"""The shapes prior's three quality targets (issue 20, point 4), on the shipped weights, with this
test's own small reference set, measured through both samplers: the package's DiffusionPrior (the
prior-quality report's path) and diffusers alone (StableDiffusionPipeline for a latent prior, the
plain pixel-space loop for a pixel-space one):

- own object nearest >= 0.95;
- "front view" samples nearer the true front views than the back views >= 0.8;
- mean nearest-view PSNR to the sample's own object >= 20 dB;
- added: "front view" samples that the view probe (shapes/view_probe.py, a CNN trained on true
  renders) classifies as fronts >= 0.8;
- added: samples that the object probe (shapes/object_probe.py, the same CNN trained to name the
  object) recognises as their own object >= 0.95.

The ceiling: held-out TRUE renders scored exactly like samples here (the true-render sampler) reach
own object nearest 0.84, front nearer fronts 0.375 and mean PSNR 15.5 dB. So the second and third
targets, as written, are beyond what a perfect prior scores with nearest-view PSNR at 32 px (pose
alignment dominates it; a plain back is "nearer" than a slightly misaligned face), and the first is
above truth's own score. The probe targets are the front and own-object tests that truth passes.

Each shipped version's numbers here are recorded below under its weights' fingerprint
(shapes.distribution.prior_fingerprint). A target the shipped weights were measured to miss is a
strict xfail carrying the measured number (a change that meets it fails loudly as XPASS(strict));
weights with no record (a new prior) get no marks at all: every target is asserted outright, so
shipping a prior means measuring it here and recording what it misses. Version 3 (shipped, the
fine-tuned version 2) meets both probe targets (front 0.81, own object 1.0); version 2
(`shapes-v2`) misses all five (0.69, 0.94)."""
import pytest
import torch

from l2vsd_ext.prior import DiffusionPrior
from l2vsd_ext.prior.loading import shapes_weights_path
from l2vsd_ext.shapes.distribution import prior_fingerprint

WEIGHTS = shapes_weights_path()
REFERENCE_SEED = 2468  # neither the training set's (0) nor the report's (12345)
SAMPLES_PER_CASE, STEPS, GUIDANCE, SEED = 2, 30, 3.0, 0

# Each shipped version in exactly this configuration (32 samples, 128 reference views per object),
# keyed by its weights' fingerprint. Both samplers draw the same images (same noise, DDIM,
# guidance formula), so one record serves both.
MEASURED = {
    # version 2 (shapes-v2), measured 2026-12-05
    "b66be7c49b1096c0": {"own_object_nearest": 0.906, "front_sample_nearer_front_views": 0.25,
                         "mean_psnr_own": 17.08, "front_sample_classified_front": 0.6875,
                         "own_object_classified": 0.9375},
    # version 3 (shipped), measured 2026-12-06: both probe targets met
    "1327e616387c70ba": {"own_object_nearest": 0.9375, "front_sample_nearer_front_views": 0.25,
                         "mean_psnr_own": 17.21, "front_sample_classified_front": 0.8125,
                         "own_object_classified": 1.0},
}
SHIPPED = MEASURED.get(prior_fingerprint(WEIGHTS))


@pytest.fixture(scope="module")
def references():
    from l2vsd_ext.shapes.quality import reference_renders

    return reference_renders(n_views=128, seed=REFERENCE_SEED)


@pytest.fixture(scope="module")
def probe():
    from l2vsd_ext.shapes.view_probe import load_view_probe

    return load_view_probe()


@pytest.fixture(scope="module")
def object_probe():
    from l2vsd_ext.shapes.object_probe import load_object_probe

    return load_object_probe()


@pytest.fixture(scope="module", params=["report", "diffusers"])
def summary(request, references, probe, object_probe):
    from l2vsd_ext.shapes.quality import evaluate_prior, summarize
    from l2vsd_ext.shapes.sample import sample_images_diffusers

    torch.set_num_threads(1)
    if request.param == "report":
        prior = DiffusionPrior.from_pretrained("shapes", device="cpu", dtype=torch.float32)
        rows, _ = evaluate_prior(prior, samples_per_case=SAMPLES_PER_CASE, steps=STEPS,
                                 guidance_scale=GUIDANCE, seed=SEED, references=references, probe=probe,
                                 object_probe=object_probe)
    else:
        sampler = lambda texts, **kw: sample_images_diffusers(WEIGHTS, texts, **kw)  # noqa: E731
        rows, _ = evaluate_prior(None, samples_per_case=SAMPLES_PER_CASE, steps=STEPS,
                                 guidance_scale=GUIDANCE, seed=SEED, references=references,
                                 sampler=sampler, probe=probe, object_probe=object_probe)
    return request.param, summarize(rows)


def _xfail_if_measured_to_miss(request, sampler, key, target):
    """Strict xfail where the shipped weights were measured to miss this target here."""
    measured = None if SHIPPED is None else SHIPPED.get(key)
    if measured is not None and not target(measured):
        request.applymarker(pytest.mark.xfail(
            strict=True, reason=f"the shipped prior was measured at {key} = {measured:.3g} here "
                                f"({sampler} sampler)"))


def test_own_object_nearest(request, summary):
    sampler, s = summary
    _xfail_if_measured_to_miss(request, sampler, "own_object_nearest", lambda v: v >= 0.95)
    assert s["own_object_nearest"] >= 0.95, s


def test_front_samples_nearer_true_fronts(request, summary):
    sampler, s = summary
    _xfail_if_measured_to_miss(request, sampler, "front_sample_nearer_front_views", lambda v: v >= 0.8)
    assert s["front_sample_nearer_front_views"] >= 0.8, s


def test_mean_psnr_to_own_object(request, summary):
    sampler, s = summary
    _xfail_if_measured_to_miss(request, sampler, "mean_psnr_own", lambda v: v >= 20.0)
    assert s["mean_psnr_own"] >= 20.0, s


def test_front_samples_classified_front_by_the_view_probe(request, summary):
    sampler, s = summary
    _xfail_if_measured_to_miss(request, sampler, "front_sample_classified_front", lambda v: v >= 0.8)
    assert s["front_sample_classified_front"] >= 0.8, s


def test_own_object_classified_by_the_object_probe(request, summary):
    sampler, s = summary
    _xfail_if_measured_to_miss(request, sampler, "own_object_classified", lambda v: v >= 0.95)
    assert s["own_object_classified"] >= 0.95, s


def test_true_renders_pass_the_probe_targets(references, probe, object_probe):
    """The ceiling row: held-out true renders, scored like samples, are nearest their own object
    most of the time and pass both probe targets (so those are reachable; see the module docstring
    for the nearest-view figures they reach)."""
    from l2vsd_ext.shapes.quality import evaluate_prior, summarize, true_render_sampler

    rows, _ = evaluate_prior(None, samples_per_case=SAMPLES_PER_CASE, references=references,
                             sampler=true_render_sampler(), probe=probe, object_probe=object_probe)
    s = summarize(rows)
    print(s)
    assert s["own_object_nearest"] >= 0.75, s
    assert s["front_sample_classified_front"] >= 0.8 and s["back_sample_classified_back"] >= 0.8, s
    assert s["own_object_classified"] >= 0.95, s


def test_report_diffusers_sampler_needs_a_local_folder(tmp_path, capsys):
    from l2vsd_ext.shapes.prior_report import main

    code = main(["--pretrained", "tiny-random", "--sampler", "diffusers", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "needs a local folder" in err[0], err
    assert not (tmp_path / "r").exists()

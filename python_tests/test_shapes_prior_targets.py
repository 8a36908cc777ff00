"""The shapes prior's three quality targets (issue 20, point 4), on the shipped weights, with this
test's own small reference set, measured through both samplers: the package's DiffusionPrior (the
prior-quality report's path) and diffusers alone (StableDiffusionPipeline for a latent prior, the
plain pixel-space loop for a pixel-space one):

- own object nearest >= 0.95;
- "front view" samples nearer the true front views than the back views >= 0.8;
- mean nearest-view PSNR to the sample's own object >= 20 dB;
- added: "front view" samples that the view probe (shapes/view_probe.py, a CNN trained on true
  renders) classifies as fronts >= 0.8.

The ceiling: held-out TRUE renders scored exactly like samples here (the true-render sampler) reach
own object nearest 0.84, front nearer fronts 0.375 and mean PSNR 15.5 dB. So the second and third
targets, as written, are beyond what a perfect prior scores with nearest-view PSNR at 32 px (pose
alignment dominates it; a plain back is "nearer" than a slightly misaligned face). The probe target
is the front test that truth passes (1.0 here).

Version 2 (latent, shipped until version 3 lands) does not meet them: while it is shipped, the
targets it missed here are strict xfails carrying its measured numbers (an improved latent prior
that meets one fails loudly as XPASS(strict)). Once version 3 is shipped (recognised by its
pixel-space folder, no vae/) no case is marked: the targets are asserted outright."""
import pytest
import torch

from l2vsd_ext.prior import DiffusionPrior
from l2vsd_ext.prior.loading import is_pixel_space_folder, shapes_weights_path

WEIGHTS = shapes_weights_path()
SHIPPED_V3 = is_pixel_space_folder(WEIGHTS)
REFERENCE_SEED = 2468  # neither the training set's (0) nor the report's (12345)
SAMPLES_PER_CASE, STEPS, GUIDANCE, SEED = 2, 30, 3.0, 0

# Version 2 in exactly this configuration (32 samples, 128 reference views per object), per sampler.
# Measured 2026-12-05; both samplers drew the same images (same noise, DDIM, guidance formula).
_V2_MEASURED = {"own_object_nearest": 0.906, "front_sample_nearer_front_views": 0.25,
                "mean_psnr_own": 17.08, "front_sample_classified_front": 0.6875}
V2 = {"report": _V2_MEASURED, "diffusers": _V2_MEASURED}


@pytest.fixture(scope="module")
def references():
    from l2vsd_ext.shapes.quality import reference_renders

    return reference_renders(n_views=128, seed=REFERENCE_SEED)


@pytest.fixture(scope="module")
def probe():
    from l2vsd_ext.shapes.view_probe import load_view_probe

    return load_view_probe()


@pytest.fixture(scope="module", params=["report", "diffusers"])
def summary(request, references, probe):
    from l2vsd_ext.shapes.quality import evaluate_prior, summarize
    from l2vsd_ext.shapes.sample import sample_images_diffusers

    torch.set_num_threads(1)
    if request.param == "report":
        prior = DiffusionPrior.from_pretrained("shapes", device="cpu", dtype=torch.float32)
        rows, _ = evaluate_prior(prior, samples_per_case=SAMPLES_PER_CASE, steps=STEPS,
                                 guidance_scale=GUIDANCE, seed=SEED, references=references, probe=probe)
    else:
        sampler = lambda texts, **kw: sample_images_diffusers(WEIGHTS, texts, **kw)  # noqa: E731
        rows, _ = evaluate_prior(None, samples_per_case=SAMPLES_PER_CASE, steps=STEPS,
                                 guidance_scale=GUIDANCE, seed=SEED, references=references,
                                 sampler=sampler, probe=probe)
    return request.param, summarize(rows)


def _v2_xfail(request, sampler, key, target):
    """Strict xfail while version 2 is shipped and it missed this target here."""
    measured = V2[sampler][key]
    if not SHIPPED_V3 and measured is not None and not target(measured):
        request.applymarker(pytest.mark.xfail(
            strict=True, reason=f"shipped prior is version 2, measured {key} = {measured:.3g} here "
                                f"({sampler} sampler); version 3 must meet the target"))


def test_own_object_nearest(request, summary):
    sampler, s = summary
    _v2_xfail(request, sampler, "own_object_nearest", lambda v: v >= 0.95)
    assert s["own_object_nearest"] >= 0.95, s


def test_front_samples_nearer_true_fronts(request, summary):
    sampler, s = summary
    _v2_xfail(request, sampler, "front_sample_nearer_front_views", lambda v: v >= 0.8)
    assert s["front_sample_nearer_front_views"] >= 0.8, s


def test_mean_psnr_to_own_object(request, summary):
    sampler, s = summary
    _v2_xfail(request, sampler, "mean_psnr_own", lambda v: v >= 20.0)
    assert s["mean_psnr_own"] >= 20.0, s


def test_front_samples_classified_front_by_the_view_probe(request, summary):
    sampler, s = summary
    _v2_xfail(request, sampler, "front_sample_classified_front", lambda v: v >= 0.8)
    assert s["front_sample_classified_front"] >= 0.8, s


def test_true_renders_pass_the_probe_target(references, probe):
    """The ceiling row: held-out true renders, scored like samples, are nearest their own object
    and pass the probe's front test (so the probe target is reachable; see the module docstring
    for the nearest-view figures they reach)."""
    from l2vsd_ext.shapes.quality import evaluate_prior, summarize, true_render_sampler

    rows, _ = evaluate_prior(None, samples_per_case=SAMPLES_PER_CASE, references=references,
                             sampler=true_render_sampler(), probe=probe)
    s = summarize(rows)
    print(s)
    assert s["own_object_nearest"] >= 0.75, s
    assert s["front_sample_classified_front"] >= 0.8 and s["back_sample_classified_back"] >= 0.8, s


def test_report_diffusers_sampler_needs_a_local_folder(tmp_path, capsys):
    from l2vsd_ext.shapes.prior_report import main

    code = main(["--pretrained", "tiny-random", "--sampler", "diffusers", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "needs a local folder" in err[0], err
    assert not (tmp_path / "r").exists()

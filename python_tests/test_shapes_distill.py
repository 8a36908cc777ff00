"""The whole loop against a known answer: a short SDS distillation on the shipped shapes prior
moves the field from the initial blob towards the true object; and the benchmark CLI end to end."""
import json

import pytest

from l2vsd_ext.config import RunConfig, with_pretrained_defaults
from l2vsd_ext.shapes.field import truth_renderer
from l2vsd_ext.shapes.metrics import psnr, silhouette_iou
from l2vsd_ext.shapes.objects import OBJECTS
from l2vsd_ext.shapes.score import held_out_cameras, render_over_white

CONVERGENCE_OBJECT, CONVERGENCE_STEPS = "pumpkin", 300


def _scores(renderer, truth, cams):
    out = render_over_white(renderer, cams)
    return silhouette_iou(out["opacity"], truth["opacity"]), float(psnr(out["rgb"], truth["rgb"]).mean())


@pytest.fixture(scope="module")
def short_sds_run(tmp_path_factory):
    """(blob IoU, blob PSNR, final IoU, final PSNR) of a 300-step SDS run against the truth."""
    from l2vsd_ext.trainer import Trainer, run_training

    obj = OBJECTS[CONVERGENCE_OBJECT]
    config = RunConfig(**with_pretrained_defaults(dict(
        prompt=obj.prompt, pretrained="shapes", mode="sds", steps=CONVERGENCE_STEPS,
        out=str(tmp_path_factory.mktemp("sds") / "run"), export_at_end=False, turntable_views=0,
        val_every=10**6, ckpt_every=10**6)))
    cams = held_out_cameras(resolution=32)
    truth = render_over_white(truth_renderer(obj), cams)
    blob = Trainer(config).renderer
    # Fill the untrained occupancy grid first (as the run's first step does): with the grid still
    # all-occupied, 64 samples per ray end before they reach the blob, and the blob would score 0.
    blob.update_occupancy(0)
    initial = _scores(blob, truth, cams)
    trainer = run_training(config, progress=False)
    return (*initial, *_scores(trainer.renderer, truth, cams))


def test_short_sds_run_gets_the_colour_of_the_true_object(short_sds_run):
    blob_iou, blob_psnr, final_iou, final_psnr = short_sds_run
    # Measured 11.2 -> 14.8 dB (grey blob -> orange pumpkin shape).
    assert final_psnr > blob_psnr + 2.0, short_sds_run


def test_short_sds_run_moves_the_silhouette_towards_the_true_object(short_sds_run):
    blob_iou, blob_psnr, final_iou, final_psnr = short_sds_run
    # Measured 0.627 -> 0.743 (the round blob overlaps the round pumpkin well to begin with, so the
    # margin is smaller than the PSNR's); with the old random/learned background it stayed at 0.63.
    assert final_iou > blob_iou + 0.08, short_sds_run


def test_bench_end_to_end_and_resume(tmp_path, capsys):
    from l2vsd_ext.shapes.bench import main

    out = tmp_path / "bench"
    argv = ["--modes", "sds", "vsd:lora_lr=2e-3", "--objects", "duck", "--seeds", "0", "--steps", "2",
            "--val-every", "1", "--kid-samples", "3", "--baseline", "vsd:lora_lr=2e-3", "--out", str(out)]
    assert main(argv) == 0
    run = out / "runs" / "duck" / "sds" / "seed0"
    result = json.loads((run / "shapes_eval.json").read_text())
    for key in ("psnr", "ssim", "silhouette_iou", "depth_error", "chamfer", "janus", "seconds_per_it",
                "front_recovered", "probe_front", "probe_back", "probe_separation", "kid", "kid_front",
                "kid_side", "kid_back", "diag_loss"):
        assert key in result
    assert result["kid_settings"]["features"] == "random-conv" and result["kid_settings"]["samples"] == 3
    assert 0 <= result["front_recovered"] <= 1
    variant = json.loads((out / "runs" / "duck" / "vsd:lora_lr=2e-3" / "seed0" / "shapes_eval.json").read_text())
    assert variant["mode"] == "vsd" and "diag_lora_loss" in variant
    curve = json.loads((run / "shapes_curve.json").read_text())
    assert curve["steps"] == [0, 1, 2] and len(curve["psnr"]) == 3
    assert -1 <= result["probe_separation"] <= 1 and len(curve["probe_separation"]) == 3
    for name in ("psnr", "ssim", "front_recovered", "probe_separation"):
        assert (out / "curves" / f"{name}.png").stat().st_size > 0
    assert "sds,psnr,2," in (out / "curves.csv").read_text()
    paired = (out / "paired.csv").read_text()
    assert paired.startswith("case,baseline,metric,n,mean,sd,lo,hi,up,down,ties,sign_p")
    assert "sds,vsd:lora_lr=2e-3,psnr,1," in paired
    assert len(list((out / "prior_samples").glob("duck_*.png"))) == 3
    assert result["held_out_views"] >= 32 and result["steps"] == 2 and result["mode"] == "sds"
    assert 0 <= result["silhouette_iou"] <= 1 and 0 <= result["janus"] <= 1
    assert (out / "results.csv").read_text().startswith("object,case,seeds,psnr_mean,psnr_std")
    text = (out / "results.md").read_text()
    assert "| sds | 1 | 1 |" in text and "| truth (the true object) | 1 |" in text
    assert "### sds − vsd:lora_lr=2e-3" in text
    assert (out / "comparison.png").stat().st_size > 0
    lines = (run / "metrics.jsonl").read_text()
    capsys.readouterr()
    assert main(argv) == 0  # scored runs are skipped, not retrained
    assert (run / "metrics.jsonl").read_text() == lines
    assert "duck sds seed 0" in capsys.readouterr().out
    # --scored-only trains nothing: a case never run is listed as left out, the tables still build.
    assert main(argv[:3] + ["lvsd"] + argv[3:] + ["--scored-only"]) == 0
    printed = capsys.readouterr().out
    assert "1 runs not scored yet, left out: duck lvsd seed 0" in printed and "duck sds seed 0" in printed
    assert not (out / "runs" / "duck" / "lvsd").exists()
    assert (run / "metrics.jsonl").read_text() == lines
    # A run scored by the older bench (no version, no KID) is re-scored, not retrained.
    old = {k: v for k, v in result.items() if not k.startswith(("kid", "diag_", "front_", "eval_version"))}
    (run / "shapes_eval.json").write_text(json.dumps(old))
    assert main(argv) == 0
    assert (run / "metrics.jsonl").read_text() == lines
    rescored = json.loads((run / "shapes_eval.json").read_text())
    assert rescored["kid"] == pytest.approx(result["kid"]) and rescored["psnr"] == pytest.approx(result["psnr"])
    # A run scored before the view probe (current version) gets the probe's scores added alone.
    before_probe = {k: v for k, v in rescored.items() if not k.startswith("probe_")}
    before_probe["psnr"] = -1.0  # a full re-evaluation would rewrite it
    (run / "shapes_eval.json").write_text(json.dumps(before_probe))
    assert main(argv) == 0
    added = json.loads((run / "shapes_eval.json").read_text())
    assert added["psnr"] == -1.0 and added["probe_separation"] == pytest.approx(result["probe_separation"])

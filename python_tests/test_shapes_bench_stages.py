"""The shapes benchmark's mesh stages (--stages 1 2 3): the mesh scores (normal consistency,
F-score) on meshes with known answers, and the bench end to end with tiny stage runs: each stage
run in its folder, scored, in the tables, resumed without retraining, continued, and restarted
when its upstream run changed."""
import json
import math
import os

import pytest
import torch
import trimesh

from l2vsd_ext.shapes.mesh_score import fscore, normal_consistency, score_mesh
from l2vsd_ext.shapes.objects import OBJECTS, Part, ShapeObject
from l2vsd_ext.shapes import sdf as S


def _ball(radius=0.4):
    return ShapeObject(key="ball", prompt="a ball", parts=(Part(lambda p: S.sphere(p, (0, 0, 0), radius), (1, 0, 0)),),
                       scale=1.0)


def test_fscore_known_answers():
    g = torch.Generator().manual_seed(3)
    truth = torch.rand(500, 3, generator=g)
    assert fscore(truth.clone(), truth, 1e-3) == pytest.approx(1.0)
    assert fscore(truth + 1.0, truth, 0.1) == 0.0
    # As many extra predicted points far away: precision 1/2; every true point still has its
    # twin, recall 1: F = 2 * 0.5 * 1 / 1.5.
    assert fscore(torch.cat([truth, truth + 10.0]), truth, 1e-3) == pytest.approx(2 * 0.5 / 1.5)
    # Half the predicted points moved far away: precision and recall both 1/2.
    moved = truth.clone()
    moved[::2] += 10.0
    assert fscore(moved, truth, 1e-3) == pytest.approx(0.5)
    # Grows with the threshold.
    noisy = truth + 0.02 * torch.randn(500, 3, generator=g)
    values = [fscore(noisy, truth, t) for t in (0.005, 0.02, 0.05, 0.2)]
    assert values == sorted(values) and values[0] < values[-1] == 1.0


def test_normal_consistency_of_a_sphere_mesh_is_one_and_drops_for_scrambled_faces():
    ball = _ball(0.4)
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.4)
    vertices, faces = torch.as_tensor(sphere.vertices), torch.as_tensor(sphere.faces)
    good = normal_consistency(vertices, faces, ball)
    assert good > 0.995
    # Flipping the winding does not matter (|cos|).
    assert normal_consistency(vertices, faces.flip(1), ball) == pytest.approx(good)
    # Random triangles between random vertices of the sphere: normals far from the radial direction.
    g = torch.Generator().manual_seed(0)
    scrambled = torch.randint(0, vertices.shape[0], faces.shape, generator=g)
    bad = normal_consistency(vertices, scrambled, ball)
    assert bad < 0.8


def test_score_mesh_of_the_true_surface_beats_a_shifted_copy():
    from l2vsd_ext.export import extract_mesh
    from l2vsd_ext.shapes.field import AnalyticField

    obj = OBJECTS["duck"]
    field = AnalyticField(obj)
    mesh = extract_mesh(field, resolution=96, threshold=field.max_density / 2)
    v, f = torch.as_tensor(mesh.vertices), torch.as_tensor(mesh.faces)
    own = score_mesh(v, f, obj)
    shifted = score_mesh(v + torch.tensor([0.04, 0.0, 0.0], dtype=v.dtype), f, obj)
    print(own, shifted)
    assert own["normal_consistency"] > 0.95 and own["fscore_2pct"] > 0.95
    assert own["fscore_1pct"] <= own["fscore_2pct"]
    assert own["chamfer"] < 0.5 * shifted["chamfer"]
    assert shifted["fscore_1pct"] < 0.5 * own["fscore_1pct"]
    # the silhouette against the rasterized true mesh: 1 for the true mesh, lower when shifted
    from l2vsd_ext.shapes.mesh_score import true_mesh
    from l2vsd_ext.shapes.stage_bench import mesh_silhouette_iou

    truth = true_mesh("duck")
    tv, tf = torch.as_tensor(truth.vertices, dtype=torch.float32), torch.as_tensor(truth.faces)
    assert mesh_silhouette_iou(tv, tf, "duck") == pytest.approx(1.0)
    assert mesh_silhouette_iou(v.float(), f, "duck") > 0.9
    assert mesh_silhouette_iou(v.float() + torch.tensor([0.0, 0.1, 0.0]), f, "duck") < 0.85
    empty = score_mesh(torch.zeros(0, 3), torch.zeros(0, 3, dtype=torch.long), obj)
    assert math.isnan(empty["chamfer"]) and empty["faces"] == 0


def test_rasterized_truth_agrees_with_the_volume_rendered_truth():
    """The mesh stages' reference (the true mesh, rasterized, albedo colours) shows the same object
    from the same cameras as stage 1's (the analytic field, volume-rendered): the same conventions
    (no flip, same focal length, same colours); only the silhouette's rim differs."""
    from l2vsd_ext.shapes.field import truth_renderer
    from l2vsd_ext.shapes.metrics import psnr, silhouette_iou
    from l2vsd_ext.shapes.score import held_out_cameras, render_over_white
    from l2vsd_ext.shapes.stage_bench import truth_mesh_renders

    cams = held_out_cameras(48)
    volume = render_over_white(truth_renderer(OBJECTS["duck"]), cams)
    rgb, coverage = truth_mesh_renders("duck", cams)
    iou = silhouette_iou(coverage, volume["opacity"])
    flipped = max(silhouette_iou(coverage.flip(1), volume["opacity"]), silhouette_iou(coverage.flip(2), volume["opacity"]))
    both = ((coverage > 0.5) & (volume["opacity"] > 0.99))[:, None].expand_as(rgb)
    inside = float(psnr(rgb[both][None], volume["rgb"][both][None]))
    mirrored = float(psnr(rgb.flip(3)[both][None], volume["rgb"][both][None]))
    # measured on the duck at 48 px: IoU 0.874 (flipped 0.57), PSNR inside 27.6 dB (mirrored 10.5)
    print(f"IoU {iou:.3f} (flipped {flipped:.3f}), PSNR inside {inside:.1f} dB (mirrored {mirrored:.1f})")
    assert iou > 0.82 and flipped < iou - 0.2
    assert inside > 24 and mirrored < inside - 10


def _lines(path):
    return open(path).read().splitlines()


def test_bench_with_stages_end_to_end_resume_continue_and_stale(tmp_path, capsys):
    from l2vsd_ext.shapes.bench import main
    from l2vsd_ext.shapes.stage_bench import stage_mode

    out = tmp_path / "bench"
    argv = ["--modes", "sds", "--objects", "duck", "--seeds", "0", "--steps", "2", "--val-every", "1",
            "--kid-features", "none", "--stages", "1", "2", "3", "--stage-steps", "2", "2",
            "--tet-resolution", "8", "--stage-val-every", "1", "--out", str(out)]
    assert main(argv) == 0
    run = out / "runs" / "duck" / "sds" / "seed0"
    geometry, texture = run / "geometry", run / "texture"
    g_eval = json.loads((geometry / "stage_eval.json").read_text())
    t_eval = json.loads((texture / "stage_eval.json").read_text())
    stage1 = json.loads((run / "shapes_eval.json").read_text())
    assert g_eval["steps"] == 2 and t_eval["steps"] == 2
    assert 0 <= stage1["mesh_silhouette_iou"] <= 1
    for result in (g_eval, t_eval, stage1):
        assert result["chamfer"] > 0
        assert 0 <= result["normal_consistency"] <= 1
        assert 0 <= result["fscore_1pct"] <= result["fscore_2pct"] <= 1
        assert 0 <= result["silhouette_iou"] <= 1
    assert math.isfinite(t_eval["psnr"]) and 0 < t_eval["psnr"] < 60
    # the texture stage's mesh is the geometry stage's (minus small pieces): nearly the same scores
    assert t_eval["faces"] <= g_eval["faces"]
    # the stage runs were started from their upstream runs
    assert json.loads((geometry / "bench_origin.json").read_text())["upstream"] == str(run)
    assert json.loads((texture / "bench_origin.json").read_text())["upstream"] == str(geometry)
    csv_header = _lines(out / "results.csv")[0].split(",")
    for column in ("s2_chamfer_mean", "s2_normal_consistency_mean", "s2_fscore_1pct_mean", "s3_psnr_mean",
                   "s3_chamfer_mean", "normal_consistency_mean", "fscore_2pct_mean"):
        assert column in csv_header
    row = dict(zip(csv_header, _lines(out / "results.csv")[1].split(",")))
    assert float(row["s2_chamfer_mean"]) == pytest.approx(g_eval["chamfer"])
    assert float(row["s3_psnr_mean"]) == pytest.approx(t_eval["psnr"])
    text = (out / "results.md").read_text()
    assert "## Stages" in text and "s2_chamfer ↓" in text and "s3_psnr ↑" in text
    assert "| mesh_silhouette_iou ↑ | s2_silhouette_iou ↑ | s3_silhouette_iou ↑ |" in text
    assert "stage 2 Chamfer" in capsys.readouterr().out
    # every stage runs the case's guidance mode (the texture stage's own default would be vsd)
    assert stage_mode(str(geometry)) == "sds" and stage_mode(str(texture)) == "sds"

    # Rerun: everything scored, nothing retrained.
    g_lines, t_lines = _lines(geometry / "metrics.jsonl"), _lines(texture / "metrics.jsonl")
    assert main(argv) == 0
    assert _lines(geometry / "metrics.jsonl") == g_lines and _lines(texture / "metrics.jsonl") == t_lines

    # A stage run scored by an older version of the scoring is re-scored, not retrained.
    stale_score = {**g_eval, "stage_eval_version": 1, "chamfer": -1.0}
    (geometry / "stage_eval.json").write_text(json.dumps(stale_score))
    assert main(argv) == 0
    assert json.loads((geometry / "stage_eval.json").read_text())["chamfer"] == pytest.approx(g_eval["chamfer"])
    assert _lines(geometry / "metrics.jsonl") == g_lines

    # A longer geometry stage continues that run; the texture run, started from the old geometry
    # checkpoint, is set aside and started again from the new one.
    longer = argv[:argv.index("--stage-steps")] + ["--stage-steps", "3", "2"] + argv[argv.index("--stage-steps") + 3:]
    assert main(longer) == 0
    g_records = [json.loads(x) for x in _lines(geometry / "metrics.jsonl")]
    assert g_records[:len(g_lines)] == [json.loads(x) for x in g_lines] and max(r["step"] for r in g_records) == 3
    assert json.loads((geometry / "stage_eval.json").read_text())["steps"] == 3
    assert (run / "texture.stale" / "stage_eval.json").is_file()
    assert json.loads((texture / "stage_eval.json").read_text())["steps"] == 2

    # A texture run stopped before its first checkpoint is set aside and started again.
    import shutil

    shutil.rmtree(texture / "checkpoints")
    (texture / "stage_eval.json").unlink()
    assert main(longer) == 0
    assert (texture / "checkpoints" / "last.pt").is_file()
    assert json.loads((texture / "stage_eval.json").read_text())["steps"] == 2
    assert not (run / "texture.stale" / "checkpoints").exists()  # the set-aside copy is the stopped run

    # A texture run trained with another guidance mode than its case's (benches before the stages
    # took the case's mode ran the texture stage with vsd whatever the case) does not count as
    # scored, and is set aside and retrained with the case's mode.
    cfg = texture / "config.yaml"
    cfg.write_text(cfg.read_text().replace("mode: sds", "mode: vsd", 1))
    assert stage_mode(str(texture)) == "vsd"
    assert main(longer + ["--scored-only"]) == 2
    assert main(longer) == 0
    assert stage_mode(str(run / "texture.stale")) == "vsd" and stage_mode(str(texture)) == "sds"
    assert json.loads((texture / "stage_eval.json").read_text())["steps"] == 2


def test_bench_stage_options_are_checked(tmp_path, capsys, monkeypatch):
    from l2vsd_ext.shapes.bench import main

    base = ["--modes", "sds", "--objects", "duck", "--seeds", "0", "--out", str(tmp_path / "b")]
    for extra, message in ((["--stages", "1", "3"], "--stages: each stage starts from the one before"),
                           (["--stages", "1", "2", "--stage-steps", "0", "5"], "--stage-steps: must be >= 1"),
                           (["--stages", "1", "2", "--tet-resolution", "1"], "--tet-resolution: must be >= 2"),
                           (["--stages", "1", "2", "--tet-resolution", "300"], "--tet-resolution: must be in [2, 256]")):
        assert main(base + extra) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and message in err
    # a tet grid too large for memory is refused before any stage-1 run trains
    from l2vsd_ext.mesh import memory

    monkeypatch.setattr(memory, "available_memory_bytes", lambda: 2 ** 30)
    assert main(base + ["--stages", "1", "2", "--tet-resolution", "128"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--tet-resolution: 128 needs about" in err
    assert not os.path.isdir(tmp_path / "b" / "runs")

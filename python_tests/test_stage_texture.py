"""Stage 3 (python -m l2vsd_ext.run --stage texture --init-from GEOM_RUN) on the tiny pipeline, and
its pieces: removal of small mesh pieces, the colour field's fit to given colours."""
import hashlib
import json
import math
import os
import shutil

import pytest
import torch
import trimesh
import yaml

from l2vsd_ext.checkpoint import load_checkpoint
from l2vsd_ext.export.loading import open_run
from l2vsd_ext.mesh import make_tet_grid, marching_tets
from l2vsd_ext.mesh.texture_field import TextureField, fit_colors, remove_small_pieces
from l2vsd_ext.run import main


def _sphere_pair():
    """A ball of radius 0.4 and a small one of radius 0.08 apart from it, as one mesh."""
    grid = make_tet_grid(32, half_extent=0.7)
    v = grid.vertices
    big = v.norm(dim=-1) - 0.4
    small = (v - torch.tensor([0.55, 0.55, 0.55])).norm(dim=-1) - 0.08
    return marching_tets(v, torch.minimum(big, small), grid), marching_tets(v, big, grid)


def test_remove_small_pieces_keeps_the_big_piece_only():
    pair, big = _sphere_pair()
    small_share = 1 - big.faces.shape[0] / pair.faces.shape[0]
    assert 0 < small_share < 0.1
    vertices, faces, removed = remove_small_pieces(pair.vertices, pair.faces, 0.1)
    assert removed == 1
    assert faces.shape == big.faces.shape and vertices.shape == big.vertices.shape
    assert vertices.norm(dim=-1).max() < 0.45  # no vertex of the small ball left
    assert int(faces.max()) == vertices.shape[0] - 1 and int(faces.min()) == 0
    assert trimesh.Trimesh(vertices.numpy(), faces.numpy(), process=False).is_watertight
    # with no threshold nothing goes
    assert remove_small_pieces(pair.vertices, pair.faces, 0.0)[2] == 0


def test_fit_colors_reproduces_a_colour_pattern_on_a_surface():
    torch.manual_seed(0)
    _, big = _sphere_pair()
    points = big.vertices
    pattern = lambda p: torch.stack([(p[:, 0] / 0.8 + 0.5), (torch.sin(8 * p[:, 1]) + 1) / 2,
                                     (p[:, 2] > 0).float() * 0.8 + 0.1], 1)
    texture = TextureField((0, 0, 0), 0.7, n_levels=8, log2_hashmap_size=14)
    before, after = fit_colors(texture, points, pattern(points), steps=300, seed=0)
    # held out: points inside the faces, not the vertices it was fitted at
    from l2vsd_ext.mesh.sdf_init import surface_points

    held_out = surface_points(big.vertices, big.faces, 5000, seed=7)
    with torch.no_grad():
        held_mse = float(((texture(held_out) - pattern(held_out)) ** 2).mean())
    print(f"colour fit MSE {before:.4f} -> {after:.5f} (held out {held_mse:.5f})")
    assert before > 0.02 and after < 0.05 * before and held_mse < 0.15 * before


def _snapshot(folder):
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            out[os.path.relpath(path, folder)] = hashlib.sha256(open(path, "rb").read()).hexdigest()
    return out


def _records(folder):
    return [json.loads(line) for line in open(os.path.join(folder, "metrics.jsonl")).read().splitlines()]


@pytest.fixture(scope="module")
def runs(tiny_stage1_run, tmp_path_factory):
    """(stage-1 run, geometry run) on the tiny pipeline."""
    stage1 = tiny_stage1_run
    geometry = str(tmp_path_factory.mktemp("stages") / "geometry")
    assert main(["--stage", "geometry", "--init-from", stage1, "--out", geometry, "--steps", "2",
                 "--tet-resolution", "16"]) == 0
    return stage1, geometry


def texture(init_from, out, steps, *extra):
    return ["--stage", "texture", "--init-from", init_from, "--out", str(out), "--steps", str(steps),
            "--val-every", "2", "--ckpt-every", "2", "--color-init-steps", "50", *extra]


def open_texture(state):
    """The texture field of a texture-stage checkpoint."""
    from l2vsd_ext.config import from_saved
    from l2vsd_ext.mesh.texture_field import TextureField

    g = from_saved(state["config"]["guidance"])
    field = TextureField(tuple(state["box"]["center"]), state["box"]["half_extent"], n_levels=g.n_levels,
                         log2_hashmap_size=g.log2_hashmap_size)
    field.load_state_dict(state["texture"])
    return field.eval()


def test_texture_stage_starts_from_stage1_colours_and_trains_with_vsd(runs, tmp_path):
    stage1, geometry = runs
    before = {stage1: _snapshot(stage1), geometry: _snapshot(geometry)}
    out = tmp_path / "tex"
    assert main(texture(geometry, out, 4, "--texture-size", "128")) == 0
    assert {k: _snapshot(k) for k in before} == before  # both earlier runs are only read

    records = _records(out)
    assert [r["step"] for r in records] == list(range(5))
    start = records[0]
    assert start["color_init_mse_after"] < 0.2 * start["color_init_mse_before"]
    assert start["mesh_faces"] > 100 and start["mesh_pieces_removed"] >= 0
    for r in records[1:]:
        assert math.isfinite(r["loss"]) and "lora_loss" in r  # VSD by default
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["stage"] == "texture" and saved["mode"] == "vsd" and saved["guidance"]["mode"] == "vsd"

    mesh = trimesh.load(str(out / "export" / "mesh.obj"), force="mesh", process=False)
    assert mesh.is_watertight and len(mesh.faces) == start["mesh_faces"]
    colors = torch.as_tensor(mesh.visual.vertex_colors[:, :3]).float() / 255
    assert colors.shape == (len(mesh.vertices), 3)
    # the exported colours are (after 4 small steps) the stage-1 albedo at the vertices
    renderer, _, _ = open_run(stage1)
    with torch.no_grad():
        albedo = renderer.field(torch.as_tensor(mesh.vertices).float())["albedo"].clamp(0, 1)
    assert (colors - albedo).abs().mean() < 0.01  # measured: 0.003 (with --color-init none: 0.03)
    # the mesh is the geometry run's, fixed
    geom_mesh = trimesh.load(os.path.join(geometry, "export", "mesh.obj"), force="mesh", process=False)
    assert abs(mesh.area - geom_mesh.area) < 1e-4 * geom_mesh.area
    assert os.path.isfile(out / "export" / "renders.png")
    state = load_checkpoint(str(out / "checkpoints" / "last.pt"))
    assert state["step"] == 4 and state["faces"].shape[0] == start["mesh_faces"]

    # the UV-atlas export: the same surface, its baked texture sampled at each vertex's UV gives the
    # vertex colours above (up to texel sampling and 8-bit rounding)
    assert {"textured.obj", "textured.mtl", "textured_albedo.png", "textured.glb"} <= set(os.listdir(out / "export"))
    for name in ("textured.glb", "textured.obj"):
        uv_mesh = trimesh.load(str(out / "export" / name), force="mesh", process=False)
        assert isinstance(uv_mesh.visual, trimesh.visual.TextureVisuals), name
        material = uv_mesh.visual.material  # OBJ: SimpleMaterial; glTF: PBRMaterial
        image = material.baseColorTexture if hasattr(material, "baseColorTexture") else material.image
        assert image.size == (128, 128), name
        assert abs(uv_mesh.area - mesh.area) < 1e-4 * mesh.area, name
        sampled = torch.as_tensor(uv_mesh.visual.to_color().vertex_colors[:, :3]).float() / 255
        field = open_texture(state)
        with torch.no_grad():
            truth = field(torch.as_tensor(uv_mesh.vertices).float()).clamp(0, 1)
        print(name, float((sampled - truth).abs().mean()), float((sampled - truth).abs().max()))
        assert (sampled - truth).abs().mean() < 0.02, name
        # triangles of about one texel here (6k faces on 128^2 texels): a rare vertex samples a
        # neighbouring chart's texel (measured: 1 of 3825)
        assert ((sampled - truth).abs().amax(1) > 0.1).float().mean() < 0.01, name


def test_texture_resume_reproduces_the_uninterrupted_run(runs, tmp_path):
    _, geometry = runs
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert main(texture(geometry, straight, 4, "--mode", "sds")) == 0
    assert main(texture(geometry, resumed, 4, "--mode", "sds", "--stop-after", "2")) == 0
    assert not (resumed / "export").exists()
    assert main(["--stage", "texture", "--out", str(resumed), "--resume"]) == 0
    strip = lambda r: {k: v for k, v in r.items() if k != "seconds"}
    assert [strip(r) for r in _records(straight)] == [strip(r) for r in _records(resumed)]
    a = load_checkpoint(str(straight / "checkpoints" / "last.pt"))["texture"]
    b = load_checkpoint(str(resumed / "checkpoints" / "last.pt"))["texture"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_texture_bad_input_is_one_line_and_exit_2(runs, tmp_path, capsys):
    stage1, geometry = runs
    before = _snapshot(stage1)
    out = tmp_path / "tex"

    def refused(argv):
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "error:" in err, err
        assert not out.exists()
        return err

    assert "is a stage-1 run, not a geometry run" in refused(texture(stage1, out, 2))
    assert "is not a folder" in refused(texture(str(tmp_path / "missing"), out, 2))
    assert "--color-init" in refused(texture(geometry, out, 2, "--color-init", "paint"))
    assert "--texture-size: must be in [0, 8192]" in refused(texture(geometry, out, 2, "--texture-size", "-1"))
    assert _snapshot(stage1) == before
    # a geometry run whose stage-1 run is gone: colours cannot start from it
    moved = tmp_path / "geometry_copy"
    shutil.copytree(geometry, moved)
    cfg_path = moved / "checkpoints" / "last.pt"
    state = load_checkpoint(str(cfg_path))
    state["config"]["init_from"] = str(tmp_path / "gone")
    torch.save(state, cfg_path)
    assert "--color-init none" in refused(texture(str(moved), out, 2))
    assert main(texture(str(moved), out, 2, "--color-init", "none")) == 0
    assert "color_init_mse_after" not in _records(out)[0]


def test_texture_refuses_a_damaged_geometry_checkpoint(runs, tmp_path, capsys):
    _, geometry = runs
    damaged = tmp_path / "damaged"
    shutil.copytree(geometry, damaged)
    path = damaged / "checkpoints" / "last.pt"
    state = load_checkpoint(str(path))
    state["sdf"] = state["sdf"][:10]  # no longer the grid's size
    torch.save(state, path)
    out = tmp_path / "tex"
    capsys.readouterr()
    assert main(texture(str(damaged), out, 2)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no readable geometry checkpoint" in err, err
    assert not out.exists()


def test_texture_turntable_shows_the_textured_mesh(runs, tmp_path):
    import imageio.v3 as iio

    from l2vsd_ext.config import from_saved
    from l2vsd_ext.mesh.stage_texture import render_textured
    from l2vsd_ext.mesh.texture_field import TextureField
    from l2vsd_ext.scene import CameraSampler
    from l2vsd_ext.trainer import _index

    _, geometry = runs
    out = tmp_path / "tex"
    assert main(texture(geometry, out, 2, "--turntable-views", "4")) == 0
    names = sorted(os.listdir(out / "turntable"))
    assert names == [f"frame_{i:03d}.png" for i in range(4)]
    frames = torch.stack([torch.as_tensor(iio.imread(out / "turntable" / n)) for n in names]).float() / 255
    # each frame: shaded | normal map | the final texture on the mesh over white, from the orbit
    # (up to PNG rounding); the shape panels are the geometry stage's (test_stage_geometry)
    h = frames.shape[1]
    assert frames.shape[2] == 3 * h
    frames = frames[:, :, 2 * h:]
    state = load_checkpoint(str(out / "checkpoints" / "last.pt"))
    field = open_texture(state)
    h = frames.shape[1]
    cams = CameraSampler(height=h, width=h).orbit(4)
    with torch.no_grad():
        expected = torch.cat([render_textured(state["vertices"], state["faces"], field, _index(cams, i),
                                              torch.ones(1, 3))[0] for i in range(4)]).clamp(0, 1)
    assert (frames - expected.permute(0, 2, 3, 1)).abs().max() < 1.5 / 255
    assert (frames[:, 0, 0] == 1).all()  # white background in the corners
    assert iio.imread(out / "export" / "turntable.gif", index=None).shape[0] == 4
    quiet = tmp_path / "quiet"
    assert main(texture(geometry, quiet, 2, "--turntable-views", "2", "--no-export")) == 0
    assert len(os.listdir(quiet / "turntable")) == 2 and not (quiet / "export").exists()

"""l2vsd_ext.export: marching-cubes mesh of an analytic field, turntable files, the CLI on a tiny
run, and clear errors for missing or corrupt run folders."""
import os
import subprocess
import sys

import imageio.v2 as imageio
import imageio.v3 as iio
import numpy as np
import pytest
import torch
import trimesh
from torch import nn

from l2vsd_ext.export import (EmptyMeshError, contact_sheet, export_run, extract_mesh, open_run,
                              write_gif, write_mesh, write_mp4)
from l2vsd_ext.export.cli import main as export_main
from l2vsd_ext.export.views import render_orbit
from tiny_run import make_tiny_run


class SphereField(nn.Module):
    """density = threshold + slope * (radius - |x - centre|): the threshold's isosurface is the
    sphere; albedo varies with position so vertex colours can be checked."""

    def __init__(self, centre, radius, threshold=25.0, slope=50.0, box=1.0):
        super().__init__()
        self.register_buffer("aabb", torch.tensor([-box] * 3 + [box] * 3, dtype=torch.float32))
        self.centre, self.radius = torch.as_tensor(centre, dtype=torch.float32), float(radius)
        self.threshold, self.slope = threshold, slope

    def density(self, points):
        return self.threshold + self.slope * (self.radius - (points - self.centre).norm(dim=-1))

    def albedo(self, points):
        return torch.sigmoid(3 * points)

    def forward(self, points):
        return {"density": self.density(points), "albedo": self.albedo(points)}


def random_sphere(seed):
    g = torch.Generator().manual_seed(seed)
    radius = 0.3 + 0.4 * float(torch.rand(1, generator=g))
    centre = (torch.rand(3, generator=g) - 0.5) * 2 * (0.9 - radius)  # keeps it inside the box
    return SphereField(centre, radius), centre, radius


@pytest.mark.parametrize("seed", range(3))
def test_sphere_mesh_is_watertight_with_the_right_radius_and_colours(seed):
    field, centre, radius = random_sphere(seed)
    mesh = extract_mesh(field, resolution=48)
    assert mesh.is_watertight and mesh.is_winding_consistent
    assert mesh.volume > 0  # outward normals
    distances = np.linalg.norm(mesh.vertices - centre.numpy(), axis=1)
    assert abs(distances.mean() - radius) < 0.05 * radius
    assert np.abs(distances - radius).max() < 0.05 * radius
    assert abs(mesh.volume - 4 / 3 * np.pi * radius ** 3) < 0.05 * 4 / 3 * np.pi * radius ** 3
    expected = (field.albedo(torch.as_tensor(mesh.vertices, dtype=torch.float32)).numpy() * 255).round()
    assert np.abs(mesh.visual.vertex_colors[:, :3].astype(float) - expected).max() <= 1


def test_surface_cut_by_the_box_is_capped_and_still_closed():
    field = SphereField(torch.zeros(3), radius=1.3, box=1.0)  # the ball overflows the box
    mesh = extract_mesh(field, resolution=24)
    assert mesh.is_watertight
    assert np.all(np.abs(mesh.vertices) <= 1.0 + 1e-6)
    assert mesh.vertices.max(axis=0) == pytest.approx([1.0, 1.0, 1.0], abs=1e-6)


def test_threshold_is_configurable_and_too_high_a_threshold_is_a_clear_error():
    field, centre, radius = random_sphere(7)
    # threshold t picks the sphere of radius R - (t - 25) / slope.
    smaller = extract_mesh(field, resolution=48, threshold=35.0)
    distances = np.linalg.norm(smaller.vertices - centre.numpy(), axis=1)
    assert abs(distances.mean() - (radius - 10 / 50)) < 0.05 * radius
    with pytest.raises(EmptyMeshError, match="threshold"):
        extract_mesh(field, resolution=16, threshold=1e6)


def test_mesh_files_load_back_with_their_vertex_colours(tmp_path):
    field, _, _ = random_sphere(11)
    mesh = extract_mesh(field, resolution=24)
    paths = write_mesh(mesh, str(tmp_path / "mesh"))
    assert [os.path.basename(p) for p in paths] == ["mesh.obj", "mesh.ply", "mesh.glb"]
    ply = trimesh.load(paths[1], process=False)
    assert len(ply.vertices) == len(mesh.vertices) and len(ply.faces) == len(mesh.faces)
    assert np.array_equal(ply.visual.vertex_colors, mesh.visual.vertex_colors)
    obj = trimesh.load(paths[0], process=False)
    assert len(obj.faces) == len(mesh.faces)
    assert np.abs(obj.visual.vertex_colors[:, :3].astype(int) - mesh.visual.vertex_colors[:, :3]).max() <= 1
    glb = trimesh.load(paths[2], force="mesh", process=False)
    assert len(glb.faces) == len(mesh.faces)
    assert np.abs(glb.visual.vertex_colors[:, :3].astype(int) - mesh.visual.vertex_colors[:, :3]).max() <= 1


def read_mp4(path):
    with imageio.get_reader(path, format="FFMPEG") as reader:
        return np.stack(list(reader.iter_data()))


@pytest.mark.parametrize("n, h, w", [(5, 24, 32), (9, 18, 18)])
def test_video_files_have_n_frames_of_the_requested_size(tmp_path, n, h, w):
    frames = torch.rand(n, 3, h, w)
    mp4 = read_mp4(write_mp4(frames, str(tmp_path / "t.mp4"), fps=10))
    assert mp4.shape == (n, h, w, 3)
    gif = iio.imread(write_gif(frames, str(tmp_path / "t.gif")), index=None)
    assert gif.shape[:3] == (n, h, w)
    assert np.abs(gif[..., :3].astype(int) - (frames.permute(0, 2, 3, 1).numpy() * 255).round()).mean() < 40


def test_mp4_refuses_odd_frame_sizes(tmp_path):
    with pytest.raises(ValueError, match="even"):
        write_mp4(torch.rand(2, 3, 15, 16), str(tmp_path / "t.mp4"))


def test_contact_sheet_tiles_evenly_spaced_frames():
    frames = torch.rand(10, 3, 6, 8)
    sheet = contact_sheet(frames, n_tiles=4, columns=2)
    assert sheet.shape == (12, 16, 3)
    expected = (frames[[0, 2, 5, 7]].permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    assert np.array_equal(sheet[:6, :8], expected[0]) and np.array_equal(sheet[6:, 8:], expected[3])


# -- on a tiny trained run ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_run(tiny_sd_path, tmp_path_factory):
    return make_tiny_run(tiny_sd_path, tmp_path_factory.mktemp("export_run"))


def test_a_finished_run_writes_its_export(tiny_run):
    names = sorted(os.listdir(os.path.join(tiny_run, "export")))
    assert names == ["contact_sheet.png", "mesh.glb", "mesh.obj", "mesh.ply", "turntable.gif", "turntable.mp4"]
    frames = read_mp4(os.path.join(tiny_run, "export", "turntable.mp4"))
    assert frames.shape == (4, 16, 16, 3)  # turntable_views frames at the training resolution
    assert trimesh.load(os.path.join(tiny_run, "export", "mesh.ply")).is_watertight


def test_orbit_renders_match_the_trainers_turntable_frames(tiny_run):
    renderer, config, step = open_run(tiny_run)
    frames = render_orbit(renderer, config.turntable_views, config.resolution)
    saved = np.stack([iio.imread(os.path.join(tiny_run, "turntable", f"frame_{i:03d}.png"))
                      for i in range(config.turntable_views)])
    assert np.abs(saved.astype(int) - (frames.permute(0, 2, 3, 1).numpy() * 255).round()).max() <= 1


def test_cli_writes_video_only_at_the_requested_size(tiny_run, tmp_path):
    import shutil

    run = shutil.copytree(tiny_run, tmp_path / "run")
    shutil.rmtree(run / "export")
    assert export_main([str(run), "--video", "--resolution", "20", "--n-views", "6"]) == 0
    assert sorted(os.listdir(run / "export")) == ["contact_sheet.png", "turntable.gif", "turntable.mp4"]
    assert read_mp4(str(run / "export" / "turntable.mp4")).shape == (6, 20, 20, 3)
    assert export_main([str(run), "--mesh", "--mesh-resolution", "20"]) == 0
    assert trimesh.load(str(run / "export" / "mesh.obj")).is_watertight


def test_export_run_on_a_loaded_scene_matches_the_cli_mesh(tiny_run, tmp_path):
    renderer, _, _ = open_run(tiny_run)
    written = export_run(str(tmp_path), renderer, video=False, mesh_resolution=20)
    mesh = trimesh.load(written["ply"])
    assert mesh.is_watertight and mesh.volume > 0


def _cli(*args):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "l2vsd_ext.export", *args], capture_output=True,
                          text=True, env=env)


def _one_line_error(result, words):
    assert result.returncode == 2, result.stderr
    # Libraries may log above it; ours is the last line, and the only error line.
    errors = [line for line in result.stderr.splitlines() if line.startswith("l2vsd_ext.export: error:")]
    assert len(errors) == 1 and words in errors[0], result.stderr
    assert result.stderr.strip().splitlines()[-1] == errors[0]


def test_missing_run_folder_is_a_one_line_error(tmp_path):
    _one_line_error(_cli(str(tmp_path / "nowhere")), "not a folder")
    _one_line_error(_cli(str(tmp_path)), "no checkpoints/last.pt")


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", "random"])
def test_corrupt_checkpoint_is_a_one_line_error(tmp_path, content):
    if content == "random":
        content = os.urandom(256)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.pt").write_bytes(content)
    _one_line_error(_cli(str(tmp_path)), "checkpoint")


def test_checkpoint_of_something_else_is_a_one_line_error(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    torch.save({"weights": torch.zeros(3)}, tmp_path / "checkpoints" / "last.pt")
    _one_line_error(_cli(str(tmp_path)), "checkpoint")


@pytest.mark.parametrize("args, words", [(["--resolution", "17"], "--resolution"),
                                         (["--n-views", "0"], "--n-views"),
                                         (["--mesh-resolution", "1"], "--mesh-resolution")])
def test_bad_arguments_are_one_line_errors(tmp_path, args, words):
    _one_line_error(_cli(str(tmp_path), *args), words)


def test_failed_export_leaves_the_previous_outputs_untouched(tiny_run, tmp_path):
    # Issue 14 (3): everything is staged and moved into place only when all of it succeeded.
    import shutil

    run = shutil.copytree(tiny_run, tmp_path / "run")
    before = {name: (run / "export" / name).read_bytes() for name in os.listdir(run / "export")}
    assert export_main([str(run), "--n-views", "3", "--resolution", "12", "--threshold", "1e12"]) == 2
    assert sorted(os.listdir(run / "export")) == sorted(before)  # no partial folder left either
    assert all((run / "export" / name).read_bytes() == data for name, data in before.items())


def test_cpu_export_defaults_are_cpu_sized_and_said(tiny_run, tmp_path, capsys):
    # Issue 14 (6): a default export on the CPU renders fewer, smaller frames and says so.
    import shutil

    from l2vsd_ext.export.cli import CPU_DEFAULTS

    run = shutil.copytree(tiny_run, tmp_path / "run")
    assert export_main([str(run), "--video", "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "--n-views 60" in err and "--resolution 128" in err
    assert read_mp4(str(run / "export" / "turntable.mp4")).shape == (
        CPU_DEFAULTS["n_views"], CPU_DEFAULTS["resolution"], CPU_DEFAULTS["resolution"], 3)


@pytest.mark.parametrize("density_scale", [1.0, 50.0])  # 50: rays turn opaque and stop early
def test_fast_turntable_render_is_the_renderers_image(tiny_run, density_scale):
    # Issue 14 (6): segment-wise marching with early termination gives VolumeRenderer's image.
    from l2vsd_ext.export import fast_render
    from l2vsd_ext.scene import CameraSampler

    renderer, _, _ = open_run(tiny_run)
    activate = renderer.field._activate_density
    renderer.field._activate_density = lambda raw, points: activate(raw, points) * density_scale
    cams = CameraSampler(height=12, width=12).orbit(3, elevation=15, distance=1.5, fovy=50)
    assert fast_render.supports(renderer)
    for i in range(3):
        o, d = cams.rays_o[i].reshape(-1, 3), cams.rays_d[i].reshape(-1, 3)
        with torch.no_grad():
            expected = renderer(o, d)["rgb"]
            got = fast_render.render_albedo(renderer, o, d, segment=4)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)

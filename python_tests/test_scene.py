"""Scene pieces: cameras (determinism, geometry, DreamFusion view labels), the NeRF field
(shapes, blob bias, normals) and backgrounds."""
import math

import pytest
import torch

from l2vsd_ext.scene import CameraSampler, MLPBackground, NeRFField, SolidBackground, view_label
from l2vsd_ext.scene.field import trunc_exp

SMALL = dict(n_levels=4, log2_hashmap_size=12, base_resolution=4, per_level_scale=1.5)


def test_camera_sampler_is_deterministic_under_a_generator():
    sampler = CameraSampler(8, 8, batch_size=4)
    a = sampler.sample(torch.Generator().manual_seed(3))
    b = sampler.sample(torch.Generator().manual_seed(3))
    c = sampler.sample(torch.Generator().manual_seed(4))
    assert torch.equal(a.rays_d, b.rays_d) and torch.equal(a.c2w, b.c2w)
    assert a.view_labels == b.view_labels
    assert not torch.equal(a.c2w, c.c2w)


def test_camera_geometry():
    sampler = CameraSampler(16, 12, batch_size=3, camera_perturb=0.0, center_perturb=0.0,
                            up_perturb=0.0)
    cams = sampler.sample(torch.Generator().manual_seed(0))
    assert cams.rays_o.shape == cams.rays_d.shape == (3, 16, 12, 3)
    assert cams.c2w.shape == (3, 4, 4)
    rot = cams.c2w[:, :3, :3]
    torch.testing.assert_close(rot.transpose(1, 2) @ rot, torch.eye(3).expand(3, 3, 3), atol=1e-5,
                               rtol=0)
    torch.testing.assert_close(cams.rays_d.norm(dim=-1), torch.ones(3, 16, 12))
    # The camera sits at the sampled spherical position and looks at the origin.
    torch.testing.assert_close(cams.c2w[:, :3, 3].norm(dim=-1), cams.distance)
    elevation = torch.rad2deg(torch.asin(cams.c2w[:, 2, 3] / cams.distance))
    torch.testing.assert_close(elevation, cams.elevation, atol=1e-3, rtol=0)
    forward = -cams.c2w[:, :3, 2]
    torch.testing.assert_close(forward, -torch.nn.functional.normalize(cams.c2w[:, :3, 3], dim=-1))
    # The centre of the image looks (nearly) at the origin; fovy spans the image height.
    centre = cams.rays_d[:, 7:9, 5:7].mean(dim=(1, 2))
    assert bool((torch.nn.functional.cosine_similarity(centre, forward) > 0.99).all())
    top, bottom = cams.rays_d[:, 0, 6], cams.rays_d[:, -1, 6]
    angle = torch.rad2deg(torch.acos((top * bottom).sum(-1)))
    expected = cams.fovy * (15 / 16)  # pixel centres: half a pixel in from each edge
    assert bool(((angle - expected).abs() < 1.5).all())


def test_camera_ranges_and_stratified_azimuth():
    sampler = CameraSampler(4, 4, batch_size=8, elevation_range=(0, 30), distance_range=(1, 2),
                            fovy_range=(40, 50))
    cams = sampler.sample(torch.Generator().manual_seed(1))
    assert bool(((cams.elevation >= 0) & (cams.elevation <= 30)).all())
    assert bool(((cams.fovy >= 40) & (cams.fovy <= 50)).all())
    slots = ((cams.azimuth + 180) / 45).floor().long()
    assert slots.tolist() == list(range(8))
    assert cams.light_positions.shape == (8, 3)


def test_orbit_is_deterministic_turntable():
    sampler = CameraSampler(4, 4)
    a, b = sampler.orbit(6, elevation=10, distance=2.0), sampler.orbit(6, elevation=10, distance=2.0)
    assert torch.equal(a.c2w, b.c2w)
    assert a.azimuth.tolist() == pytest.approx([-180, -120, -60, 0, 60, 120])
    assert a.view_labels == ["back", "side", "side", "front", "side", "side"]


@pytest.mark.parametrize("elevation,azimuth,label", [
    (0, 0, "front"), (10, 44, "front"), (10, -44, "front"), (0, 90, "side"), (0, -90, "side"),
    (0, 180, "back"), (0, -170, "back"), (0, 136, "back"), (61, 0, "overhead"), (80, 180, "overhead"),
    (0, 360, "front"), (0, 270, "side")])
def test_view_labels(elevation, azimuth, label):
    assert view_label(elevation, azimuth) == label


def test_camera_bad_arguments():
    with pytest.raises(ValueError, match="height"):
        CameraSampler(0, 8)
    with pytest.raises(ValueError, match="elevation_range"):
        CameraSampler(8, 8, elevation_range=(30, 10))
    with pytest.raises(ValueError, match="fovy_range"):
        CameraSampler(8, 8, fovy_range=(0, 10))
    with pytest.raises(ValueError, match="n_views"):
        CameraSampler(8, 8).orbit(0)


def test_field_outputs_and_blob_bias():
    torch.manual_seed(0)
    field = NeRFField(**SMALL)
    x = torch.rand(100, 3) * 2 - 1
    out = field(x, with_normals=True)
    assert out["density"].shape == (100,) and out["albedo"].shape == (100, 3)
    assert out["normal"].shape == (100, 3)
    assert bool(((out["albedo"] > 0) & (out["albedo"] < 1)).all())
    # The blob: dense at the centre, thin at the corners.
    with torch.no_grad():
        centre = field.density(torch.zeros(1, 3))
        corner = field.density(torch.full((1, 3), 0.9))
    assert float(centre) > 1000 * float(corner)
    torch.testing.assert_close(field.density(x), out["density"])


def test_softplus_activation_and_bad_options():
    field = NeRFField(density_activation="softplus", **SMALL)
    assert bool((field.density(torch.rand(10, 3)) > 0).all())
    with pytest.raises(ValueError, match="density_activation"):
        NeRFField(density_activation="relu", **SMALL)
    with pytest.raises(ValueError, match="normal_type"):
        NeRFField(normal_type="pred", **SMALL)


@pytest.mark.parametrize("normal_type", ["analytic", "finite_difference"])
def test_blob_normals_point_outwards(normal_type):
    """With a near-zero hash grid the density is the radial blob, so normals are radial."""
    torch.manual_seed(0)
    field = NeRFField(normal_type=normal_type, finite_difference_eps=1e-3, **SMALL)
    with torch.no_grad():
        field.encoding.params.zero_()
    x = torch.nn.functional.normalize(torch.randn(50, 3), dim=-1) * 0.3
    normals = field.normals(x)
    cos = (normals * torch.nn.functional.normalize(x, dim=-1)).sum(-1)
    assert bool((cos > 0.999).all())


def test_analytic_and_finite_difference_normals_agree():
    torch.manual_seed(1)
    field = NeRFField(**SMALL)
    with torch.no_grad():
        field.encoding.params.uniform_(-0.05, 0.05)
    x = torch.rand(64, 3) * 0.8 - 0.4
    analytic = field.normals(x)
    field.normal_type, field.finite_difference_eps = "finite_difference", 1e-4
    fd = field.normals(x)
    assert float((analytic * fd.detach()).sum(-1).mean()) > 0.99


def test_finite_difference_normals_are_differentiable():
    field = NeRFField(normal_type="finite_difference", **SMALL)
    normals = field(torch.rand(16, 3) - 0.5, with_normals=True)["normal"]
    normals.sum().backward()
    assert field.encoding.params.grad is not None


def test_trunc_exp_gradient_is_clamped():
    x = torch.tensor([1.0, 30.0], requires_grad=True)
    trunc_exp(x).sum().backward()
    torch.testing.assert_close(x.grad, torch.tensor([math.e, math.exp(15)]))


def test_solid_background_and_random_colour():
    dirs = torch.randn(5, 3)
    bg = SolidBackground((0.1, 0.2, 0.3))
    torch.testing.assert_close(bg(dirs), torch.tensor([0.1, 0.2, 0.3]).expand(5, 3))
    rnd = SolidBackground(random_probability=1.0)
    rnd.generator = torch.Generator().manual_seed(0)
    colour = rnd(dirs)
    assert bool((colour == colour[0]).all()) and not torch.equal(colour[0], torch.ones(3))
    rnd.eval()
    torch.testing.assert_close(rnd(dirs), torch.ones(5, 3))
    with pytest.raises(ValueError, match="random_probability"):
        SolidBackground(random_probability=2.0)


def test_mlp_background_depends_on_direction():
    torch.manual_seed(0)
    bg = MLPBackground()
    dirs = torch.randn(20, 3)
    colour = bg(dirs)
    assert colour.shape == (20, 3) and bool(((colour > 0) & (colour < 1)).all())
    assert float(colour.detach().std(0).sum()) > 0
    colour.sum().backward()
    assert bg.mlp[0].weight.grad is not None

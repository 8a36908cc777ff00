"""The renderer on a hand-set analytic sphere: silhouette against the analytic disc, depth within
one step, shading modes, empty scenes and degenerate rays."""
import pytest
import torch

from l2vsd_ext.ops import OccupancyGrid
from l2vsd_ext.scene import CameraSampler, SolidBackground, VolumeRenderer
from l2vsd_ext.scene.regularizers import z_variance_loss
from render_helpers import DEVICES, AnalyticSphere, analytic_sphere_hits

RADIUS = 0.5
STEP = 0.01


def iou(a, b):
    return float((a & b).sum()) / float((a | b).sum())


def make_renderer(with_grid):
    field = AnalyticSphere(RADIUS)
    grid = None
    if with_grid:
        grid = OccupancyGrid(field.aabb, 32)
        grid.update(0, lambda x: field.density(x) * STEP, dilation=1)
    return VolumeRenderer(field, SolidBackground((0.2, 0.3, 0.4)), grid, render_step_size=STEP,
                          stratified=False).eval(), field


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("with_grid", [False, True])
def test_silhouette_and_depth(with_grid, device):
    renderer, _ = make_renderer(with_grid)
    renderer.to(device)
    cams = CameraSampler(64, 64).orbit(3, elevation=20.0, distance=2.0, fovy=45.0)
    with torch.no_grad():
        out = renderer(cams.rays_o.to(device), cams.rays_d.to(device))
    out = {k: v.cpu() if torch.is_tensor(v) else v for k, v in out.items()}
    mask, t_hit = analytic_sphere_hits(cams.rays_o, cams.rays_d, RADIUS)
    silhouette = out["opacity"][..., 0] > 0.5
    assert iou(silhouette, mask) >= 0.95
    solid = out["opacity"][..., 0] > 0.999
    assert int(solid.sum()) > 0.5 * int(mask.sum())
    depth_err = (out["depth"][..., 0] - t_hit)[solid].abs()
    assert float(depth_err.max()) <= STEP + 1e-5  # float32 slack at the step boundary
    # Background where nothing was hit.
    background = torch.tensor([0.2, 0.3, 0.4])
    torch.testing.assert_close(out["rgb"][~mask & (out["opacity"][..., 0] < 1e-6)],
                               background.expand(int((~mask & (out["opacity"][..., 0] < 1e-6)).sum()), 3))


def test_occupancy_skipping_reduces_samples_without_changing_the_image():
    full, _ = make_renderer(False)
    skip, _ = make_renderer(True)
    cams = CameraSampler(32, 32).orbit(2, distance=2.0, fovy=45.0)
    with torch.no_grad():
        a, b = full(cams.rays_o, cams.rays_d), skip(cams.rays_o, cams.rays_d)
    assert b["samples_per_ray"] < 0.5 * a["samples_per_ray"]
    assert float((a["rgb"] - b["rgb"]).abs().mean()) < 0.01


@pytest.mark.parametrize("shading", ["albedo", "diffuse", "textureless"])
def test_shading_modes(shading):
    renderer, _ = make_renderer(False)
    cams = CameraSampler(16, 16).orbit(1, distance=2.0)
    with torch.no_grad():
        out = renderer(cams.rays_o, cams.rays_d, cams.light_positions, shading=shading)
    assert out["rgb"].shape == (1, 16, 16, 3)
    assert bool(torch.isfinite(out["rgb"]).all())
    if shading != "albedo":
        centre = out["normal"][0, 8, 8]
        # Light at the camera, facing the sphere: the centre pixel is lit about fully.
        assert float(centre.norm()) > 0.9
    if shading == "textureless":
        rgb = out["rgb"][0, 8, 8]
        assert float(rgb.std()) < 1e-3  # grey: no albedo


def test_all_rays_culled_returns_background():
    field = AnalyticSphere(RADIUS)
    grid = OccupancyGrid(field.aabb, 8)
    grid.update(0, lambda x: torch.zeros(x.shape[0]))
    renderer = VolumeRenderer(field, SolidBackground((1.0, 0.0, 0.0)), grid, render_step_size=STEP)
    cams = CameraSampler(8, 8).orbit(1, distance=2.0)
    out = renderer(cams.rays_o, cams.rays_d)
    assert out["samples_per_ray"] == 0
    torch.testing.assert_close(out["rgb"], torch.tensor([1.0, 0.0, 0.0]).expand(1, 8, 8, 3))
    assert torch.equal(out["opacity"], torch.zeros(1, 8, 8, 1))


def test_degenerate_rays_render_background():
    renderer, _ = make_renderer(False)
    o = torch.tensor([[0.0, 0.0, 2.0], [float("nan"), 0.0, 2.0], [0.0, 0.0, 2.0]])
    d = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 0.0, -1.0]])
    with torch.no_grad():
        out = renderer(o, d)
    assert out["opacity"][:2].abs().max() == 0
    assert float(out["opacity"][2]) > 0.99
    assert bool(torch.isfinite(out["rgb"][0]).all())


def test_bad_renderer_inputs():
    renderer, _ = make_renderer(False)
    o = torch.zeros(4, 3)
    with pytest.raises(ValueError, match="shading"):
        renderer(o, o, shading="phong")
    with pytest.raises(ValueError, match="rays_d"):
        renderer(o, o[:, :2])
    with pytest.raises(ValueError, match="device|meta"):
        renderer(o, o.to("meta"))
    with pytest.raises(ValueError, match="render_step_size"):
        VolumeRenderer(AnalyticSphere(), SolidBackground(), render_step_size=0.0)


def test_z_variance_is_computed_only_when_asked_and_changes_nothing_else():
    renderer, _ = make_renderer(True)
    cams = CameraSampler(32, 32).orbit(1, elevation=20.0, distance=2.0, fovy=45.0)
    with torch.no_grad():
        plain = renderer(cams.rays_o, cams.rays_d)
        out = renderer(cams.rays_o, cams.rays_d, with_z_variance=True)
    assert "z_variance" not in plain
    for key, value in plain.items():
        assert torch.equal(value, out[key]) if torch.is_tensor(value) else value == out[key]
    assert out["z_variance"].shape == out["opacity"].shape
    # Density 1000 over steps of 0.01: a hit ray's weight sits in its first sample or two inside
    # the sphere, so its depth variance is below a step squared.
    solid = out["opacity"] > 0.999
    assert int(solid.sum()) > 50
    assert float(out["z_variance"][solid].max()) < STEP ** 2
    assert float(z_variance_loss(out["z_variance"], out["opacity"])) < STEP ** 2


def test_z_variance_loss_reaches_the_field_through_the_renderer():
    class TranslucentSphere(AnalyticSphere):
        def __init__(self):
            super().__init__(RADIUS, density=1.0)
            self.scale = torch.nn.Parameter(torch.tensor(3.0))

        def density(self, x):
            return super().density(x) * self.scale

    field = TranslucentSphere()
    renderer = VolumeRenderer(field, SolidBackground((0.2, 0.3, 0.4)), None,
                              render_step_size=STEP, stratified=False).eval()
    cams = CameraSampler(16, 16).orbit(1, distance=2.0, fovy=45.0)
    out = renderer(cams.rays_o, cams.rays_d, with_z_variance=True)
    loss = z_variance_loss(out["z_variance"], out["opacity"])
    assert float(loss) > 1e-3  # a translucent ball: weight spread over its depth
    loss.backward()
    # Denser is thinner: the loss asks for more density.
    assert torch.isfinite(field.scale.grad) and float(field.scale.grad) < 0

"""Silhouette regularisers and the background choice: the loss terms have the values and
gradients their definitions say, and the trainer's scene is built as configured."""
import math

import pytest
import torch

from l2vsd_ext.config import RunConfig
from l2vsd_ext.scene import MLPBackground, SolidBackground
from l2vsd_ext.scene.regularizers import (opacity_entropy, opacity_sparsity,
                                          silhouette_regularization)
from l2vsd_ext.trainer import build_renderer


def _opacity(seed=0):
    g = torch.Generator().manual_seed(seed)
    return (0.05 + 0.9 * torch.rand(2, 8, 8, 1, generator=g, dtype=torch.float64)).requires_grad_()


def test_sparsity_is_the_mean_opacity_and_pushes_every_pixel_down():
    a = _opacity(1)
    loss = opacity_sparsity(a)
    loss.backward()
    assert loss.item() == pytest.approx(a.detach().mean().item(), rel=1e-12)
    assert torch.allclose(a.grad, torch.full_like(a, 1 / a.numel()))


def test_entropy_matches_the_binary_entropy_and_pushes_pixels_away_from_one_half():
    a = _opacity(2)
    loss = opacity_entropy(a)
    loss.backward()
    x = a.detach().flatten().tolist()
    expected = sum(-(p * math.log(p) + (1 - p) * math.log(1 - p)) for p in x) / len(x)
    assert loss.item() == pytest.approx(expected, rel=1e-10)
    # Gradient descent moves opacities below 1/2 down and above 1/2 up.
    assert torch.all((a.grad > 0) == (a.detach() < 0.5))
    torch.autograd.gradcheck(opacity_entropy, (_opacity(3),))


def test_entropy_stays_finite_at_exactly_empty_and_full_pixels():
    a = torch.tensor([0.0, 1.0, 0.5], requires_grad=True)
    loss = opacity_entropy(a)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(a.grad).all()


def test_regularization_is_the_weighted_sum_and_none_when_off():
    a = _opacity(4)
    assert silhouette_regularization(a, 0.0, 0.0) is None
    both = silhouette_regularization(a, 0.3, 2.0)
    assert both.item() == pytest.approx(0.3 * opacity_sparsity(a).item() + 2.0 * opacity_entropy(a).item())


@pytest.mark.parametrize("kind, cls", [("mlp", MLPBackground), ("white", SolidBackground)])
def test_renderer_background_follows_the_config(kind, cls):
    config = RunConfig(prompt="x", background=kind, random_background=0.25, n_levels=4,
                       log2_hashmap_size=10, occupancy_resolution=8)
    background = build_renderer(config).background
    assert isinstance(background, cls)
    assert background.random_probability == 0.25
    if kind == "white":
        assert torch.equal(background.eval()(torch.randn(5, 3)), torch.ones(5, 3))


# ---- mesh regularisers ----

from l2vsd_ext.scene.regularizers import mesh_laplacian_smoothing, mesh_normal_consistency


def _grid_mesh(n=5, bump=0.0, dtype=torch.float64):
    """An n x n vertex plane in z = 0 (two triangles per cell), the centre vertex raised by bump."""
    ys, xs = torch.meshgrid(torch.arange(n, dtype=dtype), torch.arange(n, dtype=dtype), indexing="ij")
    v = torch.stack([xs.reshape(-1), ys.reshape(-1), torch.zeros(n * n, dtype=dtype)], -1)
    v[(n // 2) * n + n // 2, 2] = bump
    faces = []
    for i in range(n - 1):
        for j in range(n - 1):
            a, b, c, d = i * n + j, i * n + j + 1, (i + 1) * n + j, (i + 1) * n + j + 1
            faces += [[a, b, d], [a, d, c]]
    return v, torch.tensor(faces)


def test_normal_consistency_is_zero_on_a_plane_and_matches_a_hand_value():
    v, f = _grid_mesh()
    assert mesh_normal_consistency(v, f).item() == pytest.approx(0.0, abs=1e-12)
    # two triangles folded by 90 degrees along their shared edge: 1 - cos 90 = 1
    v2 = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=torch.float64)
    f2 = torch.tensor([[0, 1, 2], [0, 3, 1]])
    assert mesh_normal_consistency(v2, f2).item() == pytest.approx(1.0, abs=1e-12)


def test_normal_consistency_gradient_flattens_a_bump():
    v, f = _grid_mesh(bump=0.3)
    v.requires_grad_()
    loss = mesh_normal_consistency(v, f)
    loss.backward()
    centre = (5 // 2) * 5 + 5 // 2
    assert loss.item() > 0 and v.grad[centre, 2] > 0          # descent lowers the bump
    assert torch.autograd.gradcheck(mesh_normal_consistency, (v.detach().clone().requires_grad_(), f))


def test_laplacian_is_zero_on_a_regular_interior_and_pulls_a_bump_down():
    v, f = _grid_mesh(n=3, bump=0.5)
    # only the centre vertex is interior: its neighbours average to z = 0, so |L| = 0.5 there
    v.requires_grad_()
    loss = mesh_laplacian_smoothing(v, f)
    centre = 4
    nbrs = [1, 3, 5, 7, 0, 8]                                 # edges of the split grid
    lap_c = (v.detach()[nbrs].mean(0) - v.detach()[centre]).norm()
    assert lap_c.item() == pytest.approx(0.5, abs=1e-12)
    loss.backward()
    assert v.grad[centre, 2] > 0
    assert torch.autograd.gradcheck(mesh_laplacian_smoothing,
                                    (v.detach().clone().requires_grad_(), f))


def test_laplacian_value_on_one_triangle():
    v = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]], dtype=torch.float64)
    want = (0.5 ** 0.5 + 2 * 1.25 ** 0.5) / 3
    assert mesh_laplacian_smoothing(v, torch.tensor([[0, 1, 2]])).item() == pytest.approx(want, rel=1e-12)

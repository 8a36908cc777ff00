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

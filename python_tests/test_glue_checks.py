"""Argument checks added for issue 11: device checks of the compositing backward ops, and no
division by zero (SIGFPE) in the LoRA and norm glue: a clear exception or an empty result."""
import pytest
import torch

from l2vsd_ext._ext import load_extension
from l2vsd_ext.ops import group_norm_jvp, layer_norm_jvp, lora_linear_jvp


def packed(n_rays=3, per_ray=4):
    ray_indices = torch.arange(n_rays).repeat_interleave(per_ray)
    n = ray_indices.numel()
    t_starts = torch.rand(n, dtype=torch.float64)
    return ray_indices, t_starts, t_starts + 0.1, torch.rand(n, dtype=torch.float64) + 0.1


def test_weights_backward_checks_the_device_of_ray_indices():
    ri, ts, te, sigmas = packed()
    ext = load_extension()
    w, trans, alphas = ext.render_weights_forward(ts, te, sigmas, ri, 3)
    with pytest.raises(ValueError, match="'ray_indices' is on meta"):
        ext.render_weights_backward(torch.randn_like(w), None, None, ts, te, ri.to("meta"), 3, w,
                                    trans, alphas)


def test_accumulate_backward_checks_the_device_of_ray_indices():
    ri, _, _, weights = packed()
    values = torch.rand(ri.numel(), 3, dtype=torch.float64)
    grad = torch.randn(3, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="'ray_indices' is on meta"):
        load_extension().accumulate_backward(grad, weights, values, ri.to("meta"), 3, True, True)


def test_lora_linear_with_zero_in_features_raises():
    x = torch.randn(4, 0, dtype=torch.float64)
    w = torch.randn(5, 0, dtype=torch.float64)
    a, b = torch.randn(2, 0, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="in_features >= 1"):
        lora_linear_jvp(x, x, w, None, a, a, b, b, 1.0)


@pytest.mark.parametrize("shape", [(0, 8, 4, 4), (2, 8, 0, 3), (0, 8)])
def test_group_norm_on_empty_batches_or_images(shape):
    x = torch.randn(shape, dtype=torch.float64)
    y, y_dot = group_norm_jvp(x, torch.randn_like(x), 4)
    assert y.shape == x.shape and y_dot.shape == x.shape


def test_layer_norm_on_an_empty_batch():
    x = torch.randn(0, 7, dtype=torch.float64)
    y, y_dot = layer_norm_jvp(x, torch.randn_like(x), (7,))
    assert y.shape == (0, 7) and y_dot.shape == (0, 7)


def test_build_info_lists_the_compiled_architectures():
    info = load_extension().build_info()
    assert isinstance(info["cuda_arch_list"], list)
    if info["cuda"]:
        assert info["cuda_arch_list"] and ";".join(info["cuda_arch_list"]) == info["cuda_archs"]
    else:
        assert info["cuda_arch_list"] == []


def test_default_architectures_cover_the_cards_users_have():
    import pathlib
    archs = (pathlib.Path(__file__).resolve().parents[1] / "csrc" / "cuda_archs.txt").read_text()
    # 7.5: T4 and RTX 20xx (what Colab gives); 8.0 A100; 8.6 RTX 30xx/A10/A40; 8.9 RTX 40xx/L4/L40;
    # 9.0 H100, with PTX for newer cards.
    assert archs.split() == ["7.5;8.0;8.6;8.9;9.0+PTX"]

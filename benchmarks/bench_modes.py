"""Seconds per training iteration of each guidance mode (render, encode, guidance, θ step, LoRA
update), as ratios to vsd measured in the same run: on the tiny pipeline and on a larger UNet
(block_out_channels (64, 128, 256), 32x32 latents). Random weights: only the timing matters."""
import pytest
import torch

from l2vsd_ext.config import RunConfig
from l2vsd_ext.trainer import Trainer

PIPELINES = {
    "tiny UNet, 8x8 latents": (None, 64),
    "UNet (64,128,256), 32x32 latents": (dict(
        block_out_channels=(64, 128, 256), norm_num_groups=32, cross_attention_dim=32,
        attention_head_dim=8, down_block_types=("CrossAttnDownBlock2D",) * 2 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 2), 256),
}
MODES = [("vsd", False), ("sds", False), ("lvsd", False), ("l2vsd", False), ("l2vsd", True)]


@pytest.fixture(scope="module")
def pipelines(tmp_path_factory):
    from l2vsd_ext.prior.tiny import build_tiny_sd

    return {name: build_tiny_sd(str(tmp_path_factory.mktemp("sd")), unet_overrides=unet)
            for name, (unet, _) in PIPELINES.items()}


@pytest.mark.parametrize("pipeline", list(PIPELINES))
@pytest.mark.parametrize("mode, last_layer", MODES)
def test_iteration_time(benchmark, pipelines, pipeline, mode, last_layer, tmp_path):
    label = f"{mode}{' --last-layer' if last_layer else ''}"
    benchmark.group = f"s/it, {pipeline}"
    benchmark.extra_info["impl"] = label
    config = RunConfig(prompt="a wooden boat", mode=mode, last_layer=last_layer, steps=1000,
                       resolution=32, encode_resolution=PIPELINES[pipeline][1],
                       pretrained=pipelines[pipeline], out=str(tmp_path), log2_hashmap_size=14,
                       n_levels=12, occupancy_resolution=32, max_samples_per_ray=128, device="cpu")
    trainer = Trainer(config)
    stats = benchmark.pedantic(trainer.train_step, rounds=12, warmup_rounds=2)
    assert torch.isfinite(torch.tensor(stats["loss"]))

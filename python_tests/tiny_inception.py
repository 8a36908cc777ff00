"""A stand-in for the FID Inception weights file: our FidInceptionV3 with every parameter and every
BatchNorm running statistic redrawn from a seeded generator, saved as a state dict. Same names and
shapes as weights-inception-2015-12-05-6726825d.pth, so it loads wherever that file does."""
from __future__ import annotations

import math

import torch

from l2vsd_ext.eval.inception import ConvBN, FidInceptionV3


def _redraw_conv_bn(block: ConvBN, generator: torch.Generator) -> None:
    weight = block.conv.weight
    fan_in = weight[0].numel()
    # He-scaled weights keep the ReLU activations O(1) through the ~95 layers.
    weight.copy_(torch.randn(weight.shape, generator=generator) * math.sqrt(2.0 / fan_in))
    bn, n = block.bn, block.bn.num_features
    bn.running_mean.copy_(torch.randn(n, generator=generator) * 0.2)
    bn.running_var.copy_(torch.rand(n, generator=generator) * 1.5 + 0.5)
    # Scale by sqrt(running_var) so the layer's gain stays near 1 whatever the drawn variance.
    bn.weight.copy_(bn.running_var.sqrt() * (torch.rand(n, generator=generator) * 0.4 + 0.8))
    bn.bias.copy_(torch.randn(n, generator=generator) * 0.2)


@torch.no_grad()
def random_fid_inception(seed: int) -> FidInceptionV3:
    generator = torch.Generator().manual_seed(seed)
    model = FidInceptionV3()
    for module in model.modules():
        if isinstance(module, ConvBN):
            _redraw_conv_bn(module, generator)
    model.fc.weight.copy_(torch.randn(model.fc.weight.shape, generator=generator) * 0.02)
    model.fc.bias.copy_(torch.randn(model.fc.bias.shape, generator=generator) * 0.1)
    return model


def write_random_inception_weights(path: str, seed: int = 0) -> str:
    torch.save(random_fid_inception(seed).state_dict(), path)
    return path

"""Small helpers over torch.autograd.forward_ad dual tensors."""
from __future__ import annotations

import torch.autograd.forward_ad as fwAD


def split(x):
    """(primal, tangent or None) of a possibly-dual tensor."""
    if x is None:
        return None, None
    unpacked = fwAD.unpack_dual(x)
    return unpacked.primal, unpacked.tangent


def join(primal, tangent):
    """A dual tensor (or the primal alone when there is no tangent)."""
    return primal if tangent is None else fwAD.make_dual(primal, tangent)

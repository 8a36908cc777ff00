"""Differentiable ops over the compiled kernels; `reference` holds their pure-PyTorch twins."""
from .hashgrid import HashGridEncoding, hashgrid_encode, hashgrid_layout

__all__ = ["HashGridEncoding", "hashgrid_encode", "hashgrid_layout"]

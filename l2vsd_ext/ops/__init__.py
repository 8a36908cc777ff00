"""Differentiable ops over the compiled kernels; `reference` holds their pure-PyTorch twins."""
from .attention_jvp import attention, attention_jvp
from .hashgrid import HashGridEncoding, hashgrid_encode, hashgrid_layout
from .lora_linear import lora_linear, lora_linear_jvp
from .norm_jvp import group_norm_jvp, layer_norm_jvp

__all__ = ["HashGridEncoding", "hashgrid_encode", "hashgrid_layout", "attention", "attention_jvp",
           "lora_linear", "lora_linear_jvp", "group_norm_jvp", "layer_norm_jvp"]

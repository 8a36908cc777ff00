"""The attention processor installed on diffusers Attention modules during the engine's pass.

It follows AttnProcessor2_0 step by step (spatial norm, group norm, cross norm, q/k norms,
residual, rescale); only the core softmax(scale q k^T) v differs: when q, k or v carry a tangent it
runs the fused primal+tangent rule, otherwise scaled_dot_product_attention. With an attention mask
the core falls back to the math formula under forward AD."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..ops.attention_jvp import attention_jvp_heads
from ..ops.jvp_support import kernels_support
from .dual import join, split

# Processors whose semantics are exactly AttnProcessor's (they differ only in how they compute
# the same attention); the engine replaces these for the duration of its pass.
REPLACEABLE = frozenset({
    "AttnProcessor", "AttnProcessor2_0", "XFormersAttnProcessor", "SlicedAttnProcessor",
    "AttnProcessorNPU",
})


def _core(attn, query, key, value, attention_mask, batch):
    heads = attn.heads
    q_p, q_t = split(query)
    k_p, k_t = split(key)
    v_p, v_t = split(value)
    if attention_mask is None and q_t is None and k_t is None and v_t is None:
        d = q_p.shape[-1] // heads
        q4, k4, v4 = (t.view(batch, -1, heads, d).transpose(1, 2) for t in (q_p, k_p, v_p))
        out = F.scaled_dot_product_attention(q4, k4, v4, scale=attn.scale)
        return out.transpose(1, 2).reshape(batch, -1, heads * d)
    fused = (attention_mask is None and kernels_support(q_p, "attention_jvp")
             and q_p.dtype == k_p.dtype == v_p.dtype)
    if fused:
        # (B, N, heads * d) as the projections give them: no head-split copies on CPU.
        out, out_dot = attention_jvp_heads(q_p, q_t, k_p, k_t, v_p, v_t, heads, attn.scale)
        return join(out, out_dot)
    # Masked attention: AttnProcessor's math, differentiated by forward AD.
    q, k, v = (attn.head_to_batch_dim(t) for t in (query, key, value))
    probs = attn.get_attention_scores(q, k, attention_mask)
    return attn.batch_to_head_dim(torch.bmm(probs, v))


class JvpAttnProcessor:
    """Primal+tangent attention processor (see module docstring)."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 temb=None, *args, **kwargs):
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
        batch_size, sequence_length, _ = (
            hidden_states.shape if encoder_hidden_states is None else encoder_hidden_states.shape)
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)
        if attn.norm_q is not None or attn.norm_k is not None:
            d = key.shape[-1] // attn.heads
            if attn.norm_q is not None:
                query = attn.norm_q(query.view(batch_size, -1, attn.heads, d)).flatten(2)
            if attn.norm_k is not None:
                key = attn.norm_k(key.view(batch_size, -1, attn.heads, d)).flatten(2)

        hidden_states = _core(attn, query, key, value, attention_mask, batch_size)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor

"""Softmax attention with its forward-mode tangent:
    O_dot = sum_j P_ij (S_dot_ij v_j + v_dot_j) - (sum_j P_ij S_dot_ij) O.
Two implementations of the same formula: the online-softmax kernel (CPU + CUDA, no N x M matrix),
the default, and a query-blocked ATen one (MKL bmm), slower on this CPU (docs/jvp.md)."""
from __future__ import annotations

import os

import torch

from .._ext import load_extension
from .jvp_support import kernels_support

BACKENDS = ("auto", "kernel", "blocked")

# Score-matrix entries per block of the blocked path: a few MB, so each block's S, P and S_dot
# stay in cache-friendly sizes while the bmm calls stay large enough for MKL.
_BLOCK_ELEMENTS = 1 << 20
# On a GPU each block costs a handful of launches, and launches, not bytes, bound a batch-1 UNet
# there (docs/gpu.md): blocks of 32M entries (e.g. 5 heads x 1638 x 4096), 192 MB per float16 buffer.
_BLOCK_ELEMENTS_CUDA = 1 << 25
# Overrides backend="auto" (kernel | blocked): how benchmarks/device/profile_jvp.py times the
# blocked formulation through cuBLAS against the tiled kernel inside the whole engine.
BACKEND_ENV = "L2VSD_ATTENTION_JVP_BACKEND"


def attention_jvp_kernel(q, q_dot, k, k_dot, v, v_dot, scale):
    """Online-softmax kernel. q (BH, N, d), k and v (BH, M, d); a None tangent is zero."""
    return load_extension().attention_jvp(q, q_dot, k, k_dot, v, v_dot, float(scale))


def split_heads(t, heads):
    """(B, N, heads * d) -> (B * heads, N, d), contiguous."""
    batch, n, width = t.shape
    return t.view(batch, n, heads, width // heads).transpose(1, 2).reshape(batch * heads, n, -1)


def merge_heads(t, batch):
    """(B * heads, N, d) -> (B, N, heads * d), contiguous."""
    bh, n, d = t.shape
    return t.view(batch, bh // batch, n, d).transpose(1, 2).reshape(batch, n, -1)


def attention_jvp_heads(q, q_dot, k, k_dot, v, v_dot, heads, scale):
    """(O, O_dot) for q (B, N, heads * d), k and v (B, M, heads * d), the layout the projections
    produce; outputs (B, N, heads * d). On CPU the kernel reads the tensors in place (entries of a
    row contiguous, any row/batch strides), saving the head-split copies; elsewhere the heads are
    split into (B * heads, N, d) copies for attention_jvp. A None tangent is zero."""
    if (q.device.type == "cpu" and os.environ.get(BACKEND_ENV) != "blocked"
            and kernels_support(q, "attention_jvp_heads")):
        return load_extension().attention_jvp_heads(q, q_dot, k, k_dot, v, v_dot, int(heads),
                                                    float(scale))
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor) or t.dim() != 3 or t.shape[-1] % heads:
            raise ValueError(f"attention_jvp_heads: argument '{name}' must be a 3-D tensor "
                             f"(batch, tokens, heads * head_dim) with heads={heads}")
    out, out_dot = attention_jvp(*(None if t is None else split_heads(t, heads)
                                   for t in (q, q_dot, k, k_dot, v, v_dot)), scale)
    return merge_heads(out, q.shape[0]), merge_heads(out_dot, q.shape[0])


def attention_jvp_blocked(q, q_dot, k, k_dot, v, v_dot, scale, block_elements=None):
    """The same formula through ATen bmm, one block of queries at a time (all heads at once)."""
    if block_elements is None:
        block_elements = _BLOCK_ELEMENTS_CUDA if q.is_cuda else _BLOCK_ELEMENTS
    q_dot = torch.zeros_like(q) if q_dot is None else q_dot
    k_dot = torch.zeros_like(k) if k_dot is None else k_dot
    v_dot = torch.zeros_like(v) if v_dot is None else v_dot
    bh, n, d = q.shape
    m = k.shape[1]
    # S = (scale q) k^T and S_dot = scale (q_dot k^T + q k_dot^T) = [scale q_dot, scale q][k, k_dot]^T:
    # one bmm with a 2d-deep contraction. P [v, v_dot] gives O and P v_dot from one bmm, and
    # (P * S_dot) [v, 1] gives (P * S_dot) v with its row sums from another.
    q_s = q * scale
    qq = torch.cat([q_dot, q], dim=-1).mul_(scale)
    k_t = k.transpose(1, 2)
    kk_t = torch.cat([k, k_dot], dim=-1).transpose(1, 2)
    vv = torch.cat([v, v_dot], dim=-1)
    v1 = torch.cat([v, torch.ones_like(v[..., :1])], dim=-1)
    out = torch.empty_like(q)
    out_dot = torch.empty_like(q)
    rows = min(n, max(1, block_elements // max(1, bh * m)))
    # Flat block buffers reused across blocks (large fresh allocations would page-fault every
    # time); each block views a contiguous prefix, as the out= variants need.
    bufs = [q.new_empty(bh * rows * width) for width in (m, m, m, 2 * d, d + 1)]
    for i0 in range(0, n, rows):
        r = min(rows, n - i0)
        s, p, sd, ov, sv = (buf[:bh * r * width].view(bh, r, width)
                            for buf, width in zip(bufs, (m, m, m, 2 * d, d + 1)))
        torch.bmm(q_s[:, i0:i0 + r], k_t, out=s)
        torch.ops.aten._softmax.out(s, -1, False, out=p)
        torch.bmm(qq[:, i0:i0 + r], kk_t, out=sd)
        sd.mul_(p)  # P * S_dot
        torch.bmm(p, vv, out=ov)  # [O, P v_dot]
        torch.bmm(sd, v1, out=sv)  # [(P * S_dot) v, rowsum(P * S_dot)]
        o = ov[..., :d]
        out[:, i0:i0 + r] = o
        out_dot[:, i0:i0 + r] = ov[..., d:] + sv[..., :d] - sv[..., d:] * o
    return out, out_dot


def attention_jvp(q, q_dot, k, k_dot, v, v_dot, scale, backend: str = "auto"):
    """(O, O_dot) of softmax(scale q k^T) v. backend "auto": the kernel where it takes the tensors
    (CPU float32/float64, CUDA), the blocked ATen formulation otherwise."""
    if backend not in BACKENDS:
        raise ValueError(f"attention_jvp: argument 'backend' must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        backend = os.environ.get(BACKEND_ENV, "auto")
        if backend not in BACKENDS:
            raise ValueError(f"attention_jvp: environment variable {BACKEND_ENV} must be one of "
                             f"{BACKENDS}, got {backend!r}")
    if backend == "auto":
        backend = "kernel" if kernels_support(q, "attention_jvp") else "blocked"
    if backend == "kernel":
        return attention_jvp_kernel(q, q_dot, k, k_dot, v, v_dot, scale)
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor) or t.dim() != 3:
            raise ValueError(f"attention_jvp: argument '{name}' must be a 3-D tensor "
                             "(batch*heads, tokens, head_dim)")
    return attention_jvp_blocked(q, q_dot, k, k_dot, v, v_dot, scale)


class AttentionFunction(torch.autograd.Function):
    """softmax(scale q k^T) v with backward (PyTorch's) and a fused jvp rule."""

    @staticmethod
    def forward(q, k, v, scale):
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=scale)

    @staticmethod
    def setup_context(ctx, inputs, output):
        q, k, v, scale = inputs
        ctx.save_for_backward(q, k, v)
        ctx.save_for_forward(q, k, v)
        ctx.scale = scale

    @staticmethod
    def jvp(ctx, q_dot, k_dot, v_dot, _scale_dot):
        q, k, v = ctx.saved_tensors
        wrapped = any(not kernels_support(t, "attention_jvp") for t in (q, k, v, q_dot, k_dot, v_dot)
                      if t is not None)
        return attention_jvp(q, q_dot, k, k_dot, v, v_dot, ctx.scale,
                             backend="blocked" if wrapped else "auto")[1]

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v = ctx.saved_tensors
        with torch.enable_grad():
            qq, kk, vv = (t.detach().requires_grad_(True) for t in (q, k, v))
            out = torch.softmax(ctx.scale * qq @ kk.transpose(-1, -2), dim=-1) @ vv
            grads = torch.autograd.grad(out, (qq, kk, vv), grad_out)
        return (*grads, None)


def attention(q, k, v, scale):
    """Differentiable attention whose forward-mode rule is the fused one."""
    return AttentionFunction.apply(q, k, v, float(scale))

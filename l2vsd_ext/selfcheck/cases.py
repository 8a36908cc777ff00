"""The op cases the parity checks run: each builds random float64 inputs from a generator, then
evaluates the compiled op (forward and, where it has one, backward) on a device and dtype, or the
pure-PyTorch reference in float64. Every case returns a dict of named result tensors."""
from __future__ import annotations

import torch

from ..ops import (accumulate_along_rays, attention_jvp, composite_along_rays, group_norm_jvp,
                   layer_norm_jvp, lora_linear_jvp, ray_aabb_intersect, reference,
                   render_weight_from_density)
from ..ops.hashgrid import HashGridConfig, hashgrid_encode, n_params

HASHGRID = HashGridConfig(n_input_dims=3, n_levels=8, n_features_per_level=2,
                          log2_hashmap_size=12, base_resolution=4, per_level_scale=1.5)


def _grads(outputs, inputs, gen):
    """Gradients of sum(w * outputs) for fresh random weights w (never all ones)."""
    ws = [torch.randn(o.shape, generator=gen, dtype=torch.float64).to(o) for o in outputs]
    loss = sum((w * o).sum() for w, o in zip(ws, outputs))
    return torch.autograd.grad(loss.float() if loss.dtype in (torch.float16, torch.bfloat16)
                               else loss, inputs)


def _to(t, device, dtype):
    return t.to(dtype).to(device)


class Case:
    """name; dtypes(device) it supports; inputs(gen, size) -> float64 CPU tensors;
    run(inputs, device, dtype, gen, compiled) -> dict of results."""
    name = ""
    cuda_dtypes = (torch.float32,)
    cpu_dtypes = (torch.float32, torch.float64)


class HashGridCase(Case):
    name = "hashgrid fwd+bwd"
    cuda_dtypes = (torch.float32, torch.float16)  # float16 tables, float32 points

    def inputs(self, gen, size):
        n = {"small": 257, "large": 1 << 16}[size]
        return {"x": torch.rand(n, 3, generator=gen, dtype=torch.float64),
                "params": torch.randn(n_params(HASHGRID), generator=gen, dtype=torch.float64)}

    def run(self, inp, device, dtype, gen, compiled=True):
        x_dtype = torch.float32 if dtype == torch.float16 else dtype
        x = _to(inp["x"], device, x_dtype).requires_grad_(True)
        params = _to(inp["params"], device, dtype).requires_grad_(True)
        if compiled:
            out = hashgrid_encode(x, params, HASHGRID)
        else:
            c = HASHGRID
            out = reference.hashgrid_encode(x, params, c.n_levels, c.n_features_per_level,
                                            c.log2_hashmap_size, c.base_resolution,
                                            c.per_level_scale)
        g_x, g_params = _grads([out], [x, params], gen)
        return {"out": out, "grad_x": g_x, "grad_params": g_params}


def _packed(gen, n_rays, max_count):
    counts = torch.randint(0, max_count + 1, (n_rays,), generator=gen)
    ray_indices = torch.repeat_interleave(torch.arange(n_rays), counts)
    n = int(counts.sum())
    t_starts = torch.rand(n, generator=gen, dtype=torch.float64)
    t_ends = t_starts + 0.01 + 0.2 * torch.rand(n, generator=gen, dtype=torch.float64)
    sigmas = 3 * torch.rand(n, generator=gen, dtype=torch.float64) + 0.05
    values = torch.rand(n, 3, generator=gen, dtype=torch.float64)
    return {"ray_indices": ray_indices, "t_starts": t_starts, "t_ends": t_ends, "sigmas": sigmas,
            "values": values, "n_rays": n_rays}


class CompositeCase(Case):
    name = "compositing fwd+bwd"  # the two ops, and the fused composite_along_rays

    def inputs(self, gen, size):
        return _packed(gen, *{"small": (37, 20), "large": (4096, 64)}[size])

    def run(self, inp, device, dtype, gen, compiled=True):
        ri = inp["ray_indices"].to(device)
        n_rays = inp["n_rays"]
        ts, te = _to(inp["t_starts"], device, dtype), _to(inp["t_ends"], device, dtype)
        sigmas = _to(inp["sigmas"], device, dtype).requires_grad_(True)
        values = _to(inp["values"], device, dtype).requires_grad_(True)
        weights_fn = render_weight_from_density if compiled else reference.render_weight_from_density
        acc_fn = accumulate_along_rays if compiled else reference.accumulate_along_rays
        w, trans, alphas = weights_fn(ts, te, sigmas, ri, n_rays)
        rgb = acc_fn(w, values, ri, n_rays)
        g_sigmas, g_values = _grads([w, trans, rgb], [sigmas, values], gen)
        # The fused op (the renderer's, fused kernels on CPU and CUDA), with HiFA's z-variance.
        sigmas, values = sigmas.detach().requires_grad_(True), values.detach().requires_grad_(True)
        if compiled:
            fused, z_var, opacity = composite_along_rays(ts, te, sigmas, values, ri, n_rays,
                                                         z_variance=True)
        else:
            fused = acc_fn(weights_fn(ts, te, sigmas, ri, n_rays)[0], values, ri, n_rays)
            opacity, _, z_var = reference.z_variance(ts, te, sigmas, ri, n_rays)
        g_sigmas_fused, g_values_fused = _grads([fused, z_var, opacity], [sigmas, values], gen)
        return {"weights": w, "transmittance": trans, "alphas": alphas, "rgb": rgb,
                "grad_sigmas": g_sigmas, "grad_values": g_values, "rgb (fused)": fused,
                "z_variance (fused)": z_var, "opacity (fused)": opacity,
                "grad_sigmas (fused)": g_sigmas_fused, "grad_values (fused)": g_values_fused}


class RayAabbCase(Case):
    name = "ray_aabb_intersect"

    def inputs(self, gen, size):
        n = {"small": 300, "large": 1 << 16}[size]
        return {"o": 3 * torch.randn(n, 3, generator=gen, dtype=torch.float64),
                "d": torch.randn(n, 3, generator=gen, dtype=torch.float64)}

    def run(self, inp, device, dtype, gen, compiled=True):
        o, d = _to(inp["o"], device, dtype), _to(inp["d"], device, dtype)
        fn = ray_aabb_intersect if compiled else reference.ray_aabb_intersect
        t_near, t_far, hit = fn(o, d, [-1.0, -1.0, -1.0, 1.0, 1.0, 1.0])
        hit = hit.bool()
        return {"t_near(hit)": t_near[hit], "t_far(hit)": t_far[hit], "hit": hit.to(dtype)}


class LoraCase(Case):
    name = "lora_linear_jvp"
    cuda_dtypes = (torch.float32, torch.float16, torch.bfloat16, "float16+float32 LoRA")

    def inputs(self, gen, size):
        m, n_in, n_out, r = {"small": (33, 40, 24, 4), "large": (4096, 320, 320, 4)}[size]
        shapes = {"x": (m, n_in), "x_dot": (m, n_in), "w": (n_out, n_in), "b": (n_out,),
                  "a": (r, n_in), "a_dot": (r, n_in), "bb": (n_out, r), "bb_dot": (n_out, r)}
        out = {k: torch.randn(s, generator=gen, dtype=torch.float64) for k, s in shapes.items()}
        out["w"] /= n_in ** 0.5
        return out

    def run(self, inp, device, dtype, gen, compiled=True):
        lora_dtype = dtype
        if dtype == "float16+float32 LoRA":
            dtype, lora_dtype = torch.float16, torch.float32
        base = [_to(inp[k], device, dtype) for k in ("x", "x_dot", "w", "b")]
        lora = [_to(inp[k], device, lora_dtype) for k in ("a", "a_dot", "bb", "bb_dot")]
        fn = lora_linear_jvp if compiled else reference.lora_linear_jvp
        y, y_dot = fn(*base, *lora, 0.5)
        return {"y": y, "y_dot": y_dot}


class AttentionCase(Case):
    name = "attention_jvp"
    cuda_dtypes = (torch.float32, torch.float16, torch.bfloat16)

    def __init__(self, head_dim):
        self.head_dim = head_dim
        self.name = f"attention_jvp d={head_dim}"

    def inputs(self, gen, size):
        bh, n, m = {"small": (3, 37, 29), "large": (10, 1024, 77)}[size]
        shapes = {"q": (bh, n), "k": (bh, m), "v": (bh, m)}
        out = {}
        for k, (b, rows) in shapes.items():
            out[k] = torch.randn(b, rows, self.head_dim, generator=gen, dtype=torch.float64)
            out[k + "_dot"] = torch.randn(b, rows, self.head_dim, generator=gen, dtype=torch.float64)
        return out

    def run(self, inp, device, dtype, gen, compiled=True):
        args = [_to(inp[k], device, dtype) for k in ("q", "q_dot", "k", "k_dot", "v", "v_dot")]
        scale = self.head_dim ** -0.5
        if compiled:
            out, out_dot = attention_jvp(*args, scale)
        else:
            out, out_dot = reference.attention_jvp(*args, scale)
        return {"out": out, "out_dot": out_dot}


class NormCase(Case):
    cuda_dtypes = (torch.float32, torch.float16, torch.bfloat16)

    def __init__(self, kind):
        self.kind = kind
        self.name = f"{kind}_jvp"

    def inputs(self, gen, size):
        shape = {"small": (2, 16, 5, 7), "large": (1, 320, 64, 64)}[size]
        c = shape[1] if self.kind == "group_norm" else shape[-1]
        return {"x": torch.randn(shape, generator=gen, dtype=torch.float64) * 2 + 0.5,
                "x_dot": torch.randn(shape, generator=gen, dtype=torch.float64),
                "w": torch.randn(c, generator=gen, dtype=torch.float64),
                "b": torch.randn(c, generator=gen, dtype=torch.float64)}

    def run(self, inp, device, dtype, gen, compiled=True):
        x, x_dot, w, b = (_to(inp[k], device, dtype) for k in ("x", "x_dot", "w", "b"))
        if self.kind == "group_norm":
            fn = group_norm_jvp if compiled else reference.group_norm_jvp
            y, y_dot = fn(x, x_dot, 8, w, b, 1e-5)
        else:
            fn = layer_norm_jvp if compiled else reference.layer_norm_jvp
            y, y_dot = fn(x, x_dot, (x.shape[-1],), w, b, 1e-5)
        return {"y": y, "y_dot": y_dot}


def all_cases():
    return [HashGridCase(), CompositeCase(), RayAabbCase(), LoraCase(),
            *(AttentionCase(d) for d in (40, 64, 80, 160)),
            NormCase("group_norm"), NormCase("layer_norm")]

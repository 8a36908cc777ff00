"""The op cases the parity checks run: each builds random float64 inputs from a generator, then
evaluates the compiled op (forward and, where it has one, backward) on a device and dtype, or the
pure-PyTorch reference in float64. Every case returns a dict of named result tensors.

Variants cover the kernels' other paths: hash grids in 1-3 dims, with clamping, with more features
per level than the CUDA register path keeps, and under torch.use_deterministic_algorithms (the
float64 gradient buffer); attention with a query count not divisible by 4 and more heads than a
CUDA grid's y dimension (65535); LoRA ranks not divisible by 4; ray marching. Under
`noncontiguous_inputs()` every tensor an op receives is a strided view (see `_relayout`)."""
from __future__ import annotations

import contextlib
import math

import torch

from .._ext import load_extension
from ..ops import (accumulate_along_rays, attention_jvp, composite_along_rays, group_norm_jvp,
                   layer_norm_jvp, lora_linear_jvp, ray_aabb_intersect, reference,
                   render_weight_from_density)
from ..ops.hashgrid import HashGridConfig, hashgrid_encode, n_params
from ..ops.occupancy import pack_bits
from ..ops.rasterize import antialias, interpolate, rasterize, triangle_neighbors
from .parity_compare import compare_packed_samples

HASHGRID = HashGridConfig(n_input_dims=3, n_levels=8, n_features_per_level=2,
                          log2_hashmap_size=12, base_resolution=4, per_level_scale=1.5)

_NONCONTIGUOUS = False


@contextlib.contextmanager
def noncontiguous_inputs():
    """Within this block the cases hand every op strided views instead of contiguous tensors."""
    global _NONCONTIGUOUS
    previous, _NONCONTIGUOUS = _NONCONTIGUOUS, True
    try:
        yield
    finally:
        _NONCONTIGUOUS = previous


def _relayout(t: torch.Tensor) -> torch.Tensor:
    """The same values in a non-contiguous view: rows padded by 3 entries (rows stay contiguous,
    the row stride does not: the layout a slice of a bigger tensor has) for 2-D and up, every
    other element for 1-D."""
    if t.dim() == 0 or t.numel() == 0:
        return t
    if t.dim() == 1:
        wide = torch.empty(2 * t.shape[0], dtype=t.dtype, device=t.device)
        view = wide[::2]
    else:
        wide = torch.empty(*t.shape[:-1], t.shape[-1] + 3, dtype=t.dtype, device=t.device)
        view = wide[..., :t.shape[-1]]
    view.copy_(t)
    return view


def _grads(outputs, inputs, gen):
    """Gradients of sum(w * outputs) for fresh random weights w (never all ones)."""
    ws = [torch.randn(o.shape, generator=gen, dtype=torch.float64).to(o) for o in outputs]
    loss = sum((w * o).sum() for w, o in zip(ws, outputs))
    return torch.autograd.grad(loss.float() if loss.dtype in (torch.float16, torch.bfloat16)
                               else loss, inputs)


def _to(t, device, dtype):
    out = t.to(dtype).to(device)
    return _relayout(out) if _NONCONTIGUOUS else out


def _index_to(t, device):
    return _relayout(t.to(device)) if _NONCONTIGUOUS else t.to(device)


class Case:
    """name; dtypes(device) it supports; inputs(gen, size) -> float64 CPU tensors;
    run(inputs, device, dtype, gen, compiled) -> dict of results."""
    name = ""
    cuda_dtypes = (torch.float32,)
    cpu_dtypes = (torch.float32, torch.float64)

    def compare(self, got: dict, want: dict):
        """(max relative error, where) of got against want; None: the parity module's default."""
        return None


class HashGridCase(Case):
    cuda_dtypes = (torch.float32, torch.float16)  # float16 tables, float32 points

    def __init__(self, n_dims=3, n_features=2, clamp=False, deterministic=False):
        self.config = HASHGRID._replace(n_input_dims=n_dims, n_features_per_level=n_features)
        self.clamp, self.deterministic = clamp, deterministic
        tags = [f"{n_dims}D", f"F={n_features}"] + ["clamp"] * clamp + ["deterministic"] * deterministic
        self.name = "hashgrid fwd+bwd" + ("" if (n_dims, n_features, clamp, deterministic) ==
                                          (3, 2, False, False) else f" ({', '.join(tags)})")
        if deterministic:  # the float64 gradient buffer: float32 and float16 tables, and float64
            self.cuda_dtypes = (torch.float32, torch.float16, torch.float64)

    def inputs(self, gen, size):
        n = {"small": 257, "large": 1 << 16}[size]
        x = torch.rand(n, self.config.n_input_dims, generator=gen, dtype=torch.float64)
        if self.clamp:  # a fifth of the coordinates outside [0, 1], clamped by the kernel
            x = x * 1.5 - 0.25
        x = self._off_cell_faces(x, gen)
        return {"x": x, "params": torch.randn(n_params(self.config), generator=gen,
                                              dtype=torch.float64)}

    def _off_cell_faces(self, x, gen, margin=1e-4):
        """Redraws the points that lie within `margin` (in cell units) of a cell face at some
        level, in float64 or once rounded to float32 or float16. d(out)/dx jumps across a face, and
        there float32's rounded x*scale + 0.5 may floor to the other cell than float64's does: at
        65k points a few such points made grad_x differ by 10-14% from the float64 reference on
        an H100, with the CUDA and CPU kernels agreeing to 4e-6."""
        c = self.config
        scales = [s for s, *_ in reference.hashgrid_layout_reference(
            c.n_input_dims, c.n_levels, c.n_features_per_level, c.log2_hashmap_size,
            c.base_resolution, c.per_level_scale)]
        for _ in range(100):
            near = torch.zeros(x.shape[0], dtype=torch.bool)
            for rounded in (x, x.float().double(), x.half().double()):
                # A clamped coordinate is exactly 0 or 1: every precision floors it alike.
                inside = (rounded > 0) & (rounded < 1)
                for s in scales:
                    pos = rounded * s + 0.5
                    near |= (((pos - pos.round()).abs() < margin) & inside).any(dim=1)
            if not near.any():
                return x
            fresh = torch.rand(int(near.sum()), x.shape[1], generator=gen, dtype=x.dtype)
            x[near] = fresh * 1.5 - 0.25 if self.clamp else fresh
        raise RuntimeError("could not draw hash-grid points off the cell faces")

    def run(self, inp, device, dtype, gen, compiled=True):
        x_dtype = torch.float32 if dtype == torch.float16 else dtype
        x = _to(inp["x"], device, x_dtype).requires_grad_(True)
        params = _to(inp["params"], device, dtype).requires_grad_(True)
        c = self.config
        previous = (torch.are_deterministic_algorithms_enabled(),
                    torch.is_deterministic_algorithms_warn_only_enabled())
        if self.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        try:
            if compiled:
                out = hashgrid_encode(x, params, c, "clamp" if self.clamp else "error")
            else:
                out = reference.hashgrid_encode(x, params, c.n_levels, c.n_features_per_level,
                                                c.log2_hashmap_size, c.base_resolution,
                                                c.per_level_scale, clamp=self.clamp)
            g_x, g_params = _grads([out], [x, params], gen)
        finally:
            torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
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
        ri = _index_to(inp["ray_indices"], device)
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
    cuda_dtypes = (torch.float32, torch.float16, torch.bfloat16, "float16+float32 LoRA")

    def __init__(self, rank=4):
        self.rank = rank
        self.name = "lora_linear_jvp" + ("" if rank == 4 else f" r={rank}")

    def inputs(self, gen, size):
        m, n_in, n_out = {"small": (33, 40, 24), "large": (4096, 320, 320)}[size]
        r = self.rank
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

    def __init__(self, head_dim, many_heads=False):
        self.head_dim, self.many_heads = head_dim, many_heads
        self.name = f"attention_jvp d={head_dim}" + (" (65537 heads)" if many_heads else "")

    def inputs(self, gen, size):
        # Query counts 37 and 1023 are not multiples of 4 (nor of the CUDA kernel's warps per
        # block); 65537 heads exceed a CUDA grid's y limit, so the kernel must loop over heads.
        if self.many_heads:
            bh, n, m = 65537, 3, 2
        else:
            bh, n, m = {"small": (3, 37, 29), "large": (10, 1023, 77)}[size]
        shapes = {"q": (bh, n), "k": (bh, m), "v": (bh, m)}
        out = {}
        for k, (b, rows) in shapes.items():
            out[k] = torch.randn(b, rows, self.head_dim, generator=gen, dtype=torch.float64)
            out[k + "_dot"] = torch.randn(b, rows, self.head_dim, generator=gen, dtype=torch.float64)
        return out

    # With 65537 heads the results are compared on these: the first heads, some in the middle and
    # the last ones, past the grid's 65535 (the float64 reference on every head takes ~10 s on CPU).
    CHECKED_HEADS = torch.cat([torch.arange(0, 64), torch.arange(32768, 32800),
                               torch.arange(65472, 65537)])

    def run(self, inp, device, dtype, gen, compiled=True):
        names = ("q", "q_dot", "k", "k_dot", "v", "v_dot")
        scale = self.head_dim ** -0.5
        if compiled:
            out, out_dot = attention_jvp(*(_to(inp[k], device, dtype) for k in names), scale)
            if self.many_heads:
                heads = self.CHECKED_HEADS.to(out.device)
                out, out_dot = out[heads], out_dot[heads]
        else:
            picked = {k: inp[k][self.CHECKED_HEADS] if self.many_heads else inp[k] for k in names}
            out, out_dot = reference.attention_jvp(*(_to(picked[k], device, dtype) for k in names),
                                                   scale)
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


class MarchRaysCase(Case):
    """Occupancy-grid ray marching (uniform steps, stratified offsets) against the brute-force
    reference; samples are matched by (ray, lattice step), see compare_packed_samples."""
    name = "march_rays"
    cuda_dtypes = (torch.float32, torch.float64)
    STEP = 1.0 / 64
    AABB = (-1.0, -1.0, -1.0, 1.0, 1.0, 1.0)
    RES = (8, 6, 10)

    def inputs(self, gen, size):
        n = {"small": 200, "large": 2048}[size]
        o = 2.5 * torch.randn(n, 3, generator=gen, dtype=torch.float64)
        d = -o + 0.5 * torch.randn(n, 3, generator=gen, dtype=torch.float64)
        d = d / d.norm(dim=-1, keepdim=True)
        return {"o": o, "d": d, "offset": torch.rand(n, generator=gen, dtype=torch.float64),
                "binary": torch.rand(math.prod(self.RES), generator=gen) < 0.6}

    def run(self, inp, device, dtype, gen, compiled=True):
        o, d = _to(inp["o"], device, dtype), _to(inp["d"], device, dtype)
        offset = _to(inp["offset"], device, dtype)
        fn = ray_aabb_intersect if compiled else reference.ray_aabb_intersect
        t_near, t_far, _ = fn(o, d, list(self.AABB))
        t_min = t_near.clamp(min=0)
        if compiled:
            ri, ts, te = load_extension().march_rays(
                o, d, t_min, t_far, offset, _index_to(pack_bits(inp["binary"]), device),
                list(self.AABB), list(self.RES), self.STEP, 0.0, 1 << 20)
        else:
            ri, ts, te = reference.occupancy_sampling(o, d, t_min, t_far, offset, inp["binary"],
                                                      self.AABB, self.RES, self.STEP)
        # The lattice step of each sample: how compare() pairs samples of two runs.
        start = (t_min + offset * self.STEP)[ri] if ri.numel() else ts
        step = torch.round((ts - start) / self.STEP).long()
        return {"ray_indices": ri, "lattice_step": step, "t_starts": ts, "t_ends": te,
                "samples": torch.tensor([float(ri.numel())])}

    def compare(self, got, want):
        return compare_packed_samples(got, want)


class RasterizeCase(Case):
    """rasterize -> interpolate -> antialias on random overlapping triangles (two views), forward
    and the gradients to the clip-space positions and the vertex colours."""
    name = "rasterize+interpolate+antialias"
    cuda_dtypes = (torch.float32, torch.float64)

    def inputs(self, gen, size):
        n_tri, height, width = {"small": (24, 32, 40), "large": (600, 96, 128)}[size]
        n_vert = 2 * n_tri
        w = 1 + 2 * torch.rand(2, n_vert, 1, generator=gen, dtype=torch.float64)
        xy = (torch.rand(2, n_vert, 2, generator=gen, dtype=torch.float64) * 2.4 - 1.2) * w
        z = (torch.rand(2, n_vert, 1, generator=gen, dtype=torch.float64) * 1.8 - 0.9) * w
        tri = torch.stack([torch.randperm(n_vert, generator=gen)[:3] for _ in range(n_tri)])
        return {"pos": torch.cat([xy, z, w], -1), "tri": tri.to(torch.int32),
                "colors": torch.rand(n_vert, 3, generator=gen, dtype=torch.float64),
                "height": height, "width": width}

    def run(self, inp, device, dtype, gen, compiled=True):
        pos = _to(inp["pos"], device, dtype).requires_grad_(True)
        colors = _to(inp["colors"], device, dtype).requires_grad_(True)
        tri = _index_to(inp["tri"], device)
        neighbors = triangle_neighbors(inp["tri"]).to(device)
        H, W = inp["height"], inp["width"]
        if compiled:
            rast = rasterize(pos, tri, H, W)
            tri_id, bary, depth = rast
            out = antialias(interpolate(colors, rast, tri), rast, pos, tri, neighbors)
        else:
            tri_id, bary, depth = reference.rasterize_reference(pos, tri, H, W)
            color = reference.interpolate_reference(colors[None], tri_id, bary, tri)
            out = reference.antialias_reference(color, pos, tri, neighbors, tri_id, depth)
        g_pos, g_colors = _grads([bary, depth, out], [pos, colors], gen)
        return {"tri_id": tri_id, "bary": bary, "depth": depth, "antialiased": out,
                "grad_pos": g_pos, "grad_colors": g_colors}

    def compare(self, got, want):
        """The fraction of pixels whose visible triangle differs (a pixel centre within rounding
        of an edge may pick the other side in float32) counts as an error of that size; the
        values are compared by the default max relative error."""
        ids = got["tri_id"].cpu(), want["tri_id"].cpu()
        if ids[0].shape != ids[1].shape:
            return float("inf"), "tri_id shape"
        if not bool((ids[1] >= 0).any()):
            return float("inf"), "nothing rasterized"
        differ = (ids[0] != ids[1]).double().mean().item()
        rest = {k: v for k, v in want.items() if k != "tri_id"}
        worst, where = _max_rel_error({k: got[k] for k in rest}, rest)
        return (differ, "tri_id") if differ > worst else (worst, where)


def _max_rel_error(got, want):
    from .parity import rel_error  # the parity module imports this one
    return rel_error(got, want)


def all_cases():
    return [HashGridCase(), HashGridCase(n_dims=1, n_features=4),
            HashGridCase(n_dims=2, n_features=16, clamp=True),
            HashGridCase(n_dims=3, n_features=12, clamp=True),
            HashGridCase(deterministic=True),
            CompositeCase(), RayAabbCase(), MarchRaysCase(), LoraCase(), LoraCase(rank=3),
            LoraCase(rank=6), *(AttentionCase(d) for d in (40, 64, 80, 160)),
            AttentionCase(40, many_heads=True), NormCase("group_norm"), NormCase("layer_norm"),
            RasterizeCase()]

"""Pure-PyTorch reference implementations of every compiled op: the ground truth for tests and
the baseline for benchmarks. Written for clarity, not speed; autograd provides their gradients."""
from __future__ import annotations

import math

import numpy as np
import torch

# ---------------------------------------------------------------------------------------------
# Hash-grid encoding (tiny-cuda-nn HashGrid; see shared DESIGN.md)
# ---------------------------------------------------------------------------------------------

_HASH_PRIMES = (1, 2654435761, 805459861)


def hashgrid_layout_reference(n_input_dims, n_levels, n_features_per_level, log2_hashmap_size,
                              base_resolution, per_level_scale):
    """[(scale, resolution, offset, size)] per level: scale = base * per_level_scale^level - 1,
    in double, rounded once to float32 (the kernels do the same)."""
    levels, offset = [], 0
    for level in range(n_levels):
        scale = np.float32(float(base_resolution) * float(per_level_scale) ** level - 1.0)
        resolution = int(math.ceil(float(scale))) + 1
        dense = resolution ** n_input_dims
        size = min(-(-min(dense, 0xFFFFFFFF // 2) // 8) * 8, 1 << log2_hashmap_size)
        levels.append((float(scale), resolution, offset, size))
        offset += size
    return levels


def _corner_index(corner: torch.Tensor, resolution: int, size: int) -> torch.Tensor:
    """corner: (N, D) int64 grid coordinates -> (N,) entry within the level."""
    n_dims = corner.shape[1]
    if resolution ** n_dims <= size:  # the level fits: dense, x + y*res + z*res^2
        index = torch.zeros_like(corner[:, 0])
        for d in range(n_dims):
            index = index + corner[:, d] * resolution ** d
    else:  # hashed: xor of coordinate * prime in uint32 arithmetic
        index = torch.zeros_like(corner[:, 0])
        for d in range(n_dims):
            index = index ^ ((corner[:, d] * _HASH_PRIMES[d]) & 0xFFFFFFFF)
    return index % size


def hashgrid_encode(x: torch.Tensor, params: torch.Tensor, n_levels: int = 16,
                    n_features_per_level: int = 2, log2_hashmap_size: int = 19,
                    base_resolution: int = 16, per_level_scale: float = 1.447269237440378,
                    clamp: bool = False) -> torch.Tensor:
    """x (N, D) in [0,1], params flat table -> (N, n_levels * F), level-major."""
    n_points, n_dims = x.shape
    F = n_features_per_level
    table = params.view(-1, F)
    if clamp:
        x = x.clamp(0, 1)
    outputs = []
    for scale, resolution, offset, size in hashgrid_layout_reference(
            n_dims, n_levels, F, log2_hashmap_size, base_resolution, per_level_scale):
        # The kernels use fmaf(x, scale, 0.5); float64 evaluates x*scale+0.5 exactly for float32
        # inputs, so rounding back gives the same value (frac would otherwise differ by an ulp).
        pos = (x.double() * scale + 0.5).to(x.dtype)
        cell = torch.floor(pos).detach()
        frac = pos - cell
        cell = cell.long()
        level_out = torch.zeros(n_points, F, dtype=params.dtype, device=x.device)
        for corner in range(1 << n_dims):
            bits = torch.tensor([(corner >> d) & 1 for d in range(n_dims)], device=x.device)
            weight = torch.ones(n_points, dtype=x.dtype, device=x.device)
            for d in range(n_dims):
                weight = weight * (frac[:, d] if bits[d] else 1 - frac[:, d])
            entries = offset + _corner_index(cell + bits, resolution, size)
            level_out = level_out + weight[:, None].to(params.dtype) * table[entries]
        outputs.append(level_out)
    return torch.cat(outputs, dim=1)


# ---------------------------------------------------------------------------------------------
# Volume rendering (nerfacc's packed layout; see shared DESIGN.md)
# ---------------------------------------------------------------------------------------------

def ray_aabb_intersect(rays_o: torch.Tensor, rays_d: torch.Tensor, aabb):
    """Slab test: (t_near, t_far, hit); misses and degenerate rays get t = 1e10, hit = False."""
    box = torch.as_tensor(aabb, dtype=rays_o.dtype, device=rays_o.device).reshape(2, 3)
    inv = 1.0 / rays_d
    t0 = (box[0] - rays_o) * inv
    t1 = (box[1] - rays_o) * inv
    parallel = rays_d == 0
    inside_slab = (rays_o >= box[0]) & (rays_o <= box[1])
    lo = torch.where(parallel, torch.where(inside_slab, -math.inf, math.inf), torch.minimum(t0, t1))
    hi = torch.where(parallel, torch.where(inside_slab, math.inf, -math.inf), torch.maximum(t0, t1))
    t_near, t_far = lo.amax(dim=-1), hi.amin(dim=-1)
    valid = torch.isfinite(rays_o).all(-1) & torch.isfinite(rays_d).all(-1) & (rays_d != 0).any(-1)
    hit = valid & (t_far >= t_near) & (t_far > 0)
    miss = torch.full_like(t_near, 1e10)
    return torch.where(hit, t_near, miss), torch.where(hit, t_far, miss), hit


def _packed_to_padded(ray_indices: torch.Tensor, n_rays: int):
    """(row, column) of each packed sample in an (n_rays, max_samples) padded layout."""
    counts = torch.bincount(ray_indices, minlength=n_rays)
    starts = torch.cumsum(counts, 0) - counts
    column = torch.arange(ray_indices.numel(), device=ray_indices.device) - starts[ray_indices]
    width = int(counts.max()) if counts.numel() else 0
    return ray_indices, column, width


def render_weight_from_density(t_starts, t_ends, sigmas, ray_indices, n_rays):
    """(weights, transmittance, alphas) with T_i = prod_{j<i} (1 - alpha_j) by a padded cumprod."""
    alphas = 1 - torch.exp(-sigmas * (t_ends - t_starts))
    row, column, width = _packed_to_padded(ray_indices, n_rays)
    padded = torch.ones(n_rays, width + 1, dtype=sigmas.dtype, device=sigmas.device)
    padded = padded.index_put((row, column + 1), 1 - alphas)  # column 0 stays 1: exclusive product
    transmittance = torch.cumprod(padded, dim=1)[row, column]
    return transmittance * alphas, transmittance, alphas


def accumulate_along_rays(weights, values, ray_indices, n_rays):
    """(n_rays, C) sums of w_i * values_i (values=None: the weights, C = 1)."""
    contrib = weights[:, None] if values is None else weights[:, None] * values
    out = torch.zeros(n_rays, contrib.shape[1], dtype=contrib.dtype, device=contrib.device)
    return out.index_add(0, ray_indices, contrib)


def z_variance(t_starts, t_ends, sigmas, ray_indices, n_rays):
    """(opacity, mean, variance) per ray (n_rays,) of the sample midpoints under the normalised
    weights w_i / sum w (HiFA's z-variance), by its definition: the mean first, then the
    squared deviations from it. Rays without weight get zeros."""
    weights = render_weight_from_density(t_starts, t_ends, sigmas, ray_indices, n_rays)[0]
    mid = 0.5 * (t_starts + t_ends)
    opacity = accumulate_along_rays(weights, None, ray_indices, n_rays)[:, 0]
    safe = torch.where(opacity > 0, opacity, torch.ones_like(opacity))
    mean = accumulate_along_rays(weights, mid[:, None], ray_indices, n_rays)[:, 0] / safe
    spread = (mid - mean[ray_indices]) ** 2
    variance = accumulate_along_rays(weights, spread[:, None], ray_indices, n_rays)[:, 0] / safe
    zero = torch.zeros_like(opacity)
    return opacity, torch.where(opacity > 0, mean, zero), torch.where(opacity > 0, variance, zero)


def occupancy_sampling(rays_o, rays_d, t_min, t_max, offset, binary, aabb, resolution,
                       step_size, max_samples_per_ray=1 << 30):
    """Uniform-step (cone_angle = 0) marching by brute force: every step of the lattice
    t_min + (offset + k) * step, clipped at t_max, kept when its midpoint's cell is occupied.
    binary: bool (res_x * res_y * res_z,) in the kernels' cell order. Returns packed
    (ray_indices, t_starts, t_ends)."""
    box = torch.as_tensor(aabb, dtype=rays_o.dtype).reshape(2, 3)
    res = torch.tensor(resolution)
    ray_out, start_out, end_out = [], [], []
    for r in range(rays_o.shape[0]):
        lo, hi = float(t_min[r]), float(t_max[r])
        if not (lo < hi) or not math.isfinite(lo) or not math.isfinite(hi):
            continue
        start = lo + (float(offset[r]) if offset is not None else 0.0) * step_size
        n_steps = max(0, math.ceil((hi - start) / step_size))
        t0 = start + step_size * torch.arange(n_steps, dtype=rays_o.dtype)
        t0 = t0[t0 < hi]
        t1 = torch.clamp(t0 + step_size, max=hi)
        mid = rays_o[r] + 0.5 * (t0 + t1)[:, None] * rays_d[r]
        u = (mid - box[0]) / (box[1] - box[0]) * res
        inside = ((u >= 0) & (u <= res)).all(-1)
        ijk = torch.minimum(u.clamp(min=0).long(), res - 1)
        cell = (ijk[:, 0] * res[1] + ijk[:, 1]) * res[2] + ijk[:, 2]
        keep = inside & binary[cell]
        t0, t1 = t0[keep][:max_samples_per_ray], t1[keep][:max_samples_per_ray]
        ray_out.append(torch.full((t0.numel(),), r, dtype=torch.long))
        start_out.append(t0)
        end_out.append(t1)
    if not ray_out:
        empty = torch.empty(0, dtype=rays_o.dtype)
        return torch.empty(0, dtype=torch.long), empty, empty
    return torch.cat(ray_out), torch.cat(start_out), torch.cat(end_out)


# ---------------------------------------------------------------------------------------------
# JVP-engine rules (LoRA linear, attention, group/layer norm): primal and tangent, the tangent
# taken by torch.func.jvp of the plain formula, so the ground truth is PyTorch's own AD.
# ---------------------------------------------------------------------------------------------

def lora_linear(x, weight, bias, lora_a, lora_b, scale):
    """y = x W^T + b + scale * (x A^T) B^T."""
    y = torch.nn.functional.linear(x, weight, bias)
    return y + scale * torch.nn.functional.linear(torch.nn.functional.linear(x, lora_a), lora_b)


def lora_linear_jvp(x, x_dot, weight, bias, lora_a, lora_a_dot, lora_b, lora_b_dot, scale):
    """(y, y_dot) with W and b held constant; x_dot None means zero."""
    x_dot = torch.zeros_like(x) if x_dot is None else x_dot
    return torch.func.jvp(lambda x_, a_, b_: lora_linear(x_, weight, bias, a_, b_, scale),
                          (x, lora_a, lora_b), (x_dot, lora_a_dot, lora_b_dot))


def attention(q, k, v, scale):
    """softmax(scale q k^T) v for (BH, N, d), (BH, M, d), (BH, M, d)."""
    return torch.softmax(scale * q @ k.transpose(-1, -2), dim=-1) @ v


def attention_jvp(q, q_dot, k, k_dot, v, v_dot, scale):
    """(out, out_dot); a None tangent means zero."""
    tangents = tuple(torch.zeros_like(p) if t is None else t
                     for p, t in ((q, q_dot), (k, k_dot), (v, v_dot)))
    return torch.func.jvp(lambda q_, k_, v_: attention(q_, k_, v_, scale), (q, k, v), tangents)


def group_norm_jvp(x, x_dot, num_groups, weight, bias, eps):
    """(y, y_dot) of F.group_norm with the affine parameters held constant."""
    x_dot = torch.zeros_like(x) if x_dot is None else x_dot
    return torch.func.jvp(
        lambda x_: torch.nn.functional.group_norm(x_, num_groups, weight, bias, eps), (x,), (x_dot,))


def layer_norm_jvp(x, x_dot, normalized_shape, weight, bias, eps):
    """(y, y_dot) of F.layer_norm with the affine parameters held constant."""
    x_dot = torch.zeros_like(x) if x_dot is None else x_dot
    return torch.func.jvp(
        lambda x_: torch.nn.functional.layer_norm(x_, tuple(normalized_shape), weight, bias, eps),
        (x,), (x_dot,))


# ---------------------------------------------------------------------------------------------
# Rasterization (conventions in l2vsd_ext/ops/rasterize.py): dense pixels x triangles
# ---------------------------------------------------------------------------------------------

def _pixel_ndc(n, like):
    return (2 * torch.arange(n, dtype=like.dtype, device=like.device) + 1) / n - 1


def rasterize_reference(pos, tri, height, width, near_w=1e-4):
    """(tri_id, bary, depth) by testing every pixel against every triangle; pos (B, V, 4)."""
    tri = tri.long()
    B, F = pos.shape[0], tri.shape[0]
    ys, xs = _pixel_ndc(height, pos), _pixel_ndc(width, pos)
    X = xs[None, :].expand(height, width).reshape(-1)
    Y = ys[:, None].expand(height, width).reshape(-1)
    ids, barys, depths = [], [], []
    for b in range(B):
        v = pos[b][tri]                                            # (F, 3, 4)
        c = v[..., [0, 1, 3]]                                      # (F, 3, 3): (x, y, w)
        z = v[..., 2]
        e = torch.stack([torch.linalg.cross(c[:, (i + 1) % 3], c[:, (i + 2) % 3]) for i in range(3)], 1)
        det = (e[:, 0] * c[:, 0]).sum(-1)
        ok = (v[..., 3] > near_w).all(-1) & (det != 0) & torch.isfinite(v).all(-1).all(-1)
        u = e[None, :, :, 0] * X[:, None, None] + e[None, :, :, 1] * Y[:, None, None] + e[None, :, :, 2]
        s = u.sum(-1, keepdim=True)                                # (P, F, 1)
        bc = u / s
        zc = (bc * z[None]).sum(-1)
        wc = (bc * c[None, :, :, 2]).sum(-1)
        d = zc / wc
        inside = ok[None] & (s[..., 0] != 0) & (bc >= 0).all(-1) & torch.isfinite(d)
        key = torch.where(inside, d.detach().float(), torch.full_like(d, float("inf"), dtype=torch.float32))
        best = torch.argmin(key, dim=1)                            # first (smallest id) on ties
        hit = inside.gather(1, best[:, None])[:, 0]
        pix = torch.arange(X.shape[0], device=pos.device)
        b_best = torch.where(hit[:, None], bc[pix, best], torch.zeros_like(bc[:, 0]))
        d_best = torch.where(hit, d[pix, best], torch.zeros_like(d[:, 0]))
        ids.append(torch.where(hit, best, torch.full_like(best, -1)).to(torch.int32).reshape(height, width))
        barys.append(b_best.reshape(height, width, 3))
        depths.append(d_best.reshape(height, width))
    return torch.stack(ids), torch.stack(barys), torch.stack(depths)


def interpolate_reference(attr, tri_id, bary, tri):
    """attr (B or 1, V, C) at pixels: sum_i bary_i attr[tri[id, i]], zero where id = -1."""
    tri = tri.long()
    B, H, W = tri_id.shape
    attr = attr.expand(B, -1, -1)
    hit = tri_id >= 0
    verts = tri[tri_id.clamp_min(0).long()]                        # (B, H, W, 3)
    gathered = torch.stack([attr[b][verts[b]] for b in range(B)])  # (B, H, W, 3, C)
    out = (bary[..., None] * gathered).sum(-2)
    return torch.where(hit[..., None], out, torch.zeros_like(out))


def antialias_reference(color, pos, tri, neighbors, tri_id, depth, near_w=1e-4):
    """The antialias op's pair analysis and blending (see ops/rasterize.py), vectorised over
    pixel pairs; autograd gives the gradients to color and pos."""
    tri, neighbors = tri.long(), neighbors.long()
    B, H, W, C = color.shape
    outs = []
    for b in range(B):
        p4 = pos[b]
        inv = 1 / p4[:, 3]
        sx = ((p4[:, 0] * inv + 1) * W - 1) / 2
        sy = ((p4[:, 1] * inv + 1) * H - 1) / 2
        v = tri
        orient = ((sx[v[:, 1]] - sx[v[:, 0]]) * (sy[v[:, 2]] - sy[v[:, 0]])
                  - (sy[v[:, 1]] - sy[v[:, 0]]) * (sx[v[:, 2]] - sx[v[:, 0]])).detach()
        valid = (p4[:, 3] > near_w)[tri].all(-1)
        ids = tri_id[b].reshape(-1).long()
        dep = depth[b].reshape(-1)
        col = color[b].reshape(-1, C)
        out = col
        for axis in (0, 1):
            py, px = torch.meshgrid(torch.arange(H, device=pos.device),
                                    torch.arange(W, device=pos.device), indexing="ij")
            keep = (px + 1 < W) if axis == 0 else (py + 1 < H)
            p = (py * W + px)[keep]
            q = p + (1 if axis == 0 else W)
            tp, tq = ids[p], ids[q]
            differ = tp != tq
            p_front = (tq < 0) | ((tp >= 0) & ((dep[p] < dep[q]) | ((dep[p] == dep[q]) & (tp < tq))))
            front = torch.where(p_front, p, q)
            other = torch.where(p_front, q, p)
            t = torch.where(p_front, tp, tq).clamp_min(0)
            fixed = (p // W if axis == 0 else p % W).to(pos.dtype)
            start = (front % W if axis == 0 else front // W).to(pos.dtype)
            direction = torch.where(p_front, 1.0, -1.0).to(pos.dtype)
            found = torch.zeros_like(differ)
            s_all = torch.zeros(p.shape, dtype=pos.dtype, device=pos.device)
            for k in range(3):
                va, vb = tri[t, k], tri[t, (k + 1) % 3]
                nb = neighbors[t, k]
                nbc = nb.clamp_min(0)
                sil = (nb < 0) | ~valid[nbc] | ((orient[nbc] > 0) != (orient[t] > 0))
                a_al, b_al = (sx[va], sx[vb]) if axis == 0 else (sy[va], sy[vb])
                a_ac, b_ac = (sy[va], sy[vb]) if axis == 0 else (sx[va], sx[vb])
                d_ac, d_al = b_ac - a_ac, b_al - a_al
                steep = (d_ac.abs() >= d_al.abs()) if axis == 0 else (d_ac.abs() > d_al.abs())
                within = (fixed >= torch.minimum(a_ac, b_ac)) & (fixed <= torch.maximum(a_ac, b_ac))
                safe = torch.where(d_ac == 0, torch.ones_like(d_ac), d_ac)
                cross = a_al + (fixed - a_ac) * (d_al / safe)
                s = (cross - start) * direction
                ok = differ & ~found & sil & steep & within & (d_ac != 0) & (s >= 0) & (s <= 1)
                s_all = torch.where(ok, s, s_all)
                found = found | ok
            past = s_all > 0.5
            target = torch.where(past, other, front)[found]
            source = torch.where(past, front, other)[found]
            weight = torch.where(past, s_all - 0.5, 0.5 - s_all)[found]
            out = out.index_add(0, target, weight[:, None] * (col[source] - col[target]))
        outs.append(out.reshape(H, W, C))
    return torch.stack(outs)

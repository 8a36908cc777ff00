"""Rendering benchmarks; each pairs the compiled path with its baseline in the same run.

- compositing forward+backward (render_weight_from_density + accumulate_along_rays, and the
  fused composite_along_rays that computes the same per-ray sums in one op) at 2^20 packed
  samples over 4096 rays: kernels vs the pure-PyTorch references;
- the same against nerfacc 0.5.3's batched pure-torch path (`nerfacc.volrend`, the fastest
  nerfacc has on a CPU) on 4096 rays x 256 samples: our batched layout on the same inputs, and
  our packed layout with a variable number of samples per ray (2^20 in all), which nerfacc only
  has on CUDA. Our row (role "ours") is the fused op, the one VolumeRenderer uses; the two ops
  back to back stay as context (role "context"). Results are checked equal to nerfacc's before
  timing (the variable-length rays padded with empty intervals for nerfacc's batched layout);
- one 64x64 render + backward of the default NeRFField: with vs without occupancy skipping
  (samples per ray recorded in extra_info).

Run: python -m pytest benchmarks/bench_render.py --benchmark-json=out.json
(pass -p no:randomly etc. as you like; it takes about a minute on two cores)."""
import os

import pytest
import torch

from l2vsd_ext.ops import (OccupancyGrid, accumulate_along_rays, composite_along_rays,
                           render_weight_from_density)
from l2vsd_ext.ops import reference as ref
from l2vsd_ext.scene import CameraSampler, NeRFField, SolidBackground, VolumeRenderer

import peers

N_RAYS, N_SAMPLES = 4096, 1 << 20
ROUNDS = dict(rounds=5, iterations=1, warmup_rounds=1)


@pytest.fixture(scope="module")
def packed_samples():
    g = torch.Generator().manual_seed(0)
    # Uneven rays, as after empty-space skipping: counts from 0 to 2x the mean.
    counts = torch.randint(0, 2 * N_SAMPLES // N_RAYS, (N_RAYS,), generator=g)
    counts[-1] += N_SAMPLES - int(counts.sum())
    counts = counts.clamp(min=0)
    ray_indices = torch.repeat_interleave(torch.arange(N_RAYS), counts)
    n = ray_indices.numel()
    t_starts = torch.rand(n, generator=g)
    t_ends = t_starts + 0.01
    sigmas = 10 * torch.rand(n, generator=g)
    rgbs = torch.rand(n, 3, generator=g)
    return ray_indices, t_starts, t_ends, sigmas, rgbs


def _composite(weights_fn, accumulate_fn, ray_indices, t_starts, t_ends, sigmas, rgbs):
    s = sigmas.clone().requires_grad_(True)
    c = rgbs.clone().requires_grad_(True)
    w, _, _ = weights_fn(t_starts, t_ends, s, ray_indices, N_RAYS)
    color = accumulate_fn(w, c, ray_indices, N_RAYS)
    color.sum().backward()
    return s.grad


def _fused_composite(ray_indices, t_starts, t_ends, sigmas, rgbs):
    s = sigmas.clone().requires_grad_(True)
    c = rgbs.clone().requires_grad_(True)
    composite_along_rays(t_starts, t_ends, s, c, ray_indices, N_RAYS).sum().backward()
    return s.grad


def _fused_composite_z_variance(ray_indices, t_starts, t_ends, sigmas, rgbs):
    # The same plus HiFA's z-variance in the same sweep, in the loss: its cost over the above.
    s = sigmas.clone().requires_grad_(True)
    c = rgbs.clone().requires_grad_(True)
    out = composite_along_rays(t_starts, t_ends, s, c, ray_indices, N_RAYS, z_variance=True)
    (out.sums.sum() + out.z_variance.sum()).backward()
    return s.grad


@pytest.mark.benchmark(group="composite fwd+bwd 2^20 samples / 4096 rays")
@pytest.mark.parametrize("impl", ["kernel", "fused kernel", "fused kernel + z-variance",
                                  "reference"])
def test_composite_forward_backward(benchmark, packed_samples, impl):
    benchmark.extra_info.update(n_samples=packed_samples[0].numel(), impl=impl)
    if impl.startswith("fused kernel"):
        fn = _fused_composite if impl == "fused kernel" else _fused_composite_z_variance
        benchmark.pedantic(fn, args=packed_samples, **ROUNDS)
        return
    fns = {"kernel": (render_weight_from_density, accumulate_along_rays),
           "reference": (ref.render_weight_from_density, ref.accumulate_along_rays)}[impl]
    benchmark.pedantic(_composite, args=(*fns, *packed_samples), **ROUNDS)


BATCHED_SAMPLES = N_SAMPLES // N_RAYS  # 256 per ray, 2^20 in all


@pytest.fixture(scope="module")
def batched_samples():
    g = torch.Generator().manual_seed(1)
    t_starts = torch.rand(N_RAYS, BATCHED_SAMPLES, generator=g).sort(dim=-1).values
    t_ends = t_starts + 0.01
    sigmas = 10 * torch.rand(N_RAYS, BATCHED_SAMPLES, generator=g)
    rgbs = torch.rand(N_RAYS, BATCHED_SAMPLES, 3, generator=g)
    return t_starts, t_ends, sigmas, rgbs


def _batched_step(volrend, t_starts, t_ends, sigmas, rgbs):
    """nerfacc.volrend or l2vsd_ext.ops (same names, same batched signatures)."""
    s = sigmas.clone().requires_grad_(True)
    c = rgbs.clone().requires_grad_(True)
    w, _, _ = volrend.render_weight_from_density(t_starts, t_ends, s)
    color = volrend.accumulate_along_rays(w, c)
    color.sum().backward()
    return color, s.grad, c.grad


def _fused_batched_step(t_starts, t_ends, sigmas, rgbs):
    s = sigmas.clone().requires_grad_(True)
    c = rgbs.clone().requires_grad_(True)
    color = composite_along_rays(t_starts, t_ends, s, c)
    color.sum().backward()
    return color, s.grad, c.grad


def _packed_step(ray_indices, t_starts, t_ends, sigmas, rgbs, fused=False):
    s = sigmas.clone().requires_grad_(True)
    c = rgbs.clone().requires_grad_(True)
    if fused:
        color = composite_along_rays(t_starts, t_ends, s, c, ray_indices, N_RAYS)
    else:
        w, _, _ = render_weight_from_density(t_starts, t_ends, s, ray_indices, N_RAYS)
        color = accumulate_along_rays(w, c, ray_indices, N_RAYS)
    color.sum().backward()
    return color, s.grad, c.grad


def _padded(ray_indices, t_starts, t_ends, sigmas, rgbs):
    """The packed rays as a batched (n_rays, max_count) layout; padding intervals are empty, so
    they carry zero weight and change no colour."""
    counts = torch.bincount(ray_indices, minlength=N_RAYS)
    width = int(counts.max())
    slot = torch.arange(ray_indices.numel()) - torch.repeat_interleave(
        torch.cumsum(counts, 0) - counts, counts)
    out = [torch.zeros(N_RAYS, width, *t.shape[1:], dtype=t.dtype)
           for t in (t_starts, t_ends, sigmas, rgbs)]
    for dst, src in zip(out, (t_starts, t_ends, sigmas, rgbs)):
        dst[ray_indices, slot] = src
    return (*out, slot)


class _Ours:  # l2vsd_ext.ops under nerfacc.volrend's two names
    render_weight_from_density = staticmethod(render_weight_from_density)
    accumulate_along_rays = staticmethod(accumulate_along_rays)


def _tag(benchmark, impl, role, n_samples):
    benchmark.extra_info.update(impl=impl, role=role, n_samples=n_samples,
                                torch_threads=torch.get_num_threads(),
                                omp_num_threads=os.environ.get("OMP_NUM_THREADS", "unset"))


@pytest.mark.parametrize("impl", ["l2vsd_ext-fused", "l2vsd_ext-two-ops", "nerfacc-torch",
                                  "reference"])
def test_composite_vs_nerfacc_batched(benchmark, batched_samples, impl):
    volrend = peers.nerfacc_volrend()
    benchmark.group = "compositing fwd+bwd, 4096 rays x 256 samples (batched)"
    _tag(benchmark, impl, {"l2vsd_ext-fused": "ours", "l2vsd_ext-two-ops": "context",
                           "nerfacc-torch": "peer"}.get(impl, "reference"), N_SAMPLES)
    theirs = _batched_step(volrend, *batched_samples)
    for ours in (_fused_batched_step(*batched_samples), _batched_step(_Ours, *batched_samples)):
        for a, b in zip(ours, theirs):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    if impl == "l2vsd_ext-fused":
        benchmark.pedantic(_fused_batched_step, args=batched_samples, **ROUNDS)
    elif impl == "reference":
        t_starts, t_ends, sigmas, rgbs = batched_samples
        ri = torch.arange(N_RAYS).repeat_interleave(BATCHED_SAMPLES)
        args = (ref.render_weight_from_density, ref.accumulate_along_rays, ri,
                t_starts.reshape(-1), t_ends.reshape(-1), sigmas.reshape(-1), rgbs.reshape(-1, 3))
        benchmark.pedantic(_composite, args=args, **ROUNDS)
    else:
        step_args = ((_Ours if impl == "l2vsd_ext-two-ops" else volrend), *batched_samples)
        benchmark.pedantic(_batched_step, args=step_args, **ROUNDS)


@pytest.mark.parametrize("impl", ["l2vsd_ext-packed-fused", "l2vsd_ext-packed-two-ops",
                                  "nerfacc-torch", "reference"])
def test_composite_vs_nerfacc_variable(benchmark, packed_samples, batched_samples, impl):
    volrend = peers.nerfacc_volrend()
    benchmark.group = "compositing fwd+bwd, 2^20 samples, variable per ray (packed)"
    n = packed_samples[0].numel()
    _tag(benchmark, impl, {"l2vsd_ext-packed-fused": "ours", "l2vsd_ext-packed-two-ops": "context",
                           "nerfacc-torch": "peer"}.get(impl, "reference"), n)
    # Equal results: nerfacc's batched path on the same rays padded to the longest one.
    ri = packed_samples[0]
    *padded, slot = _padded(*packed_samples)
    theirs = _batched_step(volrend, *padded)
    for fused in (True, False):
        ours = _packed_step(*packed_samples, fused=fused)
        torch.testing.assert_close(ours[0], theirs[0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ours[1], theirs[1][ri, slot], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ours[2], theirs[2][ri, slot], rtol=1e-5, atol=1e-5)
    if impl.startswith("l2vsd_ext-packed"):
        benchmark.pedantic(_packed_step, args=(*packed_samples, impl.endswith("fused")),
                           **ROUNDS)
    elif impl == "nerfacc-torch":  # the peer's time on 2^20 samples in its (batched) layout
        benchmark.pedantic(_batched_step, args=(volrend, *batched_samples), **ROUNDS)
    else:
        args = (ref.render_weight_from_density, ref.accumulate_along_rays, *packed_samples)
        benchmark.pedantic(_composite, args=args, **ROUNDS)


@pytest.mark.parametrize("impl", ["l2vsd_ext-cuda-fused", "l2vsd_ext-cuda", "nerfacc-cuda"])
def test_composite_vs_nerfacc_cuda(benchmark, packed_samples, impl):
    # l2vsd_ext-cuda-fused: composite_along_rays (the fused CUDA kernels, what the renderer runs);
    # l2vsd_ext-cuda: the two ops, render_weight_from_density then accumulate_along_rays.
    volrend = peers.nerfacc_cuda_volrend()  # skips without a GPU or nerfacc's CUDA extension
    benchmark.group = "compositing fwd+bwd CUDA, 2^20 samples, variable per ray (packed)"
    _tag(benchmark, impl, "peer" if impl == "nerfacc-cuda" else "ours",
         packed_samples[0].numel())
    ri, *rest = [t.cuda() for t in packed_samples]

    def step(fns):
        s = rest[2].clone().requires_grad_(True)
        c = rest[3].clone().requires_grad_(True)
        w, _, _ = fns.render_weight_from_density(rest[0], rest[1], s, ray_indices=ri,
                                                 n_rays=N_RAYS)
        color = fns.accumulate_along_rays(w, c, ray_indices=ri, n_rays=N_RAYS)
        color.sum().backward()
        torch.cuda.synchronize()
        return color, s.grad, c.grad

    def fused_step(_):
        s = rest[2].clone().requires_grad_(True)
        c = rest[3].clone().requires_grad_(True)
        color = composite_along_rays(rest[0], rest[1], s, c, ri, N_RAYS, check_layout=False)
        color.sum().backward()
        torch.cuda.synchronize()
        return color, s.grad, c.grad

    for a, b in zip(fused_step(None), step(volrend)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    for a, b in zip(step(_Ours), step(volrend)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    run = {"l2vsd_ext-cuda-fused": (fused_step, None), "l2vsd_ext-cuda": (step, _Ours),
           "nerfacc-cuda": (step, volrend)}[impl]
    benchmark.pedantic(run[0], args=(run[1],), rounds=10, iterations=1, warmup_rounds=2)


@pytest.fixture(scope="module")
def default_scene():
    torch.manual_seed(0)
    field = NeRFField()  # the default (ProlificDreamer) hash grid and MLP, blob initialisation
    grid = OccupancyGrid(field.aabb, 128)
    renderer_skip = VolumeRenderer(field, SolidBackground(), grid)
    renderer_skip.update_occupancy(0)
    renderer_full = VolumeRenderer(field, SolidBackground(), None)
    cams = CameraSampler(64, 64).orbit(1, elevation=15.0, distance=1.5, fovy=50.0)
    return field, renderer_skip, renderer_full, cams, grid.occupancy_fraction()


@pytest.mark.benchmark(group="64x64 render+backward, default field")
@pytest.mark.parametrize("occupancy", ["skipping", "no skipping"])
def test_render_forward_backward(benchmark, default_scene, occupancy):
    field, renderer_skip, renderer_full, cams, occupied = default_scene
    renderer = renderer_skip if occupancy == "skipping" else renderer_full
    stats = {}

    def step():
        field.zero_grad(set_to_none=True)
        out = renderer(cams.rays_o, cams.rays_d, generator=torch.Generator().manual_seed(0))
        out["rgb"].mean().backward()
        stats["samples_per_ray"] = out["samples_per_ray"]

    benchmark.pedantic(step, rounds=3, iterations=1, warmup_rounds=1)
    benchmark.extra_info.update(stats)
    benchmark.extra_info["occupied_fraction"] = occupied if occupancy == "skipping" else 1.0

"""Rendering benchmarks; each pairs the compiled path with its baseline in the same run.

- compositing forward+backward (render_weight_from_density + accumulate_along_rays) at 2^20
  packed samples over 4096 rays: kernels vs the pure-PyTorch references;
- one 64x64 render + backward of the default NeRFField: with vs without occupancy skipping
  (samples per ray recorded in extra_info).

Run: python -m pytest benchmarks/bench_render.py --benchmark-json=out.json
(pass -p no:randomly etc. as you like; it takes about a minute on two cores)."""
import pytest
import torch

from l2vsd_ext.ops import OccupancyGrid, accumulate_along_rays, render_weight_from_density
from l2vsd_ext.ops import reference as ref
from l2vsd_ext.scene import CameraSampler, NeRFField, SolidBackground, VolumeRenderer

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


@pytest.mark.benchmark(group="composite fwd+bwd 2^20 samples / 4096 rays")
@pytest.mark.parametrize("impl", ["kernel", "reference"])
def test_composite_forward_backward(benchmark, packed_samples, impl):
    fns = {"kernel": (render_weight_from_density, accumulate_along_rays),
           "reference": (ref.render_weight_from_density, ref.accumulate_along_rays)}[impl]
    benchmark.extra_info["n_samples"] = packed_samples[0].numel()
    benchmark.pedantic(_composite, args=(*fns, *packed_samples), **ROUNDS)


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

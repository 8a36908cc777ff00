"""ray_aabb_intersect and occupancy-grid marching against the brute-force references, plus the
degenerate inputs (zero-length directions, NaN origins, rays that miss)."""
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from l2vsd_ext.ops import OccupancyGrid, ray_aabb_intersect
from l2vsd_ext.ops import reference as ref
from l2vsd_ext.ops.occupancy import pack_bits
from render_helpers import DEVICES

AABB = [-1.0, -1.0, -1.0, 1.0, 1.0, 1.0]


def random_rays(n, seed, dtype=torch.float64, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    o = 2.5 * torch.randn(n, 3, generator=g, dtype=dtype)
    # Aim roughly at the box so that most rays hit it.
    target = 0.8 * (2 * torch.rand(n, 3, generator=g, dtype=dtype) - 1)
    d = torch.nn.functional.normalize(target - o, dim=-1)
    return o.to(device), d.to(device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ray_aabb_matches_reference(device, dtype):
    o, d = random_rays(300, 0, dtype, device)
    d[:20] = torch.randn(20, 3, dtype=dtype, device=device)  # some misses
    d[20, 1:] = 0  # axis-parallel
    got = ray_aabb_intersect(o, d, AABB)
    want = ref.ray_aabb_intersect(o, d, AABB)
    assert torch.equal(got[2], want[2])
    torch.testing.assert_close(got[0], want[0])
    torch.testing.assert_close(got[1], want[1])
    assert bool(got[2].any()) and not bool(got[2].all())


def test_ray_aabb_degenerate_rays_are_misses():
    o = torch.tensor([[0.0, 0, 0], [float("nan"), 0, 0], [0.0, 0, 0], [5.0, 0, 0], [0, 0, 0]])
    d = torch.tensor([[0.0, 0, 0], [1.0, 0, 0], [float("inf"), 0, 0], [1.0, 0, 0], [0, 1.0, 0]])
    t_near, t_far, hit = ray_aabb_intersect(o, d, AABB)
    assert hit.tolist() == [False, False, False, False, True]  # box behind ray 3; ray 4 inside
    assert bool(torch.isfinite(t_near).all()) and bool(torch.isfinite(t_far).all())
    assert t_near[4].item() == -1.0 and t_far[4].item() == 1.0


def _grid(resolution, binary):
    grid = OccupancyGrid(AABB, resolution)
    grid.binary.copy_(binary)
    grid.bitfield.copy_(pack_bits(binary))
    return grid


@settings(max_examples=30, deadline=None)
@given(n_rays=st.integers(0, 40), res=st.tuples(*[st.integers(1, 9)] * 3),
       fill=st.floats(0.0, 1.0), stratified=st.booleans(), seed=st.integers(0, 2**16))
def test_marching_matches_brute_force(n_rays, res, fill, stratified, seed):
    o, d = random_rays(n_rays, seed)
    g = torch.Generator().manual_seed(seed)
    binary = torch.rand(res[0] * res[1] * res[2], generator=g) < fill
    grid = _grid(res, binary)
    step = 0.0625  # exact in float32, so the kernel's lattice equals the reference's
    got = grid.sampling(o, d, render_step_size=step, stratified=stratified,
                        generator=torch.Generator().manual_seed(seed))
    t_near, t_far, _ = ref.ray_aabb_intersect(o, d, AABB)
    offset = torch.rand(n_rays, generator=torch.Generator().manual_seed(seed),
                        dtype=o.dtype) if stratified else None
    want = ref.occupancy_sampling(o, d, t_near.clamp(min=0), t_far, offset, binary, AABB, res, step)
    assert torch.equal(got[0], want[0])
    torch.testing.assert_close(got[1], want[1], atol=1e-9, rtol=0)
    torch.testing.assert_close(got[2], want[2], atol=1e-9, rtol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_marching_invariants(device):
    o, d = random_rays(200, 1, torch.float32, device)
    grid = OccupancyGrid(AABB, 16).to(device)
    ri, ts, te = grid.sampling(o, d, render_step_size=0.01, cone_angle=0.02, stratified=True,
                               near_plane=0.5, max_samples_per_ray=64,
                               generator=torch.Generator(device=device).manual_seed(0))
    assert ri.dtype == torch.long and bool((ri[1:] >= ri[:-1]).all())
    assert bool((te > ts).all()) and bool((ts >= 0.5).all())
    same_ray = ri[1:] == ri[:-1]
    assert bool((ts[1:][same_ray] >= te[:-1][same_ray] - 1e-6).all())  # no overlaps
    assert int(torch.bincount(ri, minlength=200).max()) <= 64
    t_near, t_far, hit = ray_aabb_intersect(o, d, AABB)
    assert bool((te <= t_far[ri] + 1e-5).all())
    assert set(ri.unique().tolist()) <= set(hit.nonzero().flatten().tolist())


def test_marching_is_deterministic_under_a_generator():
    o, d = random_rays(50, 2, torch.float32)
    grid = OccupancyGrid(AABB, 8)
    a = grid.sampling(o, d, render_step_size=0.05, stratified=True,
                      generator=torch.Generator().manual_seed(7))
    b = grid.sampling(o, d, render_step_size=0.05, stratified=True,
                      generator=torch.Generator().manual_seed(7))
    for x, y in zip(a, b):
        assert torch.equal(x, y)


def test_marching_degenerate_rays_give_no_samples():
    o = torch.tensor([[0.0, 0, 0], [float("nan"), 0, 0], [3.0, 3, 3], [0.0, 0, 0]])
    d = torch.tensor([[0.0, 0, 0], [1.0, 0, 0], [1.0, 0, 0], [1.0, 0, 0]])
    ri, ts, te = OccupancyGrid(AABB, 4).sampling(o, d, render_step_size=0.1)
    assert set(ri.tolist()) == {3}
    assert bool(torch.isfinite(ts).all())


def test_all_cells_empty_gives_no_samples():
    o, d = random_rays(30, 3, torch.float32)
    grid = _grid(8, torch.zeros(512, dtype=torch.bool))
    ri, ts, te = grid.sampling(o, d, render_step_size=0.01)
    assert ri.numel() == ts.numel() == te.numel() == 0


def test_density_fn_prunes_with_early_stop():
    o, d = random_rays(30, 4)
    grid = OccupancyGrid(AABB, 4)
    full = grid.sampling(o, d, render_step_size=0.02)
    dense = grid.sampling(o, d, render_step_size=0.02,
                          density_fn=lambda ts, te, ri: torch.full_like(ts, 1e3))
    # Opaque everywhere: transmittance falls below 1e-4 after a couple of samples per ray.
    assert dense[0].numel() < full[0].numel() / 5
    assert set(dense[0].unique().tolist()) == set(full[0].unique().tolist())


def test_marching_bad_inputs():
    o, d = random_rays(5, 5, torch.float32)
    grid = OccupancyGrid(AABB, 4)
    with pytest.raises(ValueError, match="render_step_size"):
        grid.sampling(o, d, render_step_size=0.0)
    with pytest.raises(ValueError, match="cone_angle"):
        grid.sampling(o, d, render_step_size=0.1, cone_angle=-1.0)
    with pytest.raises(ValueError, match="max_samples_per_ray"):
        grid.sampling(o, d, render_step_size=0.1, max_samples_per_ray=0)
    with pytest.raises(ValueError, match="rays_d"):
        grid.sampling(o, d[:3], render_step_size=0.1)
    with pytest.raises(TypeError, match="rays_d"):
        grid.sampling(o, d.double(), render_step_size=0.1)
    with pytest.raises(ValueError, match="rays_o"):
        ray_aabb_intersect(o[:, :2], d[:, :2], AABB)
    with pytest.raises(ValueError, match="aabb"):
        ray_aabb_intersect(o, d, [1, 1, 1, -1, -1, -1])
    with pytest.raises(ValueError, match="device|meta"):
        ray_aabb_intersect(o, d.to("meta"), AABB)

"""OccupancyGrid update: warm-up, EMA, thresholding; the property that a cell whose density is
above the threshold is never culled (neither in the bitfield nor by the marcher)."""
import pytest
import torch
from hypothesis import given, settings, strategies as st

from l2vsd_ext.ops import OccupancyGrid
from l2vsd_ext.ops.occupancy import pack_bits

AABB = [-1.0, -1.0, -1.0, 1.0, 1.0, 1.0]


def cell_of(grid, points):
    res = torch.tensor(grid.resolution)
    ijk = ((points - grid.aabb[:3]) / (grid.aabb[3:] - grid.aabb[:3]) * res).long()
    ijk = torch.minimum(ijk.clamp(min=0), res - 1)
    return (ijk[:, 0] * res[1] + ijk[:, 1]) * res[2] + ijk[:, 2]


def piecewise_constant(grid, values):
    """A density function constant on each cell of `grid`."""
    return lambda x: values[cell_of(grid, x)]


def test_pack_bits_layout():
    binary = torch.tensor([1, 0, 0, 1, 0, 0, 0, 1, 1, 1], dtype=torch.bool)
    assert pack_bits(binary).tolist() == [0b10001001, 0b11]


def test_starts_fully_occupied_and_warmup_samples_every_cell():
    grid = OccupancyGrid(AABB, 8)
    assert grid.occupancy_fraction() == 1.0
    seen = []
    grid.update(0, lambda x: (seen.append(x.shape[0]), torch.zeros(x.shape[0]))[1])
    assert seen == [512]
    assert grid.occupancy_fraction() == 0.0


def test_update_respects_every_n_steps():
    grid = OccupancyGrid(AABB, 4)
    calls = []
    fn = lambda x: (calls.append(1), torch.ones(x.shape[0]))[1]
    assert not grid.update(3, fn, every_n_steps=16)
    assert grid.update(32, fn, every_n_steps=16)
    assert len(calls) == 1


@settings(max_examples=25, deadline=None)
@given(res=st.integers(2, 10), thre=st.floats(1e-3, 1.0), decay=st.floats(0.5, 0.99),
       sparsity=st.floats(0.0, 1.0), n_updates=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_cells_above_threshold_are_never_culled(res, thre, decay, sparsity, n_updates, seed):
    g = torch.Generator().manual_seed(seed)
    grid = OccupancyGrid(AABB, res)
    n_cells = res ** 3
    for k in range(n_updates):
        # A fresh density each time; about `sparsity` of the cells are empty.
        values = torch.rand(n_cells, generator=g) * 2 * thre
        values[torch.rand(n_cells, generator=g) < sparsity] = 0.0
        warm = k == 0
        grid.update(k * 16, piecewise_constant(grid, values), occ_thre=thre, ema_decay=decay,
                    warmup_steps=16 if warm else 0, generator=g)
        # Property 1: the stored estimate above the threshold is always occupied.
        assert bool(grid.binary[grid.density > thre].all())
        if warm:  # every cell was just sampled: each dense cell is marked
            assert bool(grid.binary[values > thre].all())
    # Property 2: the marcher keeps every step whose midpoint is in an occupied cell, so rays
    # through a dense cell's centre get a sample in it.
    dense = grid.binary.nonzero().flatten()[:20]
    if dense.numel():
        centers = grid.cell_centers(dense)
        origins = centers + torch.tensor([0.0, 0.0, 3.0])
        dirs = torch.tensor([0.0, 0.0, -1.0]).expand_as(origins).contiguous()
        step = 0.5 / res
        ri, ts, te = grid.sampling(origins, dirs, render_step_size=step)
        mids = origins[ri] + (0.5 * (ts + te))[:, None] * dirs[ri]
        hit_cells = cell_of(grid, mids)
        for r, cell in enumerate(dense.tolist()):
            assert cell in hit_cells[ri == r].tolist()


def test_nan_density_marks_cells_occupied():
    grid = OccupancyGrid(AABB, 4)
    grid.update(0, lambda x: torch.where(x[:, 0] > 0, torch.nan, 0.0))
    assert 0.4 < grid.occupancy_fraction() < 0.6


def test_ema_decays_old_estimates():
    grid = OccupancyGrid(AABB, 2)
    grid.update(0, lambda x: torch.ones(x.shape[0]), ema_decay=0.5)
    grid.update(16, lambda x: torch.zeros(x.shape[0]), ema_decay=0.5, warmup_steps=32)
    torch.testing.assert_close(grid.density, torch.full((8,), 0.5))


@pytest.mark.parametrize("resolution", [0, -3, (4, 4), (4, 0, 4), 5000, 2.5])
def test_bad_resolution_raises(resolution):
    with pytest.raises(ValueError, match="resolution"):
        OccupancyGrid(AABB, resolution)


def test_bad_aabb_and_density_fn_raise():
    with pytest.raises(ValueError, match="aabb"):
        OccupancyGrid([0, 0, 0, 1, 1], 4)
    with pytest.raises(ValueError, match="aabb"):
        OccupancyGrid([0, 0, 0, 0, 1, 1], 4)
    with pytest.raises(ValueError, match="density_fn"):
        OccupancyGrid(AABB, 4).update(0, lambda x: torch.ones(3))


def test_dilation_grows_the_occupied_region_by_one_cell():
    grid = OccupancyGrid(AABB, 5)
    centre = torch.zeros(125)
    centre[(2 * 5 + 2) * 5 + 2] = 1.0
    grid.update(0, piecewise_constant(grid, centre), dilation=1)
    assert int(grid.binary.sum()) == 27
    with pytest.raises(ValueError, match="dilation"):
        grid.update(0, piecewise_constant(grid, centre), dilation=-1)

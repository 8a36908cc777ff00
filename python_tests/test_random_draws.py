"""Every random draw of the loop works when the tensors live on another device than the seeded
generator (a CUDA run with the loop's CPU generators). CUDA refuses torch.rand(generator=cpu_gen,
device="cuda"); on CPU the same mismatch is made visible with a strict wrapper around torch's
draws and tensors on the `meta` device."""
import ast
import contextlib
import pathlib

import pytest
import torch

from l2vsd_ext.ops import random_draws
from l2vsd_ext.ops.occupancy import OccupancyGrid

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "l2vsd_ext"


@contextlib.contextmanager
def strict_generator_devices(monkeypatch):
    """torch.rand/randint/randn raise, as CUDA does, when the generator is not on `device`."""
    def strict(fn):
        def wrapped(*args, generator=None, device=None, **kwargs):
            target = torch.device(device if device is not None else "cpu")
            if generator is not None and generator.device.type != target.type:
                raise RuntimeError(f"generator on {generator.device} used for a draw on {target}")
            return fn(*args, generator=generator, device=device, **kwargs)
        return wrapped

    for name in ("rand", "randint", "randn"):
        monkeypatch.setattr(torch, name, strict(getattr(torch, name)))
    yield


def test_strict_wrapper_catches_the_mismatch(monkeypatch):
    with strict_generator_devices(monkeypatch):
        with pytest.raises(RuntimeError, match="generator on cpu"):
            torch.rand(3, generator=torch.Generator(), device="meta")


def test_draws_on_meta_match_cpu_draws(monkeypatch):
    with strict_generator_devices(monkeypatch):
        g_meta, g_cpu = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
        u = random_draws.uniform((4, 3), g_meta, "meta")
        i = random_draws.integers(10, (7,), g_meta, "meta")
        assert u.device.type == "meta" and i.device.type == "meta" and i.dtype == torch.int64
        random_draws.uniform((4, 3), g_cpu, "cpu")
        random_draws.integers(10, (7,), g_cpu, "cpu")
        # The same numbers were drawn: both generators advanced identically.
        assert torch.equal(g_meta.get_state(), g_cpu.get_state())
        assert torch.equal(random_draws.uniform((5,), g_meta, "cpu"),
                           random_draws.uniform((5,), g_cpu, "cpu"))


def test_occupancy_draws_with_a_cpu_generator_for_meta_tensors(monkeypatch):
    # The paths a CUDA run takes with the trainer's CPU render_rng: cell jitter and warm-up cells.
    grid = OccupancyGrid([-1, -1, -1, 1, 1, 1], resolution=8, device="meta")
    with strict_generator_devices(monkeypatch):
        g = torch.Generator().manual_seed(0)
        cells = grid._cells_to_update(True, g)
        points = grid.cell_centers(cells, jitter=True, generator=g)
        assert points.device.type == "meta" and points.shape == (grid.n_cells, 3)


def test_occupancy_jitter_is_device_independent():
    grid = OccupancyGrid([-1, -1, -1, 1, 1, 1], resolution=4)
    cells = torch.arange(grid.n_cells)
    a = grid.cell_centers(cells, jitter=True, generator=torch.Generator().manual_seed(3))
    b = grid.cell_centers(cells, jitter=True, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def _draw_calls_with_generator_and_device(tree):
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        if node.func.attr not in {"rand", "randn", "randint", "rand_like", "randn_like",
                                  "multinomial", "normal", "bernoulli"}:
            continue
        keywords = {k.arg for k in node.keywords}
        if "generator" in keywords and "device" in keywords:
            yield node.lineno


def test_no_loop_module_draws_with_a_generator_on_a_tensor_device():
    """Outside random_draws.py, no draw passes both generator= and device=: a CPU generator with a
    CUDA device is exactly the crash this guards against."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "random_draws.py":
            continue
        for line in _draw_calls_with_generator_and_device(ast.parse(path.read_text())):
            offenders.append(f"{path.relative_to(PACKAGE)}:{line}")
    assert not offenders, offenders

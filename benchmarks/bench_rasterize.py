"""Mesh rasterization benchmarks (stages 2-3): rasterize + interpolate + antialias, forward and
backward to the vertex positions, on a CPU.

- 128x128 px, one view of a ~100k-triangle UV sphere: the compiled ops only. The dense
  pixels x triangles reference would need 16k x 100k x (several) float64 entries (tens of GB),
  so it is not run at this size;
- 32x32 px on a ~1k-triangle sphere: the compiled ops next to the dense PyTorch reference
  (rasterize_reference + interpolate_reference + antialias_reference), the same work.

Run: python -m pytest benchmarks/bench_rasterize.py --benchmark-json=out.json -p no:randomly"""
import math

import pytest
import torch

from l2vsd_ext.ops import reference as ref
from l2vsd_ext.ops.rasterize import antialias, interpolate, rasterize, triangle_neighbors

ROUNDS = dict(rounds=5, iterations=1, warmup_rounds=1)


def uv_sphere(n_lat, n_lon, radius=0.8, dtype=torch.float32):
    """Closed outward-wound sphere with 2 n_lon (n_lat - 1) triangles."""
    theta = torch.linspace(0, math.pi, n_lat + 1, dtype=torch.float64)[1:-1]
    phi = torch.linspace(0, 2 * math.pi, n_lon + 1, dtype=torch.float64)[:-1]
    t, p = torch.meshgrid(theta, phi, indexing="ij")
    ring = torch.stack([t.sin() * p.cos(), t.sin() * p.sin(), t.cos()], -1).reshape(-1, 3)
    v = torch.cat([torch.tensor([[0, 0, 1.0]], dtype=torch.float64), ring,
                   torch.tensor([[0, 0, -1.0]], dtype=torch.float64)]) * radius
    faces = []
    idx = lambda i, j: 1 + i * n_lon + (j % n_lon)  # noqa: E731
    for j in range(n_lon):
        faces.append([0, idx(0, j), idx(0, j + 1)])
        faces.append([len(v) - 1, idx(n_lat - 2, j + 1), idx(n_lat - 2, j)])
    for i in range(n_lat - 2):
        for j in range(n_lon):
            a, b, c, d = idx(i, j), idx(i, j + 1), idx(i + 1, j), idx(i + 1, j + 1)
            faces += [[a, c, d], [a, d, b]]
    return v.to(dtype), torch.tensor(faces, dtype=torch.int32)


def _clip(v):
    # camera at distance 3 looking down -z at the sphere, fov ~ 37 degrees, OpenGL-like depth;
    # the sphere is shifted off the pixel lattice so no pixel centre lies exactly on an edge
    w = 3.0 - v[:, 2:3]
    xy = 3.0 * (v[:, :2] + torch.tensor([0.0123, -0.0071], dtype=v.dtype))
    return torch.cat([xy, 1.2 * w - 2.0, w], -1)


def _ours(pos, tri, nb, attr, res):
    p = pos.clone().requires_grad_()
    rast = rasterize(p, tri, res, res)
    color = interpolate(attr, rast, tri)
    out = antialias(color, rast, p, tri, nb)
    out.square().sum().backward()
    return p.grad


def _reference(pos, tri, nb, attr, res):
    p = pos.clone().requires_grad_()
    tri_id, bary, depth = ref.rasterize_reference(p[None], tri, res, res)
    color = ref.interpolate_reference(attr[None], tri_id, bary, tri)
    out = ref.antialias_reference(color, p[None], tri, nb, tri_id, depth)
    out.square().sum().backward()
    return p.grad


@pytest.fixture(scope="module")
def big_sphere():
    v, f = uv_sphere(225, 224)
    return _clip(v), f, triangle_neighbors(f), (v * 0.5 + 0.5)


@pytest.fixture(scope="module")
def small_sphere():
    v, f = uv_sphere(23, 24, dtype=torch.float64)
    return _clip(v), f, triangle_neighbors(f), (v * 0.5 + 0.5)


@pytest.mark.benchmark(group="rasterize+interpolate+antialias fwd+bwd, 128 px, 100k triangles")
def test_rasterize_100k_triangles_128px(benchmark, big_sphere):
    pos, tri, nb, attr = big_sphere
    benchmark.extra_info.update(impl="l2vsd_ext", role="ours", n_triangles=tri.shape[0],
                                resolution=128, reference="not run: dense reference does not fit")
    grad = benchmark.pedantic(_ours, args=(pos, tri, nb, attr, 128), **ROUNDS)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.benchmark(group="rasterize+interpolate+antialias fwd+bwd, 32 px, 1k triangles")
@pytest.mark.parametrize("impl", ["l2vsd_ext", "reference"])
def test_rasterize_small_vs_reference(benchmark, small_sphere, impl):
    pos, tri, nb, attr = small_sphere
    benchmark.extra_info.update(impl=impl, role="ours" if impl == "l2vsd_ext" else "reference",
                                n_triangles=tri.shape[0], resolution=32)
    fn = _ours if impl == "l2vsd_ext" else _reference
    grad = benchmark.pedantic(fn, args=(pos, tri, nb, attr, 32), **ROUNDS)
    want = _reference(pos, tri, nb, attr, 32) if impl == "l2vsd_ext" else grad
    assert torch.allclose(grad, want, atol=1e-8)

"""Hash-grid encoding, default ProlificDreamer config (16 levels, 2 features, 2^19 entries per level),
at N = 2^16 and 2^18 points: the compiled op, the strongest peer a user would otherwise run, and
the project's pure-PyTorch reference, all in one run and one group per case.

- CPU peer: nerfstudio's HashEncoding(implementation="torch"). Its grid differs slightly from
  tiny-cuda-nn's (every level hashed into its own 2^19 rows, resolution floor(16 * b^l)), so the
  rows are checked to do the same work: same levels, corners, features and per-level table cap
  and the same per-level growth up to the same finest resolution (4096), not the same numbers.
- CUDA peer: tiny-cuda-nn's HashGrid, whose layout ours copies, so its output is checked equal.
Forward+backward computes the table gradient (positions need none), as in training."""
import os

import pytest
import torch

from l2vsd_ext._ext import cuda_kernels_available
from l2vsd_ext.ops import HashGridEncoding, hashgrid_layout
from l2vsd_ext.ops import reference

import peers

LOG2_N = [16, 18]
CPU_IMPLS = ["l2vsd_ext", "nerfstudio-torch", "reference"]
ROLE = {"l2vsd_ext": "ours", "reference": "reference", "nerfstudio-torch": "peer",
        "l2vsd_ext-cuda": "ours", "tiny-cuda-nn": "peer"}


def _ours(device="cpu"):
    enc = HashGridEncoding(device=device)
    with torch.no_grad():
        enc.params.uniform_(-1, 1)
    return enc, enc.params, enc


def _reference():
    enc, params, _ = _ours()
    c = enc.config
    return enc, params, lambda x: reference.hashgrid_encode(x, params, *tuple(c)[1:])


def _nerfstudio():
    config = HashGridEncoding().config
    layout = hashgrid_layout(config)
    finest = round(layout[-1].scale) + 1  # 4096: then nerfstudio's growth factor is ours
    enc = peers.nerfstudio_hash_encoding()(
        num_levels=config.n_levels, min_res=config.base_resolution, max_res=finest,
        log2_hashmap_size=config.log2_hashmap_size,
        features_per_level=config.n_features_per_level, implementation="torch")
    # Same work: levels, 2^3 corners, features, per-level cap and finest resolution.
    assert enc.num_levels == len(layout) and enc.features_per_level == config.n_features_per_level
    assert enc.hash_table_size == max(lv.size for lv in layout)
    assert abs(float(enc.scalings[-1]) - layout[-1].scale) <= 1.0
    with torch.no_grad():
        enc.hash_table.uniform_(-1, 1)
    return enc, enc.hash_table, enc


def _encoder(impl):
    return {"l2vsd_ext": _ours, "reference": _reference, "nerfstudio-torch": _nerfstudio}[impl]()


def _tag(benchmark, impl, log2_n):
    benchmark.extra_info.update(impl=impl, role=ROLE[impl], n_points=1 << log2_n,
                                torch_threads=torch.get_num_threads(),
                                omp_num_threads=os.environ.get("OMP_NUM_THREADS", "unset"))


@pytest.mark.parametrize("impl", CPU_IMPLS)
@pytest.mark.parametrize("log2_n", LOG2_N)
def test_hashgrid_forward(benchmark, impl, log2_n):
    benchmark.group = f"hashgrid forward, N=2^{log2_n}"
    _tag(benchmark, impl, log2_n)
    _, _, encode = _encoder(impl)
    x = torch.rand(1 << log2_n, 3)
    with torch.no_grad():
        out = benchmark.pedantic(encode, args=(x,), rounds=3, warmup_rounds=1)
    assert out.shape == (1 << log2_n, 32) and torch.isfinite(out).all()


@pytest.mark.parametrize("impl", CPU_IMPLS)
@pytest.mark.parametrize("log2_n", LOG2_N)
def test_hashgrid_forward_backward(benchmark, impl, log2_n):
    benchmark.group = f"hashgrid forward+backward, N=2^{log2_n}"
    _tag(benchmark, impl, log2_n)
    _, params, encode = _encoder(impl)
    x = torch.rand(1 << log2_n, 3)
    dy = torch.randn(1 << log2_n, 32)

    def step():
        params.grad = None
        encode(x).backward(dy)
        return params.grad

    grad = benchmark.pedantic(step, rounds=3, warmup_rounds=1)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize("impl", ["l2vsd_ext-cuda", "tiny-cuda-nn"])
@pytest.mark.parametrize("log2_n", LOG2_N)
def test_hashgrid_forward_backward_cuda(benchmark, impl, log2_n):
    tcnn = peers.tiny_cuda_nn()  # skips without a GPU or without tiny-cuda-nn
    if not cuda_kernels_available():  # a GPU machine, but a CPU-only build of l2vsd_ext
        pytest.skip("l2vsd_ext was built without CUDA kernels")
    benchmark.group = f"hashgrid forward+backward CUDA, N=2^{log2_n}"
    _tag(benchmark, impl, log2_n)
    ours, params, encode = _ours("cuda")
    c = ours.config
    peer = tcnn.Encoding(3, {"otype": "HashGrid", "n_levels": c.n_levels,
                             "n_features_per_level": c.n_features_per_level,
                             "log2_hashmap_size": c.log2_hashmap_size,
                             "base_resolution": c.base_resolution,
                             "per_level_scale": c.per_level_scale}, dtype=torch.float32)
    assert peer.params.numel() == params.numel(), "tiny-cuda-nn's table layout differs from ours"
    with torch.no_grad():
        peer.params.copy_(params)
    x = torch.rand(1 << log2_n, 3, device="cuda")
    torch.testing.assert_close(peer(x).float(), encode(x), rtol=1e-4, atol=1e-5)
    if impl == "tiny-cuda-nn":
        params, encode = peer.params, peer
    dy = torch.randn(1 << log2_n, 32, device="cuda")

    def step():
        params.grad = None
        encode(x).backward(dy)
        torch.cuda.synchronize()

    benchmark.pedantic(step, rounds=10, warmup_rounds=2)

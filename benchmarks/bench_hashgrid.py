"""Hash-grid encoding, default ProlificDreamer config: forward and forward+backward, the compiled
op vs the pure-PyTorch reference, at N = 2^16 and 2^18 points."""
import pytest
import torch

from l2vsd_ext.ops import HashGridEncoding
from l2vsd_ext.ops import reference


def _encoders(impl):
    enc = HashGridEncoding()
    with torch.no_grad():
        enc.params.uniform_(-1, 1)
    if impl == "l2vsd_ext":
        return enc, enc
    c = enc.config
    return enc, lambda x: reference.hashgrid_encode(x, enc.params, *tuple(c)[1:])


@pytest.mark.parametrize("impl", ["reference", "l2vsd_ext"])
@pytest.mark.parametrize("log2_n", [16, 18])
def test_hashgrid_forward(benchmark, impl, log2_n):
    benchmark.group = f"hashgrid forward, N=2^{log2_n}"
    benchmark.extra_info["impl"] = impl
    _, encode = _encoders(impl)
    x = torch.rand(1 << log2_n, 3)
    with torch.no_grad():
        out = benchmark.pedantic(encode, args=(x,), rounds=3, warmup_rounds=1)
    assert out.shape == (1 << log2_n, 32) and torch.isfinite(out).all()


@pytest.mark.parametrize("impl", ["reference", "l2vsd_ext"])
@pytest.mark.parametrize("log2_n", [16, 18])
def test_hashgrid_forward_backward(benchmark, impl, log2_n):
    benchmark.group = f"hashgrid forward+backward, N=2^{log2_n}"
    benchmark.extra_info["impl"] = impl
    enc, encode = _encoders(impl)
    x = torch.rand(1 << log2_n, 3)
    dy = torch.randn(1 << log2_n, 32)

    def step():
        enc.params.grad = None
        encode(x).backward(dy)
        return enc.params.grad

    grad = benchmark.pedantic(step, rounds=3, warmup_rounds=1)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0

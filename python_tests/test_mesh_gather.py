"""take_rows: x[index] with a backward that sums repeated rows in a fixed order, so identical mesh
runs (and a resumed one) agree bit for bit on a multithreaded CPU."""
import torch

from l2vsd_ext.mesh.gather import take_rows


def test_take_rows_is_indexing_with_a_reproducible_backward():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(300, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    index = torch.randint(300, (4000, 3), generator=gen)  # many repeats, as faces index vertices
    out = take_rows(x, index)
    assert out.shape == (4000, 3, 3) and torch.equal(out, x[index])
    weights = torch.randn(out.shape, generator=gen, dtype=torch.float64)
    (grad_take,) = torch.autograd.grad((take_rows(x, index) * weights).sum(), x)
    (grad_index,) = torch.autograd.grad((x[index] * weights).sum(), x)
    torch.testing.assert_close(grad_take, grad_index, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(lambda v: take_rows(v, index[:50]), (x,))

    threads = torch.get_num_threads()
    torch.set_num_threads(max(2, threads))
    try:
        y = torch.randn(3000, 3, generator=gen, requires_grad=True)
        big = torch.randint(3000, (20000, 3), generator=gen)
        g = torch.randn(20000, 3, 3, generator=gen)
        grads = [torch.autograd.grad(take_rows(y, big), y, g)[0] for _ in range(10)]
        assert all(torch.equal(grads[0], other) for other in grads[1:])
    finally:
        torch.set_num_threads(threads)


def test_one_dimensional_values_and_int32_indices():
    x = torch.randn(10, requires_grad=True)
    index = torch.tensor([[1, 1], [9, 0]], dtype=torch.int32)
    assert torch.equal(take_rows(x, index), x[index.long()])

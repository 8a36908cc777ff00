"""rasterize / interpolate / antialias: the CPU kernels against the dense pixels x triangles
reference, float64 gradients, silhouette gradients equal to the projected-area derivative, the
near-plane and tie rules, and bad input."""
import pytest
import torch

from cuda_skip import requires_cuda
from l2vsd_ext.ops import reference as ref
from l2vsd_ext.ops.rasterize import antialias, interpolate, rasterize, triangle_neighbors

D = torch.float64


def _random_mesh(seed, n_vertices=14, n_triangles=12, batch=2, dtype=D):
    g = torch.Generator().manual_seed(seed)
    w = 1 + 2 * torch.rand(batch, n_vertices, 1, generator=g, dtype=dtype)
    xy = (torch.rand(batch, n_vertices, 2, generator=g, dtype=dtype) * 2.4 - 1.2) * w
    z = (torch.rand(batch, n_vertices, 1, generator=g, dtype=dtype) * 1.8 - 0.9) * w
    pos = torch.cat([xy, z, w], -1)
    tri = torch.stack([torch.randperm(n_vertices, generator=g)[:3] for _ in range(n_triangles)])
    return pos, tri.to(torch.int32)


def _interior_mask(bary, margin=1e-3):
    return (bary.min(-1).values > margin)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rasterize_matches_dense_reference(seed):
    pos, tri = _random_mesh(seed)
    out = rasterize(pos, tri, 23, 31)
    tri_id, bary, depth = ref.rasterize_reference(pos, tri, 23, 31)
    assert (tri_id >= 0).float().mean() > 0.2                  # the scene covers the image
    assert torch.equal(out.tri_id, tri_id)
    assert torch.allclose(out.bary, bary, atol=1e-10)
    assert torch.allclose(out.depth, depth, atol=1e-10)
    hit = tri_id >= 0
    assert torch.allclose(out.bary.sum(-1)[hit], torch.ones_like(depth[hit]))


def test_rasterize_float32_matches_reference_ids():
    pos, tri = _random_mesh(5, dtype=torch.float32)
    out = rasterize(pos, tri, 20, 20)
    tri_id, bary, depth = ref.rasterize_reference(pos, tri, 20, 20)
    assert (out.tri_id != tri_id).float().mean() < 0.01        # float32 edge pixels may differ
    same = out.tri_id == tri_id
    assert torch.allclose(out.bary[same], bary[same], atol=1e-4)


def test_rasterize_gradients_match_reference_and_finite_differences():
    pos, tri = _random_mesh(7, batch=1)
    with torch.no_grad():
        mask = _interior_mask(rasterize(pos, tri, 12, 14).bary)  # away from edges
    g = torch.Generator().manual_seed(1)
    wb = torch.randn(1, 12, 14, 3, generator=g, dtype=D) * mask[..., None]
    wd = torch.randn(1, 12, 14, generator=g, dtype=D) * mask

    def loss(fn, p):
        out = fn(p)
        return (out[1] * wb).sum() + (out[2] * wd).sum()

    p1 = pos.clone().requires_grad_()
    loss(lambda p: rasterize(p, tri, 12, 14), p1).backward()
    p2 = pos.clone().requires_grad_()
    loss(lambda p: ref.rasterize_reference(p, tri, 12, 14), p2).backward()
    assert p1.grad.abs().sum() > 0
    assert torch.allclose(p1.grad, p2.grad, atol=1e-9)
    assert torch.autograd.gradcheck(lambda p: loss(lambda q: rasterize(q, tri, 12, 14), p),
                                    (pos.clone().requires_grad_(),), eps=1e-7, atol=1e-6)


def test_near_plane_culls_whole_triangles_and_ties_go_to_the_smaller_id():
    pos = torch.tensor([[[-0.9, -0.9, 0.5, 1.0], [0.9, -0.9, 0.5, 1.0], [0.0, 0.9, 0.5, 1.0],
                         [0.0, 0.0, 0.0, 1e-5]]], dtype=D)
    # triangle 0 crosses the near plane (vertex 3 at w <= near_w); 1 and 2 are identical
    tri = torch.tensor([[0, 1, 3], [0, 1, 2], [1, 2, 0]], dtype=torch.int32)
    out = rasterize(pos, tri, 16, 16)
    ids = set(out.tri_id.unique().tolist())
    assert ids == {-1, 1}
    assert bool((out.depth[out.tri_id == 1] == 0.5).all())


def test_interpolate_matches_reference_with_gradients():
    pos, tri = _random_mesh(3)
    g = torch.Generator().manual_seed(2)
    attr = torch.randn(pos.shape[1], 5, generator=g, dtype=D, requires_grad=True)
    p = pos.clone().requires_grad_()
    rast = rasterize(p, tri, 15, 17)
    out = interpolate(attr, rast, tri)
    want = ref.interpolate_reference(attr[None], rast.tri_id, rast.bary, tri)
    assert torch.allclose(out, want, atol=1e-12)
    w = torch.randn(out.shape, generator=g, dtype=D) * _interior_mask(rast.bary)[..., None]
    ga, gp = torch.autograd.grad((out * w).sum(), (attr, p), retain_graph=True)
    ra, rp = torch.autograd.grad((want * w).sum(), (attr, p))
    assert ga.abs().sum() > 0 and gp.abs().sum() > 0
    assert torch.allclose(ga, ra, atol=1e-10) and torch.allclose(gp, rp, atol=1e-9)
    # batched attributes, and gradcheck in bary and attr
    attr_b = torch.randn(2, pos.shape[1], 3, generator=g, dtype=D, requires_grad=True)
    bary = rast.bary.detach().clone().requires_grad_()
    fake = (rast.tri_id, bary, rast.depth)
    assert torch.autograd.gradcheck(lambda a, b: interpolate(a, (fake[0], b, fake[2]), tri),
                                    (attr_b, bary), eps=1e-6, atol=1e-6)


def _closed_box(dtype=D):
    """A closed cube (12 outward triangles) seen from a perspective camera."""
    v = torch.tensor([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=dtype) * 0.4
    faces = torch.tensor([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                          [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]],
                         dtype=torch.int32)
    return v, faces


def _project(v, angle=0.5, dist=2.5, f=1.6):
    c, s = torch.cos(torch.tensor(angle, dtype=v.dtype)), torch.sin(torch.tensor(angle, dtype=v.dtype))
    x = c * v[:, 0] + s * v[:, 2]
    z = -s * v[:, 0] + c * v[:, 2]
    y = 0.8 * v[:, 1] + 0.3 * z
    depth = dist - z
    return torch.stack([f * x, f * y, depth - 0.2, depth], -1)


def test_neighbors_of_a_closed_mesh_are_symmetric():
    _, faces = _closed_box()
    nb = triangle_neighbors(faces)
    assert bool((nb >= 0).all())
    for t in range(faces.shape[0]):
        for k in range(3):
            n = int(nb[t, k])
            assert t in nb[n].tolist()


@pytest.mark.parametrize("seed", [0, 1])
def test_antialias_matches_reference_forward_and_backward(seed):
    pos, tri = _random_mesh(seed + 10, n_vertices=10, n_triangles=8)
    g = torch.Generator().manual_seed(seed)
    rast = rasterize(pos, tri, 18, 21)
    color = torch.randn(2, 18, 21, 3, generator=g, dtype=D, requires_grad=True)
    p = pos.clone().requires_grad_()
    nb = triangle_neighbors(tri)
    out = antialias(color, rast, p, tri, nb)
    want = ref.antialias_reference(color, p, tri, nb, rast.tri_id, rast.depth)
    assert not torch.allclose(out, color)                      # some pixels were blended
    assert torch.allclose(out, want, atol=1e-12)
    w = torch.randn(out.shape, generator=g, dtype=D)
    gc, gp = torch.autograd.grad((out * w).sum(), (color, p))
    rc, rp = torch.autograd.grad((want * w).sum(), (color, p))
    assert gp.abs().sum() > 0
    assert torch.allclose(gc, rc, atol=1e-10) and torch.allclose(gp, rp, atol=1e-9)


def _screen_area(pos4, tri, H, W):
    sx = ((pos4[:, 0] / pos4[:, 3] + 1) * W - 1) / 2
    sy = ((pos4[:, 1] / pos4[:, 3] + 1) * H - 1) / 2
    a, b, c = tri.long().unbind(1)
    cross = (sx[b] - sx[a]) * (sy[c] - sy[a]) - (sy[b] - sy[a]) * (sx[c] - sx[a])
    return 0.5 * cross.abs().sum()


@pytest.mark.parametrize("case", ["triangle", "quad", "perspective_quad"])
def test_silhouette_gradient_equals_projected_area_derivative(case):
    H = W = 96
    if case == "triangle":
        pos = torch.tensor([[-0.71, -0.63, 0.1, 1.0], [0.77, -0.29, 0.2, 1.0],
                            [-0.13, 0.81, 0.3, 1.0]], dtype=D)
        tri = torch.tensor([[0, 1, 2]], dtype=torch.int32)
    else:
        w = torch.tensor([1.0, 1.4, 2.1, 1.7], dtype=D) if case == "perspective_quad" else torch.ones(4, dtype=D)
        xy = torch.tensor([[-0.62, -0.71], [0.69, -0.52], [0.58, 0.66], [-0.55, 0.61]], dtype=D)
        pos = torch.cat([xy * w[:, None], 0.3 * w[:, None], w[:, None]], 1)
        # two triangles sharing the diagonal 0-2: an interior edge that must not act as a silhouette
        tri = torch.tensor([[0, 1, 2], [0, 2, 3]], dtype=torch.int32)
    p = pos.clone().requires_grad_()
    rast = rasterize(p, tri, H, W)
    coverage = (rast.tri_id >= 0).to(D)[..., None]
    total = antialias(coverage, rast, p, tri).sum()
    (grad,) = torch.autograd.grad(total, p)
    q = pos.clone().requires_grad_()
    area = _screen_area(q, tri, H, W)
    (want,) = torch.autograd.grad(area, q)
    assert abs(total.item() - area.item()) < 0.02 * area.item()
    assert (grad - want).norm() < 0.03 * want.norm()
    assert grad[:, 2].abs().max() == 0                          # z does not move the outline


def test_occlusion_boundary_gives_gradient_to_the_occluder():
    H = W = 64
    back = torch.tensor([[-0.9, -0.9, 0.8, 1.0], [0.9, -0.9, 0.8, 1.0], [0.0, 0.9, 0.8, 1.0]], dtype=D)
    front = torch.tensor([[-0.4, -0.5, 0.1, 1.0], [0.5, -0.4, 0.1, 1.0], [0.0, 0.45, 0.1, 1.0]], dtype=D)
    pos = torch.cat([back, front]).requires_grad_()
    tri = torch.tensor([[0, 1, 2], [3, 4, 5]], dtype=torch.int32)
    rast = rasterize(pos, tri, H, W)
    colour = (rast.tri_id == 1).to(D)[..., None]               # 1 on the front triangle
    total = antialias(colour, rast, pos, tri).sum()
    (grad,) = torch.autograd.grad(total, pos)
    q = front.clone().requires_grad_()
    (want,) = torch.autograd.grad(_screen_area(q, torch.tensor([[0, 1, 2]]), H, W), q)
    assert (grad[3:] - want).norm() < 0.05 * want.norm()


def test_bad_input_names_the_argument():
    pos, tri = _random_mesh(0, batch=1)
    with pytest.raises(TypeError, match="'tri'"):
        rasterize(pos, tri.float(), 8, 8)
    with pytest.raises(ValueError, match="'pos'"):
        rasterize(pos[..., :3], tri, 8, 8)
    with pytest.raises(ValueError, match="'tri'"):
        rasterize(pos, tri + 100, 8, 8)
    with pytest.raises(ValueError, match="'height'"):
        rasterize(pos, tri, 0, 8)
    with pytest.raises(TypeError, match="'pos'"):
        rasterize(pos.to(torch.int64), tri, 8, 8)
    with pytest.raises(ValueError, match="'near_w'"):
        rasterize(pos, tri, 8, 8, near_w=float("nan"))
    rast = rasterize(pos, tri, 8, 8)
    with pytest.raises(ValueError, match="'color'"):
        antialias(torch.zeros(1, 7, 8, 3, dtype=D), rast, pos, tri)
    with pytest.raises(ValueError, match="'attr'"):
        interpolate(torch.zeros(3, 2, 5, 1, dtype=D), rast, tri)
    with pytest.raises(TypeError, match="'attr'"):
        interpolate(torch.zeros(pos.shape[1], 2, dtype=torch.float32), rast, tri)


def _pipeline(pos, attr, tri, device, weights):
    """rasterize -> interpolate -> antialias on `device`; outputs and the gradients of a fixed
    random weighting of bary, depth and the antialiased colours."""
    p = pos.to(device).requires_grad_()
    a = attr.to(device).requires_grad_()
    t = tri.to(device)
    rast = rasterize(p, t, 29, 37)
    out = antialias(interpolate(a, rast, t), rast, p, t, triangle_neighbors(tri).to(device))
    loss = sum((w.to(device, o.dtype) * o).sum() for w, o in zip(weights, (rast.bary, rast.depth, out)))
    grads = torch.autograd.grad(loss, (p, a))
    return [x.detach().cpu() for x in (rast.tri_id, rast.bary, rast.depth, out, *grads)]


@requires_cuda
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-9), (torch.float32, 2e-4)])
def test_cuda_matches_cpu_kernels(dtype, tol):
    pos, tri = _random_mesh(21, n_vertices=60, n_triangles=40, dtype=dtype)
    g = torch.Generator().manual_seed(3)
    attr = torch.rand(pos.shape[1], 3, generator=g, dtype=dtype)
    weights = [torch.randn(2, 29, 37, 3, generator=g, dtype=D), torch.randn(2, 29, 37, generator=g, dtype=D),
               torch.randn(2, 29, 37, 3, generator=g, dtype=D)]
    cpu = _pipeline(pos, attr, tri, "cpu", weights)
    gpu = _pipeline(pos, attr, tri, "cuda", weights)
    assert (cpu[0] >= 0).float().mean() > 0.2
    assert torch.equal(gpu[0], cpu[0])  # the same HD math and tie rule on both devices
    for got, want in zip(gpu[1:], cpu[1:]):
        assert want.abs().max() > 0
        assert (got - want).abs().max() <= tol * want.abs().max()

"""Tet grid and marching tetrahedra: a conforming Kuhn grid, and on a sphere SDF a watertight,
outward-wound mesh with the sphere's area, differentiable in the SDF and the offsets."""
import math

import pytest
import torch

from l2vsd_ext.mesh import make_tet_grid, marching_tets, vertex_positions


def _tet_faces(tets):
    return torch.cat([tets[:, [1, 2, 3]], tets[:, [0, 2, 3]], tets[:, [0, 1, 3]],
                      tets[:, [0, 1, 2]]]).sort(-1).values


@pytest.mark.parametrize("resolution", [1, 3])
def test_grid_is_a_conforming_positively_oriented_kuhn_split(resolution):
    g = make_tet_grid(resolution, half_extent=0.5, dtype=torch.float64)
    r = resolution
    assert g.vertices.shape == ((r + 1) ** 3, 3)
    assert g.tets.shape == (6 * r ** 3, 4)
    p = g.vertices[g.tets]
    vol = torch.linalg.det(p[:, 1:] - p[:, :1]) / 6
    assert bool((vol > 0).all())
    assert vol.sum().item() == pytest.approx(1.0, rel=1e-12)        # tets fill the cube
    _, count = torch.unique(_tet_faces(g.tets), dim=0, return_counts=True)
    assert int(count.max()) == 2                                     # conforming
    assert int((count == 1).sum()) == 12 * r * r                     # only the cube's faces
    # edges: unique, a < b, and tet_edges points at the right pairs
    assert bool((g.edges[:, 0] < g.edges[:, 1]).all())
    assert torch.unique(g.edges, dim=0).shape[0] == g.edges.shape[0]
    local = torch.tensor([(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)])
    pairs = g.tets[:, local].sort(-1).values
    assert torch.equal(g.edges[g.tet_edges], pairs)


def test_grid_rejects_bad_resolution():
    with pytest.raises(ValueError, match="resolution"):
        make_tet_grid(0)
    with pytest.raises(ValueError, match="half_extent"):
        make_tet_grid(4, half_extent=-1.0)


@pytest.fixture(scope="module")
def sphere_mesh():
    g = make_tet_grid(64, dtype=torch.float64)
    radius = 0.6
    # off-centre so the surface does not line up with the lattice
    centre = torch.tensor([0.013, -0.021, 0.007], dtype=torch.float64)
    sdf = (g.vertices - centre).norm(dim=-1) - radius
    return marching_tets(g.vertices, sdf, g), radius, centre


def test_sphere_mesh_is_watertight_and_consistently_wound(sphere_mesh):
    mesh, _, _ = sphere_mesh
    f = mesh.faces
    assert f.shape[0] > 1000
    assert int(f.min()) >= 0 and int(f.max()) < mesh.vertices.shape[0]
    directed = torch.cat([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    undirected, count = torch.unique(directed.sort(-1).values, dim=0, return_counts=True)
    assert bool((count == 2).all())                                  # every edge in two faces
    # consistent winding: each directed edge once (its twin runs the other way)
    assert torch.unique(directed, dim=0).shape[0] == directed.shape[0]
    # one vertex per crossing edge: no two vertices at the same place, every vertex used
    assert torch.unique(mesh.source_edges).numel() == mesh.vertices.shape[0]
    assert torch.unique(f).numel() == mesh.vertices.shape[0]
    rounded = torch.unique((mesh.vertices * 1e9).round(), dim=0)
    assert rounded.shape[0] == mesh.vertices.shape[0]


def test_sphere_normals_point_outward_and_area_matches(sphere_mesh):
    mesh, radius, centre = sphere_mesh
    v = mesh.vertices[mesh.faces]
    n = torch.linalg.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])
    outward = ((n * (v.mean(1) - centre)).sum(-1) > 0)
    assert bool(outward.all())
    area = 0.5 * n.norm(dim=-1).sum().item()
    assert area == pytest.approx(4 * math.pi * radius ** 2, rel=0.01)
    assert (mesh.vertices - centre).norm(dim=-1).sub(radius).abs().max() < 2 / 64


def test_gradients_reach_sdf_and_offsets():
    g = make_tet_grid(6, dtype=torch.float64)
    gen = torch.Generator().manual_seed(3)
    offsets = (0.3 * torch.randn(g.vertices.shape, generator=gen, dtype=torch.float64))
    sdf = g.vertices.norm(dim=-1) - 0.55 + 0.05 * torch.randn(g.vertices.shape[0], generator=gen,
                                                              dtype=torch.float64)
    sdf = torch.where(sdf.abs() < 1e-3, sdf + 3e-3, sdf)           # keep signs stable under FD
    offsets.requires_grad_(True)
    sdf.requires_grad_(True)
    weights = torch.randn(200, 3, generator=gen, dtype=torch.float64)

    def f(s, o):
        mesh = marching_tets(vertex_positions(g, o, max_offset_cells=0.5), s, g)
        return (mesh.vertices * weights[: mesh.vertices.shape[0]]).sum()

    assert marching_tets(vertex_positions(g, offsets), sdf, g).vertices.shape[0] <= 200
    f(sdf, offsets).backward()
    assert sdf.grad.abs().sum() > 0 and offsets.grad.abs().sum() > 0
    assert torch.autograd.gradcheck(f, (sdf.detach().requires_grad_(),
                                        offsets.detach().requires_grad_()), eps=1e-6, atol=1e-6)


def test_offsets_are_bounded_by_the_cell():
    g = make_tet_grid(4, dtype=torch.float64)
    big = torch.full(g.vertices.shape, 50.0, dtype=torch.float64)
    moved = vertex_positions(g, big, max_offset_cells=1.0) - g.vertices
    assert moved.abs().max().item() <= g.cell_size + 1e-12
    with pytest.raises(ValueError, match="offsets"):
        vertex_positions(g, torch.zeros(3, 3))
    with pytest.raises(ValueError, match="sdf"):
        marching_tets(g.vertices, torch.zeros(7), g)

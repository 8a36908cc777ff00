"""The whole stage-2 gradient path with no diffusion prior: a tet grid started from a sphere is
fitted (SDF + offsets through marching tets, rasterize, interpolate, antialias) to the true
normal and silhouette renders of a shapes object, and its surface ends up about one grid cell
from the truth (Chamfer)."""
import torch

from l2vsd_ext.mesh import make_tet_grid, marching_tets, vertex_positions
from l2vsd_ext.mesh.render import render_mesh
from l2vsd_ext.scene.cameras import look_at, spherical_positions
from l2vsd_ext.scene.regularizers import mesh_laplacian_smoothing
from l2vsd_ext.shapes.metrics import chamfer_distance
from l2vsd_ext.shapes.objects import get_object


def _cameras(distance=1.7, fovy=40.0):
    elev = torch.tensor([15.0, 15.0, 15.0, 15.0, 70.0, -40.0])
    azim = torch.tensor([0.0, 90.0, 180.0, 270.0, 45.0, 225.0])
    eye = spherical_positions(elev, azim, torch.full_like(elev, distance))
    c2w = look_at(eye, torch.zeros_like(eye), torch.tensor([[0.0, 0.0, 1.0]]).expand_as(eye))
    return c2w, torch.full_like(elev, fovy)


def _surface_points(vertices, faces, n, seed):
    """n points uniformly on the mesh surface (area-weighted)."""
    g = torch.Generator().manual_seed(seed)
    v = vertices[faces]
    area = torch.linalg.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0]).norm(dim=-1)
    pick = torch.multinomial(area, n, replacement=True, generator=g)
    r = torch.rand(n, 2, generator=g)
    flip = r.sum(-1) > 1
    r[flip] = 1 - r[flip]
    t = v[pick]
    return t[:, 0] + r[:, :1] * (t[:, 1] - t[:, 0]) + r[:, 1:] * (t[:, 2] - t[:, 0])


def test_fit_from_sphere_to_a_shapes_object_reaches_one_cell():
    torch.manual_seed(0)
    obj = get_object("pumpkin")
    c2w, fovy = _cameras()
    res = 40

    fine = make_tet_grid(48, half_extent=0.6)
    truth = marching_tets(fine.vertices, obj.sdf(fine.vertices), fine)
    with torch.no_grad():
        target = render_mesh(truth.vertices, truth.faces, c2w, fovy, res, res)

    grid = make_tet_grid(16, half_extent=0.6)
    sdf = (grid.vertices.norm(dim=-1) - 0.3).clone().requires_grad_()
    offsets = torch.zeros_like(grid.vertices, requires_grad=True)
    opt = torch.optim.Adam([{"params": [sdf], "lr": 0.01}, {"params": [offsets], "lr": 0.02}])

    def mesh_now():
        return marching_tets(vertex_positions(grid, offsets, max_offset_cells=0.5), sdf, grid)

    start = mesh_now()
    truth_pts = _surface_points(truth.vertices, truth.faces, 4000, 1)
    chamfer_start = chamfer_distance(_surface_points(start.vertices.detach(), start.faces, 4000, 2),
                                     truth_pts)
    for step in range(60):
        mesh = mesh_now()
        out = render_mesh(mesh.vertices, mesh.faces, c2w, fovy, res, res)
        loss = ((out.mask - target.mask) ** 2).mean() + ((out.normal - target.normal) ** 2).mean()
        loss = loss + 0.01 * mesh_laplacian_smoothing(mesh.vertices, mesh.faces)
        opt.zero_grad()
        loss.backward()
        opt.step()
    final = mesh_now()
    chamfer_end = chamfer_distance(_surface_points(final.vertices.detach(), final.faces, 4000, 3),
                                   truth_pts)
    print(f"chamfer {chamfer_start:.4f} -> {chamfer_end:.4f} (cell {grid.cell_size:.4f})")
    # (symmetric Chamfer: the sum of the two mean one-way distances)
    assert chamfer_start > 1.5 * grid.cell_size
    assert chamfer_end < 0.5 * grid.cell_size

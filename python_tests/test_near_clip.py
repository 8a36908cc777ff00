"""Near-plane clipping (mesh.near_clip): triangles crossing the camera's near plane are cut, not
culled, in the mesh renders, and the cut is exact, shared between neighbours, winding-preserving
and differentiable."""
from types import SimpleNamespace

import torch

from l2vsd_ext.mesh.near_clip import clip_each_camera, clip_near_plane
from l2vsd_ext.mesh.render import clip_positions, render_mesh
from l2vsd_ext.mesh.stage_texture import render_textured
from l2vsd_ext.ops.rasterize import triangle_neighbors
from l2vsd_ext.scene.cameras import camera_rays

NEAR = 0.05  # render_mesh's and render_textured's default camera near plane
FLOOR_Y = -0.3


def _floor(z_near=0.5, z_far=-3.0, half_width=1.0, jitter=0.0, seed=0):
    """A floor quad at y = FLOOR_Y running from behind the camera (z > 0) to in front of it,
    split on a diagonal, facing +y; the camera sits at the origin looking down -z."""
    g = torch.Generator().manual_seed(seed)
    v = torch.tensor([[-half_width, FLOOR_Y, z_near], [half_width, FLOOR_Y, z_near],
                      [half_width, FLOOR_Y, z_far], [-half_width, FLOOR_Y, z_far]],
                     dtype=torch.float64)
    v[:, [0, 2]] += jitter * (torch.rand(4, 2, generator=g, dtype=torch.float64) - 0.5)
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]], dtype=torch.int32)
    return v, faces


def _camera(batch=1, fovy=90.0):
    return torch.eye(4, dtype=torch.float64).expand(batch, 4, 4).clone(), torch.full((batch,), fovy)


def _floor_hits(c2w, fovy, res, v):
    """Per pixel (top row first): where the pixel's ray meets the floor, and whether that point
    is on the quad and in front of the near plane (camera z <= -NEAR)."""
    o, d = camera_rays(c2w, fovy.to(c2w.dtype), res, res)
    t = (FLOOR_Y - o[..., 1]) / d[..., 1]
    hit = o + t[..., None] * d
    x, z = hit[..., 0], hit[..., 2]
    on = (d[..., 1] < 0) & (x.abs() <= v[:, 0].abs().max()) & (z <= v[:, 2].max()) \
        & (z >= v[:, 2].min()) & (z <= -NEAR)
    return hit, on


def _edge_band(hit, res, fovy=90.0):
    """Pixels whose floor point lies within about two pixels' footprint of the quad's sides,
    its far edge or the near-plane cut (where coverage legitimately differs by antialiasing)."""
    depth = -hit[..., 2]
    pixel = 2 * depth * torch.tan(torch.deg2rad(torch.tensor(fovy / 2))) / res
    return ((hit[..., 0].abs() - 1.0).abs() < 3 * pixel) | ((hit[..., 2] + 3.0).abs() < 3 * pixel) \
        | ((hit[..., 2] + NEAR).abs() < 3 * pixel)


def test_a_floor_crossing_the_near_plane_is_drawn_where_it_is_in_front():
    v, faces = _floor()
    c2w, fovy = _camera()
    res = 32
    out = render_mesh(v.float(), faces, c2w.float(), fovy, res, res)
    hit, on = _floor_hits(c2w, fovy, res, v)
    band = _edge_band(hit, res)
    covered = out.tri_id[0] >= 0
    assert on.sum() > 100                       # the test sees a real floor
    assert torch.equal(covered[~band[0]], on[0][~band[0]])
    # Without clipping both triangles (each with a vertex behind the camera) would vanish.
    pos = clip_positions(v.float(), c2w.float(), fovy, res, res)
    assert (pos[0, :, 3] <= 0).any()
    # Flat floor: the normal map is +y wherever covered away from the edges.
    interior = covered & ~band[0]
    normal = out.normal[0][interior]
    assert torch.allclose(normal, torch.tensor([0.5, 1.0, 0.5]).expand_as(normal), atol=1e-5)


def test_clipped_points_are_the_true_floor_points():
    """Attributes at the cut points are exact: the world position interpolated at every pixel
    (through render_textured's texture lookup) equals the ray-floor intersection."""
    v, faces = _floor(jitter=0.3, seed=3)
    c2w, fovy = _camera(batch=2)
    c2w[1, :3, 3] = torch.tensor([0.1, 0.05, 0.2], dtype=torch.float64)  # a second camera
    res = 24
    cams = SimpleNamespace(height=res, width=res, c2w=c2w.float(), fovy=fovy)
    seen = []

    def texture(points):
        seen.append(points)
        return points

    _, covered = render_textured(v.float(), faces, texture, cams, torch.zeros(2, 3))
    assert len(seen) == 2                        # the clipped path draws camera by camera
    hit, _ = _floor_hits(c2w, fovy, res, v)
    for b in range(2):
        # the texture sees pixels bottom row first (rasterize's order); covered is top row first
        mask = covered[b].bool().flip(0)
        assert mask.sum() > 50
        assert torch.allclose(seen[b].double(), hit[b].flip(0)[mask], atol=1e-4)


def test_cut_points_are_shared_and_winding_is_kept():
    v, faces = _floor(jitter=0.4, seed=1)
    c2w, fovy = _camera()
    pos = clip_positions(v, c2w, fovy, 16, 16)[0]
    cut = clip_near_plane(pos, faces)
    # Four edges cross the plane: the two sides, and the diagonal shared by both triangles.
    assert cut.edge.shape[0] == 3
    assert torch.allclose(cut.pos[4:, 2] + cut.pos[4:, 3], torch.zeros(3, dtype=pos.dtype),
                          atol=1e-12)
    # No false silhouette: only the quad's outline (4 pieces) and the cut line are boundaries.
    neighbours = triangle_neighbors(cut.tri)
    boundary = (neighbours < 0).sum().item()
    assert boundary == cut.tri.shape[0] * 3 - 2 * (cut.tri.shape[0] - 1)
    # Winding: each new triangle faces the way its source does (here +y).
    world = cut.attributes(v)
    tri = world[cut.tri.long()]
    normal = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    src = v[faces.long()][cut.source]
    src_normal = torch.linalg.cross(src[:, 1] - src[:, 0], src[:, 2] - src[:, 0])
    assert ((normal * src_normal).sum(-1) > 0).all()
    # Every new triangle is in front of the plane, and the tri ids map back to the sources.
    assert ((cut.pos[cut.tri.long()][..., 2] + cut.pos[cut.tri.long()][..., 3]) > -1e-12).all()
    ids = torch.tensor([[-1, 0, cut.tri.shape[0] - 1]], dtype=torch.int32)
    assert cut.original_ids(ids).tolist() == [[-1, int(cut.source[0]), int(cut.source[-1])]]


def test_each_crossing_pattern_cuts_to_the_right_pieces():
    # One vertex in front: one triangle; two in front: two; none: dropped; all: kept as is.
    pos = torch.tensor([[0.0, 0.0, 0.5, 1.0],      # in front (z + w > 0)
                        [1.0, 0.0, -2.0, 1.0],     # behind
                        [0.0, 1.0, -2.0, 1.0],     # behind
                        [1.0, 1.0, 0.5, 1.0],      # in front
                        [2.0, 2.0, 0.0, 1.0]],     # in front
                       dtype=torch.float64)
    for faces, n_out in (([[0, 1, 2]], 1), ([[0, 3, 1]], 2), ([[1, 2, 1]], 0), ([[0, 3, 4]], 1)):
        cut = clip_near_plane(pos, torch.tensor(faces))
        assert cut.tri.shape[0] == n_out, faces
    kept = clip_near_plane(pos, torch.tensor([[0, 3, 4]]))
    assert kept.tri.tolist() == [[0, 3, 4]] and kept.pos.shape[0] == 5


def test_nothing_to_clip_keeps_the_single_batched_pass():
    v, faces = _floor(z_near=-0.5)              # wholly in front of the near plane
    c2w, fovy = _camera(batch=2)
    pos = clip_positions(v, c2w, fovy, 16, 16)
    assert clip_each_camera(pos, faces) is None
    cut = clip_near_plane(pos[0], faces)
    assert torch.equal(cut.pos, pos[0]) and cut.tri.tolist() == faces.tolist()


def test_a_triangle_between_the_camera_and_the_near_plane_is_not_drawn():
    # w in (near_w, NEAR): the rasterizer alone would draw it.
    v = torch.tensor([[-0.5, -0.5, -0.02], [0.5, -0.5, -0.02], [0.0, 0.5, -0.02]])
    faces = torch.tensor([[0, 1, 2]], dtype=torch.int32)
    c2w, fovy = _camera()
    out = render_mesh(v, faces, c2w.float(), fovy, 16, 16)
    assert (out.tri_id < 0).all() and out.mask.abs().max() == 0


def test_cut_gradients_match_finite_differences():
    g = torch.Generator().manual_seed(7)
    pos = torch.randn(6, 4, generator=g, dtype=torch.float64)
    pos[:, 3] = 1.0 + torch.rand(6, generator=g, dtype=torch.float64)
    pos[:, 2] = torch.tensor([1.0, -2.5, -2.6, 0.8, 0.9, -3.0], dtype=torch.float64)  # clear of 0
    faces = torch.tensor([[0, 1, 2], [0, 3, 1], [3, 4, 5], [4, 0, 3]])
    attr = torch.randn(6, 3, generator=g, dtype=torch.float64)

    def cut(p, a):
        c = clip_near_plane(p, faces)
        return c.pos, c.attributes(a)
    assert torch.autograd.gradcheck(cut, (pos.requires_grad_(), attr.requires_grad_()))

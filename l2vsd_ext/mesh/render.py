"""Differentiable mesh renders over the rasterize ops, in the cameras' conventions (z-up world,
OpenGL camera axes, camera_rays' focal length, images top row first): antialiased silhouette,
world-space normal map and depth. Silhouette gradients reach the vertices through antialias;
triangles crossing the near plane are clipped (near_clip)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..ops.rasterize import antialias, interpolate, rasterize, triangle_neighbors
from .gather import take_rows
from .near_clip import clip_each_camera


def clip_positions(vertices: torch.Tensor, c2w: torch.Tensor, fovy_deg: torch.Tensor,
                   height: int, width: int, near: float = 0.05, far: float = 100.0) -> torch.Tensor:
    """(B, M, 4) OpenGL clip coordinates of world points (M, 3) for cameras c2w (B, 4, 4) with
    vertical field of view fovy_deg (B,); the same pinhole as scene.cameras.camera_rays."""
    w2c = torch.linalg.inv(c2w.to(vertices.dtype))
    cam = torch.einsum("bij,mj->bmi", w2c[:, :3, :3], vertices) + w2c[:, None, :3, 3]
    f = 1.0 / torch.tan(0.5 * torch.deg2rad(fovy_deg.to(vertices.dtype)))     # NDC focal
    x = cam[..., 0] * (f * height / width)[:, None]
    y = cam[..., 1] * f[:, None]
    z_cam = cam[..., 2]
    z = z_cam * ((far + near) / (near - far)) + 2 * far * near / (near - far)
    return torch.stack([x, y, z, -z_cam], dim=-1)


def vertex_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted mean of the adjacent face normals, unit length."""
    v = take_rows(vertices, faces)
    n = torch.linalg.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])
    acc = torch.zeros_like(vertices)
    for k in range(3):
        acc = acc.index_add(0, faces[:, k], n)
    return torch.nn.functional.normalize(acc, dim=-1, eps=1e-12)


@dataclass
class MeshRender:
    mask: torch.Tensor     # (B, H, W, 1) antialiased coverage in [0, 1]
    normal: torch.Tensor   # (B, H, W, 3) world normals mapped to [0, 1], background 0
    tri_id: torch.Tensor   # (B, H, W) visible triangle, -1 for none


def _draw_pass(pos, tri, height, width, attr, shade, cameras) -> tuple[torch.Tensor, torch.Tensor]:
    """One rasterize -> interpolate -> shade -> antialias pass over pos (b, V, 4) / tri."""
    rast = rasterize(pos, tri, height, width)
    color = shade(rast, interpolate(attr, rast, tri), cameras)
    return antialias(color, rast, pos, tri, triangle_neighbors(tri)), rast.tri_id


def draw(pos: torch.Tensor, faces: torch.Tensor, height: int, width: int, attr: torch.Tensor,
         shade) -> tuple[torch.Tensor, torch.Tensor]:
    """Rasterize pos (B, V, 4) / faces, interpolate the vertex attribute attr (V, C) at the
    pixels, colour them with shade(rast, values, cameras) -> (b, H, W, C) (cameras: the slice of
    the batch being drawn) and antialias. Returns (colour (B, H, W, C), visible original triangle
    (B, H, W), -1 for none), rows bottom first. Triangles crossing the near plane are clipped
    (mesh.near_clip); without any, the batch is drawn in one pass exactly as before."""
    clipped = clip_each_camera(pos, faces)
    if clipped is None:
        return _draw_pass(pos, faces, height, width, attr, shade, slice(None))
    images, ids = [], []
    for b, cut in enumerate(clipped):  # topology differs per camera once clipped
        image, tri_id = _draw_pass(cut.pos[None], cut.tri, height, width, cut.attributes(attr), shade,
                                   slice(b, b + 1))
        images.append(image)
        ids.append(cut.original_ids(tri_id))
    return torch.cat(images), torch.cat(ids)


def render_mesh(vertices: torch.Tensor, faces: torch.Tensor, c2w: torch.Tensor,
                fovy_deg: torch.Tensor, height: int, width: int, near: float = 0.05) -> MeshRender:
    faces = faces.to(torch.int32)
    pos = clip_positions(vertices, c2w, fovy_deg, height, width, near=near)

    def shade(rast, normals, _cameras):
        covered = (rast.tri_id >= 0).to(vertices.dtype)[..., None]
        normals = torch.nn.functional.normalize(normals, dim=-1, eps=1e-12)
        return torch.cat([covered, (0.5 * (normals + 1)) * covered], dim=-1)

    both, tri_id = draw(pos, faces, height, width, vertex_normals(vertices, faces.long()), shade)
    # rasterize's row 0 is at the bottom (NDC y = -1); images here are top row first
    both = both.flip(1)
    return MeshRender(mask=both[..., :1], normal=both[..., 1:], tri_id=tri_id.flip(1))


AMBIENT = 0.1  # stage 1's ambient ratio for its diffuse shading


def shade_normals(render: MeshRender, rays_d: torch.Tensor, albedo: float = 0.8) -> torch.Tensor:
    """(B, 3, H, W) a grey diffuse render over white from a MeshRender and its cameras' ray
    directions (B, H, W, 3), light at the camera: albedo * (ambient + (1 - ambient) max(n.l, 0)),
    the mesh's shape without its colours (stage 1's 'textureless' shading)."""
    normal = torch.nn.functional.normalize(2 * render.normal - render.mask, dim=-1, eps=1e-12)
    lambert = (normal * -rays_d.to(normal)).sum(-1, keepdim=True).clamp(min=0)
    grey = albedo * (AMBIENT + (1 - AMBIENT) * lambert)
    image = grey * render.mask + (1 - render.mask)
    return image.expand(*image.shape[:-1], 3).permute(0, 3, 1, 2).contiguous()

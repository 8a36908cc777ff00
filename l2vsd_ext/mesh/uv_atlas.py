"""A UV-atlas texture for the texture stage's mesh, as threestudio exports it: xatlas cuts and
unwraps the mesh into charts, and the texture field is baked into an image by rasterizing the
mesh in UV space with this package's own rasterizer (the texel centres' surface points, queried
through the field). Texels outside every chart take the colour of the nearest chart texel (a few
dilation passes), so bilinear filtering at chart borders does not bleed the background in.

UVs follow the OBJ convention (v = 0 at the image's bottom row); trimesh writes them into OBJ and
flips them for glTF."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

DILATION_PASSES = 8


@dataclass
class Atlas:
    vertices: torch.Tensor  # (V', 3) float32: the mesh's vertices, duplicated along the charts' seams
    faces: torch.Tensor  # (F, 3) int64 into vertices
    uvs: torch.Tensor  # (V', 2) float32 in [0, 1]
    source_vertex: torch.Tensor  # (V',) int64: the original vertex each one copies


def unwrap(vertices: torch.Tensor, faces: torch.Tensor, size: int = 512) -> Atlas:
    """xatlas's charts for a triangle mesh (vertices (V, 3), faces (F, 3)), packed for a size x size
    texture with 2 texels of padding between charts (so a chart's border texels are its own)."""
    import xatlas

    if faces.shape[0] == 0:
        raise ValueError("uv atlas: the mesh has no faces")
    v = vertices.detach().float().cpu().numpy()
    f = faces.detach().cpu().numpy().astype(np.uint32)
    packer = xatlas.Atlas()
    packer.add_mesh(v, f)
    options = xatlas.PackOptions()
    options.padding, options.resolution = 2, size
    packer.generate(pack_options=options)
    mapping, new_faces, uvs = packer[0]
    mapping = torch.from_numpy(mapping.astype(np.int64))
    return Atlas(vertices=vertices.detach().float().cpu()[mapping], faces=torch.from_numpy(new_faces.astype(np.int64)),
                 uvs=torch.from_numpy(uvs.astype(np.float32)), source_vertex=mapping)


@torch.no_grad()
def bake(atlas: Atlas, colour_fn, size: int = 512, chunk: int = 65536) -> torch.Tensor:
    """(size, size, 3) float32 texture image, top row first (what image files store), with the
    colour colour_fn(points (N, 3)) -> (N, 3) of the surface point under each texel centre."""
    from ..ops.rasterize import interpolate, rasterize

    uv = atlas.uvs
    pos = torch.cat([uv * 2 - 1, torch.zeros_like(uv[:, :1]), torch.ones_like(uv[:, :1])], dim=1)
    faces = atlas.faces.to(torch.int32)
    rast = rasterize(pos[None], faces, size, size)
    points = interpolate(atlas.vertices, rast, faces)[0]  # (size, size, 3); row 0 is v = 0
    covered = rast.tri_id[0] >= 0
    image = torch.zeros(size, size, 3)
    inside = points[covered]
    image[covered] = torch.cat([colour_fn(inside[s:s + chunk]).float().cpu().clamp(0, 1)
                                for s in range(0, inside.shape[0], chunk)])
    image = dilate(image, covered)
    return image.flip(0)


def dilate(image: torch.Tensor, covered: torch.Tensor, passes: int = DILATION_PASSES) -> torch.Tensor:
    """Grows the covered texels' colours into their uncovered neighbours (3x3 mean of covered
    neighbours), `passes` times."""
    colour = image.permute(2, 0, 1)[None] * covered[None, None].float()
    weight = covered[None, None].float()
    kernel = torch.ones(1, 1, 3, 3)
    for _ in range(passes):
        summed = F.conv2d(colour, kernel.expand(3, 1, 3, 3), padding=1, groups=3)
        count = F.conv2d(weight, kernel, padding=1)
        grow = (weight == 0) & (count > 0)
        colour = torch.where(grow, summed / count.clamp(min=1), colour)
        weight = torch.where(grow, torch.ones_like(weight), weight)
    return colour[0].permute(1, 2, 0)


def textured_trimesh(atlas: Atlas, texture_image: torch.Tensor):
    """A trimesh.Trimesh with the atlas's UVs and the texture image (PIL) as its material."""
    import trimesh
    from PIL import Image

    pixels = (texture_image.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    material = trimesh.visual.material.SimpleMaterial(image=Image.fromarray(pixels), name="textured_albedo")
    visual = trimesh.visual.TextureVisuals(uv=atlas.uvs.numpy(), material=material)
    return trimesh.Trimesh(vertices=atlas.vertices.double().numpy(), faces=atlas.faces.numpy(), visual=visual,
                           process=False)

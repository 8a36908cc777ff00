"""The UV-atlas texture (mesh/uv_atlas.py): xatlas charts, the texture baked through our own
rasterizer in UV space, and what a viewer reading the exported file sees."""
import numpy as np
import pytest
import torch
import trimesh

from l2vsd_ext.mesh.uv_atlas import bake, dilate, textured_trimesh, unwrap


def colour_of(points):
    """A smooth colour over space, so the baked texture has a known value at every surface point."""
    return 0.5 + 0.5 * torch.nn.functional.normalize(points + torch.tensor([0.1, -0.2, 0.05]), dim=-1)


@pytest.mark.parametrize("fmt", ["glb", "obj"])
def test_exported_texture_gives_the_colour_function_at_every_vertex(tmp_path, fmt):
    sphere = trimesh.creation.icosphere(subdivisions=3)
    atlas = unwrap(torch.tensor(sphere.vertices, dtype=torch.float32), torch.tensor(sphere.faces), 256)
    assert atlas.uvs.min() >= 0 and atlas.uvs.max() <= 1 and atlas.faces.shape == (len(sphere.faces), 3)
    assert torch.equal(atlas.vertices, torch.tensor(sphere.vertices, dtype=torch.float32)[atlas.source_vertex])
    image = bake(atlas, colour_of, 256)
    assert image.shape == (256, 256, 3) and image.min() >= 0 and image.max() <= 1
    path = tmp_path / f"sphere.{fmt}"
    if fmt == "glb":
        path.write_bytes(textured_trimesh(atlas, image).export(file_type="glb"))
    else:
        textured_trimesh(atlas, image).export(str(path))
    loaded = trimesh.load(str(path), force="mesh", process=False)
    sampled = loaded.visual.to_color().vertex_colors[:, :3] / 255.0
    expected = colour_of(torch.tensor(loaded.vertices, dtype=torch.float32)).numpy()
    assert np.abs(sampled - expected).max() < 0.02  # measured 0.008 at 512, 0.013 at 256


def test_dilation_fills_only_uncovered_texels_from_covered_neighbours():
    g = torch.Generator().manual_seed(0)
    image = torch.rand(6, 6, 3, generator=g)
    covered = torch.zeros(6, 6, dtype=torch.bool)
    covered[2, 2] = covered[2, 3] = True
    out = dilate(image, covered, passes=1)
    assert torch.equal(out[covered], image[covered])
    assert torch.allclose(out[1, 1], image[2, 2]) and torch.allclose(out[1, 2], (image[2, 2] + image[2, 3]) / 2)
    assert (out[5, 5] == 0).all()  # beyond one pass: untouched
    assert (dilate(image, covered, passes=8) > 0).all()


def test_an_empty_mesh_is_refused():
    with pytest.raises(ValueError, match="no faces"):
        unwrap(torch.zeros(3, 3), torch.zeros(0, 3, dtype=torch.long))

"""The prior's training augmentation: re-compositing renders over other backgrounds is exact, and
the generic images are valid, varied and seeded."""
import torch

from l2vsd_ext.shapes.augment import generic_images, over_background, random_backgrounds


def _render(generator, b=6, res=12):
    alpha = torch.rand(b, 1, res, res, generator=generator)
    alpha[:, :, :3] = 0.0  # some pure background
    alpha[:, :, -3:] = 1.0  # some pure foreground
    colour = torch.rand(b, 3, res, res, generator=generator)
    return colour * alpha + (1 - alpha), alpha, colour


def test_over_background_recomposites_exactly():
    g = torch.Generator().manual_seed(1)
    over_white, alpha, colour = _render(g)
    bg = torch.rand(over_white.shape[0], 3, generator=g)
    expected = colour * alpha + (1 - alpha) * bg.view(-1, 3, 1, 1)
    torch.testing.assert_close(over_background(over_white, alpha, bg), expected)
    torch.testing.assert_close(over_background(over_white, alpha, torch.ones_like(bg)), over_white)


def test_random_backgrounds_keep_the_object_and_mix_white_and_colours():
    g = torch.Generator().manual_seed(2)
    over_white, alpha, colour = _render(g, b=64)
    out = random_backgrounds(over_white, alpha, 0.5, torch.Generator().manual_seed(3))
    opaque = alpha.expand_as(out) == 1
    torch.testing.assert_close(out[opaque], over_white[opaque])
    corner = out[:, :, 0, 0]  # alpha 0 there: the background colour itself
    white = (corner == 1).all(dim=1)
    assert 10 < int(white.sum()) < 54  # about half of 64 stay white
    assert corner[~white].std() > 0.1  # the others differ from each other
    assert torch.equal(out, random_backgrounds(over_white, alpha, 0.5, torch.Generator().manual_seed(3)))
    assert torch.equal(random_backgrounds(over_white, alpha, 1.0, g), over_white.clamp(0, 1))


def test_generic_images_are_valid_varied_and_seeded():
    images = generic_images(16, 20, torch.Generator().manual_seed(4))
    assert images.shape == (16, 3, 20, 20)
    assert images.min() >= 0 and images.max() <= 1
    assert images.flatten(1).std(dim=0).mean() > 0.1  # not all the same picture
    assert torch.equal(images, generic_images(16, 20, torch.Generator().manual_seed(4)))

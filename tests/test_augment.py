import torch

from gan_core.augment import AugmentConfig, augment


def test_identity_settings_return_the_input():
    x = torch.rand(3, 3, 16, 16) * 2 - 1
    none = AugmentConfig(crop_scale=(1.0, 1.0), translate=0.0, rotate_deg=0.0, brightness=0.0, contrast=0.0,
                         saturation=0.0)
    assert torch.allclose(augment(x, torch.Generator().manual_seed(0), none), x, atol=1e-5)


def test_views_differ_keep_shape_range_and_are_seeded():
    x = torch.rand(4, 1, 32, 32) * 2 - 1
    a = augment(x, torch.Generator().manual_seed(1))
    b = augment(x, torch.Generator().manual_seed(1))
    c = augment(x, torch.Generator().manual_seed(2))
    assert a.shape == x.shape and a.dtype == x.dtype and a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c) and not torch.allclose(a, x, atol=1e-3)


def test_translation_moves_content():
    x = -torch.ones(1, 1, 32, 32)
    x[..., 12:20, 12:20] = 1  # a white square in the middle
    shift = AugmentConfig(crop_scale=(1.0, 1.0), translate=0.25, rotate_deg=0.0, brightness=0.0, contrast=0.0)
    moved = augment(x, torch.Generator().manual_seed(3), shift)
    ys, xs = torch.nonzero(moved[0, 0] > 0, as_tuple=True)
    assert len(ys) > 20  # the square survives
    assert (ys.float().mean() - 15.5).abs() + (xs.float().mean() - 15.5).abs() > 1  # and moved


def test_colour_remap_changes_colours_but_keeps_the_picture():
    """Each channel is mapped affinely (sometimes inverted) onto a sub-range of at least 0.25:
    the shape survives exactly (|correlation| 1 per channel), the colours do not."""
    n = 64
    x = -torch.ones(n, 3, 16, 16)
    x[:, 0, 4:12, 4:12] = 0.6  # a square that differs from the background in every channel
    x[:, 1, 4:12, 4:12] = -0.2
    x[:, 2, 4:12, 4:12] = 1.0
    cfg = AugmentConfig(crop_scale=(1.0, 1.0), translate=0.0, rotate_deg=0.0, brightness=0.0, contrast=0.0,
                        saturation=0.0, colour_remap=True)
    out = augment(x, torch.Generator().manual_seed(0), cfg)
    assert out.min() >= -1 and out.max() <= 1
    inside, outside = out[:, :, 8, 8], out[:, :, 0, 0]
    step = (inside - outside).abs() / 2  # per image and channel, in [0, 1] units
    raw = (x[0, :, 8, 8] - x[0, :, 0, 0]).abs() / 2
    assert (step >= 0.25 * raw - 1e-4).all()  # contrast never vanishes
    flipped = (inside < outside).float().mean()
    assert 0.3 < flipped < 0.7  # about half the channels inverted
    assert outside.std(0).min() > 0.1  # background colours vary a lot across the batch
    for i in range(4):
        for c in range(3):
            a, b = x[i, c].flatten(), out[i, c].flatten()
            corr = torch.corrcoef(torch.stack([a, b]))[0, 1].abs()
            assert corr > 0.999


def test_aspect_stretch_changes_width_against_height():
    """A centred square, stretched: the width/height ratio of the result varies within the range."""
    from gan_core.augment import AugmentConfig

    x = -torch.ones(32, 1, 32, 32)
    x[:, :, 10:22, 10:22] = 1.0
    cfg = AugmentConfig(crop_scale=(1.0, 1.0), translate=0.0, rotate_deg=0.0, brightness=0.0, contrast=0.0,
                        aspect=0.4)
    out = augment(x, torch.Generator().manual_seed(0), cfg)
    mask = out[:, 0] > 0
    w, h = mask.any(1).sum(1).float(), mask.any(2).sum(1).float()
    ratio = w / h
    assert ratio.max() > 1.15 and ratio.min() < 0.87  # both ways
    assert ratio.max() < 1.6 and ratio.min() > 0.6  # within exp(+-0.4) ~ 1.49, plus pixel rounding


def test_zoom_out_pads_with_the_background_not_stripes():
    """A bar touching top and bottom must shrink when zoomed out (border padding would keep it full height)."""
    x = -torch.ones(8, 1, 32, 32)
    x[:, :, :, 14:18] = 1.0
    cfg = AugmentConfig(crop_scale=(4.0, 4.0), translate=0.0, rotate_deg=0.0, brightness=0.0, contrast=0.0)
    out = augment(x, torch.Generator().manual_seed(0), cfg)
    rows = (out[:, 0] > 0).any(2).sum(1)
    assert (rows <= 20).all() and (rows >= 12).all()  # half the side (2x zoom out), give or take the blur
    assert out.min() >= -1 and out.max() <= 1

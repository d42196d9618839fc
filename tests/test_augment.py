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


def test_diff_augment_ops_are_exact_seeded_and_differentiable():
    import pytest

    from gan_core.augment import diff_augment

    x = torch.rand(6, 3, 32, 32) * 2 - 1
    assert diff_augment(x, "") is x
    # translation: each image is a whole-pixel shift of itself, within 1/8 of the side, zeros where uncovered
    y = diff_augment(x, "translation", torch.Generator().manual_seed(0))
    for i in range(len(x)):
        padded = torch.nn.functional.pad(x[i], (4, 4, 4, 4))
        assert any(torch.equal(y[i], padded[:, 4 + dy: 36 + dy, 4 + dx: 36 + dx])
                   for dy in range(-4, 5) for dx in range(-4, 5))
    assert torch.equal(y, diff_augment(x, "translation", torch.Generator().manual_seed(0)))
    assert not torch.equal(y, diff_augment(x, "translation", torch.Generator().manual_seed(1)))
    # cutout: at most a (side/2)^2 square of each image is zeroed, the rest untouched
    ones = torch.ones(6, 3, 32, 32)
    cut = diff_augment(ones, "cutout", torch.Generator().manual_seed(0))
    zeroed = (cut == 0).all(1).flatten(1).sum(1)
    assert ((zeroed > 0) & (zeroed <= 16 * 16)).all() and ((cut == 0) | (cut == 1)).all()
    # colour: one brightness / saturation / contrast draw per image; a flat grey image stays flat
    grey = torch.zeros(6, 3, 8, 8)
    flat = diff_augment(grey, "color", torch.Generator().manual_seed(0))
    assert torch.allclose(flat, flat[:, :1, :1, :1].expand_as(flat), atol=1e-6)
    assert flat[:, 0, 0, 0].abs().max() <= 0.5 + 1e-6 and flat[:, 0, 0, 0].std() > 0
    # gradients reach the input through every op (G learns through D's augmented view)
    xg = x.clone().requires_grad_(True)
    diff_augment(xg, "color,translation,cutout", torch.Generator().manual_seed(0)).square().sum().backward()
    assert xg.grad is not None and xg.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="unknown DiffAugment"):
        diff_augment(x, "flip")

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

import torch
import torch.nn.functional as F

from lure_fast.loaders.augment import apply_flip_crop, crop_padding, draw_flip_crop, flip_crop


def test_each_image_is_a_flip_then_a_crop_of_the_zero_padded_image():
    x = torch.rand(16, 3, 8, 8)
    params = draw_flip_crop(16, torch.Generator().manual_seed(1), pad=2)
    y = apply_flip_crop(x, params, pad=2)
    for i, (flip, dy, dx) in enumerate(params.tolist()):
        img = x[i].flip(2) if flip else x[i]
        expect = F.pad(img, (2, 2, 2, 2))[:, dy:dy + 8, dx:dx + 8]
        assert torch.equal(y[i], expect)
    assert params[:, 1:].min() >= 0 and params[:, 1:].max() <= 4
    assert 0 < params[:, 0].sum() < 16


def test_same_generator_seed_same_augmentation_and_padding_scales():
    x = torch.rand(4, 1, 32, 32)
    a = flip_crop(x, torch.Generator().manual_seed(5))
    b = flip_crop(x, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    assert (crop_padding(32), crop_padding(8), crop_padding(64)) == (4, 1, 8)

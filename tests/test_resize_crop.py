"""data.ResizeCrop and NormalizedTensor: timm's eval transform done by torch on uint8 pixels."""

import numpy as np
import pytest
import torch
from PIL import Image

from pixql.ml.data import NormalizedTensor, ResizeCrop, eval_transform

LITE0_PRE = {"input_size": [3, 224, 224], "interpolation": "bicubic", "crop_pct": 0.875, "crop_mode": "center",
             "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}


def _timm(pre):
    """timm's own eval transform, as pixql used it before ResizeCrop."""
    from timm.data import create_transform

    return create_transform(input_size=tuple(pre["input_size"]), is_training=False,
                            interpolation=pre["interpolation"], mean=tuple(pre["mean"]), std=tuple(pre["std"]),
                            crop_pct=pre["crop_pct"], crop_mode=pre["crop_mode"])


def _geometry(transform):
    """The transform's steps before the tensor conversion, applied to a PIL image -> uint8 array
    [H, W, 3] (ResizeCrop's uint8 tensor is [3, H, W])."""
    steps = [t for t in transform.transforms
             if type(t).__name__ not in ("MaybeToTensor", "ToTensor", "Normalize", "NormalizedTensor")]

    def pixels(img):
        out = _apply(steps, img)
        return (out.permute(1, 2, 0).numpy() if isinstance(out, torch.Tensor) else np.asarray(out)).astype(int)
    return pixels


def _apply(steps, img):
    for step in steps:
        img = step(img)
    return img


def _photo(size, seed=0):
    """A smooth photo-like image with a textured block: resampling differences stay photo-sized."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    pixels = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) * 255 // (w + h)], -1).astype(np.uint8)
    rng = np.random.default_rng(seed)
    pixels[h // 4: h // 2, w // 5: w // 2] = rng.integers(0, 256, (h // 2 - h // 4, w // 2 - w // 5, 3))
    return Image.fromarray(pixels)


def test_eval_transform_is_two_steps_in_uint8_then_float():
    steps = eval_transform(LITE0_PRE).transforms
    assert [type(s) for s in steps] == [ResizeCrop, NormalizedTensor]
    pixels = steps[0](_photo((300, 200)))
    assert pixels.dtype == torch.uint8 and pixels.shape == (3, 224, 224)
    x = steps[1](pixels)
    assert x.dtype == torch.float32 and x.shape == (3, 224, 224)


@pytest.mark.parametrize("side", [128, 200, 224, 256, 500])
def test_a_square_photo_comes_within_a_grey_level_of_timms(side):
    image = _photo((side, side), seed=side)
    ours, theirs = eval_transform(LITE0_PRE)(image), _timm(LITE0_PRE)(image)
    assert ours.shape == theirs.shape == (3, 224, 224)
    # one grey level after normalisation (std 0.5): 2/255; a 256 px photo is only cropped: equal
    assert (ours - theirs).abs().max() <= 2 / 255 + 1e-6
    if side == 256:
        assert torch.allclose(ours, theirs, atol=1e-6)


# Portraits (thin ones too: Pillow picks its order of passes by the whole image's shape), landscapes,
# a crop offset of 59.5 pixels (343 wide: rounds to 60, as CenterCrop's), a shrunk 3000 px photo.
SHAPES = [(400, 533), (533, 400), (300, 225), (225, 300), (201, 199), (640, 97), (97, 640), (200, 1200),
          (119, 300), (343, 256), (1000, 3000)]


@pytest.mark.parametrize("size", SHAPES)
@pytest.mark.parametrize("pre", [LITE0_PRE, dict(LITE0_PRE, crop_pct=0.95), dict(LITE0_PRE, interpolation="bilinear")],
                         ids=["bicubic-256", "bicubic-235", "bilinear-256"])
def test_other_shapes_come_within_a_level_or_two_of_timms(size, pre):
    image = _photo(size, seed=sum(size))
    ours, theirs = _geometry(eval_transform(pre))(image), _geometry(_timm(pre))(image)
    assert ours.shape == theirs.shape == (224, 224, 3)
    diff = np.abs(ours - theirs)
    assert diff.mean() < 0.05 and diff.max() <= 2, (diff.mean(), diff.max())


def test_normalized_tensor_is_to_tensor_then_normalize():
    from torchvision import transforms as T

    step = eval_transform(LITE0_PRE).transforms[1]
    pixels = torch.from_numpy(np.array(_photo((224, 224)))).permute(2, 0, 1)
    expected = T.Normalize(LITE0_PRE["mean"], LITE0_PRE["std"])(pixels.float() / 255)
    assert torch.allclose(step(pixels), expected, atol=1e-6)


@pytest.mark.parametrize("size", [(10, 3000), (3000, 10), (20, 20000)])
def test_a_strip_has_only_the_part_under_the_crop_resized(size):
    """Resized whole, a 20 x 20000 strip would be 256 x 256000 pixels; the part under the crop
    comes within half a pixel of its place, a few grey levels of timm's on a busy pattern."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    pixels = np.stack([(xx * 7 + yy * 3) % 256, (xx * xx + yy) % 256, np.sin(xx / 13 + yy / 17) * 127 + 128], -1)
    image = Image.fromarray(pixels.astype(np.uint8))
    ours, theirs = _geometry(eval_transform(LITE0_PRE))(image), _geometry(_timm(LITE0_PRE))(image)
    assert ours.shape == theirs.shape == (224, 224, 3)
    diff = np.abs(ours - theirs)
    assert diff.mean() < 0.5 and diff.max() <= 6, (diff.mean(), diff.max())


def test_a_crop_larger_than_the_resized_photo_is_padded_as_before():
    pre = dict(LITE0_PRE, crop_pct=1.2)  # resize to 186, crop 224: CenterCrop pads with black
    image = _photo((300, 200))
    assert torch.equal(eval_transform(pre)(image), _timm(pre)(image))


def test_a_tensor_goes_through_the_original_steps():
    steps = eval_transform(LITE0_PRE).transforms
    x = torch.rand(3, 180, 240)
    expected = steps[0].crop(steps[0].resize(x))
    assert torch.equal(steps[0](x), expected) and expected.shape == (3, 224, 224)


def test_real_photos_match_timm_closely(data_root):
    paths = [p for pattern in ("cats_and_dogs_filtered_200px/validation/cats/*.jpg", "clothing_small/test/*/*.jpg",
                               "fashion_products_sample/*/*/*.jpg", "flowers5_128px/test/*/*.jpg")
             for p in sorted(data_root.glob(pattern))[:15]]
    if len(paths) < 30:
        pytest.skip(f"photo sets not found under {data_root}")
    ours, theirs = _geometry(eval_transform(LITE0_PRE)), _geometry(_timm(LITE0_PRE))
    worst = []
    for path in paths:
        image = Image.open(path).convert("RGB")
        diff = np.abs(ours(image) - theirs(image))
        worst.append((diff.mean(), diff.max()))
    assert max(m for m, _ in worst) < 0.05 and max(x for _, x in worst) <= 2, worst

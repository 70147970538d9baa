"""data.ResizeCrop: timm's eval resize and centre crop as one PIL resize of the crop's region."""

import numpy as np
import pytest
import torch
from PIL import Image

from pixql.ml.data import ResizeCrop, eval_transform

LITE0_PRE = {"input_size": [3, 224, 224], "interpolation": "bicubic", "crop_pct": 0.875, "crop_mode": "center",
             "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}


def _timm(pre):
    """timm's own eval transform, as pixql used it before ResizeCrop."""
    from timm.data import create_transform

    return create_transform(input_size=tuple(pre["input_size"]), is_training=False,
                            interpolation=pre["interpolation"], mean=tuple(pre["mean"]), std=tuple(pre["std"]),
                            crop_pct=pre["crop_pct"], crop_mode=pre["crop_mode"])


def _geometry(transform):
    """The transform's steps before the tensor conversion, applied to a PIL image -> uint8 array."""
    steps = [t for t in transform.transforms if type(t).__name__ not in ("MaybeToTensor", "ToTensor", "Normalize")]
    return lambda img: np.asarray(_apply(steps, img)).astype(int)


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


def test_eval_transform_resizes_only_the_crop():
    steps = eval_transform(LITE0_PRE).transforms
    assert isinstance(steps[0], ResizeCrop) and len(steps) == len(_timm(LITE0_PRE).transforms) - 1


@pytest.mark.parametrize("side", [128, 200, 224, 256, 500])
def test_a_square_photo_gives_timms_pixels_exactly(side):
    image = _photo((side, side), seed=side)
    ours, theirs = eval_transform(LITE0_PRE)(image), _timm(LITE0_PRE)(image)
    assert ours.shape == theirs.shape == (3, 224, 224)
    assert torch.equal(ours, theirs)


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
        if image.width == image.height:
            assert diff.max() == 0, path
        worst.append((diff.mean(), diff.max()))
    assert max(m for m, _ in worst) < 0.05 and max(x for _, x in worst) <= 2, worst

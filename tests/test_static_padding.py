"""'SAME' padding made static for a known input size: the same outputs, the same parameters,
the original modules back after a `with` block, and the original padding for other sizes."""

import copy

import pytest
import timm
import torch
from conftest import cat_and_dog_photos
from timm.layers import Conv2dSame

from pixql.ml.batchnorm_folding import fold_batchnorm
from pixql.ml.static_padding import StaticSameConv, make_static, static_padding


def _count(model, kind):
    return sum(type(m) is kind for m in model.modules())


def _lite0():
    torch.manual_seed(0)
    return timm.create_model("tf_efficientnet_lite0", num_classes=4).eval()


@pytest.mark.parametrize("side", [224, 97, 64, 130])
def test_static_network_computes_the_same(side):
    # 224 and 64: one pixel more on the bottom/right at each stride 2 (an extra zero tap);
    # 97 and 130: odd and even sides further down, where 'SAME' pads evenly at some layers.
    model = _lite0()
    static = make_static(fold_batchnorm(copy.deepcopy(model)), (3, side, side))
    assert _count(model, Conv2dSame) == 5 and _count(static, Conv2dSame) == 0
    assert _count(static, StaticSameConv) == 5
    x = torch.randn(2, 3, side, side)
    with torch.no_grad():
        expected, got = fold_batchnorm(copy.deepcopy(model))(x), static(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_another_input_size_gets_the_original_padding():
    model = _lite0()
    static = make_static(copy.deepcopy(model), (3, 224, 224))
    for side in (96, 225):
        x = torch.randn(1, 3, side, side)
        with torch.no_grad():
            torch.testing.assert_close(static(x), model(x), rtol=1e-5, atol=1e-5)


def test_a_block_keeps_the_parameters_and_puts_the_modules_back():
    model = _lite0()
    stem, weight = model.conv_stem, model.conv_stem.weight
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    with static_padding(model, (3, 224, 224)):
        assert type(model.conv_stem) is StaticSameConv
        assert model.conv_stem.weight is weight  # the same Parameter: gradients and optimizers see it
        assert {k: v.shape for k, v in model.state_dict().items()} == shapes
    assert model.conv_stem is stem and _count(model, StaticSameConv) == 0
    with static_padding(model, (3, 224, 224), enabled=False):
        assert model.conv_stem is stem


def test_a_network_without_same_padding_is_left_as_it_is():
    model = timm.create_model("resnet18", num_classes=2).eval()
    before = list(model.modules())
    assert list(make_static(model, (3, 224, 224)).modules()) == before


def test_gradients_reach_the_original_weight():
    model = _lite0()
    x = torch.randn(2, 3, 64, 64)
    model(x).sum().backward()
    expected = model.conv_stem.weight.grad.clone()
    model.zero_grad()
    with static_padding(model, (3, 64, 64)):
        model(x).sum().backward()
    torch.testing.assert_close(model.conv_stem.weight.grad, expected, rtol=1e-4, atol=1e-6)


def test_predict_on_photos_gives_the_probabilities_of_the_original_padding(data_root, monkeypatch):
    import pixql.ml.infer as infer
    from pixql.errors import WeightsUnavailableError

    photos = cat_and_dog_photos(data_root, 6)
    try:
        parts = infer.imagenet_classifier_parts()
    except WeightsUnavailableError as e:
        pytest.skip(f"EfficientNet-Lite0's ImageNet weights are not installed: {e}")
    static = infer.Classifier(*parts, device="cpu", precision="fp32")
    assert _count(static.model, StaticSameConv) == 5
    from pixql.ml import fused_activations

    monkeypatch.setattr(fused_activations, "make_static", lambda model, size: model)
    original = infer.Classifier(*parts, device="cpu", precision="fp32")
    assert _count(original.model, StaticSameConv) == 0
    got, expected = static.predict_proba(photos, progress=False), original.predict_proba(photos, progress=False)
    assert abs(got - expected).max() < 1e-5
    assert (got.argmax(1) == expected.argmax(1)).all()


def test_a_network_off_the_cpu_keeps_timms_padding():
    # measured on the CPU only (BENCHMARKS.md): elsewhere (here the meta device) nothing is swapped
    model = _lite0().to("meta")
    assert _count(make_static(model, (3, 224, 224)), StaticSameConv) == 0

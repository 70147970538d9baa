"""Base model lookup, and where pretrained weights can (not) come from offline."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pixql.errors import CatalogError, WeightsUnavailableError
from pixql.ml.bases import list_bases, resolve_base, weights_available_offline


def test_importing_bases_does_not_import_torch():
    code = ("import sys, pixql.ml.bases as b; b.resolve_base('RESNET18'); "
            "b.resolve_base('SimpleCNN'); assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_default_and_aliases_are_case_insensitive():
    assert resolve_base(None).name == "EfficientNet_Lite0"
    assert resolve_base(None).arch == "tf_efficientnet_lite0"
    assert resolve_base("efficientnet_lite0") == resolve_base("EFFICIENTNET_LITE0")
    assert resolve_base("convnext_tiny").name == "ConvNeXt_Tiny"
    assert resolve_base("simplecnn").pretrained_source == "none"
    assert resolve_base("SimpleCNN").input_size == 150
    names = [b.name for b in list_bases()]
    for alias in ("ConvNeXt_Tiny", "ConvNeXt_Base", "EfficientNetV2S", "EfficientNetV2M", "ResNet18",
                  "ResNet50", "VGG16", "MobileNetV3", "EfficientNet_Lite0", "SimpleCNN"):
        assert alias in names


def test_alias_input_sizes_match_timm():
    from timm.models import get_pretrained_cfg

    for spec in list_bases():
        if spec.arch != "simple_cnn":
            assert get_pretrained_cfg(spec.arch).input_size[-1] == spec.input_size, spec.name


def test_any_timm_name_with_or_without_tag():
    spec = resolve_base("timm:resnet50.a1_in1k")
    assert (spec.name, spec.arch, spec.pretrained_source) == ("resnet50.a1_in1k", "resnet50.a1_in1k", "hub")
    assert resolve_base("mobilenetv3_small_100").arch == "mobilenetv3_small_100"
    assert resolve_base("tf_efficientnet_lite0").pretrained_source == "package"


@pytest.mark.parametrize("name", ["ResNet19", "resnet50.no_such_tag", "timm:", "convnxt_tiny"])
def test_unknown_base_names_it_and_suggests(name):
    with pytest.raises(CatalogError) as info:
        resolve_base(name)
    message = str(info.value)
    assert repr(name) in message or name in message
    assert "EfficientNet_Lite0" in message and "timm" in message


def test_close_match_is_suggested():
    with pytest.raises(CatalogError, match="Did you mean ConvNeXt_Tiny"):
        resolve_base("ConvNext_Tiny2")


def test_lite0_weights_are_always_offline_simplecnn_has_none():
    assert weights_available_offline(resolve_base("EfficientNet_Lite0"))
    assert not weights_available_offline(resolve_base("SimpleCNN"))


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    """No cached hub weights, whatever this machine has downloaded before."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))


@pytest.mark.parametrize("env", [{"TORCH_HOME": "th"}, {"XDG_CACHE_HOME": "xdg"}, {}])
def test_the_torch_hub_folder_is_found_as_torch_finds_it(tmp_path, monkeypatch, env):
    """SHOW BASE MODELS looks for older url weights in torch hub's folder without importing torch."""
    import torch

    from pixql.ml import weight_files

    monkeypatch.delenv("TORCH_HOME", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    for name, folder in env.items():
        monkeypatch.setenv(name, str(tmp_path / folder))
    assert weight_files.hub_dir_from_environment() == torch.hub.get_dir()
    source = {"hf_hub_id": None, "hf_hub_filename": None, "url": "https://example.org/w/resnet18-f37072fd.pth"}
    assert weight_files.hub_file(source) is None
    checkpoint = Path(torch.hub.get_dir()) / "checkpoints" / "resnet18-f37072fd.pth"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"x")
    assert weight_files.hub_file(source) == str(checkpoint)


@pytest.mark.parametrize("damage", ["{not json", "[]", '{"resnet50": {"parameters": "x"}}',
                                    '{"resnet50": {"parameters": 1, "hf_hub_id": 7, "hf_hub_filename": null, "url": null}}'])
def test_a_damaged_facts_file_is_asked_again_and_one_that_timm_cannot_answer_is_not_kept(damage, monkeypatch):
    from pixql.ml import weight_files

    path = weight_files._facts_path()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(damage)
    facts = weight_files.base_facts(["resnet50", "no_such_arch"])
    assert facts["resnet50"]["parameters"] == 23_508_032 and facts["resnet50"]["hf_hub_id"].startswith("timm/")
    assert facts["no_such_arch"] == {"parameters": None, "hf_hub_id": None, "hf_hub_filename": None, "url": None}
    assert set(weight_files._read(path)) == {"resnet50"}  # the failure is asked again next time


@pytest.mark.parametrize("how", ["HF_HUB_OFFLINE", "unreachable hub"])
def test_convnext_without_cached_weights_fails_fast_with_the_ways_out(empty_caches, monkeypatch, how):
    from huggingface_hub import constants

    from pixql.ml.bases import create_backbone

    if how == "HF_HUB_OFFLINE":
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    else:  # a closed local port: refused at once, as a machine without network would be
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    spec = resolve_base("ConvNeXt_Tiny")
    assert not weights_available_offline(spec)
    start = time.perf_counter()
    with pytest.raises(WeightsUnavailableError) as info:
        create_backbone("ConvNeXt_Tiny", num_classes=2)
    assert time.perf_counter() - start < 10
    message = str(info.value)
    assert "ConvNeXt_Tiny" in message and "timm/convnext_tiny" in message
    assert "weights=" in message and "pretrained=false" in message


def test_cached_hub_weights_load_without_network(empty_caches, tmp_path, monkeypatch):
    """A hub checkpoint placed in the HF cache layout is found and loaded by timm, offline."""
    import timm
    import torch
    from huggingface_hub import constants
    from safetensors.torch import save_file

    from pixql.ml.bases import create_backbone

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    spec = resolve_base("ResNet18")
    source = timm.create_model("resnet18", pretrained=False)
    snapshot = tmp_path / "hf" / "models--timm--resnet18.a1_in1k" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, snapshot / "model.safetensors")
    (tmp_path / "hf" / "models--timm--resnet18.a1_in1k" / "refs").mkdir()
    (tmp_path / "hf" / "models--timm--resnet18.a1_in1k" / "refs" / "main").write_text("0" * 40)

    assert weights_available_offline(spec)
    model, network, preprocessing, where = create_backbone("ResNet18", num_classes=3)
    assert where == "hub:timm/resnet18.a1_in1k" and network == {"arch": "resnet18", "num_classes": 3}
    assert preprocessing["input_size"][-1] == 224
    assert torch.equal(model.conv1.weight, source.conv1.weight)
    assert model.fc.out_features == 3
    # a truncated download, another architecture's file, a tensor of another shape in its slot:
    # refused naming the file (a traceback, or a silently random backbone, before)
    from pixql.errors import WeightsUnavailableError

    whole = (snapshot / "model.safetensors").read_bytes()
    other = timm.create_model("convnext_atto", pretrained=False).state_dict()
    bent = dict(source.state_dict(), **{"layer1.0.conv1.weight": torch.zeros(32, 64, 3, 3)})
    for damage, why in ((lambda: (snapshot / "model.safetensors").write_bytes(whole[:len(whole) // 2]), "cannot be"),
                        (lambda: save_file({k: v.contiguous() for k, v in other.items()}, snapshot / "model.safetensors"),
                         "are not its network's"),
                        (lambda: save_file({k: v.contiguous() for k, v in bent.items()}, snapshot / "model.safetensors"),
                         "cannot be loaded")):
        damage()
        with pytest.raises(WeightsUnavailableError, match=f"cached weights of ResNet18, .*model.safetensors, {why}"):
            create_backbone("ResNet18", num_classes=3)


@pytest.mark.parametrize("name", ["EfficientNet_Lite0", "ResNet18", "MobileNetV3", "ConvNeXt_Tiny", "SimpleCNN"])
def test_linear_head_reads_the_embeddings_that_linear_mode_computes(name):
    """Linear mode fits the timm classifier on forward_head(pre_logits=True); the network's own
    forward must be exactly that classifier over those features."""
    import torch

    from pixql.ml.networks import create_network, linear_head

    spec = resolve_base(name)
    model = create_network({"arch": spec.arch, "num_classes": 3, "input_size": spec.input_size}).eval()
    side = 150 if spec.arch == "simple_cnn" else 64
    x = torch.randn(2, 3, side, side)
    with torch.no_grad():
        features = model.forward_head(model.forward_features(x), pre_logits=True)
        assert torch.allclose(linear_head(model)(features), model(x), atol=1e-5)

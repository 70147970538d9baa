"""Probes of a network (batch norms that fold exactly, the input sizes of 'SAME' convolutions)
are run once per kind of network and read back from the cache folder (ml/network_probes.py):
the same folded, static network as a probe gives, and a probe again whenever the answer on
disk cannot be trusted."""

import copy
import glob
import json
import os

import pytest
import timm
import torch
from torch import nn

from pixql.ml import batchnorm_folding, static_padding
from pixql.ml.batchnorm_folding import fold_batchnorm
from pixql.ml.static_padding import StaticSameConv, make_static


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PIXQL_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def probes(monkeypatch):
    """Counts of the probe passes run."""
    counts = {"fold": 0, "static": 0}
    fold, sizes = batchnorm_folding._folds_exactly, static_padding._probed_sizes

    def counted_fold(*args):
        counts["fold"] += 1
        return fold(*args)

    def counted_sizes(*args):
        counts["static"] += 1
        return sizes(*args)

    monkeypatch.setattr(batchnorm_folding, "_folds_exactly", counted_fold)
    monkeypatch.setattr(static_padding, "_probed_sizes", counted_sizes)
    return counts


def _lite0(classes=4, seed=0):
    torch.manual_seed(seed)
    model = timm.create_model("tf_efficientnet_lite0", num_classes=classes).eval()
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():  # statistics as after pretraining: a wrong fold would show
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) * 2 + 0.1)
    return model


def _prepared(model):
    return make_static(fold_batchnorm(model), (3, 224, 224))


def _same_outputs(model, prepared):
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(prepared(x), expected, rtol=1e-3, atol=1e-4 * float(expected.abs().max()))


def test_a_second_network_of_the_same_kind_is_not_probed_again(cache, probes):
    first = _prepared(copy.deepcopy(_lite0()))
    assert probes == {"fold": 1, "static": 1} and len(glob.glob(str(cache / "probes" / "*.json"))) == 2
    other = _lite0(seed=1)  # other weights, the same kind: the answers hold
    second = _prepared(copy.deepcopy(other))
    assert probes == {"fold": 1, "static": 1}
    assert sum(isinstance(m, nn.BatchNorm2d) for m in second.modules()) == 0
    assert sum(isinstance(m, StaticSameConv) for m in second.modules()) == 5
    assert [type(m) for m in first.modules()] == [type(m) for m in second.modules()]
    _same_outputs(other, second)
    _prepared(_lite0(classes=7))  # another head: another network, probed
    assert probes == {"fold": 2, "static": 2}
    make_static(fold_batchnorm(_lite0()), (3, 160, 160))  # another input size: its own static probe
    assert probes == {"fold": 2, "static": 3}


class _ConvUsedTwice(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) + y


def test_a_network_that_must_not_fold_is_remembered_as_such(cache, probes):
    for _ in range(2):
        model = _ConvUsedTwice().eval()
        model.bn.running_mean.fill_(0.5)
        x = torch.randn(1, 3, 16, 16)
        with torch.no_grad():
            expected = model(x)
            fold_batchnorm(model)
            torch.testing.assert_close(model(x), expected)
        assert isinstance(model.bn, nn.BatchNorm2d)
    assert probes["fold"] == 1


def _net(wired_twice):
    class Net(nn.Module):  # one name, one module tree, two ways of wiring it
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)
            self.bn = nn.BatchNorm2d(3)

        if wired_twice:
            def forward(self, x):
                y = self.conv(x)
                return self.bn(y) + y
        else:
            def forward(self, x):
                return self.bn(self.conv(x))

    model = Net().eval()
    model.bn.running_mean.fill_(0.5)
    return model


def test_networks_alike_in_their_layers_but_not_their_forward_are_probed_apart(cache, probes):
    for wired_twice in (False, True):
        model = _net(wired_twice)
        x = torch.randn(1, 3, 16, 16)
        with torch.no_grad():
            expected = model(x)
            fold_batchnorm(model)
            torch.testing.assert_close(model(x), expected)
        assert isinstance(model.bn, nn.BatchNorm2d) == wired_twice
    assert probes["fold"] == 2


def test_a_damaged_or_foreign_answer_means_probing_again(cache, probes):
    _prepared(_lite0())
    files = sorted(glob.glob(str(cache / "probes" / "*.json")))
    for path in files:  # one truncated, one naming modules this network does not have
        with open(path) as f:
            kept = json.load(f)
        if "folding" in kept["what"]:
            kept["answer"] = [["blocks.99", "conv", "bn"]]
            with open(path, "w") as f:
                json.dump(kept, f)
        else:
            with open(path, "w") as f:
                f.write('{"what": "static')
    model = _lite0()
    prepared = _prepared(copy.deepcopy(model))
    assert probes == {"fold": 2, "static": 2}
    _same_outputs(model, prepared)


def test_a_cache_folder_that_cannot_be_written_only_costs_the_probe(tmp_path, monkeypatch, probes):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("PIXQL_CACHE", str(blocker))
    for _ in range(2):
        model = _lite0()
        _same_outputs(model, _prepared(copy.deepcopy(model)))
    assert probes == {"fold": 2, "static": 2} and not os.path.isdir(blocker)

"""Frozen batch norms folded into convolutions: same outputs, same gradients, same state dict."""

import copy

import pytest
import timm
import torch
from torch import nn

from pixql.ml.batchnorm_folding import FoldedConvBn, Folding, fold_batchnorm, folded


def _with_statistics(model, seed=0):
    """Batch norms with non-trivial statistics and affine parameters, as after pretraining
    (a fresh network's are the identity, which would hide a wrongly folded pair)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) * 2 + 0.1)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.2)
    return model.eval()


def _count(model, kind):
    return sum(isinstance(m, kind) for m in model.modules())


@pytest.mark.parametrize("arch", ["tf_efficientnet_lite0", "resnet18", "mobilenetv3_large_100"])
def test_folded_network_computes_the_same(arch):
    # Seeded: random weights with random statistics can make outputs of 1e6, where float32's
    # rounding alone moves them past the fold check's tolerance (mobilenetv3, 1 seed in ~10),
    # and the check then rightly folds nothing.
    torch.manual_seed(0)
    model = _with_statistics(timm.create_model(arch, num_classes=5))
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        expected = model(x)
        folded_model = fold_batchnorm(copy.deepcopy(model))
        got = folded_model(x)
    assert _count(model, nn.BatchNorm2d) > 0
    assert _count(folded_model, nn.BatchNorm2d) == 0
    # random statistics make large outputs: compare at float32 rounding of their scale
    torch.testing.assert_close(got, expected, rtol=1e-3, atol=1e-4 * float(expected.abs().max()))


def test_folding_for_a_block_puts_the_original_modules_back():
    model = _with_statistics(timm.create_model("resnet18", num_classes=3))
    keys = list(model.state_dict())
    conv1 = model.conv1
    with folded(model):
        assert _count(model, nn.BatchNorm2d) == 0
        assert model.conv1 is not conv1
    assert model.conv1 is conv1
    assert list(model.state_dict()) == keys


def test_trainable_folding_gives_the_unfolded_gradients():
    model = _with_statistics(timm.create_model("tf_efficientnet_lite0", num_classes=3)).double()
    model.train()
    for m in model.modules():  # frozen statistics, as pixql fine-tunes a pretrained network
        if isinstance(m, nn.BatchNorm2d):
            m.eval()
    twin = copy.deepcopy(model)
    x, y = torch.randn(4, 3, 64, 64, dtype=torch.float64), torch.tensor([0, 1, 2, 1])

    nn.functional.cross_entropy(model(x), y).backward()
    folding = Folding(twin)
    assert folding
    with folding.applied(trainable=True):
        assert _count(twin, FoldedConvBn) > 0
        nn.functional.cross_entropy(twin(x), y).backward()

    grads, twin_grads = dict(model.named_parameters()), dict(twin.named_parameters())
    assert list(grads) == list(twin_grads)  # same names: the saved model is unchanged
    for name, p in grads.items():
        torch.testing.assert_close(twin_grads[name].grad, p.grad, rtol=1e-9, atol=1e-12, msg=name)
    # the statistics stay frozen
    for (name, a), b in zip(model.named_buffers(), twin.buffers()):
        assert torch.equal(a, b), name


def test_trainable_folding_refuses_training_statistics():
    model = _with_statistics(timm.create_model("resnet18", num_classes=2))
    folding = Folding(model)
    model.train()  # batch norms learn their statistics: folding them would be wrong
    with folding.applied(trainable=True), pytest.raises(RuntimeError, match="frozen"):
        model(torch.randn(2, 3, 64, 64))


class _ConvUsedTwice(nn.Module):
    """conv -> bn in registration order, but the conv's raw output also feeds a shortcut."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) + y


def test_a_pair_that_is_not_one_in_forward_is_not_folded():
    model = _with_statistics(_ConvUsedTwice())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
        fold_batchnorm(model)
        got = model(x)
    assert _count(model, nn.BatchNorm2d) == 1
    torch.testing.assert_close(got, expected)


def test_weight_standardised_convolutions_are_left_alone():
    from timm.layers import StdConv2d

    model = _with_statistics(nn.Sequential(StdConv2d(3, 4, 3), nn.BatchNorm2d(4)))
    fold_batchnorm(model)
    assert _count(model, nn.BatchNorm2d) == 1


def test_a_folded_copy_shares_no_weights_or_hooks_with_the_original():
    model = _with_statistics(timm.create_model("resnet18", num_classes=3))
    conv1, weight = model.conv1, model.conv1.weight.detach().clone()
    calls = []
    with folded(model):
        model.conv1.register_forward_hook(lambda *args: calls.append("copy"))
        assert model.conv1.weight is not conv1.weight
    conv1(torch.randn(1, 3, 32, 32))
    assert calls == [] and conv1.weight.equal(weight)


def test_folding_for_no_grad_passes_needs_eval_mode():
    model = _with_statistics(timm.create_model("resnet18", num_classes=3)).train()
    with pytest.raises(RuntimeError, match="eval mode"):
        with folded(model):
            pass

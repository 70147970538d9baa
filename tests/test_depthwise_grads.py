"""Large depthwise kernels' weight gradient in fp32 under CPU bf16 autocast (ml/depthwise_grads.py):
the same forward, the same gradients up to bf16's rounding, only the layers meant, and the
modules as they were afterwards."""

import pytest
import torch
from timm.layers.conv2d_same import Conv2dSame
from torch import nn

from pixql.ml import runtime
from pixql.ml.depthwise_grads import fp32_weight_grads


def _net():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(8, 16, 1),
        Conv2dSame(16, 16, 5, stride=2, groups=16),  # TensorFlow 'SAME' at stride 2, as in Lite0
        nn.Conv2d(16, 16, 5, padding=2, groups=16, bias=False),
        nn.Conv2d(16, 16, 3, padding=1, groups=16),  # 3x3: bf16's own kernel is fast
        nn.Conv2d(16, 4, 1),
    ).to(memory_format=torch.channels_last)


def _step(net, x):
    net.zero_grad(set_to_none=True)
    with torch.autocast("cpu", torch.bfloat16):
        out = net(x)
    out.float().square().mean().backward()
    return out.detach(), {name: p.grad.clone() for name, p in net.named_parameters()}


def test_same_forward_and_gradients_as_autocast():
    net = _net()
    x = torch.randn(4, 8, 24, 24).contiguous(memory_format=torch.channels_last)
    out, grads = _step(net, x)
    with fp32_weight_grads(net) as swapped:
        assert swapped == 2  # the two 5x5 depthwise layers; not the 3x3 nor the pointwise ones
        out2, grads2 = _step(net, x)
    assert out2.dtype == torch.bfloat16 and torch.equal(out, out2)
    for name, grad in grads.items():
        assert grads2[name].dtype == grad.dtype == torch.float32
        # the same sums, one taken in bf16 and one in fp32: within bf16's rounding
        torch.testing.assert_close(grads2[name], grad, rtol=0.02, atol=0.02 * grad.abs().max().item())


def test_frozen_layers_and_no_autocast_are_left_alone_and_modules_come_back():
    net = _net()
    net[1].weight.requires_grad_(False)
    forwards = [m.forward for m in net]
    with fp32_weight_grads(net) as swapped:
        assert swapped == 1 and "forward" in vars(net[2]) and "forward" not in vars(net[1])
    assert "forward" not in vars(net[2]) and [m.forward for m in net] == forwards
    with fp32_weight_grads(net, enabled=False) as swapped:
        assert swapped == 0
    # without autocast the swapped layer computes in the input's dtype, as the module would
    x = torch.randn(2, 16, 12, 12, requires_grad=True)
    plain = net[2](x)
    with fp32_weight_grads(net):
        swapped_out = net[2](x)
    assert swapped_out.dtype == torch.float32 and torch.equal(plain, swapped_out)


@pytest.mark.parametrize("needs", ["input", "weight"])
def test_only_the_gradients_asked_for_are_computed(needs):
    conv = nn.Conv2d(6, 6, 5, padding=2, groups=6)
    x = torch.randn(2, 6, 10, 10, requires_grad=needs == "input")
    conv.weight.requires_grad_(True)
    conv.bias.requires_grad_(needs == "weight")
    with fp32_weight_grads(conv), torch.autocast("cpu", torch.bfloat16):
        conv(x).float().sum().backward()
    assert (x.grad is not None) == (needs == "input") and conv.weight.grad is not None
    assert (conv.bias.grad is not None) == (needs == "weight")


@pytest.mark.filterwarnings("ignore:.*is deprecated")
def test_torch_before_2_4_reads_the_autocast_dtype_by_its_old_names(monkeypatch):
    net = _net()
    x = torch.randn(2, 8, 16, 16).contiguous(memory_format=torch.channels_last)
    out, grads = _step(net, x)
    monkeypatch.setattr(runtime, "DEVICE_AUTOCAST_CALLS", False)  # torch 2.2 lacks the new calls
    with fp32_weight_grads(net):
        out2, grads2 = _step(net, x)
    assert out2.dtype == torch.bfloat16 and torch.equal(out, out2)


def test_through_folded_batch_norms_as_fine_tuning_runs_it():
    """Fine-tuning folds each conv -> frozen batch norm pair (FoldedConvBn, which calls the conv
    with the folded weight): the swapped conv's gradient reaches the conv's and the norm's
    parameters as autocast's own does."""
    from pixql.ml.batchnorm_folding import Folding

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 1), nn.BatchNorm2d(16), Conv2dSame(16, 16, 5, stride=2, groups=16,
                                                                            bias=False),
                        nn.BatchNorm2d(16), nn.Conv2d(16, 4, 1)).to(memory_format=torch.channels_last)
    for bn in (net[1], net[3]):
        bn.running_mean.uniform_(-0.5, 0.5), bn.running_var.uniform_(0.5, 2.0)
    net.eval()  # frozen statistics, as pixql fine-tunes a pretrained base
    x = torch.randn(4, 3, 20, 20).contiguous(memory_format=torch.channels_last)
    folding = Folding(net)  # (its check runs RGB photos' shape through the network)
    assert len(folding.pairs) == 2
    with folding.applied(trainable=True):
        out, grads = _step(net, x)
        with fp32_weight_grads(net) as swapped:
            assert swapped == 1
            out2, grads2 = _step(net, x)
    assert torch.equal(out, out2)
    assert {"2.conv.weight", "2.bn.weight", "2.bn.bias"} <= set(grads2)  # (names inside FoldedConvBn)
    for name, grad in grads.items():
        torch.testing.assert_close(grads2[name], grad, rtol=0.02, atol=0.02 * grad.abs().max().item())


def test_string_padding_is_left_to_autocast():
    """nn.Conv2d(padding='same') (timm's ConvMixer): no convolution_backward takes a string."""
    net = nn.Sequential(nn.Conv2d(6, 6, 7, padding="same", groups=6))
    with fp32_weight_grads(net) as swapped, torch.autocast("cpu", torch.bfloat16):
        assert swapped == 0
        net(torch.randn(2, 6, 9, 9)).float().sum().backward()
    assert net[0].weight.grad is not None

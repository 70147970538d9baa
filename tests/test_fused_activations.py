"""A folded conv and its activation as one oneDNN convolution on the CPU (ml/fused_activations.py)."""

import pytest
import torch
from timm.layers import BatchNormAct2d, Conv2dSame
from torch import nn

from pixql.ml.batchnorm_folding import fold_batchnorm
from pixql.ml.fused_activations import ConvActivation, available, fusable_dtypes, fuse_activations
from pixql.ml.static_padding import make_static

pytestmark = pytest.mark.skipif(not available(), reason="this torch has no oneDNN (mkldnn) convolution")


class Block(nn.Module):
    """conv -> BatchNormAct2d twice, the second a strided 'SAME' depthwise conv, as Lite0's."""

    def __init__(self, act, drop=None):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = BatchNormAct2d(8, act_layer=act)
        self.conv2 = Conv2dSame(8, 8, 5, stride=2, groups=8, bias=False)
        self.bn2 = BatchNormAct2d(8, act_layer=act)
        if drop is not None:
            self.bn2.drop = drop
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.head(self.bn2(self.conv2(self.bn1(self.conv1(x)))))


def _block(act, drop=None):
    torch.manual_seed(0)
    net = Block(act, drop)
    for bn in (net.bn1, net.bn2):
        bn.running_mean.uniform_(-0.5, 0.5), bn.running_var.uniform_(0.5, 2.0)
    return net.eval().to(memory_format=torch.channels_last)


def _x(side=20, batch=2):
    return (2 * torch.randn(batch, 3, side, side, generator=torch.Generator().manual_seed(1))).contiguous(
        memory_format=torch.channels_last)


def _ready(net, side=20, fuse=True):
    """As PREDICT prepares a network: folded, static 'SAME' padding, fused."""
    net = make_static(fold_batchnorm(net), (3, side, side))
    return fuse_activations(net) if fuse else net


def _fused(net):
    return [m for m in net.modules() if isinstance(m, ConvActivation)]


@pytest.fixture
def fused_calls(monkeypatch):
    """The calls of oneDNN's fused convolution (still run), to see that the fused path ran."""
    calls, op = [], torch.ops.mkldnn._convolution_pointwise

    def counted(*args):
        calls.append(args[7])  # the post-op's name
        return op(*args)
    monkeypatch.setattr(torch.ops.mkldnn, "_convolution_pointwise", counted, raising=False)
    return calls


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("act,exact", [(nn.ReLU, True), (nn.ReLU6, True), (nn.SiLU, False), (nn.Hardswish, False)])
def test_same_outputs_as_the_two_modules(act, exact, precision, fused_calls):
    fused, plain = _ready(_block(act)), _ready(_block(act), fuse=False)
    assert len(_fused(fused)) == 2 and not _fused(plain)
    x = _x()
    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
        got, expected = fused(x), plain(x)
    if precision == "fp32" or torch.bfloat16 in fusable_dtypes():
        assert len(fused_calls) == 2  # the fused op ran, not the modules
    assert got.dtype == expected.dtype
    if exact or precision == "fp32":
        assert torch.allclose(got.float(), expected.float(), atol=1e-5)
    else:  # the activation of the fp32 sum, not of its bf16 rounding
        assert (got.float() - expected.float()).abs().max() <= 0.05 * expected.float().abs().max()


def test_lite0s_relu6_layers_are_fused_and_its_outputs_unchanged(fused_calls):
    from pixql.ml.infer import imagenet_classifier_parts, inference_network

    network, state_dict, classes, pre = imagenet_classifier_parts()
    plain = make_static(inference_network(network, state_dict, classes), pre["input_size"]).to(
        memory_format=torch.channels_last)
    fused = fuse_activations(make_static(inference_network(network, state_dict, classes), pre["input_size"]).to(
        memory_format=torch.channels_last))
    assert len(_fused(fused)) == 33  # every conv followed by a ReLU6
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0)).contiguous(
        memory_format=torch.channels_last)
    with torch.inference_mode():
        assert torch.equal(fused(x), plain(x))
        assert fused_calls == ["hardtanh"] * 33
        if torch.bfloat16 in fusable_dtypes():
            with torch.autocast("cpu", torch.bfloat16):
                assert torch.equal(fused(x), plain(x))


def test_another_input_size_runs_the_modules_as_they_were():
    fused, plain = _ready(_block(nn.ReLU6)), _ready(_block(nn.ReLU6), fuse=False)
    x = _x(side=27)  # not the 20 px the static 'SAME' padding was made for
    with torch.inference_mode():
        assert torch.allclose(fused(x), plain(x), atol=1e-6)


def test_with_gradients_wanted_the_modules_run_and_train():
    fused = _ready(_block(nn.ReLU6))
    x = _x().requires_grad_()
    fused(x).sum().backward()  # the fused op has no backward: the original modules ran
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_nchw_input_gives_the_same_outputs():
    fused, plain = _ready(_block(nn.ReLU)), _ready(_block(nn.ReLU), fuse=False)
    x = _x().contiguous()
    with torch.inference_mode():
        assert torch.allclose(fused(x), plain(x), atol=1e-5)


def test_an_activation_onednn_does_not_take_is_left_alone():
    net = _ready(_block(nn.GELU))
    assert not _fused(net)


def test_a_dropout_in_training_mode_is_not_fused():
    net = _block(nn.ReLU, drop=nn.Dropout(0.5))
    net.bn2.drop.train()  # a live dropout after conv2: only conv1's activation may be fused
    net = _ready(net)
    assert [m.conv for m in _fused(net)] == [net.conv1.conv]


def test_the_network_exported_to_onnx_is_not_fused():
    """EXPORT MODEL's network (inference_network) keeps torch's own modules: ONNX has no fused op."""
    from pixql.ml.infer import imagenet_classifier_parts, inference_network

    network, state_dict, classes, _ = imagenet_classifier_parts()
    assert not _fused(inference_network(network, state_dict, classes))


def test_bf16_without_onednn_bf16_runs_the_modules(monkeypatch):
    from pixql.ml import fused_activations

    fused, plain = _ready(_block(nn.ReLU6)), _ready(_block(nn.ReLU6), fuse=False)
    calls = []
    monkeypatch.setattr(fused_activations, "fusable_dtypes", lambda: (torch.float32,))  # a CPU without AVX-512
    monkeypatch.setattr(torch.ops.mkldnn, "_convolution_pointwise", lambda *a: calls.append(a), raising=False)
    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16):
        assert torch.equal(fused(_x()), plain(_x()))
    assert not calls


def test_weights_changed_after_a_pass_are_used_by_the_next():
    fused, plain = _ready(_block(nn.ReLU6)), _ready(_block(nn.ReLU6), fuse=False)
    x = _x()
    with torch.inference_mode():
        fused(x)  # the cast weights are kept from here
    with torch.no_grad():
        for net in (fused, plain):
            for p in net.parameters():
                p.mul_(0.5)
    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=torch.bfloat16 in fusable_dtypes()):
        assert torch.equal(fused(x), plain(x))


def test_training_mode_and_an_unbatched_image_run_the_modules(monkeypatch):
    fused, plain = _ready(_block(nn.ReLU6)), _ready(_block(nn.ReLU6), fuse=False)
    x = _x()
    with torch.inference_mode():
        assert torch.allclose(fused(x[:1])[0], plain(x[0]), atol=1e-5)  # nn.Conv2d takes [C, H, W] too
    calls = []
    monkeypatch.setattr(torch.ops.mkldnn, "_convolution_pointwise", lambda *a: calls.append(a), raising=False)
    with torch.inference_mode():
        assert torch.allclose(fused(x[0]), plain(x[0]), atol=1e-5)
        fused.train()  # a dropout would be live: the modules, not the fused op, run
        fused(x)
    assert not calls


def test_for_a_with_block_the_modules_come_back_after(fused_calls):
    from pixql.ml.batchnorm_folding import folded
    from pixql.ml.fused_activations import activations_fused
    from pixql.ml.static_padding import static_padding

    net = _block(nn.ReLU6)
    before = dict(net.named_children())
    x = _x()
    with torch.inference_mode():
        expected = net(x)
        with folded(net), static_padding(net, (3, 20, 20)), activations_fused(net):  # as a linear BUILD
            assert len(_fused(net)) == 2
            got = net(x)
            assert len(fused_calls) == 2
    assert dict(net.named_children()) == before and not _fused(net)
    assert torch.allclose(got, expected, atol=1e-5)

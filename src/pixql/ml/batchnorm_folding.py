"""Frozen batch norm folded into the convolution before it.

A batch norm in eval mode is a per-channel scale and shift, so conv -> bn is one convolution
with scaled weights and a bias. That saves a pass over every activation map and its backward:
measured on a 2-core CPU, EfficientNet-Lite0 inference ran 1.6x and a fine-tuning step 1.5x
faster.

- `fold_batchnorm(model)`: for no-grad passes, the weights are folded once
  (torch.nn.utils.fusion.fuse_conv_bn_weights); `folded(model)` does it for the length of a
  `with` block and puts the original modules back after.
- `folded(model, trainable=True)`: for fine-tuning a pretrained network, whose batch-norm
  statistics pixql keeps frozen, `FoldedConvBn` recomputes the folded weights from the conv's
  and the batch norm's own parameters at each step: the same function of the same parameters,
  so the gradients, the optimizer's state and the saved state dict are unchanged.

Pairs are a conv child directly followed by a batch-norm child in a module's registration
order, which is the forward order in timm's conv nets; a random input then has to give the
same output folded and unfolded, else nothing is folded (some other network may use the
conv's output twice).
"""

import contextlib
import copy

import torch
from torch import nn
from torch.func import functional_call
from torch.nn.utils.fusion import fuse_conv_bn_weights


class NormRemainder(nn.Sequential):
    """A BatchNormAct2d once its normalisation moved into the conv: its dropout and activation,
    applied to that conv's output (ml/fused_activations.py runs the two as one on the CPU)."""


def _after_norm(bn):
    """What remains of a batch-norm slot once the normalisation moved into the conv, or None
    if `bn` is a kind whose forward we do not know."""
    if type(bn) is nn.BatchNorm2d:
        return nn.Identity()
    from timm.layers import BatchNormAct2d

    if type(bn) is BatchNormAct2d:  # batch norm, then its dropout and activation
        return NormRemainder(bn.drop, bn.act)
    return None


def _foldable_conv(conv):
    from timm.layers import Conv2dSame

    # plain convolutions only: one that transforms its weight first (weight standardisation)
    # would not compute the folded weight it is given
    return type(conv) in (nn.Conv2d, Conv2dSame)


def _pairs(model):
    """(parent, conv name, batch-norm name) of each conv -> batch norm pair in `model`."""
    pairs = []
    for parent in model.modules():
        before = None
        for name, child in parent.named_children():
            if (before is not None and _foldable_conv(before[1]) and _after_norm(child) is not None
                    and child.affine and child.track_running_stats
                    and child.num_features == before[1].out_channels):
                pairs.append((parent, before[0], name))
            before = (name, child)
    return pairs


class FoldedConvBn(nn.Module):
    """conv -> frozen batch norm as one convolution whose weights are recomputed from both
    modules' parameters at each call, so that they train as they would unfolded."""

    def __init__(self, conv, bn):
        super().__init__()
        self.conv, self.bn = conv, bn

    def forward(self, x):
        bn = self.bn
        if bn.training:
            raise RuntimeError("FoldedConvBn needs the batch norm's statistics frozen (eval mode)")
        scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
        bias = bn.bias - bn.running_mean * scale
        if self.conv.bias is not None:
            bias = bias + self.conv.bias * scale
        weight = self.conv.weight * scale.reshape(-1, *([1] * (self.conv.weight.dim() - 1)))
        return functional_call(self.conv, {"weight": weight, "bias": bias}, (x,))


def _fused_conv(conv, bn):
    """A copy of `conv` with `bn` folded into its weights: torch's fuse_conv_bn_eval does the
    same after a deepcopy of the conv, which took 0.28 s of a Lite0 model's 0.46 s load here."""
    if conv.training or bn.training:
        raise RuntimeError("folding a batch norm into its conv needs both in eval mode")
    fused = copy.copy(conv)
    # its own parameter, buffer and hook tables, so that the original conv, which folded() puts
    # back, keeps its weights and sees no hook registered on the copy
    fused.__dict__.update({k: copy.copy(v) for k, v in conv.__dict__.items() if isinstance(v, (dict, set))})
    with torch.no_grad():
        fused.weight, fused.bias = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var,
                                                        bn.eps, bn.weight, bn.bias)
    return fused


def _swap(pairs, trainable):
    """Replace each pair; returns what to set back, in order."""
    undo = []
    for parent, conv_name, bn_name in pairs:
        conv, bn = getattr(parent, conv_name), getattr(parent, bn_name)
        fused = FoldedConvBn(conv, bn) if trainable else _fused_conv(conv, bn)
        setattr(parent, conv_name, fused)
        setattr(parent, bn_name, _after_norm(bn))
        undo += [(parent, conv_name, conv), (parent, bn_name, bn)]
    return undo


def _restore(undo):
    for parent, name, module in reversed(undo):
        setattr(parent, name, module)


def _probe_sides(model):
    cfg = getattr(model, "pretrained_cfg", None) or {}
    side = int((cfg.get("input_size") or (3, 224, 224))[-1])
    return (64, side) if side != 64 else (side,)


def _checked_pairs(model):
    """The pairs of `model` if folding them leaves its output unchanged, else []: probed once per
    kind of network, then read from the cache folder (ml/network_probes.py)."""
    from pixql.ml.network_probes import module_names, remembered

    pairs = _pairs(model)
    if not pairs:
        return []
    names = module_names(model)
    found = [[names[parent], conv, bn] for parent, conv, bn in pairs]
    kept = remembered(model, "batch-norm folding", lambda m: found if _folds_exactly(m, pairs) else [])
    if kept not in (found, []):  # an answer about other pairs: ask again
        kept = found if _folds_exactly(model, pairs) else []
    return pairs if kept else []


@torch.no_grad()
def _folds_exactly(model, pairs):
    """Whether folding `pairs` leaves `model`'s output on a random input unchanged."""
    modes = {m: m.training for m in model.modules()}
    model.eval()  # the running statistics are what folding uses
    try:
        like = next(model.parameters())
        for side in _probe_sides(model):  # small first; some networks need their own size
            x = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(0)).to(like)
            try:
                expected = model(x).float()
            except Exception:
                continue
            undo = _swap(pairs, trainable=False)
            try:
                got = model(x).float()
            finally:
                _restore(undo)
            tolerance = 1e-3 * float(expected.abs().max()) + 1e-5
            return float((got - expected).abs().max()) <= tolerance
        return False
    finally:
        for m, training in modes.items():
            m.training = training


def fold_batchnorm(model):
    """Fold `model`'s batch norms into its convolutions for good (no-grad use); returns it."""
    _swap(_checked_pairs(model), trainable=False)
    return model


class Folding:
    """The checked pairs of one network, to fold for the length of a `with` block as often
    as needed (a training run folds once per epoch, around its steps)."""

    def __init__(self, model, enabled=True):
        self.pairs = _checked_pairs(model) if enabled else []

    def __bool__(self):
        return bool(self.pairs)

    @contextlib.contextmanager
    def applied(self, trainable=False):
        undo = _swap(self.pairs, trainable)
        try:
            yield
        finally:
            _restore(undo)


def folded(model, trainable=False):
    """`with folded(model):` the batch norms folded, the original modules back after."""
    return Folding(model).applied(trainable)

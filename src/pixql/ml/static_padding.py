"""TensorFlow's 'SAME' padding as a plain convolution's, for a known input size.

timm's TensorFlow-ported networks (EfficientNet-Lite, the `tf_` variants) run each strided
convolution as `Conv2dSame`: the input is padded with `F.pad` first, because at stride 2 on an
even side 'SAME' puts one more pixel on the bottom/right than on the top/left, which
`nn.Conv2d`'s symmetric padding cannot say. That pad copies the activation maps of every batch
(EfficientNet-Lite0 on a 2-core CPU: ~10% of a PREDICT's network time).

For a known input size the same output comes from a convolution whose kernel has one more
row/column of zeros on the top/left, padded symmetrically by the larger side: the extra taps
only ever meet zeros (the kernel's or the padding's), so nothing is copied and the result is
the convolution's own. A batch of another size runs the original padding and kernel. The
weights stay the original's Parameters, so this holds for training as for inference.

Only on the CPU, where it was measured (BENCHMARKS.md); a network on a GPU keeps timm's padding
(the pad's copy is cheap there, and cuDNN's speed for the wider kernels unmeasured). Fine-tuning
keeps it too: the wider kernels' backward measured slower (0.76x a step).

- `make_static(model, input_size)`: for good (a network loaded for inference only).
- `static_padding(model, input_size)`: for the length of a `with` block; the original modules
  go back after.
"""

import contextlib

import torch
import torch.nn.functional as F
from torch import nn


class StaticSameConv(nn.Conv2d):
    """A `Conv2dSame` for inputs of `input_hw` pixels, as one padded convolution. It holds the
    original's own weight and bias (the same Parameters, so the state dict, an optimizer's state
    and gradients are unchanged) and pads the kernel with its zero row/column at each call:
    a few kilobytes, against the activation maps' megabytes."""

    def __init__(self, conv, input_hw):
        from timm.layers.padding import get_same_padding

        super().__init__(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, 0, conv.dilation,
                         conv.groups, bias=False, device="meta")
        self.weight, self.bias = conv.weight, conv.bias
        (kh, kw), (sh, sw), (dh, dw) = conv.kernel_size, conv.stride, conv.dilation
        th, tw = get_same_padding(input_hw[0], kh, sh, dh), get_same_padding(input_hw[1], kw, sw, dw)
        self.input_hw = tuple(input_hw)
        self.extra = (th % 2, tw % 2)  # the one pixel more on the bottom / right
        self.static = (th // 2 + th % 2, tw // 2 + tw % 2)
        self.channels_last = conv.weight.is_contiguous(memory_format=torch.channels_last)
        self.training = conv.training

    def forward(self, x):
        if tuple(x.shape[-2:]) != self.input_hw:
            from timm.layers.padding import pad_same

            return F.conv2d(pad_same(x, self.kernel_size, self.stride, self.dilation), self.weight, self.bias,
                            self.stride, 0, self.dilation, self.groups)
        return F.conv2d(x, self.static_weight(), self.bias, self.stride, self.static, self.dilation, self.groups)

    def static_weight(self):
        """The kernel with its zero row/column on the top/left where the input needs one."""
        eh, ew = self.extra
        weight = F.pad(self.weight, (ew, 0, eh, 0)) if eh or ew else self.weight
        if self.channels_last:
            weight = weight.contiguous(memory_format=torch.channels_last)
        return weight


def _convertible(conv):
    """A 'SAME' conv whose odd pixel one zero tap can absorb (dilation 1, where it matters)."""
    from timm.layers import Conv2dSame

    return type(conv) is Conv2dSame and conv.dilation == (1, 1)


def _input_sizes(model, input_size):
    """{module: the (height, width) it is called with} for each convertible conv of `model`
    on one image of `input_size` (channels, height, width); {} when it has none. Probed once per
    kind of network and input size, then read from the cache folder (ml/network_probes.py)."""
    from pixql.ml.network_probes import module_names, remembered

    convs = [m for m in model.modules() if _convertible(m)]
    if not convs:
        return {}
    names = module_names(model)
    kept = remembered(model, f"static padding {list(input_size)}",
                      lambda m: {names[c]: list(hw) for c, hw in _probed_sizes(m, convs, input_size).items()})
    by_name = {name: module for module, name in names.items()}
    well_formed = isinstance(kept, dict) and all(
        isinstance(hw, list) and len(hw) == 2 and all(isinstance(v, int) for v in hw) for hw in kept.values())
    sizes = {by_name.get(name): tuple(hw) for name, hw in kept.items()} if well_formed else {None: ()}
    if not set(sizes) <= set(convs):  # a damaged answer, or one about other convolutions: ask again
        return _probed_sizes(model, convs, input_size)
    return sizes


@torch.no_grad()
def _probed_sizes(model, convs, input_size):
    sizes = {}

    def record(module, args):  # (returns None: a pre-hook's return value would replace the args)
        sizes.setdefault(module, tuple(args[0].shape[-2:]))

    hooks = [m.register_forward_pre_hook(record) for m in convs]
    like = next(model.parameters())
    modes = {m: m.training for m in model.modules()}  # each its own (frozen batch norms stay frozen)
    try:
        model.eval()
        model(torch.zeros(1, *input_size, device=like.device, dtype=like.dtype))
    finally:
        for m, training in modes.items():
            m.training = training
        for hook in hooks:
            hook.remove()
    return sizes


def _swap(model, input_size):
    """Replace each convertible conv of a network on the CPU; returns what to set back."""
    if next(model.parameters()).device.type != "cpu":
        return []
    sizes = _input_sizes(model, input_size)
    undo = []
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if child in sizes:
                setattr(parent, name, StaticSameConv(child, sizes[child]))
                undo.append((parent, name, child))
    return undo


def make_static(model, input_size):
    """`model` with its 'SAME' convolutions made static for `input_size` (C, H, W); returns it."""
    _swap(model, tuple(input_size)[-3:])
    return model


@contextlib.contextmanager
def static_padding(model, input_size, enabled=True):
    """`with static_padding(model, (3, 224, 224)):` the static convolutions, the originals back after."""
    undo = _swap(model, tuple(input_size)[-3:]) if enabled else []
    try:
        yield model
    finally:
        for parent, name, module in reversed(undo):
            setattr(parent, name, module)

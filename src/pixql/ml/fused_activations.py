"""A folded convolution and the activation after it as one oneDNN convolution, for inference on
the CPU.

Once batch norms are folded (ml/batchnorm_folding.py), each of timm's conv -> BatchNormAct2d
pairs is a convolution followed by the activation that BatchNormAct2d applied (Lite0's ReLU6).
Eager PyTorch runs that activation as a pass of its own over the activation maps: Lite0's
PREDICT in bf16 on a 2-core CPU spent ~11% of the network's time in `hardtanh_`. oneDNN applies
it inside the convolution instead (a post-op; what torch.compile's CPU backend calls,
`torch.ops.mkldnn._convolution_pointwise`): ReLU and ReLU6 give the same numbers, SiLU and
Hardswish the same within a bf16 rounding (computed before the output's rounding, not after).

The layer also keeps its weights cast to the pass's dtype: under bf16 autocast each batch
otherwise casts every weight again.

`fuse_activations(model)`: for good, on a network that only runs inference on the CPU (PREDICT,
EVALUATE, embeddings: `inference_layers`, with static padding); `activations_fused(model)` for the length of a `with` block, and
`frozen_layers(model, input_size)` with folding and static padding around it (a linear or `top`
BUILD's passes through the frozen network); not on one to export (ONNX has no such op) or to train (the op has no
backward). Anything else (a GPU, a gradient wanted, training mode, fp16, bf16 where oneDNN has
no bf16 convolution, an unbatched image, another input size for a static 'SAME' convolution) runs
the two modules as they were.
"""

import contextlib
import functools
import platform

import torch
from torch import nn

from pixql.ml.batchnorm_folding import NormRemainder, folded
from pixql.ml.runtime import cpu_autocast_dtype
from pixql.ml.static_padding import StaticSameConv, make_static, static_padding


def post_op(act):
    """(oneDNN's name, its scalars) for activation module `act`, or None."""
    kind = type(act)
    if kind is nn.ReLU:
        return "relu", []
    if kind in (nn.ReLU6, nn.Hardtanh):
        return "hardtanh", [float(act.min_val), float(act.max_val)]
    if kind is nn.SiLU:
        return "swish", []
    if kind is nn.Hardswish:
        return "hardswish", []
    return None


def available():
    """oneDNN's fused convolution, on the x86 CPUs where it was measured (an ARM build's oneDNN
    runs through other kernels: unmeasured, so left as it was)."""
    return (platform.machine().lower() in ("x86_64", "amd64") and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_convolution_pointwise"))


@functools.cache
def fusable_dtypes():
    """fp32, and bf16 where oneDNN has bf16 convolutions (a CPU without AVX-512 has not)."""
    bf16 = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return (torch.float32, torch.bfloat16) if bf16 is not None and bf16() else (torch.float32,)


class ConvActivation(nn.Module):
    """`conv` then the activation of `remainder` (a folded batch norm's NormRemainder), as one
    oneDNN convolution where it can run so."""

    def __init__(self, conv, remainder, attr, scalars):
        super().__init__()
        self.conv, self.remainder = conv, remainder
        self.attr, self.scalars = attr, scalars
        self.train(conv.training)  # a new module is in training mode; this one is as its conv was
        self._cast = {}  # dtype -> (the weights' identity, (weight, bias) as the fused op takes them)

    def _weights(self, dtype):
        conv = self.conv
        # weights loaded or changed in place (a new version, or new storage) are cast again;
        # inference tensors (folded inside inference_mode) keep no version
        identity = tuple((t.data_ptr(), 0 if t.is_inference() else t._version)
                         for t in (conv.weight, conv.bias) if t is not None)
        kept = self._cast.get(dtype)
        if kept is None or kept[0] != identity:
            weight = conv.static_weight() if isinstance(conv, StaticSameConv) else conv.weight
            weight = weight.detach().to(dtype).contiguous(memory_format=torch.channels_last)
            bias = None if conv.bias is None else conv.bias.detach().to(dtype)
            kept = self._cast[dtype] = identity, (weight, bias)
        return kept[1]

    def _padding(self, x):
        """The conv's padding for `x`, or None when the fused op cannot take it."""
        conv = self.conv
        if isinstance(conv, StaticSameConv):
            return list(conv.static) if tuple(x.shape[-2:]) == conv.input_hw else None
        return list(conv.padding)

    def forward(self, x):
        dtype = cpu_autocast_dtype() or x.dtype
        padding = self._padding(x) if x.dim() == 4 else None  # (an unbatched image: the modules)
        if (x.device.type != "cpu" or dtype not in fusable_dtypes() or padding is None or self.training
                or not torch.backends.mkldnn.enabled
                or (torch.is_grad_enabled() and (x.requires_grad or self.conv.weight.requires_grad))):
            return self.remainder(self.conv(x))
        weight, bias = self._weights(dtype)
        conv = self.conv
        return torch.ops.mkldnn._convolution_pointwise(
            x.to(dtype), weight, bias, padding, list(conv.stride), list(conv.dilation), conv.groups,
            self.attr, self.scalars, "")


def _fusable(conv, remainder):
    """A plain convolution (or its static 'SAME' form) and a remainder that only activates."""
    if type(conv) not in (nn.Conv2d, StaticSameConv) or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        return None
    if type(remainder) is not NormRemainder:
        return None
    drop, act = remainder
    return post_op(act) if type(drop) is nn.Identity or (isinstance(drop, nn.Dropout) and not drop.training) else None


def _swap(model):
    """Each folded conv of `model` (on the CPU) and the activation after it as one
    ConvActivation; returns what to set back. The remainder's input is its conv's output:
    folding checked that pair on a probe pass."""
    like = next(model.parameters(), None)
    if not available() or like is None or like.device.type != "cpu":
        return []
    undo = []
    for parent in list(model.modules()):
        children = list(parent.named_children())
        for (conv_name, conv), (name, remainder) in zip(children, children[1:]):
            found = _fusable(conv, remainder)
            if found is not None:
                setattr(parent, conv_name, ConvActivation(conv, remainder, *found))
                setattr(parent, name, nn.Identity())
                undo += [(parent, conv_name, conv), (parent, name, remainder)]
    return undo


def fuse_activations(model):
    """`model` (in eval mode, batch norms folded) with its activations fused for good; returns it."""
    _swap(model)
    return model


def inference_layers(model, input_size):
    """`model` (in eval mode, batch norms folded) for good as PREDICT's and the embeddings' networks
    run (ml/infer.py, ml/embed.py): 'SAME' paddings static for `input_size`, activations fused
    (each only on the CPU); returns it. frozen_layers is the same for a `with` block."""
    return fuse_activations(make_static(model, input_size))


@contextlib.contextmanager
def activations_fused(model):
    """`with activations_fused(model):` fused inside a `folded(model)` block (a BUILD's frozen
    passes); the modules back after."""
    undo = _swap(model)
    try:
        yield model
    finally:
        for parent, name, module in reversed(undo):
            setattr(parent, name, module)


@contextlib.contextmanager
def frozen_layers(model, input_size):
    """`with frozen_layers(model, input_size):` a BUILD's no-grad passes through its frozen
    network (linear's embeddings, top's activations) with batch norms folded, 'SAME' paddings
    static for `input_size` and activations fused; the modules back after."""
    with folded(model), static_padding(model, input_size), activations_fused(model):
        yield model

"""Fine-tuning's depthwise convolutions with a kernel over 3x3: their weight gradient in fp32
on a CPU that trains in bf16.

oneDNN's bf16 kernel for a depthwise convolution's weight gradient is slow for kernels over
3x3 on the CPUs measured (a 2-core EPYC with AVX512-BF16, torch 2.14: Lite0's 5x5 layers
2-6x slower than the same gradient in fp32, 7x7 1.3-1.5x; 3x3 and the input's gradient are
faster in bf16), and Lite0's 5x5 layers were half of a fine-tuning step's backward pass
(BENCHMARKS.md). Such a layer keeps bf16 for its forward pass and its input's gradient, and
computes its weight's gradient in fp32 from the same bf16 input and output gradient: the
arithmetic of the bf16 step, with a more precise sum.

`fp32_weight_grads(model)`: for the length of a `with` block; the modules' own forward after.
"""

import contextlib
import functools

import torch
import torch.nn.functional as F

from pixql.ml.runtime import cpu_autocast_dtype

SLOW_KERNEL = 3  # kernels larger than this (per side) take the fp32 weight gradient


class _DepthwiseConv(torch.autograd.Function):
    """F.conv2d under autocast's dtype; backward: the input's gradient in that dtype, the
    weight's (and bias's) in fp32."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, groups):
        dtype = cpu_autocast_dtype() or x.dtype
        with torch.autocast("cpu", enabled=False):
            x, w = x.to(dtype), weight.to(dtype)
            ctx.save_for_backward(x, w)
            ctx.conv = (stride, padding, dilation, groups)
            ctx.dtypes = (weight.dtype, None if bias is None else bias.dtype)
            return F.conv2d(x, w, None if bias is None else bias.to(dtype), stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, grad):
        x, w = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conv
        weight_dtype, bias_dtype = ctx.dtypes
        args = (stride, padding, dilation, False, [0, 0], groups)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.convolution_backward(grad, x, w, None, *args, [True, False, False])[0]
        if ctx.needs_input_grad[1]:
            grad_w = torch.ops.aten.convolution_backward(
                grad.float(), x.float(), w.float(), None, *args, [False, True, False])[1].to(weight_dtype)
        if bias_dtype is not None and ctx.needs_input_grad[2]:
            grad_b = grad.float().sum((0, 2, 3)).to(bias_dtype)
        return grad_x, grad_w, grad_b, None, None, None, None


def _slow(module):
    return (module.groups > 1 and module.groups == module.in_channels and max(module.kernel_size) > SLOW_KERNEL
            and module.padding_mode == "zeros" and not isinstance(module.padding, str)  # 'same': no backward takes it
            and module.weight.requires_grad)


def _forward(module, pad, x):
    """The module's convolution through _DepthwiseConv, with its padding: `pad` (timm's
    `pad_same`, for a Conv2dSame) pads as TensorFlow's 'SAME' first."""
    padding = module.padding
    if pad is not None:
        x, padding = pad(x, module.kernel_size, module.stride, module.dilation), (0, 0)
    return _DepthwiseConv.apply(x, module.weight, module.bias, module.stride, padding, module.dilation,
                                module.groups)


@contextlib.contextmanager
def fp32_weight_grads(model, enabled=True):
    """`with fp32_weight_grads(model):` its depthwise convolutions with kernels over 3x3 that
    train compute their weight gradient in fp32 (the module docstring says why). Returns how
    many were swapped."""
    from timm.layers.conv2d_same import Conv2dSame
    from timm.layers.padding import pad_same

    # exactly these two classes: a subclass's forward may do more than convolve
    swapped = [m for m in model.modules() if type(m) in (torch.nn.Conv2d, Conv2dSame) and _slow(m)] if enabled else []
    for module in swapped:
        # what nn.Module.__call__ runs; the padding decided here, not at every step
        module.forward = functools.partial(_forward, module, pad_same if isinstance(module, Conv2dSame) else None)
    try:
        yield len(swapped)
    finally:
        for module in swapped:
            del module.forward

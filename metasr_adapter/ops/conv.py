"""A stride-1 convolution whose derivatives of every order run on the convolution primitives (opt-in).

**Off by default: it measured no faster.** On an AVX-512 EPYC, 2 threads, quiet machine, a second-order
MZSR meta-iteration took 13.24 s with it and 13.25 s without (fp32; bf16 7.40 against 7.17 s), although the
64x64-kernel convolution it avoids took twice the time of a backward-weights call in isolation
(``python benchmarks/bench_cpu_paths.py --threads 2 --rounds 2``, ``benchmarks/results/cpu_paths.json``).
:func:`set_primitive_derivatives` switches it on, e.g. to measure it on another CPU.

MAML's second-order meta-gradient differentiates the inner step's weight gradient. PyTorch computes that
part of the double backward (``_convolution_double_backward``) as a forward convolution of the transposed
input with the transposed output gradient as its kernel: for MZSR's 64-channel layers on 4x64x64 patches, a
64x64 kernel producing a 3x3 output, which oneDNN runs at about half the speed of its backward-weights
primitive on the same numbers (plus the copies of the transposes). TensorFlow's gradient of
``Conv2DBackpropFilter`` uses the backward primitives, as this module does.

:func:`conv2d` builds the convolution from three differentiable pieces, each written with the others:

* ``y = conv(x, w) + b``;  ``dL/dx = conv_transpose(g, w)``,  ``dL/dw = weight_grad(g, x)``;
* ``gx = conv_transpose(g, w)``: ``d/dg = conv(ggx, w)``,  ``d/dw = weight_grad(g, ggx)``;
* ``gw = weight_grad(g, x)``: ``d/dg = conv(x, ggw)``,  ``d/dx = conv_transpose(g, ggw)``;

so gradients of any order are convolutions, transposed convolutions and backward-weights calls (a
first-order backward, e.g. an adaptation step, makes the one combined call torch makes). Under
autocast the pieces compute in the autocast dtype (bf16 on CPU), as ``F.conv2d`` would. Used on CPU for
stride 1, no dilation, no groups; everything else (and tensors inside ``torch.func`` transforms, which take
only autograd Functions with a vmap rule, and code that ``torch.compile`` traces) goes to ``F.conv2d``.
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

__all__ = ["conv2d", "set_primitive_derivatives", "primitive_derivatives_enabled"]

_convolution_backward = torch.ops.aten.convolution_backward
_enabled = False


def set_primitive_derivatives(enabled: bool) -> bool:
    """Switch :func:`conv2d`'s own derivatives on or off (default: off, plain ``F.conv2d`` and torch's double
    backward, which measured as fast; ``benchmarks/bench_cpu_paths.py`` compares them). Returns the previous
    setting."""
    global _enabled
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled={enabled!r}: use True or False")
    previous, _enabled = _enabled, enabled
    return previous


def primitive_derivatives_enabled() -> bool:
    """Whether :func:`set_primitive_derivatives` switched the path on (networks then call :func:`conv2d`)."""
    return _enabled


def _functorch_wrapped(t: torch.Tensor) -> bool:
    check = getattr(torch._C._functorch, "is_functorch_wrapped_tensor", None)
    return bool(check is not None and check(t))


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    device = x.device.type
    if torch.is_autocast_enabled(device) and x.is_floating_point():
        return torch.get_autocast_dtype(device)
    return x.dtype


def conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, padding: int = 0) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, padding=padding)`` (stride 1) with convolution-primitive derivatives of
    every order on CPU (module docstring); elsewhere exactly ``F.conv2d``."""
    if (not _enabled or torch.compiler.is_compiling() or x.device.type != "cpu" or x.dim() != 4 or weight.dim() != 4 or not torch.is_grad_enabled()
            or not (x.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad))
            or _functorch_wrapped(x) or _functorch_wrapped(weight)
            or (bias is not None and _functorch_wrapped(bias))):
        return F.conv2d(x, weight, bias, padding=padding)
    return _Conv.apply(x, weight, bias, int(padding), _compute_dtype(x))


def _weight_grad(gy: torch.Tensor, x: torch.Tensor, weight_shape: tuple[int, ...], padding: int) -> torch.Tensor:
    placeholder = torch.empty(weight_shape, dtype=x.dtype, device=x.device)  # shape only
    return _convolution_backward(gy, x, placeholder, None, [1, 1], [padding, padding], [1, 1], False, [0, 0], 1,
                                 [False, True, False])[1]


class _Conv(torch.autograd.Function):
    """``y = conv(x, w) + b``."""

    @staticmethod
    def forward(x, weight, bias, padding, dtype):
        with torch.autocast(x.device.type, enabled=False):
            b = None if bias is None else bias.to(dtype)
            return F.conv2d(x.to(dtype), weight.to(dtype), b, padding=padding)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, bias, padding, dtype = inputs
        ctx.save_for_backward(x, weight)
        ctx.padding, ctx.dtype, ctx.has_bias = padding, dtype, bias is not None

    @staticmethod
    def backward(ctx, gy):
        x, weight = ctx.saved_tensors
        if not torch.is_grad_enabled():  # a first-order backward: one call computes all three, as torch's does
            mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.has_bias and ctx.needs_input_grad[2]]
            dt = ctx.dtype
            with torch.autocast(gy.device.type, enabled=False):
                gx, gw, gb = _convolution_backward(
                    gy.to(dt), x.to(dt), weight.to(dt), [weight.shape[0]] if ctx.has_bias else None, [1, 1],
                    [ctx.padding, ctx.padding], [1, 1], False, [0, 0], 1, mask)
            return gx, gw, gb, None, None
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = _InputGrad.apply(gy, weight, ctx.padding, ctx.dtype)
        if ctx.needs_input_grad[1]:
            gw = _WeightGrad.apply(gy, x, tuple(weight.shape), ctx.padding, ctx.dtype)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = gy.sum((0, 2, 3))
        return gx, gw, gb, None, None


class _InputGrad(torch.autograd.Function):
    """``gx = conv_transpose(gy, w)``: the input gradient of ``conv(x, w)``."""

    @staticmethod
    def forward(gy, weight, padding, dtype):
        with torch.autocast(gy.device.type, enabled=False):
            return F.conv_transpose2d(gy.to(dtype), weight.to(dtype), padding=padding)

    @staticmethod
    def setup_context(ctx, inputs, output):
        gy, weight, padding, dtype = inputs
        ctx.save_for_backward(gy, weight)
        ctx.padding, ctx.dtype = padding, dtype

    @staticmethod
    def backward(ctx, ggx):
        gy, weight = ctx.saved_tensors
        d_gy = d_w = None
        if ctx.needs_input_grad[0]:
            d_gy = _Conv.apply(ggx, weight, None, ctx.padding, ctx.dtype)
        if ctx.needs_input_grad[1]:
            d_w = _WeightGrad.apply(gy, ggx, tuple(weight.shape), ctx.padding, ctx.dtype)
        return d_gy, d_w, None, None


class _WeightGrad(torch.autograd.Function):
    """``gw = weight_grad(gy, x)``: the weight gradient of ``conv(x, w)`` (oneDNN's backward-weights)."""

    @staticmethod
    def forward(gy, x, weight_shape, padding, dtype):
        with torch.autocast(x.device.type, enabled=False):
            return _weight_grad(gy.to(dtype), x.to(dtype), weight_shape, padding)

    @staticmethod
    def setup_context(ctx, inputs, output):
        gy, x, weight_shape, padding, dtype = inputs
        ctx.save_for_backward(gy, x)
        ctx.padding, ctx.dtype = padding, dtype

    @staticmethod
    def backward(ctx, ggw):
        gy, x = ctx.saved_tensors
        d_gy = d_x = None
        if ctx.needs_input_grad[0]:
            d_gy = _Conv.apply(x, ggw, None, ctx.padding, ctx.dtype)
        if ctx.needs_input_grad[1]:
            d_x = _InputGrad.apply(gy, ggw, ctx.padding, ctx.dtype)
        return d_gy, d_x, None, None, None

"""A stride-1 convolution whose derivatives of every order run on the convolution primitives.

**On while second-order meta-gradients are built on CPU** (``MAMLConfig(conv_derivatives='auto')``, the default;
:func:`primitive_derivatives` switches it for a block, :func:`set_primitive_derivatives` for the process). On an
AVX-512 EPYC, 2 threads, the MZSR meta-gradient took 0.955x torch's double-backward time in fp32 and 0.982x in
bf16 (medians of 5 interleaved pairs in one process: ``python benchmarks/bench_meta_ab.py --threads 2
--pairs 5 --precisions fp32,bf16``, ``benchmarks/results/conv_derivatives_ab.json``). An earlier version of this
module measured 1.00x: its autograd Functions paid Python time on every call (``setup_context`` Functions bind
their arguments with ``inspect`` each ``apply``) and recorded Functions even in the last, graph-free backward.

MAML's second-order meta-gradient differentiates the inner step's weight gradient. PyTorch computes that
part of the double backward (``_convolution_double_backward``) as a forward convolution of the transposed
input with the transposed output gradient as its kernel: for MZSR's 64-channel layers on 4x64x64 patches, a
64x64 kernel producing a 3x3 output: 150 calls of 11.96 ms, 13 % of a fp32 meta-gradient (``python
benchmarks/profile_ops.py --threads 2 --conv-derivatives torch``, ``benchmarks/results/profile_ops_meta_fp32_torch.json``;
the same without the flag, this module's path: ``profile_ops_meta_fp32.json``). TensorFlow's gradient of
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

import contextlib
from typing import Iterator, Sequence

import torch
from torch.nn import functional as F

from . import winograd

__all__ = ["conv2d", "set_primitive_derivatives", "primitive_derivatives_enabled", "primitive_derivatives",
           "CONV_ALGORITHMS", "set_conv_algorithm", "conv_algorithm", "winograd_convolutions"]

_convolution_backward = torch.ops.aten.convolution_backward
_enabled = False
CONV_ALGORITHMS = ("direct", "winograd")
_algorithm = "direct"


def set_primitive_derivatives(enabled: bool) -> bool:
    """Switch :func:`conv2d`'s own derivatives on or off (default: off, plain ``F.conv2d`` and torch's double
    backward, which measured as fast; ``benchmarks/bench_cpu_paths.py`` compares them). Returns the previous
    setting."""
    global _enabled
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled={enabled!r}: use True or False")
    previous, _enabled = _enabled, enabled
    return previous


@contextlib.contextmanager
def primitive_derivatives(enabled: bool = True) -> Iterator[None]:
    """:func:`set_primitive_derivatives` for the duration of a ``with`` block (the previous setting comes back
    after it, also on an exception). Process-wide, like the setting itself: not for threads that build
    graphs concurrently with different wishes."""
    previous = set_primitive_derivatives(enabled)
    try:
        yield
    finally:
        set_primitive_derivatives(previous)


def set_conv_algorithm(name: str) -> str:
    """How :func:`conv2d`'s pieces compute in graphs built from now on: ``'direct'`` (default, oneDNN's primitives)
    or ``'winograd'`` (:mod:`metasr_adapter.ops.winograd` for the convolutions, input and weight gradients of fp32
    3x3 layers with >= 16 channels; about 1e-5 relative round-off). A graph keeps the algorithm it was built with
    for all its derivatives, also those taken after the setting changed. A layer's last, graph-free backward is
    one combined oneDNN call under ``'direct'`` and two Winograd calls (input, weight gradient) on the native
    backend. Returns the previous algorithm."""
    global _algorithm
    if name not in CONV_ALGORITHMS:
        raise ValueError(f"conv algorithm {name!r}: use one of {', '.join(CONV_ALGORITHMS)}")
    previous, _algorithm = _algorithm, name
    return previous


@contextlib.contextmanager
def conv_algorithm(name: str) -> Iterator[None]:
    """:func:`set_conv_algorithm` for the duration of a ``with`` block (restored after it, also on an exception)."""
    previous = set_conv_algorithm(name)
    try:
        yield
    finally:
        set_conv_algorithm(previous)


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
    return _Conv.apply(x, weight, bias, int(padding), _compute_dtype(x), _algorithm)


def _single(value: object, want: int) -> bool:
    """Whether a conv2d argument (an int or a pair) is ``want`` in both directions."""
    return value == want or (isinstance(value, (tuple, list)) and len(value) == 2 and all(v == want for v in value))


def _by_winograd_call(x: object, weight: object, bias: object, stride: object, padding: object, dilation: object,
                      groups: object) -> bool:
    """Whether an ``F.conv2d`` call can go to the native Winograd kernels: fp32 CPU tensors, 3x3, stride 1,
    padding 1 (or 'same'), no dilation or groups, channel counts that are multiples of 16, no autocast, outside
    ``torch.func`` transforms and ``torch.compile`` tracing."""
    if not (isinstance(x, torch.Tensor) and isinstance(weight, torch.Tensor)
            and (bias is None or isinstance(bias, torch.Tensor))):
        return False
    if not (_single(stride, 1) and (_single(padding, 1) or padding == "same") and _single(dilation, 1)
            and groups == 1):
        return False
    if (weight.dtype != torch.float32 or (bias is not None and bias.dtype != torch.float32)
            or torch.is_autocast_enabled("cpu")
            or torch.compiler.is_compiling() or _functorch_wrapped(x) or _functorch_wrapped(weight)
            or (bias is not None and _functorch_wrapped(bias))):
        return False
    return (winograd.supports(x, weight.shape, 1)  # fp32 CPU input, 3x3 kernel, >= 16 channels
            and winograd.native_fits(*weight.shape[:2]) and winograd.default_backend() == "native")


class _WinogradMode(torch.overrides.TorchFunctionMode):
    """Routes the ``F.conv2d`` calls that :func:`_by_winograd_call` accepts to the Winograd pieces: a
    differentiable :class:`_Conv` (derivatives of every order by Winograd) when autograd records, the native
    forward alone otherwise."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.conv2d or func is torch.conv2d:
            names = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
            call = dict(zip(names, args), **kwargs)
            call.setdefault("bias", None)
            x, weight, bias = call.get("input"), call.get("weight"), call["bias"]
            if _by_winograd_call(x, weight, bias, call.get("stride", 1), call.get("padding", 0),
                                 call.get("dilation", 1), call.get("groups", 1)):
                assert isinstance(x, torch.Tensor) and isinstance(weight, torch.Tensor)
                records = torch.is_grad_enabled() and (
                    x.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad))
                if records:
                    return _Conv.apply(x, weight, bias, 1, torch.float32, "winograd")
                return winograd.conv3x3(x, weight, bias)
        return func(*args, **kwargs)


@contextlib.contextmanager
def winograd_convolutions() -> Iterator[None]:
    """Inside the block, every fp32 CPU ``F.conv2d`` (so every ``nn.Conv2d``) that is 3x3, stride 1, padding 1,
    without dilation or groups and with channel counts that are multiples of 16 runs on the native Winograd
    kernels (:mod:`metasr_adapter.ops.winograd`), in any network: the forward, and when autograd records, its
    input and weight gradients of every order (graphs built inside keep the algorithm for backward passes run
    after the block). Other convolutions, and everything where the native kernels do not build, run unchanged.
    About 1e-5 relative round-off per convolution against the direct one. ``MetaSR(conv_algorithm='winograd')``
    adapts inside it."""
    with _WinogradMode():
        yield


def _plain(dtype: torch.dtype, *tensors: torch.Tensor) -> list[torch.Tensor]:
    """``tensors`` in ``dtype`` (no copy when they already are)."""
    return [t if t.dtype == dtype else t.to(dtype) for t in tensors]


def _nhwc_like(t: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """``t`` in NHWC when ``ref`` is (and ``t`` is not), e.g. a gradient that arrives NCHW or broadcast from a
    loss: a mix of layouts sends oneDNN and the elementwise kernels downstream to slow strided paths."""
    cl = torch.channels_last
    if ref.is_contiguous(memory_format=cl) and not ref.is_contiguous() and not t.is_contiguous(memory_format=cl):
        return t.contiguous(memory_format=cl)
    return t


class _NoAutocast:
    """Autocast off inside (the pieces cast explicitly). Entering an autocast context costs Python time on every
    call, so it is entered only when autocast is on."""

    __slots__ = ("ctx",)

    def __init__(self, device: str) -> None:
        self.ctx = torch.autocast(device, enabled=False) if torch.is_autocast_enabled(device) else None

    def __enter__(self) -> None:
        if self.ctx is not None:
            self.ctx.__enter__()

    def __exit__(self, *exc: object) -> None:
        if self.ctx is not None:
            self.ctx.__exit__(*exc)


def _by_winograd(x: torch.Tensor, weight_shape: Sequence[int], padding: int, algorithm: str,
                 transposed: bool = False) -> bool:
    """Whether a piece goes to :mod:`~metasr_adapter.ops.winograd` (``algorithm`` is ``'winograd'``, the setting
    when its graph was built, and it takes the layer; ``x`` is the piece's input in its compute dtype,
    ``weight_shape`` the OIHW shape of the weight it is given, ``transposed`` for an input gradient, whose
    convolution maps the weight's outputs to its inputs)."""
    if algorithm != "winograd":  # the default: nothing more to look at on this hot path
        return False
    return winograd.supports(x, winograd.transposed_shape(weight_shape) if transposed else weight_shape, padding)


def _run_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int,
              dtype: torch.dtype, algorithm: str) -> torch.Tensor:
    with _NoAutocast(x.device.type):
        x, weight = _plain(dtype, x, weight)
        if (_by_winograd(x, weight.shape, padding, algorithm)
                and (bias is None or winograd.default_backend() == "native")):
            return winograd.conv3x3(x, weight, None if bias is None else _plain(dtype, bias)[0])
        return F.conv2d(x, weight, None if bias is None else _plain(dtype, bias)[0], padding=padding)


def _run_input_grad(gy: torch.Tensor, weight: torch.Tensor, padding: int, dtype: torch.dtype,
                    algorithm: str) -> torch.Tensor:
    with _NoAutocast(gy.device.type):
        gy, weight = _plain(dtype, gy, weight)
        if _by_winograd(gy, weight.shape, padding, algorithm, transposed=True):
            return winograd.conv3x3_input_grad(gy, weight)
        return F.conv_transpose2d(gy, weight, padding=padding)


def _run_weight_grad(gy: torch.Tensor, x: torch.Tensor, weight_shape: tuple[int, ...], padding: int,
                     dtype: torch.dtype, algorithm: str) -> torch.Tensor:
    with _NoAutocast(x.device.type):
        gy, x = _plain(dtype, gy, x)
        if _by_winograd(x, weight_shape, padding, algorithm):
            return winograd.conv3x3_weight_grad(gy, x)
        placeholder = torch.empty(weight_shape, dtype=dtype, device=x.device)  # shape only
        return _convolution_backward(gy, x, placeholder, None, [1, 1], [padding, padding], [1, 1], False, [0, 0],
                                     1, [False, True, False])[1]


# The three pieces are old-style Functions (``forward(ctx, ...)``): ``apply`` then skips the signature binding that
# ``setup_context`` Functions pay on every call. A backward that runs without grad mode (the last differentiation,
# e.g. the meta-gradient's) calls the primitives directly instead of recording another Function.
class _Conv(torch.autograd.Function):
    """``y = conv(x, w) + b``."""

    @staticmethod
    def forward(ctx, x, weight, bias, padding, dtype, algorithm):
        ctx.save_for_backward(x, weight)
        ctx.padding, ctx.dtype, ctx.has_bias, ctx.algorithm = padding, dtype, bias is not None, algorithm
        return _run_conv(x, weight, bias, padding, dtype, algorithm)

    @staticmethod
    def backward(ctx, gy):
        x, weight = ctx.saved_tensors
        gy = _nhwc_like(gy, x)
        if not torch.is_grad_enabled():  # a first-order backward: one call computes all three, as torch's does
            mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.has_bias and ctx.needs_input_grad[2]]
            if (ctx.dtype == torch.float32 and _by_winograd(x, weight.shape, ctx.padding, ctx.algorithm)
                    and winograd.default_backend() == "native"):
                # the fused kernels beat oneDNN's combined call (module docstring of ops.winograd)
                gx = _run_input_grad(gy, weight, ctx.padding, ctx.dtype, ctx.algorithm) if mask[0] else None
                gw = (_run_weight_grad(gy, x, tuple(weight.shape), ctx.padding, ctx.dtype, ctx.algorithm)
                      if mask[1] else None)
                gb = gy.sum((0, 2, 3)) if mask[2] else None
                return gx, gw, gb, None, None, None
            with _NoAutocast(gy.device.type):
                gy, x, weight = _plain(ctx.dtype, gy, x, weight)
                gx, gw, gb = _convolution_backward(gy, x, weight, [weight.shape[0]] if ctx.has_bias else None, [1, 1],
                                                   [ctx.padding, ctx.padding], [1, 1], False, [0, 0], 1, mask)
            return gx, gw, gb, None, None, None
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = _InputGrad.apply(gy, weight, ctx.padding, ctx.dtype, ctx.algorithm)
        if ctx.needs_input_grad[1]:
            gw = _WeightGrad.apply(gy, x, tuple(weight.shape), ctx.padding, ctx.dtype, ctx.algorithm)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = gy.sum((0, 2, 3))
        return gx, gw, gb, None, None, None


class _InputGrad(torch.autograd.Function):
    """``gx = conv_transpose(gy, w)``: the input gradient of ``conv(x, w)``."""

    @staticmethod
    def forward(ctx, gy, weight, padding, dtype, algorithm):
        ctx.save_for_backward(gy, weight)
        ctx.padding, ctx.dtype, ctx.algorithm = padding, dtype, algorithm
        return _run_input_grad(gy, weight, padding, dtype, algorithm)

    @staticmethod
    def backward(ctx, ggx):
        gy, weight = ctx.saved_tensors
        ggx = _nhwc_like(ggx, gy)
        graph = torch.is_grad_enabled()
        d_gy = d_w = None
        if ctx.needs_input_grad[0]:
            d_gy = (_Conv.apply(ggx, weight, None, ctx.padding, ctx.dtype, ctx.algorithm) if graph
                    else _run_conv(ggx, weight, None, ctx.padding, ctx.dtype, ctx.algorithm))
        if ctx.needs_input_grad[1]:
            d_w = (_WeightGrad.apply(gy, ggx, tuple(weight.shape), ctx.padding, ctx.dtype, ctx.algorithm) if graph
                   else _run_weight_grad(gy, ggx, tuple(weight.shape), ctx.padding, ctx.dtype, ctx.algorithm))
        return d_gy, d_w, None, None, None


class _WeightGrad(torch.autograd.Function):
    """``gw = weight_grad(gy, x)``: the weight gradient of ``conv(x, w)`` (oneDNN's backward-weights)."""

    @staticmethod
    def forward(ctx, gy, x, weight_shape, padding, dtype, algorithm):
        ctx.save_for_backward(gy, x)
        ctx.padding, ctx.dtype, ctx.algorithm = padding, dtype, algorithm
        return _run_weight_grad(gy, x, weight_shape, padding, dtype, algorithm)

    @staticmethod
    def backward(ctx, ggw):
        gy, x = ctx.saved_tensors
        graph = torch.is_grad_enabled()
        d_gy = d_x = None
        if ctx.needs_input_grad[0]:
            d_gy = (_Conv.apply(x, ggw, None, ctx.padding, ctx.dtype, ctx.algorithm) if graph
                    else _run_conv(x, ggw, None, ctx.padding, ctx.dtype, ctx.algorithm))
        if ctx.needs_input_grad[1]:
            d_x = (_InputGrad.apply(gy, ggw, ctx.padding, ctx.dtype, ctx.algorithm) if graph
                   else _run_input_grad(gy, ggw, ctx.padding, ctx.dtype, ctx.algorithm))
        return d_gy, d_x, None, None, None, None

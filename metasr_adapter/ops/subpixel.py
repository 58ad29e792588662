"""Strided transposed convolutions as one convolution and a pixel shuffle (the sub-pixel form).

A transposed convolution with stride ``s`` writes output pixel ``s*q + r`` from input pixels near ``q`` through the
kernel taps ``k = r + padding - s*d`` only, one phase ``r`` at a time. Gathering each phase's taps into its own small
kernel turns the whole layer into an ordinary convolution with ``s*s`` times the output channels, followed by
:func:`torch.nn.functional.pixel_shuffle`. The sums are the same, only their order differs: float64 agrees with
``F.conv_transpose2d`` to ~1e-15, and on CPU oneDNN runs the convolution far faster than its transposed primitive
for IDN's 17x17, stride-2, 64-to-3-channel reconstruction layer (``benchmarks/bench_subpixel.py``).

:func:`conv_transpose2d_subpixel` is the function, :class:`SubpixelConvTranspose2d` the ``nn.ConvTranspose2d`` beside
it (the same parameters and ``state_dict``; it falls back to the transposed primitive where the sub-pixel form does
not apply), and :func:`use_subpixel_transposed_convs` switches the transposed convolutions of any network to it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["subpixel_applies", "conv_transpose2d_subpixel", "SubpixelConvTranspose2d", "use_subpixel_transposed_convs"]


def _phase_taps(kernel: int, stride: int, padding: int) -> tuple[torch.Tensor, int]:
    """``(taps, first)``: ``taps[r, j]`` is the kernel tap that phase ``r`` applies to input offset ``first + j`` (or
    ``kernel``, a zero tap, where it applies none)."""
    first = -((kernel - 1 - padding) // stride)  # ceil((padding - kernel + 1) / stride)
    last = (stride - 1 + padding) // stride
    r = torch.arange(stride).view(stride, 1)
    j = torch.arange(last - first + 1).view(1, -1)
    k = r + padding - stride * (j + first)
    return torch.where((k >= 0) & (k < kernel), k, kernel), first


def _pair(v: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def subpixel_applies(x_shape: torch.Size | tuple[int, ...], weight_shape: torch.Size | tuple[int, ...],
                     stride: tuple[int, int], padding: tuple[int, int], output_padding: tuple[int, int],
                     dilation: tuple[int, int] = (1, 1), groups: int = 1) -> bool:
    """Whether :func:`conv_transpose2d_subpixel` computes this transposed convolution: a batched 4-D input, one
    group, no dilation, the same stride on both axes, and an output exactly ``stride`` times the input size (as
    IDN's reconstruction layer has)."""
    if len(x_shape) != 4 or len(weight_shape) != 4 or groups != 1 or tuple(dilation) != (1, 1):
        return False
    if stride[0] != stride[1] or stride[0] < 1:
        return False
    return all(k + op - 2 * p == s for k, s, p, op in zip(weight_shape[2:], stride, padding, output_padding))


def conv_transpose2d_subpixel(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                              stride: int = 1, padding: int | tuple[int, int] = 0,
                              output_padding: int | tuple[int, int] = 0) -> torch.Tensor:
    """``F.conv_transpose2d(x, weight, bias, stride, padding, output_padding)`` as a convolution with ``stride²`` times
    the output channels and a pixel shuffle; differentiable in ``x``, ``weight`` and ``bias``.

    ``weight`` is the transposed convolution's (C_in, C_out, kH, kW). ValueError where the sub-pixel form does not
    apply (:func:`subpixel_applies`)."""
    st, pad, opad = _pair(stride), _pair(padding), _pair(output_padding)
    if not subpixel_applies(x.shape, weight.shape, st, pad, opad):
        raise ValueError(f"the sub-pixel form computes transposed convolutions whose output is stride times the input "
                         f"on both axes; got input {tuple(x.shape)}, weight {tuple(weight.shape)}, stride {st}, "
                         f"padding {pad}, output_padding {opad}: use F.conv_transpose2d")
    s = st[0]
    c_in, c_out, kh, kw = weight.shape
    taps_h, first_h = _phase_taps(kh, s, pad[0])
    taps_w, first_w = _phase_taps(kw, s, pad[1])
    lh, lw = taps_h.shape[1], taps_w.shape[1]
    taps_h, taps_w = taps_h.to(weight.device), taps_w.to(weight.device)
    padded = F.pad(weight, (0, 1, 0, 1))  # index kh / kw: the zero tap
    phases = padded[:, :, taps_h.view(s, 1, lh, 1), taps_w.view(1, s, 1, lw)]  # (C_in, C_out, s, s, lh, lw)
    kernel = phases.permute(1, 2, 3, 0, 4, 5).reshape(c_out * s * s, c_in, lh, lw)
    # input offsets first .. first + l - 1 around each pixel: symmetric padding, then the rows/columns it adds trimmed
    ph, pw = max(-first_h, first_h + lh - 1), max(-first_w, first_w + lw - 1)
    y = F.conv2d(x, kernel, None if bias is None else bias.repeat_interleave(s * s), padding=(ph, pw))
    h, w = x.shape[-2:]
    top, left = ph + first_h, pw + first_w
    if (top, left) != (0, 0) or y.shape[-2:] != (h, w):
        y = y[..., top:top + h, left:left + w]
    return F.pixel_shuffle(y, s)


class SubpixelConvTranspose2d(nn.ConvTranspose2d):
    """``nn.ConvTranspose2d`` computed by :func:`conv_transpose2d_subpixel` where that applies (same parameters,
    ``state_dict`` and results up to float round-off); otherwise by the transposed primitive, as its parent."""

    def forward(self, input: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        if (output_size is None and self.padding_mode == "zeros"
                and subpixel_applies(input.shape, self.weight.shape, self.stride, self.padding, self.output_padding,
                                     self.dilation, self.groups)):
            return conv_transpose2d_subpixel(input, self.weight, self.bias, self.stride, self.padding,
                                             self.output_padding)
        return super().forward(input, output_size)


def use_subpixel_transposed_convs(model: nn.Module) -> int:
    """Compute every plain ``nn.ConvTranspose2d`` of ``model`` in the sub-pixel form, in place (each becomes a
    :class:`SubpixelConvTranspose2d`: the same parameters and ``state_dict``, the transposed primitive kept where the
    form does not apply); returns how many were switched. Results change only by float round-off.

    E.g. a user's network with a strided deconvolution upsampler (FSRCNN-style) before wrapping it in ``MetaSR``."""
    switched = 0
    for module in model.modules():
        if type(module) is nn.ConvTranspose2d:
            module.__class__ = SubpixelConvTranspose2d
            switched += 1
    return switched

"""The 8-layer MZSR network (Soh et al., CVPR 2020), as the official code builds it.

``y = x + conv8(relu(conv7(... relu(conv1(x)))))``: every convolution is 3x3, stride 1,
zero padding 1, with bias; the input ``x`` is the bicubic-upsampled LR image in [0, 1] and
the output is not clipped (SPEC §1).
"""
from __future__ import annotations

import math
import re
from typing import Iterable, Mapping

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..ops.conv import conv2d, primitive_derivatives_enabled
from .contract import FrozenPrefix

__all__ = ["MZSRNet", "mzsr_state_dict_from_tf"]


class MZSRNet(nn.Module):
    """MZSR's residual CNN: ``depth`` 3x3 conv layers, ``width`` channels, global skip.

    The network never upsamples: it takes an image that was already resized to the output
    size (``upsample_input = True`` tells :class:`~metasr_adapter.MetaSR` to do that).
    """

    upsample_input: bool = True

    @property
    def receptive_radius(self) -> int:
        """Input pixels on each side that reach one output pixel: one per 3x3 layer (tiling overlap)."""
        return self.depth

    def __init__(self, channels: int = 3, width: int = 64, depth: int = 8) -> None:
        super().__init__()
        if depth < 2:
            raise ValueError(f"depth={depth}: MZSRNet needs at least 2 layers (first and last conv)")
        self.depth = depth
        for k in range(1, depth + 1):
            cin = channels if k == 1 else width
            cout = channels if k == depth else width
            self.add_module(f"conv{k}", nn.Conv2d(cin, cout, 3, stride=1, padding=1, bias=True))
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """TF1.8 ``variance_scaling_initializer()`` (SPEC §1): truncated normal at ±2σ,
        σ = sqrt(1 / fan_in), zero biases."""
        with torch.no_grad():
            for k in range(1, self.depth + 1):
                conv: nn.Conv2d = getattr(self, f"conv{k}")
                fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
                std = math.sqrt(1.0 / fan_in)
                nn.init.trunc_normal_(conv.weight, std=std, a=-2 * std, b=2 * std, generator=generator)
                conv.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for k in range(1, self.depth):
            # in place: the convolution's backward needs its input, not its output, so the ReLU may overwrite
            # it (one activation less to allocate and write; bitwise the same result)
            h = F.relu(self._conv(k, h), inplace=True)
        return x + self._conv(self.depth, h)

    def frozen_prefix(self, adapted: Iterable[str]) -> FrozenPrefix | None:
        """When only layers ``k..depth`` adapt (``k > 1``): the cut before layer ``k``. The prefix returns the
        input (for the global skip) and layer ``k - 1``'s activation; the suffix runs the rest on the given
        weights. None when a name is not a convolution's or layer 1 adapts."""
        layers = []
        for n in adapted:
            m = re.fullmatch(r"conv(\d+)\.(weight|bias)", n)
            if m is None:
                return None
            layers.append(int(m.group(1)))
        if not layers or min(layers) <= 1:
            return None
        first = min(layers)

        def run(h: torch.Tensor, weights: Mapping[str, torch.Tensor], k: int) -> torch.Tensor:
            w, b = weights.get(f"conv{k}.weight"), weights.get(f"conv{k}.bias")
            layer: nn.Conv2d = getattr(self, f"conv{k}")
            w = layer.weight if w is None else w
            b = layer.bias if b is None else b
            if primitive_derivatives_enabled():
                return conv2d(h, w, b, padding=layer.padding[0])
            return F.conv2d(h, w, b, padding=layer.padding)

        def prefix(x: torch.Tensor, weights: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
            h = x
            for k in range(1, first):
                h = F.relu(run(h, weights, k), inplace=True)
            return x, h

        def suffix(state: tuple[torch.Tensor, torch.Tensor], weights: Mapping[str, torch.Tensor]) -> torch.Tensor:
            x, h = state
            for k in range(first, self.depth):
                h = F.relu(run(h, weights, k), inplace=True)
            return x + run(h, weights, self.depth)

        return FrozenPrefix(prefix, suffix)

    def _conv(self, k: int, h: torch.Tensor) -> torch.Tensor:
        """Layer ``k``'s convolution: the module's own call, or, while
        :func:`metasr_adapter.ops.conv.primitive_derivatives` is on (second-order meta-training on CPU, by
        default), :func:`~metasr_adapter.ops.conv.conv2d` with its double backward on convolution primitives.
        A layer with forward hooks (or global ones) is always called as a module, so the hooks run."""
        layer: nn.Conv2d = getattr(self, f"conv{k}")
        if primitive_derivatives_enabled() and not _has_forward_hooks(layer):
            return conv2d(h, layer.weight, layer.bias, padding=layer.padding[0])
        return layer(h)


def _has_forward_hooks(layer: nn.Module) -> bool:
    """Whether calling ``layer`` as a module would run forward (pre-)hooks, its own or global ones."""
    from torch.nn.modules import module as module_mod

    return bool(layer._forward_hooks or layer._forward_pre_hooks or module_mod._global_forward_hooks
                or module_mod._global_forward_pre_hooks)


_TF_CONV = re.compile(r"^(.*?)conv1/kernel$")


def official_tf_prefix(names: Iterable[str]) -> str | None:
    """The variable-name prefix (``'MODEL/'``) when ``names`` look like the official MZSR TensorFlow
    checkpoint (``PREFIX/convK/{kernel,bias}``), else None."""
    for n in names:
        m = _TF_CONV.match(n)
        if m and "." not in n:
            return m.group(1)
    return None


def official_tf_names(names: Iterable[str], prefix: str) -> list[str]:
    """The variables of ``names`` that :func:`mzsr_state_dict_from_tf` reads (convolutions, no slots)."""
    return [n for n in names if re.fullmatch(re.escape(prefix) + r"conv\d+/(kernel|bias)", n)]


def mzsr_state_dict_from_tf(arrays: Mapping[str, np.ndarray], prefix: str = "MODEL/") -> dict[str, torch.Tensor]:
    """Map official ``MODEL/convK/{kernel,bias}`` arrays (kernels HWIO) onto MZSRNet's state dict.

    Extra entries (Adam slots, ``global_step``...) are ignored; a missing layer raises ``KeyError``
    naming it.
    """
    state: dict[str, torch.Tensor] = {}
    k = 1
    while f"{prefix}conv{k}/kernel" in arrays:
        kernel = np.asarray(arrays[f"{prefix}conv{k}/kernel"])
        if kernel.ndim != 4:
            raise ValueError(f"{prefix}conv{k}/kernel has shape {kernel.shape}; expected 4-D HWIO")
        bias_key = f"{prefix}conv{k}/bias"
        if bias_key not in arrays:
            raise KeyError(f"checkpoint has {prefix}conv{k}/kernel but no {bias_key}")
        state[f"conv{k}.weight"] = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)).astype(np.float32))
        state[f"conv{k}.bias"] = torch.from_numpy(np.asarray(arrays[bias_key], dtype=np.float32).copy())
        k += 1
    if not state:
        raise KeyError(f"no '{prefix}convK/kernel' tensors found; keys look like {sorted(arrays)[:5]}")
    return state

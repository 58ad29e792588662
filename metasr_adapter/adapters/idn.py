"""IDN, the Information Distillation Network (Hui, Wang and Gao, CVPR 2018), built from the paper.

A feature block (two 3x3 convolutions), ``num_blocks`` distillation blocks and a 17x17 transposed
convolution that predicts the residual over a bicubic upsampling of the input. Each distillation
block is an *enhancement unit* (two 3-layer stacks; a ``1/s`` slice of the first stack's output is
concatenated to the block input, the rest feeds the second stack, whose output is added) followed
by a 1x1 *compression unit* back to ``num_feat`` channels. All activations are LeakyReLU(0.05); the
middle layer of each stack is a 4-group convolution.

This is the architecture MLSR meta-trains (Park et al., ECCV 2020, "IDN-ML"). It takes the LR
image (``upsample_input = False``) in [0, 1] and returns ``scale`` times its size. With the defaults
it has 590,915 parameters at any scale; comparison tables in later papers quote about 0.55-0.6 M for
IDN, and layer details the paper leaves open (biases, the compression unit's activation) may differ
from the authors' Caffe release. No official PyTorch weights exist, so the parameter names are this
module's own.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..ops.subpixel import SubpixelConvTranspose2d

__all__ = ["IDN"]

_SLOPE = 0.05


def _conv(cin: int, cout: int, k: int = 3, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups)


def _stack(*convs: nn.Conv2d) -> nn.Sequential:
    layers: list[nn.Module] = []
    for conv in convs:
        layers += [conv, nn.LeakyReLU(_SLOPE)]
    return nn.Sequential(*layers)


class _DistillationBlock(nn.Module):
    """Enhancement unit (D3 = ``feat``, D = ``diff``, slice 1/``s``) + 1x1 compression unit."""

    def __init__(self, feat: int, diff: int, s: int, groups: int) -> None:
        super().__init__()
        self.keep = feat // s
        rest = feat - self.keep
        self.upper = _stack(_conv(feat, feat - diff), _conv(feat - diff, feat - 2 * diff, groups=groups),
                            _conv(feat - 2 * diff, feat))
        self.lower = _stack(_conv(rest, feat), _conv(feat, feat - diff, groups=groups),
                            _conv(feat - diff, feat + self.keep))
        self.compress = _stack(_conv(feat + self.keep, feat, k=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up = self.upper(x)
        distilled, rest = up[:, : self.keep], up[:, self.keep :]
        enhanced = torch.cat([x, distilled], dim=1) + self.lower(rest)
        return self.compress(enhanced)


class IDN(nn.Module):
    """Information Distillation Network (defaults: the paper's 4 blocks, 64 channels, d = 16, s = 4).

    ``bicubic``: how the skip path upsamples the input: ``'torch'`` (``F.interpolate``, fast) or
    ``'matlab'`` (MATLAB-exact, as in this package's degradations; slower).
    """

    upsample_input: bool = False

    def __init__(
        self,
        scale: int = 2,
        num_feat: int = 64,
        num_blocks: int = 4,
        diff: int = 16,
        slice_factor: int = 4,
        groups: int = 4,
        channels: int = 3,
        bicubic: str = "torch",
    ) -> None:
        super().__init__()
        if int(scale) != scale or scale < 2:
            raise ValueError(f"IDN scale={scale!r}: an integer factor >= 2")
        if bicubic not in ("torch", "matlab"):
            raise ValueError(f"IDN bicubic={bicubic!r}: use 'torch' or 'matlab'")
        if not (0 < 2 * diff < num_feat) or num_feat % slice_factor:
            raise ValueError(f"IDN num_feat={num_feat}, diff={diff}, slice_factor={slice_factor}: need "
                             "0 < 2·diff < num_feat and num_feat divisible by slice_factor")
        grouped = (num_feat - diff, num_feat - 2 * diff, num_feat)  # in/out channels of the grouped layers
        if groups < 1 or any(c % groups for c in grouped):
            raise ValueError(f"IDN groups={groups} must divide the grouped layers' channels {grouped}")
        self.scale = int(scale)
        self.bicubic = bicubic
        self.features = _stack(_conv(channels, num_feat), _conv(num_feat, num_feat))
        self.blocks = nn.Sequential(
            *(_DistillationBlock(num_feat, diff, slice_factor, groups) for _ in range(num_blocks)))
        # 17x17 deconvolution; output_padding makes the output exactly scale x the input size. Computed as a
        # convolution and a pixel shuffle (ops.subpixel: the same sums, 1.6-3.6x faster on CPU), the same parameters
        self.reconstruct = SubpixelConvTranspose2d(num_feat, channels, 17, stride=self.scale, padding=8,
                                                   output_padding=self.scale - 1)

    @property
    def receptive_radius(self) -> int:
        """LR pixels on each side that one output pixel reads: 2 (feature convolutions) + 6 per distillation
        block (two 3-layer 3x3 stacks in series) + 4 (the 17x17 stride-s transposed convolution reaches 8
        output pixels, ceil(8/s) input pixels at s = 2) + 2 (the bicubic skip), rounded up for larger s."""
        return 2 + 6 * len(self.blocks) + -(-8 // self.scale) + 2

    def _upsample(self, x: torch.Tensor) -> torch.Tensor:
        size = (x.shape[-2] * self.scale, x.shape[-1] * self.scale)
        if self.bicubic == "matlab":
            from ..ops.degrade import imresize

            return imresize(x, float(self.scale), output_shape=size)
        return F.interpolate(x, size=size, mode="bicubic", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._upsample(x) + self.reconstruct(self.blocks(self.features(x)))

"""RCAN (Zhang et al., ECCV 2018): residual groups of channel-attention blocks, then a sub-pixel upsampler.

The parameter names follow BasicSR's ``RCAN`` arch (``conv_first``, ``body.G.residual_group.B.rcab...``,
``conv_after_body``, ``upsample.K``, ``conv_last``), so BasicSR checkpoints load directly
(``param_key='params'`` or ``'params_ema'``). Checkpoints of the authors' own PyTorch code (``head.0``,
``body.G.body.B.body...``, ``tail...``, ``sub_mean``/``add_mean``) are converted by
:func:`rcan_state_dict_from_official`, which :func:`~metasr_adapter.io.weights.load_weights` applies on
its own when it sees those names.

Input and output are RGB in [0, 1]; the network takes the LR image itself (``upsample_input =
False``) and returns ``scale`` times its size. The DIV2K mean is subtracted inside, as both
reference implementations do, with features computed on the 0-255 range.
"""
from __future__ import annotations

import math
import re
from typing import Mapping, Sequence

import torch
from torch import nn

__all__ = ["RCAN", "rcan_state_dict_from_official", "looks_like_official_rcan", "DIV2K_RGB_MEAN"]

#: mean RGB of DIV2K's 800 training images, used by RCAN (and EDSR) to centre their input
DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)


class _ChannelAttention(nn.Module):
    """Squeeze-and-excitation gate: global average, 1x1 down, ReLU, 1x1 up, sigmoid; scales channels."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        # index 0 is the pooling, so the two convolutions sit at 1 and 3 (BasicSR's names)
        self.attention = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1), nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.attention(x)


class _RCAB(nn.Module):
    """Residual channel-attention block: ``x + res_scale · CA(conv(relu(conv(x))))``."""

    def __init__(self, channels: int, reduction: int, res_scale: float) -> None:
        super().__init__()
        self.res_scale = float(res_scale)
        self.rcab = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1), _ChannelAttention(channels, reduction),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.res_scale * self.rcab(x)


class _ResidualGroup(nn.Module):
    """``blocks`` RCABs and a 3x3 convolution, with a skip around all of them."""

    def __init__(self, channels: int, blocks: int, reduction: int, res_scale: float) -> None:
        super().__init__()
        self.residual_group = nn.Sequential(*(_RCAB(channels, reduction, res_scale) for _ in range(blocks)))
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(self.residual_group(x))


def _upsampler(scale: int, channels: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    if scale & (scale - 1) == 0:  # a power of two: one conv + x2 pixel shuffle per octave
        for _ in range(int(math.log2(scale))):
            layers += [nn.Conv2d(channels, 4 * channels, 3, padding=1), nn.PixelShuffle(2)]
    elif scale == 3:
        layers += [nn.Conv2d(channels, 9 * channels, 3, padding=1), nn.PixelShuffle(3)]
    else:
        raise ValueError(f"RCAN scale={scale}: use 2, 3, 4 or 8 (a power of two or 3)")
    return nn.Sequential(*layers)


class RCAN(nn.Module):
    """Residual Channel Attention Network.

    The defaults are the paper's full model (10 groups x 20 blocks, 64 channels, about 15.4 M
    parameters at x2); BasicSR's release uses ``num_block=16``. Smaller settings
    (``num_group=2, num_block=4``) make a light network for CPU experiments.
    """

    upsample_input: bool = False
    #: channel attention pools over the whole image: a tile's output depends on the entire input
    global_context: bool = True

    def __init__(
        self,
        scale: int = 2,
        num_feat: int = 64,
        num_group: int = 10,
        num_block: int = 20,
        squeeze_factor: int = 16,
        res_scale: float = 1.0,
        img_range: float = 255.0,
        rgb_mean: Sequence[float] = DIV2K_RGB_MEAN,
        channels: int = 3,
    ) -> None:
        super().__init__()
        if int(scale) != scale or scale < 2:
            raise ValueError(f"RCAN scale={scale!r}: an integer factor >= 2 (2, 3, 4, 8)")
        for name, v in (("num_feat", num_feat), ("num_group", num_group), ("num_block", num_block),
                        ("squeeze_factor", squeeze_factor)):
            if int(v) != v or v < 1:
                raise ValueError(f"RCAN {name}={v!r} must be a positive integer")
        if len(rgb_mean) != channels:
            raise ValueError(f"rgb_mean has {len(rgb_mean)} values for {channels} channels")
        self.scale = int(scale)
        self.img_range = float(img_range)
        self.register_buffer("mean", torch.tensor([float(m) for m in rgb_mean]).view(1, channels, 1, 1),
                             persistent=False)
        self.conv_first = nn.Conv2d(channels, num_feat, 3, padding=1)
        self.body = nn.Sequential(
            *(_ResidualGroup(num_feat, num_block, squeeze_factor, res_scale) for _ in range(num_group)))
        self.conv_after_body = nn.Conv2d(num_feat, num_feat, 3, padding=1)
        self.upsample = _upsampler(self.scale, num_feat)
        self.conv_last = nn.Conv2d(num_feat, channels, 3, padding=1)

    def convert_state_dict(self, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Used by :func:`~metasr_adapter.io.weights.load_weights`: official-layout keys are renamed."""
        return rcan_state_dict_from_official(state) if looks_like_official_rcan(list(state)) else dict(state)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = self.mean.to(x.dtype)
        feat = self.conv_first((x - mean) * self.img_range)
        feat = feat + self.conv_after_body(self.body(feat))
        return self.conv_last(self.upsample(feat)) / self.img_range + mean


_OFFICIAL_RULES: tuple[tuple[str, str], ...] = (
    (r"^head\.0\.", "conv_first."),
    (r"^body\.(\d+)\.body\.(\d+)\.body\.3\.conv_du\.0\.", r"body.\1.residual_group.\2.rcab.3.attention.1."),
    (r"^body\.(\d+)\.body\.(\d+)\.body\.3\.conv_du\.2\.", r"body.\1.residual_group.\2.rcab.3.attention.3."),
    (r"^body\.(\d+)\.body\.(\d+)\.body\.([02])\.", r"body.\1.residual_group.\2.rcab.\3."),
    (r"^tail\.0\.(\d+)\.", r"upsample.\1."),
    (r"^tail\.1\.", "conv_last."),
)


def rcan_state_dict_from_official(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a state dict of the RCAN authors' PyTorch code (EDSR-PyTorch layout) to :class:`RCAN`'s.

    ``body.G.body.N`` with ``N`` = blocks per group is the group's closing convolution and
    ``body.G`` with ``G`` = number of groups is the convolution after the body. The fixed mean-shift
    layers ``sub_mean``/``add_mean`` are dropped (the mean is built in). A key that fits no rule
    raises ``KeyError`` naming it.
    """
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    groups = {int(m.group(1)) for k in state if (m := re.match(r"^body\.(\d+)\.body\.", k))}
    blocks = {int(m.group(2)) for k in state if (m := re.match(r"^body\.(\d+)\.body\.(\d+)\.body\.", k))}
    n_groups = max(groups) + 1 if groups else 0
    n_blocks = max(blocks) + 1 if blocks else 0
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith(("sub_mean.", "add_mean.")):
            continue
        new = None
        for pattern, repl in _OFFICIAL_RULES:
            if re.match(pattern, key):
                new = re.sub(pattern, repl, key)
                break
        if new is None:
            m = re.match(r"^body\.(\d+)\.body\.(\d+)\.(weight|bias)$", key)
            if m and int(m.group(2)) == n_blocks:
                new = f"body.{m.group(1)}.conv.{m.group(3)}"
            m = re.match(r"^body\.(\d+)\.(weight|bias)$", key)
            if m and int(m.group(1)) == n_groups:
                new = f"conv_after_body.{m.group(2)}"
        if new is None:
            raise KeyError(f"{key!r} is not a key of the official RCAN layout (head/body/tail/sub_mean/add_mean)")
        out[new] = value
    return out


def looks_like_official_rcan(keys: Sequence[str]) -> bool:
    """True for state-dict keys in the RCAN authors' layout (``head.0.weight``, ``tail.1.weight``...)."""
    ks = set(keys)
    strip = {k[len("module."):] if k.startswith("module.") else k for k in ks}
    return "head.0.weight" in strip and "tail.1.weight" in strip

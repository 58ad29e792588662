"""Any community SR checkpoint that spandrel recognises (RCAN, SwinIR, HAT, ESRGAN, … 40+ architectures):
``load_spandrel_model("4x_model.pth")``, ``load_model("spandrel", "x.safetensors")`` or ``--arch spandrel``.

spandrel (PyPI ``spandrel``; it needs torchvision) detects the architecture and its hyper-parameters
from the state dict alone and returns a descriptor. :class:`SpandrelNetwork` turns that descriptor
into the adapter contract of this package: the network takes the LR image (``upsample_input =
False``) in [0, 1], its ``scale`` is the descriptor's, inputs are padded (replicate) to the size the
architecture requires and the output is cut back, and an architecture whose tiling spandrel
discourages is marked ``global_context`` so that :class:`~metasr_adapter.MetaSR` never tiles it. No
receptive radius is declared (spandrel does not give one), so tiling any spandrel network needs an
explicit ``tile_overlap=`` and is then approximate: spandrel calls RCAN tileable, although its channel
attention sees the whole image.
"""
from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["SpandrelNetwork", "load_spandrel_model"]


def _import_spandrel():
    try:
        import spandrel
    except ImportError as exc:  # spandrel or torchvision missing
        raise ImportError(f"--arch spandrel needs spandrel and torchvision ({exc}): pip install spandrel torchvision") from exc
    return spandrel


class SpandrelNetwork(nn.Module):
    """A spandrel :class:`ImageModelDescriptor` as an SR network for :class:`~metasr_adapter.MetaSR`.

    Attributes: ``scale``, ``in_channels``, ``architecture`` (spandrel's name), ``multiple_of`` and
    ``minimum`` (input size constraints, met by padding), ``global_context``.
    """

    upsample_input = False

    def __init__(self, descriptor: Any) -> None:
        super().__init__()
        spandrel = _import_spandrel()
        if not isinstance(descriptor, spandrel.ImageModelDescriptor):
            raise ValueError(f"spandrel describes this checkpoint as {type(descriptor).__name__}, not an image model")
        if descriptor.purpose not in ("SR", "FaceSR", "Restoration"):
            raise ValueError(f"spandrel says this {descriptor.architecture.name} checkpoint is for "
                             f"{descriptor.purpose!r}, not super-resolution")
        self.net = descriptor.model
        self._call_fn = descriptor._call_fn  # how spandrel calls this architecture (most: net(x))
        self.scale = int(descriptor.scale)
        self.in_channels = int(descriptor.input_channels)
        self.architecture = descriptor.architecture.name
        req = descriptor.size_requirements
        self.multiple_of, self.minimum, self.square = int(req.multiple_of), int(req.minimum), bool(req.square)
        self.global_context = descriptor.tiling != spandrel.ModelTiling.SUPPORTED

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        th, tw = max(h, self.minimum), max(w, self.minimum)
        if self.square:
            th = tw = max(th, tw)
        m = self.multiple_of
        th, tw = -(-th // m) * m, -(-tw // m) * m
        if (th, tw) != (h, w):
            x = F.pad(x, (0, tw - w, 0, th - h), mode="replicate")
        y = self._call_fn(self.net, x)
        return y[..., : h * self.scale, : w * self.scale]

    def extra_repr(self) -> str:
        return f"architecture={self.architecture!r}, scale={self.scale}, multiple_of={self.multiple_of}"


def load_spandrel_model(path: str | os.PathLike) -> SpandrelNetwork:
    """The network in ``path`` (``.pth``/``.pt``/``.ckpt``/``.safetensors``) as spandrel detects it."""
    spandrel = _import_spandrel()
    try:
        descriptor = spandrel.ModelLoader().load_from_file(str(path))
    except spandrel.UnsupportedModelError as exc:
        raise ValueError(f"spandrel does not recognise the architecture in {path} ({exc}); build the network "
                         "yourself and pass it to MetaSR, or use --arch basicsr with its options file") from exc
    return SpandrelNetwork(descriptor)

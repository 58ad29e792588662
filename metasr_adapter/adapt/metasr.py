"""``MetaSR``: wrap any PyTorch SR network for MZSR-style test-time adaptation.

``MetaSR(model, scale).adapt(lr_img, kernel, steps)`` takes a few self-supervised gradient
steps on the LR image and its downscaled "son" (SPEC §5) and returns the SR image. The
wrapped model is never modified: adaptation runs on a private copy of its parameters
(``torch.func.functional_call``), so it is unchanged after ``adapt`` returns or fails. Each step is
:func:`~metasr_adapter.adapt.step.sgd_step`'s, the one meta-training's inner loop takes.
:func:`load_pretrained` gives a MetaSR with bundled weights. One image's session (fast weights, son, steps) is
:class:`~metasr_adapter.adapt.session.Adaptation`, re-exported here.

``kernel="estimate"`` is resolved by the kernel estimators, a layer above this one, through
:mod:`metasr_adapter.resolvers` (the package's ``__init__`` registers them).
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from ..adapters.contract import eval_mode, fit_output, takes_upsampled_input, tiled_forward
from ..adapters.contract import tile_overlap as tile_overlap_for
from ..ops.degrade import imresize
from ..devices import resolve_device, same_device
from ..errors import check_choice
from ..ops.degradation_spec import DegradationSpec
from ..ops.kernels import KernelSpec, resolve_kernel
from ..ops import winograd
from ..ops.conv import winograd_convolutions
from ..ops.losses import get_loss
from ..precision import PRECISIONS, autocast, bf16_supported, resolve_channels_last
from ..resolvers import kernel_resolver, kernel_resolver_names
from .schedules import PerParameterSchedule, Schedule, get_schedule
from .session import AdaptInfo, AdaptStep, Adaptation
from .step import select_parameters

__all__ = ["MetaSR", "Adaptation", "AdaptInfo", "AdaptStep", "load_pretrained"]

#: LR pixels on each side that one bicubic-upsampled pixel reads (the cubic kernel spans ±2), plus one
_BICUBIC_SUPPORT = 3


def _infer_in_channels(model: nn.Module) -> int:
    ch = getattr(model, "in_channels", None) or getattr(model, "num_in_ch", None)
    if isinstance(ch, int):
        return ch
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    return 3


def _functional_forward(model: nn.Module, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    return functional_call(model, params, (x,))


def _check_rates_cover(schedule: Schedule, names: Sequence[str]) -> None:
    """Learned per-parameter rates must name every adapted parameter (checked once, not at each step)."""
    rates = getattr(schedule, "rates", None)
    if isinstance(schedule, PerParameterSchedule) and rates is not None:
        missing = [n for n in names if n not in rates]
        if missing:
            raise ValueError(f"the learned learning rates cover {len(rates)} parameter tensors but not {missing[:3]}"
                             f"{' …' if len(missing) > 3 else ''}; adapt only the parameters they were learned for "
                             "(adapt_params=), or pass schedule=/lr= for one rate for all")


class MetaSR:
    """Test-time adaptation wrapper around a pretrained (ideally meta-trained) SR network.

    ``scale``, ``schedule``, ``loss`` and ``adapt_params`` default to what the weights were trained for when
    the model came from :func:`~metasr_adapter.load_model` (its ``metasr_weights_metadata``); explicit
    arguments win. Without such metadata: x2 (or the model's own integer ``scale``), ``mzsr_direct``, L1,
    every trainable parameter.

    Args:
        model: any ``nn.Module`` mapping an image batch to an SR batch, values in [0, 1].
        scale: the SR factor.
        upsample_input: whether the network takes the bicubic-upsampled image (MZSR, SRCNN,
            VDSR) rather than the LR image (RCAN, EDSR, SwinIR). Defaults to the model's
            ``upsample_input`` attribute, else ``False``.
        schedule: default adaptation learning rate: a preset name (``mzsr_direct``,
            ``mzsr_bicubic``, ``mzsr_multiscale``, ``mzsr_x4``), a number, or a callable.
        precision: ``"fp32"`` (exact) or ``"bf16"`` (autocast + channels_last; fast on GPUs
            and CPUs with AMX/AVX512-BF16).
        device: where adaptation runs; defaults to the model's device.
        loss: the self-supervised loss between ``f(son)`` and the LR image: ``'l1'`` (MZSR, ZSSR;
            the default), ``'l2'`` (MLSR) or a callable ``loss(output, target)``.
        tile / tile_overlap: compute the SR image in tiles of ``tile``² network-input pixels (bounded
            memory for large images); the overlap defaults to the network's ``receptive_radius``, so
            the result equals the untiled one. Networks with global context (RCAN) are refused.
            Adaptation steps still see the whole image, unless ``max_pixels`` is set.
        compile: run the network through ``torch.compile`` (adaptation steps and SR); compiling takes
            tens of seconds per input size, so it pays only over many steps or images.
        max_pixels: an LR pixel budget for the adaptation steps: a larger image trains each step on an
            aligned random crop of about that many pixels (the son and the LR image cut at the same
            place), as ZSSR does. Memory then follows the budget, not the image; the trade-off is that
            each step sees part of the image, and crop borders are zero-padded inside the network.
        adapt_params: fnmatch patterns of the parameters adaptation may change (meta-training's
            ``adapt_params``; saved weights carry it). None = every parameter with
            ``requires_grad=True``: frozen parameters stay frozen unless patterns name them.
        channels_last: NHWC layout in the adaptation steps; None (default) = with bf16, and in fp32 where
            :func:`~metasr_adapter.precision.channels_last_trains_faster` says so (CPUs with AVX-512). The
            arithmetic is the same; float round-off differs (SR outputs within one 8-bit level).
        back_projection: back-projection iterations (SPEC §7) that finish every SR image made with a given
            kernel, unless a call says otherwise; None = the weights' own (``back_projection`` in their metadata,
            e.g. 4 for ``mzsr_x2_direct_lslr_v3``), else 0 (the official code's default). Not applied to estimated
            kernels (blind mode) by default: a wrong kernel makes back-projection harmful.
        conv_algorithm: how the network's fp32 3x3 convolutions (stride 1, padding 1, channel counts that are
            multiples of 16) compute on CPU, in the adaptation steps and the SR output: ``'direct'`` (default,
            oneDNN; the exact-parity path) or ``'winograd'`` (the package's native Winograd kernels,
            :func:`metasr_adapter.ops.conv.winograd_convolutions`: about half the time of an MZSR adaptation step
            on an AVX-512 EPYC, 1e-5 relative round-off per convolution; README, speed section). ``'auto'``:
            ``'winograd'`` in fp32 on CPUs with AVX-512 where the kernels build (a C++ compiler) and without
            ``compile``, else ``'direct'`` (:func:`metasr_adapter.ops.winograd.chosen_by_auto`). Any network: IDN's,
            RCAN's and a user's ``nn.Conv2d`` layers qualify as MZSRNet's do.
    """

    def __init__(
        self,
        model: nn.Module,
        scale: float | None = None,
        *,
        upsample_input: bool | None = None,
        schedule: str | float | Schedule | None = None,
        precision: str = "fp32",
        device: str | torch.device | None = None,
        loss: str | Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        adapt_params: Sequence[str] | None = None,
        tile: int | None = None,
        tile_overlap: int | None = None,
        max_pixels: int | None = None,
        compile: bool = False,
        channels_last: bool | None = None,
        back_projection: int | None = None,
        conv_algorithm: str = "direct",
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        #: what the loaded weights were trained for (``load_model`` records it); the defaults below come from it
        self.weights_metadata: dict = dict(getattr(model, "metasr_weights_metadata", None) or {})
        meta = self.weights_metadata
        if scale is None:
            own = getattr(model, "scale", None)
            scale = float(meta.get("scale") or (own if isinstance(own, int) and own > 1 else 2))
        if schedule is None:
            schedule = meta.get("schedule") or "mzsr_direct"
        if loss is None:
            loss = meta.get("loss") or "l1"
        if adapt_params is None and meta.get("adapt_params") is not None:
            adapt_params = meta["adapt_params"]
        self.loss_fn = get_loss(loss)
        if not (isinstance(scale, (int, float)) and scale > 1):
            raise ValueError(f"scale={scale!r}: MetaSR needs an upscaling factor > 1, e.g. 2 or 4")
        if precision not in PRECISIONS:
            raise ValueError(f"precision={precision!r}; use one of {PRECISIONS}")
        self.model = model
        self.scale = float(scale)
        self.upsample_input = takes_upsampled_input(model, upsample_input)
        self.schedule = get_schedule(schedule)
        self.precision = precision
        first = next(iter(model.parameters()), None)
        if first is None:
            raise ValueError("model has no parameters to adapt")
        self.device = resolve_device(device) if device is not None else first.device
        self.dtype = first.dtype if first.is_floating_point() else torch.float32
        if not same_device(self.device, first.device):
            raise ValueError(f"model is on {first.device} but device={str(device)!r}; move it with model.to(device)")
        self.device = first.device
        #: NHWC images and weights in the adaptation steps (bf16; fp32 where measured faster, see
        #: :func:`~metasr_adapter.precision.channels_last_trains_faster`); the same arithmetic either way
        self.channels_last = resolve_channels_last(channels_last, self.device, precision)
        #: names of the parameters that adaptation changes (the same rule as meta-training's adapt_params)
        self.adapt_params = None if adapt_params is None else list(adapt_params)
        self.adapt_names = select_parameters(model, self.adapt_params, include_frozen=adapt_params is not None)
        _check_rates_cover(self.schedule, self.adapt_names)
        #: SR inference in tiles of this many network-input pixels (None = the whole image at once)
        self.tile = None if tile is None else int(tile)
        if self.tile is not None and self.tile < 1:
            raise ValueError(f"tile={tile} must be >= 1 (network-input pixels per tile side), or None")
        self.tile_overlap = tile_overlap_for(model, tile_overlap) if self.tile is not None else 0
        #: torch.compile'd network call (the first call of each input size compiles; see benchmarks/bench_adapt.py)
        self._compiled = torch.compile(_functional_forward, dynamic=True) if compile else None
        #: adaptation steps on LR images above this many pixels train on random crops of that size
        self.max_pixels = None if max_pixels is None else int(max_pixels)
        if self.max_pixels is not None and self.max_pixels < 64:
            raise ValueError(f"max_pixels={max_pixels} must be >= 64 (LR pixels per adaptation crop), or None")
        if self.max_pixels is not None and not self.upsample_input and float(self.scale) != int(self.scale):
            raise ValueError(f"max_pixels with a network that upsamples by itself needs an integer scale; got {scale}")
        if precision == "bf16" and not bf16_supported(self.device):
            warnings.warn(
                f"bf16 autocast has no fast kernels on this {self.device.type} (no AMX/AVX512-BF16); it will run, slowly",
                RuntimeWarning,
                stacklevel=2,
            )
        self.in_channels = _infer_in_channels(model)
        bp = meta.get("back_projection") if back_projection is None else back_projection
        if isinstance(bp, bool) or not isinstance(bp or 0, int) or (bp or 0) < 0:
            raise ValueError(f"back_projection={bp!r}: give a number of iterations >= 0 (SPEC §7 uses 4), or None")
        #: back-projection iterations after SR with a given kernel when a call does not say (SPEC §7)
        self.back_projection = int(bp or 0)
        #: ``'winograd'`` or ``'direct'``: what computes the network's eligible convolutions (``'auto'`` resolved)
        self.conv_algorithm = _resolve_conv_algorithm(conv_algorithm, self.device, precision, compile)

    # -- network plumbing -------------------------------------------------------------------
    def _param_items(self) -> list[tuple[str, torch.Tensor]]:
        """Every parameter (adapted or not): the network runs on this full dict."""
        items = [(n, p) for n, p in self.model.named_parameters()]
        if self.channels_last:
            items = [(n, p.contiguous(memory_format=torch.channels_last) if p.ndim == 4 else p) for n, p in items]
        return items

    def _network_input(self, x: torch.Tensor, out_shape: tuple[int, int]) -> torch.Tensor:
        inp = imresize(x, self.scale, output_shape=out_shape) if self.upsample_input else x
        if self.channels_last and inp.dim() == 4:
            inp = inp.contiguous(memory_format=torch.channels_last)
        return inp

    def _autocast(self):
        return autocast(self.precision, self.device.type)

    def _fit(self, y: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
        return fit_output(y, shape, self.scale, self.upsample_input)

    def _super_resolve(self, params: dict[str, torch.Tensor], lr_img: torch.Tensor) -> torch.Tensor:
        """The network's SR output for an LR image (1xCxHxW, ``self.dtype``), before :meth:`_fit`. Under a
        tile budget, a network that takes the bicubic-upsampled image gets it tile by tile: each LR window
        (with the receptive radius plus the bicubic support as margin) is upsampled and run on its own, so
        no full-size float64 upsampled copy exists; with an integer scale the result equals the untiled
        one to float round-off (bicubic weights depend only on the offset, which a whole-pixel shift keeps)."""
        h, w = lr_img.shape[-2:]
        out_shape = (math.ceil(h * self.scale), math.ceil(w * self.scale))
        if self.upsample_input and self.tile is not None and not torch.is_grad_enabled() \
                and float(self.scale).is_integer():
            s = int(self.scale)

            def window_sr(win: torch.Tensor) -> torch.Tensor:
                inp = self._network_input(win.double(), (win.shape[-2] * s, win.shape[-1] * s)).to(self.dtype)
                return self._run(params, inp, None, tiled=False)

            margin = math.ceil(self.tile_overlap / s) + _BICUBIC_SUPPORT
            return tiled_forward(window_sr, lr_img, max(1, self.tile // s), margin, s)
        inp = self._network_input(lr_img.double(), out_shape).to(self.dtype)
        return self._run(params, inp, out_shape if self.upsample_input else None)

    def _run(self, params: dict[str, torch.Tensor], inp: torch.Tensor, out_shape: tuple[int, int] | None,
             *, tiled: bool = True) -> torch.Tensor:
        if not torch.is_grad_enabled() and inp.device.type == "cpu" and self.precision == "fp32" and inp.dim() == 4:
            # inference: on CPU a channels_last forward took 0.73x the NCHW time (MZSRNet, 512x512, 2 Zen-3
            # cores; 0.74x on an AVX-512 EPYC); the adaptation steps follow self.channels_last instead
            cl = torch.channels_last
            params = {n: p.contiguous(memory_format=cl) if p.dim() == 4 else p for n, p in params.items()}
            inp = inp.contiguous(memory_format=cl)
        buffers = dict(self.model.named_buffers())

        def forward(t: torch.Tensor) -> torch.Tensor:
            if self._compiled is not None:
                return self._compiled(self.model, {**params, **buffers}, t)
            if self.conv_algorithm == "winograd":
                with winograd_convolutions():
                    return functional_call(self.model, {**params, **buffers}, (t,))
            return functional_call(self.model, {**params, **buffers}, (t,))

        with eval_mode(self.model), self._autocast():
            if tiled and self.tile is not None and not torch.is_grad_enabled():  # inference: bounded memory, same result
                y = tiled_forward(forward, inp, self.tile, self.tile_overlap, 1.0 if self.upsample_input else self.scale)
            else:
                y = forward(inp)
        y = y.to(self.dtype)
        return y if out_shape is None else self._fit(y, out_shape)

    # -- public API ---------------------------------------------------------------------------
    def start(
        self,
        lr_img: np.ndarray | torch.Tensor,
        kernel: str | np.ndarray | torch.Tensor | KernelSpec | DegradationSpec | None = "gd2.0",
        *,
        schedule: str | float | Schedule | None = None,
        lr: float | None = None,
        ds_method: str | None = None,
        noise_std: float = 0.0,
        augment: bool = False,
        seed: int | None = None,
    ) -> Adaptation:
        """Prepare the adaptation of one image (son, network inputs, fast weights). ``kernel="estimate"``
        estimates it first (:func:`~metasr_adapter.estimate.estimate_kernel`, gaussian method, this wrapper's
        network); an estimate that did not converge raises ValueError rather than being used. (The name is
        resolved through :mod:`metasr_adapter.resolvers`, where other names can be registered.)"""
        if lr is not None and schedule is not None:
            raise ValueError("give either lr= (a constant) or schedule=, not both")
        estimate = None
        resolver = kernel_resolver(kernel)
        if resolver is not None:
            kernel, estimate = resolver(self, lr_img, ds_method, seed=seed)
        elif isinstance(kernel, str) and kernel.strip().lower() == "estimate":
            raise ValueError("kernel='estimate' has no resolver registered (metasr_adapter/__init__.py registers the "
                             "kernel estimators; registered now: "
                             f"{', '.join(kernel_resolver_names()) or 'none'}): register one with "
                             "metasr_adapter.resolvers.register_kernel_resolver('estimate', ...), or estimate the "
                             "kernel with metasr_adapter.estimate_kernel and pass it")
        degradation = None
        if isinstance(kernel, DegradationSpec):
            if ds_method is not None and ds_method != kernel.grid:
                raise ValueError(f"ds_method={ds_method!r} contradicts the DegradationSpec's grid {kernel.grid!r}; "
                                 "leave ds_method out")
            degradation, kernel = kernel, kernel.kernel
        spec = resolve_kernel(kernel, ds_method)
        sched = get_schedule(lr) if lr is not None else (get_schedule(schedule) if schedule is not None else self.schedule)
        _check_rates_cover(sched, self.adapt_names)
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        session = Adaptation(self, lr_img, spec, sched, noise_std=noise_std, augment=augment, generator=gen,
                             degradation=degradation)
        session.info.kernel_estimate = estimate
        return session

    def adapt(
        self,
        lr_img: np.ndarray | torch.Tensor,
        kernel: str | np.ndarray | torch.Tensor | KernelSpec | DegradationSpec | None = "gd2.0",
        steps: int | None = None,
        *,
        lr: float | None = None,
        schedule: str | float | Schedule | None = None,
        ds_method: str | None = None,
        back_projection: int | bool | None = None,
        self_ensemble: bool = False,
        augment: bool = False,
        noise_std: float = 0.0,
        seed: int | None = None,
        callback: Callable[[AdaptStep], None] | None = None,
        return_info: bool = False,
    ):
        """Adapt to ``lr_img`` with ``steps`` SGD steps and return its SR image.

        Args:
            lr_img: HxWx3 (or HxW, HxWx4) uint8/float numpy, or a CxHxW / 1xCxHxW float tensor.
            kernel: the blur kernel that made ``lr_img``: a name (``gd2.0``...), a ``.mat``/``.npy``
                path, an array, a :class:`KernelSpec`, a whole
                :class:`~metasr_adapter.ops.degradation_spec.DegradationSpec` (blur + grid, noise, JPEG), ``None``/``"bicubic"`` for bicubic, or ``"estimate"``
                to estimate it first (blind mode; ``info.kernel_estimate`` holds the estimate).
            steps: number of gradient steps (0 = plain inference); None = the count the loaded weights were
                meta-trained for (their ``adapt_steps`` metadata), else 1.
            lr / schedule: a constant learning rate, or a schedule (default: the wrapper's).
            ds_method: ``"direct"`` or ``"bicubic"`` subsampling (default: the kernel's).
            back_projection: back-projection iterations after SR (``True`` = 4, SPEC §7); None = the
                session's default (the weights' own for a given kernel, see ``MetaSR(back_projection=)``).
            self_ensemble: median of the 8 flips/rotations of the input (ZSSR).
            augment: a random flip/rotation of the (son, LR) pair at each step (ZSSR).
            noise_std: Gaussian noise added to the son (ZSSR).
            callback: called with an :class:`AdaptStep` after every step.
            return_info: also return an :class:`AdaptInfo` (per-step losses, lrs, seconds).

        Returns the SR image in the input's format; ``(sr, info)`` with ``return_info``.
        """
        meant = self.weights_metadata.get("adapt_steps")
        if steps is None:
            steps = int(meant or 1)
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
            raise ValueError(f"steps={steps!r} must be a non-negative integer")
        if meant is not None and steps < int(meant):
            warnings.warn(too_few_steps(int(meant), f"steps={steps}", "steps"), UserWarning, stacklevel=2)
        session = self.start(
            lr_img, kernel, schedule=schedule, lr=lr, ds_method=ds_method, noise_std=noise_std, augment=augment, seed=seed
        )
        for _ in range(steps):
            rec = session.step()
            if callback is not None:
                callback(rec)
        bp = 4 if back_projection is True else (None if back_projection is None else int(back_projection))
        sr = session.result(self_ensemble=self_ensemble, back_projection=bp)
        return (sr, session.info) if return_info else sr

    def super_resolve(self, lr_img: np.ndarray | torch.Tensor, **kwargs):
        """SR without adaptation (0 steps)."""
        return self.adapt(lr_img, None, 0, **kwargs)

    def __repr__(self) -> str:
        return (
            f"MetaSR({type(self.model).__name__}, scale={self.scale:g}, upsample_input={self.upsample_input}, "
            f"precision={self.precision!r}, device={self.device}"
            + (f", back_projection={self.back_projection}" if self.back_projection else "")
            + (f", conv_algorithm={self.conv_algorithm!r})" if self.conv_algorithm != "direct" else ")")
        )


def _resolve_conv_algorithm(name: str, device: torch.device, precision: str, compiled: bool) -> str:
    """MetaSR's ``conv_algorithm`` with ``'auto'`` resolved; ``'winograd'`` where it cannot run is refused."""
    check_choice("conv_algorithm", name, ("direct", "winograd", "auto"))
    if name == "direct":
        return name
    applies = device.type == "cpu" and precision == "fp32" and not compiled
    if name == "winograd":
        if compiled:
            raise ValueError("conv_algorithm='winograd' with compile=True: the torch.compile'd network does not call "
                             "the native kernels; use one of the two")
        if not applies:
            raise ValueError(f"conv_algorithm='winograd' runs fp32 convolutions on CPU; got precision={precision!r} "
                             f"on {device}: use conv_algorithm='direct' (or 'auto')")
        if winograd.default_backend() != "native":
            raise RuntimeError("conv_algorithm='winograd' needs the native Winograd kernels, which are unavailable "
                               f"here ({winograd.native.why_unavailable('winograd')}): use conv_algorithm='direct'")
        return name
    return "winograd" if applies and winograd.chosen_by_auto() else "direct"


def too_few_steps(meant: int, asked: str, option: str) -> str:
    """The warning for fewer adaptation steps (``asked``, e.g. ``'steps=1'``) than the weights were meta-trained
    for (``meant``); ``option`` is how the caller spells the step count (``'steps'``, ``'--steps'``)."""
    return (f"these weights were meta-trained for {meant} adaptation steps; after {asked} their output is usually far "
            f"worse (see their model card). Leave {option} out to take {meant}, or use weights meant for few steps "
            "(e.g. mzsr_x2_direct)")


def load_pretrained(name: str | None = None, *, scale: float | None = None, kernel_ds_method: str | None = None,
                    device: Any = None, **metasr_kwargs: Any) -> MetaSR:
    """A ready :class:`MetaSR` with bundled weights ``name`` and the scale, test-time schedule, loss and
    adapted parameters they were meta-trained for.

    ``name=None`` picks the bundled MZSR weights for ``scale`` (2 by default; 4: ``mzsr_x4_direct``) and
    ``kernel_ds_method`` (``'direct'`` by default; ``'bicubic'`` for g^b kernels). ``device``: None = CUDA when
    available, else CPU. ``metasr_kwargs`` override the wrapper's settings.
    """
    from ..io.pretrained import default_weights, get_weights, list_weights, load_model
    from ..io.weights import read_metadata

    if name is None:
        want = 2.0 if scale is None else float(scale)
        info = default_weights("mzsr", scale=want, ds_method=kernel_ds_method or "direct")
        if info is None:
            raise ValueError(f"no bundled MZSR weights for x{want:g} (bundled: {', '.join(list_weights()) or 'none'}); "
                             "build MetaSR(load_model(arch, PATH), scale) with weights of your own instead")
    else:
        info = get_weights(name)
        if scale is not None and float(scale) != float(info.scale):
            raise ValueError(f"scale={scale!r} but the bundled weights {name!r} are x{info.scale:g}; "
                             f"leave scale out or pick weights trained for x{float(scale):g}")
    dev = resolve_device(device)  # None: CUDA when available (the package's device rule, see devices.py)
    model = load_model(info.arch, info.name).to(dev)
    kwargs = {"schedule": info.schedule, "loss": info.loss, "device": dev,
              "adapt_params": read_metadata(info.path).get("adapt_params"), **metasr_kwargs}
    return MetaSR(model, info.scale, **kwargs)

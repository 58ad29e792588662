"""One image's adaptation session: :class:`Adaptation` holds the fast weights, the LR "son" and the SGD steps
taken so far (:meth:`MetaSR.start <metasr_adapter.adapt.metasr.MetaSR.start>` makes one; ``MetaSR.adapt`` runs
one to the end), with the per-step records :class:`AdaptStep` and :class:`AdaptInfo`."""
from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np
import torch

from ..ops.backprojection import back_project
from ..ops.degrade import degrade, imresize
from ..ops.degradation_spec import DegradationSpec
from ..ops.imageio import ImageFormat, to_tensor
from ..ops.kernels import KernelSpec
from .schedules import Schedule, step_size
from .step import autograd_ready, clone_weights, gradients, grad_mode, sgd_update

__all__ = ["Adaptation", "AdaptInfo", "AdaptStep"]


class Wrapper(Protocol):
    """What a session uses of the :class:`~metasr_adapter.adapt.metasr.MetaSR` that started it (named here, not
    imported: the wrapper imports this module)."""

    model: torch.nn.Module
    scale: float
    dtype: torch.dtype
    device: torch.device
    in_channels: int
    precision: str
    adapt_names: list[str]
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    max_pixels: int | None
    upsample_input: bool
    back_projection: int

    def _param_items(self) -> list[tuple[str, torch.Tensor]]: ...
    def _network_input(self, x: torch.Tensor, out_shape: tuple[int, int]) -> torch.Tensor: ...
    def _run(self, params: dict[str, torch.Tensor], inp: torch.Tensor, out_shape: tuple[int, int] | None) -> torch.Tensor: ...
    def _super_resolve(self, params: dict[str, torch.Tensor], lr_img: torch.Tensor) -> torch.Tensor: ...
    def _fit(self, y: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor: ...


@dataclass
class AdaptStep:
    """What one adaptation step did: ``step`` (0-based), the self-supervised ``loss`` before it (the
    wrapper's loss, L1 by default) and its ``lr``."""

    step: int
    loss: float
    lr: float


@dataclass
class AdaptInfo:
    """Per-step losses and learning rates of one ``adapt`` call, and its wall time."""

    losses: list[float] = field(default_factory=list)
    lrs: list[float] = field(default_factory=list)
    seconds: float = 0.0
    #: the :class:`~metasr_adapter.estimate.KernelEstimate` behind ``kernel="estimate"`` (None otherwise)
    kernel_estimate: object | None = None
    #: back-projection iterations applied to the last SR image made (None before one is made)
    back_projection: int | None = None


class Adaptation:
    """One image's adaptation: fast weights, the LR son, and the SGD steps taken so far.

    Made by :meth:`MetaSR.start`; ``step()`` takes one step, ``sr_tensor()`` gives the
    current SR tensor and ``result()`` the SR image in the caller's format.
    """

    def __init__(
        self,
        owner: Wrapper,
        lr_img: np.ndarray | torch.Tensor,
        kernel: KernelSpec,
        schedule: Schedule,
        *,
        noise_std: float = 0.0,
        augment: bool = False,
        generator: torch.Generator | None = None,
        degradation: DegradationSpec | None = None,
    ) -> None:
        self.owner = owner
        self.kernel = kernel
        #: the whole degradation (blur + grid, noise, JPEG) that makes the son, when one was given
        self.degradation = degradation
        self.schedule = schedule
        self.noise_std = float(noise_std)
        self.augment = augment
        self.generator = generator
        self.info = AdaptInfo()
        with grad_mode():  # pipelines call adapt under torch.no_grad() / torch.inference_mode()
            self._prepare(lr_img, kernel, generator)

    def _prepare(self, lr_img: np.ndarray | torch.Tensor, kernel: KernelSpec, generator: torch.Generator | None) -> None:
        m = self.owner
        x, alpha, fmt = to_tensor(lr_img, channels=m.in_channels, dtype=m.dtype, device=m.device)
        x = autograd_ready(x)  # a tensor made under torch.inference_mode() is copied
        #: the LR image as a 1xCxHxW tensor (the adaptation target)
        self.lr_image: torch.Tensor = x
        self.alpha = alpha
        self.format: ImageFormat = fmt
        h, w = x.shape[-2:]
        s = m.scale
        son_h, son_w = math.ceil(h / s), math.ceil(w / s)
        if min(son_h, son_w) < 4:
            need = int(math.ceil(4 * s))
            raise ValueError(
                f"LR image of {h}x{w} pixels is too small for scale {s:g}: adaptation trains on a "
                f"{son_h}x{son_w} downscaled copy; give an image of at least {need}x{need}"
            )
        if kernel.kernel is not None and max(kernel.kernel.shape) > min(h, w):
            raise ValueError(
                f"kernel of size {kernel.kernel.shape} is larger than the {h}x{w} LR image; "
                "crop the kernel or use a larger image"
            )
        self.out_shape = (math.ceil(h * s), math.ceil(w * s))
        with torch.no_grad():
            self.son, self.son_input = self._son_of(x, kernel, self.degradation, generator)
        #: the fast weights: private copies of every parameter, the adapted ones requiring gradients
        self.params = clone_weights(m._param_items(), m.adapt_names)
        self.steps_done = 0
        self._augmented: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # dihedral mode -> (son input, target)
        self._crop_rng: torch.Generator | None = None
        self._t0 = time.perf_counter()

    def _son_of(self, x: torch.Tensor, kernel: KernelSpec, degradation: DegradationSpec | None,
                generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(son, the network's input for it) of the LR image ``x``: degraded by ``degradation`` (blur + grid,
        noise, 8 bits, JPEG) or by ``kernel``, plus this session's noise."""
        m = self.owner
        # resampling runs in float64 like the official numpy code; the network sees its own dtype
        x64 = x.double()
        if degradation is not None:  # blur + grid, noise, 8 bits, JPEG: the photo's own chain
            son = degradation.apply(x64, m.scale, generator=generator)
        else:
            son = degrade(x64, kernel.kernel, m.scale, ds_method=kernel.ds_method)
        if self.noise_std > 0:
            son = son + self.noise_std * torch.randn(son.shape, generator=generator, dtype=son.dtype).to(son.device)
        son = son.clamp(0, 1).to(m.dtype)  # the official code keeps the son in float32
        # the network's input for the son, fixed across steps (SPEC §5: recomputed identically each step)
        return son, m._network_input(son.double(), tuple(x.shape[-2:])).to(m.dtype)

    def _augmented_pair(self, mode: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(son input, target) for the LR image turned/flipped by dihedral ``mode``. The image (and the
        blur kernel with it) is transformed first and degraded afterwards, as ZSSR does: flipping a
        son made by direct subsampling would move it by s-1 pixels against its LR target."""
        from ..ops.augment import dihedral

        if mode == 0:
            return self.son_input, self.lr_image
        if mode not in self._augmented:
            k, deg = self.kernel, self.degradation
            turned = None if k.kernel is None else np.ascontiguousarray(dihedral(k.kernel, mode, dims=(0, 1)))
            k = KernelSpec(turned, k.ds_method, k.name)
            if deg is not None:
                deg = dataclasses.replace(deg, kernel=k)
            target = dihedral(self.lr_image, mode).contiguous()
            with grad_mode(False):
                self._augmented[mode] = (self._son_of(target, k, deg, self.generator)[1], target)
        return self._augmented[mode]

    def gradients(self) -> tuple[float, dict[str, torch.Tensor]]:
        """The self-supervised loss ``loss_fn(f(son), LR)`` (L1 by default) at the current weights, and the
        gradients of the adapted parameters."""
        mode = int(torch.randint(0, 8, (1,), generator=self.generator)) if self.augment else 0
        inp, target = self._training_pair(*self._augmented_pair(mode))
        owner = self.owner

        def loss_at(weights: dict[str, torch.Tensor]) -> torch.Tensor:
            return owner.loss_fn(owner._run(weights, inp, tuple(target.shape[-2:])), target)

        loss, grads = gradients(self.params, owner.adapt_names, loss_at, precision=owner.precision)
        return float(loss.detach()), grads

    def loss(self, params: dict[str, torch.Tensor] | None = None) -> float:
        """The self-supervised loss ``loss_fn(f(son), LR)`` on the whole son (no crop, no gradient), with
        ``params`` (another session's fast weights, e.g. to score them on a held-out region) or this
        session's own."""
        weights = self.params if params is None else params
        with torch.inference_mode(False), torch.no_grad():
            out = self.owner._run(weights, self.son_input, tuple(self.lr_image.shape[-2:]))
            return float(self.owner.loss_fn(out.float(), self.lr_image.float()))

    def _training_pair(self, inp: torch.Tensor | None = None, target: torch.Tensor | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """(network input of the son, LR target) — the unturned pair unless given; above the wrapper's
        ``max_pixels`` an aligned random crop of about ``max_pixels`` LR pixels, a new one each step (ZSSR-style;
        bounded memory)."""
        if inp is None or target is None:
            inp, target = self.son_input, self.lr_image
        budget = self.owner.max_pixels
        h, w = target.shape[-2:]
        if budget is None or h * w <= budget:
            return inp, target
        if self._crop_rng is None:
            self._crop_rng = self.generator or torch.Generator().manual_seed(0)
        side = max(8, int(math.isqrt(int(budget))))
        ch, cw = min(side, h), min(side * side // min(side, h), w)
        if self.owner.upsample_input:  # input and target share the LR grid
            i = int(torch.randint(0, h - ch + 1, (1,), generator=self._crop_rng))
            j = int(torch.randint(0, w - cw + 1, (1,), generator=self._crop_rng))
            return inp[..., i : i + ch, j : j + cw], target[..., i : i + ch, j : j + cw]
        s = int(self.owner.scale)  # son grid -> LR grid (integer factors; checked in MetaSR)
        sh, sw = max(1, ch // s), max(1, cw // s)
        i = int(torch.randint(0, inp.shape[-2] - sh + 1, (1,), generator=self._crop_rng))
        j = int(torch.randint(0, inp.shape[-1] - sw + 1, (1,), generator=self._crop_rng))
        return inp[..., i : i + sh, j : j + sw], target[..., i * s : (i + sh) * s, j * s : (j + sw) * s]

    def step(self) -> AdaptStep:
        """One plain SGD step on ``loss_fn(f(son), LR)`` with the schedule's learning rate."""
        lr = float(self.schedule(self.steps_done))
        loss, grads = self.gradients()
        if not math.isfinite(loss):
            raise FloatingPointError(
                f"adaptation step {self.steps_done}: the loss is {loss} (learning rate {lr:g}); the weights or the "
                "input are not finite, or an earlier step diverged; lower the learning rate (lr=/--lr, schedule=)")
        t = self.steps_done
        self.params = sgd_update(self.params, grads, lambda name: step_size(self.schedule, name, t))
        if not all(bool(torch.isfinite(self.params[n]).all()) for n in grads):
            raise FloatingPointError(
                f"adaptation step {self.steps_done} made the weights non-finite (learning rate {lr:g}, loss "
                f"{loss:.4g}); lower the learning rate (lr=/--lr, schedule=)")
        rec = AdaptStep(self.steps_done, loss, lr)
        self.info.losses.append(rec.loss)
        self.info.lrs.append(lr)
        self.steps_done += 1
        return rec

    @property
    def lr_input(self) -> torch.Tensor:
        """The network's input for the whole LR image (bicubic-upsampled in float64, as the official code,
        for networks that take the upsampled image), made on each access: the SR path makes it tile by
        tile under a memory budget instead."""
        with torch.inference_mode(False), torch.no_grad():
            return self.owner._network_input(self.lr_image.double(), self.out_shape).to(self.owner.dtype)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The network's state dict with this image's adapted (fast) weights: loads into the wrapped
        network's architecture with ``load_state_dict``."""
        state = {k: v.detach().clone() for k, v in self.owner.model.state_dict().items()}
        state.update({k: v.detach().clone().contiguous() for k, v in self.params.items()})
        return state

    def save_adapted(self, path: str, **metadata) -> "os.PathLike":
        """Write :meth:`state_dict` with :func:`~metasr_adapter.io.weights.save_weights` (``.safetensors``
        or ``.pth``), noting how many steps it took; the wrapped model's metadata can be added."""
        from ..io.weights import save_weights

        return save_weights(self.state_dict(), path, adapted_steps=self.steps_done,
                            scale=float(self.owner.scale), **metadata)

    @property
    def default_back_projection(self) -> int:
        """The back-projection iterations :meth:`sr_tensor` and :meth:`result` apply when not told: the
        wrapper's (the weights' own), for a kernel that was given; 0 for an estimated kernel or a whole
        degradation (noise, JPEG), where back-projecting onto the LR image would pull the errors back in."""
        if self.info.kernel_estimate is not None or self.degradation is not None:
            return 0
        return self.owner.back_projection

    def sr_tensor(self, *, self_ensemble: bool = False, back_projection: int | None = None) -> torch.Tensor:
        """The SR image as a 1xCxsHxsW tensor clipped to [0, 1], from the current fast weights
        (:meth:`result` gives it in the caller's format). ``back_projection``: iterations (SPEC §7); None =
        :attr:`default_back_projection`.

        With ``self_ensemble`` the network runs on the 8 flips/rotations of the input (on the direct grid
        only the 2 that keep the output aligned: identity and transpose); as in ZSSR, each de-transformed
        output is back-projected (when ``back_projection`` > 0), their median is taken, and the median
        is back-projected once more.
        """
        if back_projection is None:
            back_projection = self.default_back_projection
        self.info.back_projection = int(back_projection)
        with torch.inference_mode(False), torch.no_grad():  # normal tensors out, also inside inference_mode
            return self._sr_tensor(self_ensemble=self_ensemble, back_projection=back_projection)

    def _sr_tensor(self, *, self_ensemble: bool, back_projection: int) -> torch.Tensor:
        owner = self.owner
        run = lambda img: owner._super_resolve(self.params, img)

        def finish(y: torch.Tensor) -> torch.Tensor:
            y = owner._fit(y, self.out_shape).clamp_(0, 1)  # y is the network's fresh output: clip in place
            if back_projection:
                y = back_project(y, self.lr_image, self.kernel.kernel, owner.scale, self.kernel.ds_method, int(back_projection))
            return y

        if not self_ensemble:
            return finish(run(self.lr_image))
        from ..ops.augment import ensemble_modes, geometric_self_ensemble

        # on the direct grid only the identity and the transpose keep the output aligned (ops.augment)
        modes = ensemble_modes(self.kernel.ds_method)
        sr = geometric_self_ensemble(run, self.lr_image, modes, reduce="median", post=finish)
        return finish(sr)

    def result(self, *, self_ensemble: bool = False, back_projection: int | None = None) -> np.ndarray | torch.Tensor:
        """The SR image in the input's format (numpy dtype/layout, or tensor); ``back_projection`` as in
        :meth:`sr_tensor`."""
        sr = self.sr_tensor(self_ensemble=self_ensemble, back_projection=back_projection)
        alpha = None
        if self.alpha is not None:
            alpha = imresize(self.alpha, self.owner.scale, output_shape=self.out_shape)
        self.info.seconds = time.perf_counter() - self._t0
        return self.format.restore(sr, alpha)

"""``estimate_kernel``: the blur kernel of an LR image, with diagnostics, from one of the estimators."""
from __future__ import annotations

import io
import math
import os
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..ops.kernels import KernelSpec
from .checks import check_scale, prepare_image

__all__ = ["METHODS", "KernelEstimate", "estimate_kernel", "estimate_for_metasr", "save_kernel"]

#: the estimators: a search of the anisotropic Gaussian family scored by the meta-trained network, and
#: an internal GAN in the manner of KernelGAN
METHODS = ("gaussian", "kernelgan")


def save_kernel(path: str | os.PathLike, kernel: np.ndarray) -> Path:
    """Write a kernel as ``.mat`` (variable ``kernel``, what ``--kernel K.mat`` reads) or ``.npy``, atomically."""
    from ..atomic import atomic_write_bytes

    p = Path(path)
    k = np.asarray(kernel, dtype=np.float64)
    buf = io.BytesIO()
    if p.suffix.lower() == ".mat":
        import scipy.io

        scipy.io.savemat(buf, {"kernel": k})
    elif p.suffix.lower() == ".npy":
        np.save(buf, k, allow_pickle=False)
    else:
        raise ValueError(f"{p}: cannot write a kernel as {p.suffix or 'a suffix-less file'!r}; end the name with .mat "
                         "(MATLAB, key 'kernel') or .npy")
    atomic_write_bytes(p, buf.getvalue())
    return p


@dataclass
class KernelEstimate:
    """An estimated blur kernel and how it was found.

    ``kernel`` is 2-D, non-negative and sums to 1 (blur, then direct x``scale`` subsampling). ``converged``
    is False when the estimator found no reliable answer; ``reason`` then says why, and
    :meth:`require_converged` (used by ``MetaSR.adapt(kernel="estimate")``) refuses it.
    """

    kernel: np.ndarray
    method: str
    converged: bool
    seconds: float
    scale: int = 2
    reason: str = ""
    #: the Gaussian's variances and angle (``l1``, ``l2``, ``theta``) for method 'gaussian'
    params: dict[str, float] = field(default_factory=dict)
    #: per-candidate scores ('gaussian') or per-iteration generator losses ('kernelgan')
    loss_history: list[float] = field(default_factory=list)
    diagnostics: dict[str, Any] = field(default_factory=dict)

    def require_converged(self) -> "KernelEstimate":
        """Return self, or raise ValueError saying why the estimate is not trusted and what to do."""
        if not self.converged:
            raise ValueError(
                f"the kernel estimate ({self.method}) did not converge, so it was not used: {self.reason}. "
                "Give the kernel explicitly (kernel='K.mat', --kernel K.mat), try the other estimator "
                f"(estimate_kernel(img, method={'kernelgan' if self.method == 'gaussian' else 'gaussian'!r}) or "
                "`metasr estimate-kernel --estimator ...`, then pass its kernel), or use a larger, more detailed image")
        return self

    def to_spec(self) -> KernelSpec:
        """The kernel as a :class:`~metasr_adapter.ops.kernels.KernelSpec` (direct subsampling)."""
        return KernelSpec(kernel=self.kernel, ds_method="direct", name=f"estimate:{self.method}")

    def save(self, path: str | os.PathLike) -> Path:
        """Write the kernel (``.mat`` with key ``kernel``, or ``.npy``)."""
        return save_kernel(path, self.kernel)

    def summary(self) -> str:
        """One line: method, parameters, convergence, time."""
        text = f"{self.method} x{self.scale} kernel {self.kernel.shape[0]}x{self.kernel.shape[1]}"
        if self.params:
            p = self.params
            text += f" (λ1={p['l1']:.2f}, λ2={p['l2']:.2f}, θ={math.degrees(p['theta']):.0f}°)"
        text += f", {'converged' if self.converged else 'NOT converged: ' + self.reason}, {self.seconds:.1f} s"
        return text

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: everything, the kernel as nested lists."""
        return {"method": self.method, "scale": self.scale, "converged": self.converged, "reason": self.reason,
                "seconds": self.seconds, "params": self.params, "kernel": self.kernel.tolist(),
                "loss_history": self.loss_history, "diagnostics": self.diagnostics}


def _config(cls: type, ksize: int, options: dict[str, Any]):
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(options) - names)
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)} for {cls.__name__}; valid: {', '.join(sorted(names))}")
    return replace(cls(), ksize=ksize, **options)


def _as_metasr(model: Any, scale: int, device: Any = None):
    from ..adapt.metasr import MetaSR, load_pretrained

    if model is None:
        return load_pretrained(blind_weights_name(scale), device=device)
    if isinstance(model, MetaSR):
        if float(model.scale) != scale:
            raise ValueError(f"the model is a x{model.scale:g} MetaSR but scale={scale}; give a x{scale} model")
        return model
    if isinstance(model, torch.nn.Module):
        return MetaSR(model, scale, **({} if device is None else {"device": device}))
    raise TypeError(f"model must be a MetaSR, an nn.Module or None (the bundled blind-mode network, "
                    f"mzsr_x2_direct at x2); got {type(model).__name__}")


def blind_weights_name(scale: float) -> str:
    """The bundled MZSR weights that estimate kernels at ``scale``: the preferred ones fit for blind mode
    (``blind`` in their sidecar; ``mzsr_x2_direct`` at x2). ValueError when none is bundled for ``scale``."""
    from ..io.pretrained import default_weights, list_weights

    info = default_weights("mzsr", scale=float(scale), ds_method="direct", blind=True)
    if info is None or info.ds_method != "direct":
        raise ValueError(f"no bundled MZSR weights fit for blind mode at x{scale:g} (bundled: "
                         f"{', '.join(list_weights('mzsr')) or 'none'}); pass model= (a MetaSR or network) to estimate with")
    return info.name


def estimate_kernel(lr_img: np.ndarray | torch.Tensor, scale: int = 2, method: str = "gaussian", *, model: Any = None,
                    progress: bool = False, seed: int = 0, ksize: int = 15, device: Any = None,
                    **options: Any) -> KernelEstimate:
    """Estimate the blur kernel that made ``lr_img`` (blur, then direct x``scale`` subsampling).

    Args:
        lr_img: HxWx3 (or HxW) uint8/float numpy image, or a CxHxW / 1xCxHxW float tensor in [0, 1].
        scale: the SR factor; 2 is supported.
        method: ``'gaussian'`` (search the anisotropic Gaussian family, scored by the meta-trained network's
            self-supervised loss after a few adaptation steps; ~10-30 s on one CPU thread) or ``'kernelgan'``
            (an internal GAN with a deep linear generator; any kernel shape; ~15-30 s).
        model: for ``'gaussian'``, the network that scores candidates: a :class:`~metasr_adapter.MetaSR`
            (its adaptation settings are used), an ``nn.Module`` (wrapped with ``MetaSR(model, scale)``) or
            None for the bundled ``mzsr_x2_direct``. Ignored by ``'kernelgan'``.
        progress: show a tqdm bar.
        device: where the estimate runs: ``'kernelgan'`` trains its GAN there, ``'gaussian'`` loads the bundled
            network there when ``model`` is None (or wraps an ``nn.Module`` there); a given MetaSR keeps its own
            device. None = CUDA when available, else CPU (a MetaSR or ``nn.Module``: the model's device).
        seed: crops and initialisation are drawn from it (same seed, same estimate).
        ksize: side of the returned kernel (odd).
        options: fields of :class:`~metasr_adapter.estimate.gaussian_search.GaussianSearchConfig` or
            :class:`~metasr_adapter.estimate.kernelgan.KernelGANConfig` (e.g. ``max_evals=20``, ``iters=300``).

    Raises ValueError, naming the value and the fix, for an unsupported scale or method, or an image that is
    too small (< 32 px a side) or too flat to show its blur. A kernel that was found but is not trusted comes
    back with ``converged=False`` and a ``reason``.
    """
    if method not in METHODS:
        raise ValueError(f"method={method!r}: choose one of {', '.join(METHODS)}")
    s = check_scale(scale)
    if isinstance(ksize, bool) or not isinstance(ksize, (int, np.integer)) or ksize < 3 or ksize % 2 == 0:
        raise ValueError(f"ksize={ksize!r}: give an odd kernel side >= 3, e.g. 15")
    t0 = time.perf_counter()
    lr = prepare_image(lr_img)
    if method == "gaussian":
        from .gaussian_search import GaussianSearchConfig, gaussian_search

        cfg = _config(GaussianSearchConfig, int(ksize), options)
        msr = _as_metasr(model, s, device)
        res = gaussian_search(msr, lr, cfg, seed=seed, progress=progress)
        return KernelEstimate(
            kernel=res.kernel, method=method, converged=res.converged, seconds=time.perf_counter() - t0, scale=s,
            reason=res.reason, params=res.params, loss_history=[r["loss"] for r in res.history],
            diagnostics={"candidates": res.history, "crops": res.crops, "best_loss": res.loss,
                         "config": {k: v for k, v in cfg.__dict__.items()}})
    from .kernelgan import KernelGANConfig, kernelgan

    cfg = _config(KernelGANConfig, int(ksize), options)
    from ..devices import resolve_device

    dev = resolve_device(device)
    res = kernelgan(lr, cfg, seed=seed, progress=progress, device=dev)
    return KernelEstimate(
        kernel=res.kernel, method=method, converged=res.converged, seconds=time.perf_counter() - t0, scale=s,
        reason=res.reason, loss_history=[r["loss_g"] for r in res.history],
        diagnostics={"final": res.history[-1] if res.history else {}, "raw_sum": res.raw_sum, "device": str(dev),
                     "config": {k: v for k, v in cfg.__dict__.items()}})


def estimate_for_metasr(msr, lr_img: np.ndarray | torch.Tensor, ds_method: str | None = None, *, seed: int | None = None,
                        progress: bool = False) -> tuple[KernelSpec, KernelEstimate]:
    """``MetaSR.adapt(kernel="estimate")``: the gaussian estimate with the wrapper's own network, refused
    (ValueError) when it did not converge. Bundled weights marked unfit for blind mode (``blind: false``,
    e.g. ``mzsr_x2_direct_lslr_v2``) leave the estimate to the bundled blind-mode network of their scale
    (:func:`blind_weights_name`, recorded as ``diagnostics["estimated_with"]``) and adapt with their own."""
    if ds_method not in (None, "direct"):
        raise ValueError(f"kernel='estimate' with ds_method={ds_method!r}: the estimators model blur + direct "
                         "subsampling; leave ds_method unset (or 'direct'), or give the kernel explicitly")
    estimator = msr
    if msr.weights_metadata.get("blind") is False:  # bundled weights meta-trained for many steps: a poor judge
        estimator = _as_metasr(None, int(msr.scale), msr.device)
    est = estimate_kernel(lr_img, msr.scale, "gaussian", model=estimator, seed=0 if seed is None else seed,
                          progress=progress)
    if estimator is not msr:
        est.diagnostics["estimated_with"] = blind_weights_name(msr.scale)
    est.require_converged()
    return est.to_spec(), est

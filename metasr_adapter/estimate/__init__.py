"""Blind mode: estimate the blur kernel of an LR image, then adapt with it.

* :func:`estimate_kernel` (``method='gaussian'`` or ``'kernelgan'``) returns a :class:`KernelEstimate`:
  the kernel (2-D, sums to 1, for blur + direct x2 subsampling), whether the estimator converged, the time
  it took and its diagnostics.
* ``MetaSR.adapt(lr_img, kernel="estimate", steps=...)`` estimates with the gaussian method and the wrapper's
  own network, then adapts; an estimate that did not converge raises ValueError instead of being used.
* ``metasr estimate-kernel LR.png -o K.mat`` and ``metasr adapt LR.png --kernel estimate`` on the command line.

Modules: ``gaussian_search`` (search of MZSR's anisotropic Gaussian family, scored by the meta-trained
network's self-supervised loss), ``kernelgan`` (an internal GAN in the manner of KernelGAN), ``checks``
(input checks, textured crops), ``kernel_metrics`` (kernel error after centring), ``plot``.
"""
from __future__ import annotations

from .api import METHODS, KernelEstimate, estimate_for_metasr, estimate_kernel, save_kernel
from .checks import MIN_SIDE, SUPPORTED_SCALES
from .kernel_metrics import kernel_error, kernel_mse, kernel_psnr

__all__ = ["METHODS", "KernelEstimate", "estimate_kernel", "estimate_for_metasr", "save_kernel", "kernel_error",
           "kernel_mse", "kernel_psnr", "MIN_SIDE", "SUPPORTED_SCALES"]

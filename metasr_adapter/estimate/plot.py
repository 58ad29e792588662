"""Figures of kernels: one estimate (``metasr estimate-kernel --plot``) or true against estimated (benchmark)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ..atomic import atomic_savefig

__all__ = ["plot_kernel", "plot_kernel_pairs"]


def _figure(figsize: tuple[float, float]):
    """A matplotlib Figure drawn off-screen (no pyplot, so the caller's backend and figures are untouched)."""
    from matplotlib.figure import Figure

    return Figure(figsize=figsize)


def plot_kernel(kernel: np.ndarray, path: str | os.PathLike, title: str = "") -> Path:
    """Write a PNG of one kernel (pixel values, with a colour bar)."""
    fig = _figure((4, 3.6))
    ax = fig.subplots()
    im = ax.imshow(kernel, cmap="viridis", interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    return atomic_savefig(fig, path, dpi=120)


def plot_kernel_pairs(rows: Sequence[tuple[str, Sequence[tuple[str, np.ndarray]]]], path: str | os.PathLike) -> Path:
    """A grid: one row per image (``(label, [(column title, kernel), ...])``), e.g. true | gaussian | kernelgan."""
    ncols = max(len(cols) for _, cols in rows)
    fig = _figure((1.9 * ncols, 1.9 * len(rows)))
    axes = fig.subplots(len(rows), ncols, squeeze=False)
    for r, (label, cols) in enumerate(rows):
        for c in range(ncols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(cols):
                ax.axis("off")
                continue
            title, k = cols[c]
            ax.imshow(k, cmap="viridis", interpolation="nearest")
            ax.set_title(title, fontsize=7)
            if c == 0:
                ax.set_ylabel(label, fontsize=7)
    fig.tight_layout()
    return atomic_savefig(fig, path, dpi=110)

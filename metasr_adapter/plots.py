"""Training figures (matplotlib, Agg backend: no display needed)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

__all__ = ["psnr_vs_steps"]


def psnr_vs_steps(
    curves: Mapping[str, Mapping[int, float]],
    path: str | os.PathLike,
    *,
    title: str | None = None,
    baseline: float | None = None,
    baseline_label: str = "bicubic",
) -> Path:
    """Plot mean PSNR against the number of adaptation steps, one line per model (paper Fig. 3).

    ``curves``: label → {steps: PSNR dB}. ``baseline``: an optional horizontal reference line.
    The PNG is written atomically; returns its path.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    from .atomic import atomic_write

    if not curves:
        raise ValueError("curves is empty: give at least one {label: {steps: psnr}} entry")
    fig = Figure(figsize=(6.0, 4.2), dpi=120)
    ax = fig.add_subplot(1, 1, 1)
    markers = "osD^v<>p"
    for n, (label, points) in enumerate(curves.items()):
        if not points:
            raise ValueError(f"curve {label!r} has no points")
        steps = sorted(int(k) for k in points)
        values = [float(points[k]) for k in steps]
        ax.plot(steps, values, marker=markers[n % len(markers)], linewidth=1.6, markersize=4, label=label)
    if baseline is not None:
        ax.axhline(float(baseline), color="0.5", linestyle="--", linewidth=1.0, label=baseline_label)
    ax.set_xlabel("adaptation steps")
    ax.set_ylabel("mean PSNR (dB)")
    all_steps = sorted({int(k) for pts in curves.values() for k in pts})
    if len(all_steps) <= 21:
        ax.set_xticks(all_steps)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=9)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    return path

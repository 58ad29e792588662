"""Training figures (matplotlib, Agg backend: no display needed)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

from ..atomic import atomic_savefig

__all__ = ["psnr_vs_steps", "read_probes", "psnr_vs_cpu_hours", "draw_psnr_vs_cpu_hours"]


def baseline_fits(values: Sequence[float], baseline: float) -> bool:
    """Whether a reference line at ``baseline`` can share the axis with ``values`` without squashing them:
    not further below them than twice their spread (at least 0.05 dB)."""
    spread = max(values) - min(values)
    return min(values) - baseline <= 2 * max(spread, 0.05)


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

    if not curves:
        raise ValueError("curves is empty: give at least one {label: {steps: psnr}} entry")
    fig = Figure(figsize=(6.0, 4.2), dpi=120)
    ax = fig.add_subplot(1, 1, 1)
    markers = "osD^v<>p"
    values_all: list[float] = []
    for n, (label, points) in enumerate(curves.items()):
        if not points:
            raise ValueError(f"curve {label!r} has no points")
        steps = sorted(int(k) for k in points)
        values = [float(points[k]) for k in steps]
        values_all += values
        ax.plot(steps, values, marker=markers[n % len(markers)], linewidth=1.6, markersize=4, label=label)
    if baseline is not None:
        if not baseline_fits(values_all, float(baseline)):
            # far below the curves: a line would squash them flat, so the legend states its value instead
            ax.plot([], [], " ", label=f"{baseline_label}: {float(baseline):.2f} dB (below the axis)")
        else:
            ax.axhline(float(baseline), color="0.5", linestyle="--", linewidth=1.0, label=baseline_label)
    ax.set_xlabel("adaptation steps")
    ax.set_ylabel("mean PSNR (dB)")
    all_steps = sorted({int(k) for pts in curves.values() for k in pts})
    if all_steps[0] == 0 and all_steps[-1] > 20:  # 0, 1, 2, 3, 5 ... 100 on a linear axis crowd together
        ax.set_xscale("symlog", linthresh=1.0)
        ax.set_xlim(-0.1, all_steps[-1] * 1.15)
    ticks = [k for k in all_steps if k in (0, 1, 2, 3, 5, 10, 20, 30, 50, 100, 200, 500, 1000)] or all_steps
    if len(ticks) <= 21:
        ax.set_xticks(ticks)
        ax.set_xticklabels([str(k) for k in ticks])
    _decorate(fig, ax, title, legend_loc="best", legend_size=9)
    return atomic_savefig(fig, path)


def _decorate(fig, ax, title: str | None, *, legend_loc: str, legend_size: int) -> None:
    """Grid, legend and title on ``ax``, and the layout. ``legend_loc='outside'``: the legend goes below the
    axes (constrained layout makes room for it), where it hides no curve; else a matplotlib ``loc`` inside."""
    ax.grid(True, alpha=0.3)
    if title:
        ax.set_title(title, fontsize=10)
    if legend_loc == "outside":
        fig.set_layout_engine("constrained")
        fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", fontsize=legend_size, frameon=False)
    else:
        ax.legend(loc=legend_loc, fontsize=legend_size)
        fig.tight_layout()


def read_probes(metrics_jsonl: str | os.PathLike, start_hours: float = 0.0) -> list[dict]:
    """The in-training probe records of a run's ``metrics.jsonl``, each with ``cpu_hours`` added
    (``start_hours`` + the training CPU-hours up to it: wall seconds × the threads of each stretch,
    probe time excluded; see :mod:`.cpu_time`), in training order.
    ``start_hours``: what the run's starting weights already cost, for a run that continues another."""
    from .cpu_time import cpu_seconds_of_records, read_metrics

    out = []
    for rec, cpu in cpu_seconds_of_records(read_metrics(metrics_jsonl)):
        if rec.get("probe"):
            rec["cpu_hours"] = float(start_hours) + cpu / 3600.0
            out.append(rec)
    return out


def psnr_vs_cpu_hours(runs: Mapping[str, str | os.PathLike], path: str | os.PathLike, **options) -> Path:
    """:func:`draw_psnr_vs_cpu_hours` written atomically to ``path`` (PNG unless the suffix names another
    format); returns its path."""
    return atomic_savefig(draw_psnr_vs_cpu_hours(runs, **options), path)


def draw_psnr_vs_cpu_hours(
    runs: Mapping[str, str | os.PathLike],
    *,
    steps: tuple[int, ...] = (0, 1, 10),
    title: str | None = None,
    baseline: float | None = None,
    ylim: tuple[float, float] | None = None,
    start_hours: Mapping[str, float] | None = None,
    legend_loc: str = "lower right",
):
    """The matplotlib ``Figure`` of PSNR after ``steps`` adaptation steps against CPU-hours of training (``ylim``: zoom on a PSNR range), one colour per run
    (``runs``: label → ``metrics.jsonl``), one line style per step count; a dotted vertical line marks
    where each run's meta stage begins. ``start_hours``: label → CPU-hours already spent on the run's starting
    weights (a run that continues another starts where that one ended). ``legend_loc``: a matplotlib ``loc``
    inside the axes, or ``'outside'`` (below them; the figure grows to hold it)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    if not runs:
        raise ValueError("runs is empty: give {label: path/to/metrics.jsonl}")
    styles = ["-", "--", ":", "-."]
    entries = len(runs) * len(steps) + (baseline is not None)
    height = 4.6 + (0.17 * entries + 0.2 if legend_loc == "outside" else 0.0)
    fig = Figure(figsize=(7.0, height), dpi=120)
    ax = fig.add_subplot(1, 1, 1)
    for n, (label, metrics) in enumerate(runs.items()):
        probes = read_probes(metrics, (start_hours or {}).get(label, 0.0))
        if not probes:
            raise ValueError(f"{metrics} holds no probe records: train with pretrain.probe_every / meta.probe_every > 0")
        colour = f"C{n}"
        for j, k in enumerate(steps):
            pts = [(p["cpu_hours"], p["probe"][str(k)]) for p in probes if str(k) in p["probe"]]
            if pts:
                ax.plot(*zip(*pts), styles[j % len(styles)], color=colour, marker="o", markersize=3, linewidth=1.4,
                        label=f"{label}, {k} step{'s' if k != 1 else ''}")
        meta = [p["cpu_hours"] for p in probes if p["stage"] == "meta"]
        pre = [p["cpu_hours"] for p in probes if p["stage"] == "pretrain"]
        if meta and pre:
            ax.axvline(max(pre), color=colour, linestyle=":", linewidth=0.8, alpha=0.6)
    if baseline is not None:
        ax.axhline(float(baseline), color="0.5", linestyle="--", linewidth=1.0, label="bicubic")
    ax.set_xlabel("training CPU-hours (wall hours × threads)")
    ax.set_ylabel("mean PSNR (dB)")
    if ylim is not None:
        ax.set_ylim(*ylim)
    _decorate(fig, ax, title, legend_loc=legend_loc, legend_size=8)
    return fig

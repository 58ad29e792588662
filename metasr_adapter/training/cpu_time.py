"""CPU-time accounting of a training run: wall seconds × threads, summed per stretch of the run.

A run may span sessions with different ``--threads``; each ``metrics.jsonl`` record carries the run's
``run_seconds`` (training time so far, probes excluded) and the ``threads`` of the session that wrote it.
A resumed run rewinds to its last checkpoint, so records past that checkpoint are superseded by the
records that re-do their work: only the kept history counts.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

__all__ = ["cpu_seconds_of_records", "mean_threads", "read_metrics"]


def read_metrics(metrics_jsonl: str | os.PathLike) -> list[dict]:
    """The records of a run's ``metrics.jsonl`` in order (a line cut by a kill is skipped)."""
    out = []
    for line in Path(metrics_jsonl).read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def cpu_seconds_of_records(records: Iterable[dict]) -> list[tuple[dict, float]]:
    """``(record, CPU-seconds of training up to it)`` for each record with ``run_seconds``, in order.

    The stretch since the previous kept record counts at the record's own ``threads`` (1 when absent).
    A record whose ``run_seconds`` is not above the last kept one (a resume from an earlier checkpoint)
    drops the kept records it supersedes first."""
    kept: list[tuple[float, float]] = []  # (run_seconds, cpu_seconds) along the history the run kept
    out = []
    for rec in records:
        if "run_seconds" not in rec:
            continue
        wall = float(rec["run_seconds"])
        while kept and kept[-1][0] > wall:
            kept.pop()
        last_wall, last_cpu = kept[-1] if kept else (0.0, 0.0)
        cpu = last_cpu + (wall - last_wall) * int(rec.get("threads") or 1)
        kept.append((wall, cpu))
        out.append((rec, cpu))
    return out


def mean_threads(records: Iterable[dict]) -> float | None:
    """Threads averaged over the run's training time (CPU-seconds / wall seconds of the last record);
    None when no record has ``run_seconds``."""
    track = cpu_seconds_of_records(records)
    if not track or float(track[-1][0]["run_seconds"]) <= 0:
        return None
    return track[-1][1] / float(track[-1][0]["run_seconds"])

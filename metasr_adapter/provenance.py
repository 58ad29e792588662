"""Where code ran, from the standard library alone: the checkout's git commit and the CPU model.

It imports neither torch nor the rest of the package, so a Python without them (the TensorFlow side of
``benchmarks/bench_tf_baseline.py``) can load this file by path and record the same facts as
``metasr train`` (:func:`metasr_adapter.training.train.environment_info`) does.
"""
from __future__ import annotations

import platform
import subprocess
from pathlib import Path

__all__ = ["source_commit", "cpu_model"]

#: the checkout holding metasr_adapter/ (when the package runs from one)
CHECKOUT = Path(__file__).resolve().parents[1]


def source_commit(root: Path = CHECKOUT) -> tuple[str | None, bool | None]:
    """``(commit, dirty)`` of the git checkout at ``root``; ``(None, None)`` outside one or without git."""
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip() or None
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None, None
    return commit, bool(status.strip())


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo``, else what :mod:`platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()

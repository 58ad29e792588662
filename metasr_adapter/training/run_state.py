"""What makes a training run resumable and stoppable: its stages, the RNG states a checkpoint holds, the
append-only metrics log, Ctrl-C / SIGTERM as a flag checked between steps, and the kill hook the resume
tests use."""
from __future__ import annotations

import json
import os
import random
import signal
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from ..atomic import atomic_write_text

__all__ = ["STAGES", "KILL_ENV", "rng_state", "set_rng_state", "cpu_state", "MetricsLog", "StopRequest",
           "TrainingInterrupted", "close_iterator", "maybe_kill"]

STAGES = ("pretrain", "meta", "eval", "done")
#: testing hook: "STAGE:STEP" makes the process SIGKILL itself right after completing that step
#: (after that step's checkpoint, if any); "STAGE:STEP:raise" raises instead
KILL_ENV = "METASR_TRAIN_KILL_AFTER"


def rng_state() -> dict[str, Any]:
    """torch / numpy / python RNG states in a form ``torch.load(weights_only=True)`` accepts."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` saved."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def cpu_state(obj: Any) -> Any:
    """A copy of ``obj`` (tensors in nested dicts, lists and tuples) with every tensor detached on the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().clone()
    if isinstance(obj, dict):
        return {k: cpu_state(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(cpu_state(v) for v in obj)
    return obj


class MetricsLog:
    """Append-only JSONL log; :meth:`truncate` drops lines past a checkpoint (no duplicates on resume)."""

    def __init__(self, path: str | os.PathLike, enabled: bool = True) -> None:
        self.path = Path(path)
        self.enabled = enabled  # False on the ranks > 0 of a distributed run: rank 0 alone writes

    def write(self, record: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, sort_keys=False) + "\n")
            fh.flush()

    def read(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        out = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill
            if isinstance(rec, dict):
                out.append(rec)
        return out

    def truncate(self, stage: str, step: int) -> int:
        """Keep only records at or before (``stage``, ``step``); returns how many were dropped."""
        if not self.enabled:
            return 0
        limit = (STAGES.index(stage), step)
        records = self.read()
        keep = [r for r in records
                if r.get("stage") in STAGES and (STAGES.index(r["stage"]), int(r.get("step", 0))) <= limit]
        dropped = len(records) - len(keep)
        if self.path.is_file():
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in keep))
        return dropped


class StopRequest:
    """Turns SIGINT/SIGTERM into a flag checked between steps (a second Ctrl-C stops at once)."""

    def __init__(self) -> None:
        self.requested: str | None = None
        self._old: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        if self.requested is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name

    def __enter__(self) -> "StopRequest":
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handler)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


class TrainingInterrupted(KeyboardInterrupt):
    """Raised after a checkpoint was saved because of Ctrl-C or SIGTERM."""

    def __init__(self, stage: str, step: int, checkpoint: Path, signal_name: str) -> None:
        super().__init__(f"{signal_name}: stopped during {stage} after step {step}; checkpoint {checkpoint}")
        self.stage, self.step, self.checkpoint = stage, step, checkpoint


def close_iterator(it: Any) -> None:
    """Close ``it`` if it can be closed: DataLoader workers shut down now, not at garbage collection."""
    close = getattr(it, "close", None)
    if close is not None:
        close()


def maybe_kill(stage: str, step: int) -> None:
    """Testing hook (``KILL_ENV``): ``STAGE:STEP`` SIGKILLs this process after that step;
    ``STAGE:STEP:raise`` raises a RuntimeError instead (a crash without any saving)."""
    spec = os.environ.get(KILL_ENV)
    if not spec:
        return
    parts = spec.split(":")
    if parts[:2] == [stage, str(step)]:
        if parts[2:] == ["raise"]:
            raise RuntimeError(f"simulated crash after {stage} step {step} ({KILL_ENV}={spec})")
        os.kill(os.getpid(), signal.SIGKILL)

"""What every benchmark result file records about its run, and paths that name no machine.

* :func:`portable_path` writes a path as the repository sees it: relative to the checkout when inside it,
  ``../shared/...`` under the ``shared`` folder beside the checkout, else ``<outside>/NAME`` (the file name
  alone). Strings that are not absolute paths (bundled weights names, ``random``, relative paths) pass through.
* :func:`result_record` is the ``"record"`` entry of a result file: the command that made it (with portable
  paths), the commit (and whether the checkout had uncommitted changes), the CPU model and the CPU flags that
  decide the fast paths (AVX2, AVX-512, BF16, AMX), the thread count, the torch and Python versions and the
  UTC date.

The scripts in this folder import it as ``from _record import ...`` (``benchmarks/`` is on ``sys.path`` when a
script runs, and the scripts put it there when imported from elsewhere). It imports neither torch nor
metasr_adapter at module level, so the TensorFlow side of ``bench_tf_baseline.py`` can use it from a Python
without them.
"""
from __future__ import annotations

import datetime
import os
import platform
import shlex
import sys
from pathlib import Path
from typing import Any, Sequence

ROOT = Path(__file__).resolve().parents[1]  # the checkout holding benchmarks/
SHARED = ROOT.parent / "shared"
OUTSIDE = "<outside>"
#: /proc/cpuinfo flags that decide which kernels torch and TF can use on this CPU
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def _bases(path: Path) -> list[Path]:
    """``path`` as written and with its links resolved (the checkout or ../shared may be reached via a link)."""
    out = [path]
    try:
        resolved = path.resolve()
    except OSError:
        return out
    return out if resolved == path else out + [resolved]


def _relative(path: Path, base: Path) -> str | None:
    try:
        rel = path.relative_to(base)
    except ValueError:
        return None
    return rel.as_posix() if rel.parts else "."


def portable_path(p: str | os.PathLike | None) -> str | None:
    """``p`` with no machine path in it: ``benchmarks/x.json`` for a file in the checkout, ``../shared/data/...``
    for one under the ``shared`` folder beside it, ``<outside>/NAME`` for anything else absolute. Relative paths
    and other strings come back unchanged (as text); ``None`` stays ``None``."""
    if p is None:
        return None
    text = os.fspath(p)
    if not os.path.isabs(text):
        return Path(text).as_posix() if isinstance(p, os.PathLike) else text
    path = Path(os.path.normpath(text))
    for cand in _bases(path):
        for base in _bases(ROOT):
            rel = _relative(cand, base)
            if rel is not None:
                return rel
        for base in _bases(SHARED):
            rel = _relative(cand, base)
            if rel is not None:
                return "../shared" if rel == "." else f"../shared/{rel}"
    return f"{OUTSIDE}/{path.name}"


def portable_arg(arg: str) -> str:
    """One command-line argument with its absolute path made portable: ``/x/y``, ``--opt=/x/y`` and
    ``LABEL=/x/y`` forms; any other argument unchanged."""
    if os.path.isabs(arg):
        return portable_path(arg)
    head, sep, tail = arg.partition("=")
    if sep and os.path.isabs(tail):
        return f"{head}={portable_path(tail)}"
    return arg


def portable_argv(argv: Sequence[str]) -> list[str]:
    """Every argument of ``argv`` through :func:`portable_arg`."""
    return [portable_arg(str(a)) for a in argv]


def command_line(argv: Sequence[str] | None = None, script: str | os.PathLike | None = None) -> str:
    """``python benchmarks/SCRIPT ARGS...`` as a shell would take it, paths portable. ``argv``: the arguments
    after the script name (default ``sys.argv[1:]``); ``script``: the script file (default ``sys.argv[0]``)."""
    script = script if script is not None else (sys.argv[0] if sys.argv and sys.argv[0] else "?")
    args = list(sys.argv[1:]) if argv is None else [str(a) for a in argv]
    script_text = portable_path(Path(script).resolve() if os.path.exists(script) else script)
    return " ".join(["python", shlex.quote(script_text)] + [shlex.quote(a) for a in portable_argv(args)])


def cpu_flags(cpuinfo: str | None = None) -> list[str] | None:
    """Which of :data:`CPU_FLAGS` this CPU has (from ``/proc/cpuinfo``; ``None`` where it cannot be read)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return None
    for line in cpuinfo.splitlines():
        if line.startswith(("flags", "Features")):
            have = set(line.split(":", 1)[1].split())
            return [f for f in CPU_FLAGS if f in have]
    return None


def _environment() -> dict[str, Any]:
    """Commit, CPU model, torch: :func:`metasr_adapter.training.train.environment_info` when the package
    imports, else what git and /proc/cpuinfo say (a Python without torch, e.g. the TensorFlow venv)."""
    try:
        from metasr_adapter.training.train import environment_info
    except ImportError:
        pass
    else:
        return environment_info()
    import importlib.util

    # the package's own provenance helpers, loaded by path: this Python may have neither torch nor the package
    spec = importlib.util.spec_from_file_location("_metasr_provenance", ROOT / "metasr_adapter" / "provenance.py")
    provenance = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(provenance)
    commit, dirty = provenance.source_commit(ROOT)
    cpu = provenance.cpu_model()
    return {"commit": commit, "dirty": dirty, "cpu": cpu, "cpu_count": os.cpu_count(), "threads": None,
            "gpu": None, "torch": None, "python": platform.python_version()}


def result_record(argv: Sequence[str] | None = None, threads: Any = None,
                  script: str | os.PathLike | None = None) -> dict[str, Any]:
    """The ``"record"`` of a result file: ``command`` (see :func:`command_line`), ``commit``, ``dirty``,
    ``cpu``, ``cpu_flags``, ``cpu_count``, ``threads`` (``threads`` when given, e.g. for a script whose
    workers choose their own, else ``torch.get_num_threads()``), ``gpu``, ``torch``, ``python``, ``date``
    (UTC, ISO 8601)."""
    env = _environment()
    rec = {"command": command_line(argv, script), "commit": env.get("commit"), "dirty": env.get("dirty"),
           "cpu": env.get("cpu"), "cpu_flags": cpu_flags(), "cpu_count": env.get("cpu_count"),
           "threads": threads if threads is not None else env.get("threads"), "gpu": env.get("gpu"),
           "torch": env.get("torch"), "python": env.get("python") or platform.python_version(),
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    return rec

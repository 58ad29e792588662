"""Build and load the package's C++ kernels (``metasr_adapter/ops/native/*.cpp``) on first use.

Each source is compiled once per machine with the system's C++ compiler (``$CXX``, else ``g++`` or ``c++``;
``-O3 -march=native -fopenmp``) into a shared library in the cache folder (``$METASR_NATIVE_CACHE``, else
``~/.cache/metasr_adapter/native``), named by a digest of the source, the flags, the compiler's version, the
CPU's flags and torch's version, so an edited source, another compiler, CPU or torch builds anew. The library is
written under a temporary name and renamed into place (two processes never see half a file) and loaded with
:mod:`ctypes`, which releases the GIL during calls. The kernels run on torch's own OpenMP runtime: torch is imported
first, so the library's ``libgomp.so.1`` resolves to the copy torch loaded.

``METASR_NATIVE=0`` turns the kernels off (callers fall back to their torch code). Without a compiler, or when the
build fails, :func:`load` returns ``None`` and :func:`why_unavailable` says why.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import torch  # loaded first: its OpenMP runtime is the one the kernels link to

__all__ = ["load", "why_unavailable", "cache_dir", "FLAGS"]

SOURCES = Path(__file__).with_name("native")
FLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=gnu++17", "-ffp-contract=fast")
ABI = 1  # the value each library's ``metasr_<name>_abi()`` returns; a mismatch is a stale or foreign file

_loaded: dict[str, ctypes.CDLL | None] = {}
_reasons: dict[str, str] = {}
_lock = threading.Lock()


def cache_dir() -> Path:
    """Where built libraries live: ``$METASR_NATIVE_CACHE``, else ``~/.cache/metasr_adapter/native``."""
    env = os.environ.get("METASR_NATIVE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "metasr_adapter" / "native"


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "g++", "c++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return line
    except OSError:
        pass
    import platform
    return platform.processor() or platform.machine()


def _digest(source: bytes, compiler: str) -> str:
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=False).stdout
    h = hashlib.sha256()
    parts = (source, " ".join(FLAGS).encode(), version.encode(), _cpu_flags().encode(), str(ABI).encode(),
             torch.__version__.encode())  # another torch may bring another OpenMP runtime
    for part in parts:
        h.update(part)
        h.update(b"\0")
    return h.hexdigest()[:16]


def _build(name: str) -> ctypes.CDLL:
    source_path = SOURCES / f"{name}.cpp"
    source = source_path.read_bytes()
    compiler = _compiler()
    if compiler is None:
        raise RuntimeError("no C++ compiler found (set $CXX, or install g++)")
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{name}-{_digest(source, compiler)}.so"
    if not target.exists():
        fd, tmp = tempfile.mkstemp(prefix=f".{name}-", suffix=".so", dir=folder)
        os.close(fd)
        try:
            done = subprocess.run([compiler, *FLAGS, str(source_path), "-o", tmp], capture_output=True, text=True,
                                  check=False)
            if done.returncode != 0:
                raise RuntimeError(f"{compiler} failed on {source_path.name}:\n{done.stderr.strip()[-2000:]}")
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    lib = ctypes.CDLL(str(target))
    abi = getattr(lib, f"metasr_{name}_abi")
    abi.restype = ctypes.c_int
    if abi() != ABI:
        raise RuntimeError(f"{target} reports ABI {abi()}, expected {ABI}: delete it to rebuild")
    return lib


def load(name: str) -> ctypes.CDLL | None:
    """The library built from ``native/<name>.cpp`` (built on the first call of the process, or taken from the
    cache), or ``None`` when ``METASR_NATIVE=0`` or the build failed (:func:`why_unavailable`)."""
    with _lock:
        if name not in _loaded:
            if os.environ.get("METASR_NATIVE", "1") == "0":
                _loaded[name], _reasons[name] = None, "METASR_NATIVE=0"
            else:
                try:
                    _loaded[name] = _build(name)
                except (OSError, RuntimeError, AttributeError) as exc:
                    _loaded[name], _reasons[name] = None, str(exc)
        return _loaded[name]


def mark_unavailable(name: str, reason: str) -> None:
    """Record that the library ``name`` must not be used (a check of its caller failed): :func:`why_unavailable`
    returns ``reason``."""
    with _lock:
        _reasons[name] = reason


def why_unavailable(name: str) -> str | None:
    """Why :func:`load` returned ``None`` for ``name`` (``None`` if it loaded or was not tried)."""
    return _reasons.get(name)

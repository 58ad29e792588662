"""Atomic file writes: a temp file in the same folder, then ``os.replace``.

A reader (or a resumed run) never sees a half-written checkpoint, even if the process is
killed in the middle of a save. A root-level utility (it imports nothing of the package), so that
every layer, from image files (``ops``) to checkpoints (``training``), writes through it.
"""
from __future__ import annotations

import hashlib
import io
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch

__all__ = ["atomic_write", "atomic_save", "atomic_write_text", "atomic_write_bytes", "atomic_savefig", "save_checked",
           "load_checked", "DamagedFileError"]

#: first bytes of a checksummed file: magic, then the sha256 of the payload (a torch.save stream)
_CHECKED_MAGIC = b"METASR-SHA256\n"


def _umask() -> int:
    """The process umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` on a temp file beside ``path``, fsync it, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a written file gets the usual permissions
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj, path)`` atomically."""
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    def _write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)

    return atomic_write(path, _write)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_savefig(fig: Any, path: str | os.PathLike, dpi: float | None = None) -> Path:
    """Write a matplotlib figure atomically, in the format its suffix names (PNG without one)."""
    out = Path(path)
    kwargs = {} if dpi is None else {"dpi": dpi}
    return atomic_write(out, lambda tmp: fig.savefig(tmp, format=out.suffix.lstrip(".") or "png", **kwargs))


class DamagedFileError(ValueError):
    """A checksummed file is truncated or its bytes changed since it was written."""


def save_checked(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` atomically, framed with the sha256 of its bytes (read back by :func:`load_checked`)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    payload = buf.getvalue()
    return atomic_write_bytes(path, _CHECKED_MAGIC + hashlib.sha256(payload).digest() + payload)


def load_checked(path: str | os.PathLike, **load_kwargs: Any) -> Any:
    """Load a file written by :func:`save_checked` after verifying its checksum (``weights_only=True``
    unless given). A plain ``torch.save`` file (written before checksums) loads unverified. Raises
    :class:`DamagedFileError` naming the file and the fix for an empty, truncated or altered file."""
    path = Path(path)
    data = path.read_bytes()
    fix = "delete it to start over, or restore a good copy"
    if not data:
        raise DamagedFileError(f"{path} is empty (0 bytes): {fix}")
    load_kwargs.setdefault("weights_only", True)
    load_kwargs.setdefault("map_location", "cpu")
    if data.startswith(_CHECKED_MAGIC):
        head = len(_CHECKED_MAGIC)
        digest, payload = data[head : head + 32], data[head + 32 :]
        if len(digest) < 32 or hashlib.sha256(payload).digest() != digest:
            raise DamagedFileError(f"{path} fails its sha256 check ({len(data)} bytes; truncated or altered since "
                                   f"it was written): {fix}")
        data = payload
    try:
        return torch.load(io.BytesIO(data), **load_kwargs)
    except Exception as exc:  # a damaged plain torch file
        raise DamagedFileError(f"{path} cannot be read as a checkpoint ({type(exc).__name__}: {exc}); {fix}") from exc

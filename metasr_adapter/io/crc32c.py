"""CRC-32C (Castagnoli), the checksum TensorFlow stores in checkpoint bundles.

``crc32c(data, value=0)`` returns the standard CRC-32C of ``data`` (reflected polynomial
0x82F63B78, initial value and final XOR 0xFFFFFFFF), continuing from ``value`` the way
``zlib.crc32`` does. When the ``google_crc32c`` or ``crc32c`` package is importable it is used;
otherwise a numpy implementation computes the raw CRC of many equal-length chunks side by side
(slicing-by-4 tables) and joins the chunk CRCs with GF(2) "append zeros" operators, which
handles a few MB in a few tens of milliseconds. Set ``METASR_PURE_CRC32C=1`` to force it.

``mask``/``unmask`` apply TensorFlow's (and LevelDB's) checksum masking.
"""
from __future__ import annotations

import os
from typing import Callable, Union

import numpy as np

__all__ = ["crc32c", "crc32c_pure", "mask", "unmask", "BACKEND"]

Buffer = Union[bytes, bytearray, memoryview, np.ndarray]

_POLY = 0x82F63B78
_MASK_DELTA = 0xA282EAD8
_M32 = 0xFFFFFFFF
_SMALL = 3072  # below this many bytes the plain byte loop is faster than numpy (measured)


def _byte_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ _POLY if c & 1 else c >> 1
        table.append(c)
    return table


_T0 = _byte_table()


def _slice_tables() -> np.ndarray:
    """Tables for slicing-by-4: row k advances a byte by k further zero bytes."""
    t = np.zeros((4, 256), dtype=np.uint32)
    t[0] = _T0
    for k in range(1, 4):
        prev = t[k - 1]
        t[k] = (prev >> np.uint32(8)) ^ t[0][prev & np.uint32(0xFF)]
    return t


_TABLES = _slice_tables()


# --- GF(2) operators: a 32x32 bit matrix is stored as the list of its 32 column images ---

def _apply(mat: list[int], x: int) -> int:
    out = 0
    b = 0
    while x:
        if x & 1:
            out ^= mat[b]
        x >>= 1
        b += 1
    return out


def _compose(a: list[int], b: list[int]) -> list[int]:
    """Matrix of ``a(b(x))``."""
    return [_apply(a, col) for col in b]


# _ZEROS[k]: operator that feeds 2**k zero bytes through the raw CRC register.
_ZEROS: list[list[int]] = [[(_T0[1 << b] if b < 8 else 0) ^ ((1 << b) >> 8) for b in range(32)]]
_ZERO_TABLES: dict[int, np.ndarray] = {}


def _zeros_op(k: int) -> list[int]:
    while len(_ZEROS) <= k:
        last = _ZEROS[-1]
        _ZEROS.append(_compose(last, last))
    return _ZEROS[k]


def _shift(reg: int, nbytes: int) -> int:
    """Raw register after ``nbytes`` zero bytes (linear in ``reg``)."""
    k = 0
    while nbytes and reg:
        if nbytes & 1:
            reg = _apply(_zeros_op(k), reg)
        nbytes >>= 1
        k += 1
    return reg


def _zero_tables(k: int) -> np.ndarray:
    """Byte tables (4, 256) of the 2**k-zero-bytes operator, for applying it to arrays."""
    tab = _ZERO_TABLES.get(k)
    if tab is None:
        cols = np.array(_zeros_op(k), dtype=np.uint32)
        tab = np.zeros((4, 256), dtype=np.uint32)
        v = np.arange(256)
        for j in range(4):
            for bit in range(8):
                tab[j] ^= np.where((v >> bit) & 1 == 1, cols[8 * j + bit], np.uint32(0)).astype(np.uint32)
        _ZERO_TABLES[k] = tab
    return tab


def _apply_tables(tab: np.ndarray, x: np.ndarray) -> np.ndarray:
    return (tab[0][x & 0xFF] ^ tab[1][(x >> 8) & 0xFF]
            ^ tab[2][(x >> 16) & 0xFF] ^ tab[3][x >> 24])


# --- raw CRC (register starts at 0, no final XOR): linear in the data ---

def _raw_bytes(data: memoryview | bytes, reg: int) -> int:
    t = _T0
    for byte in data:
        reg = t[(reg ^ byte) & 0xFF] ^ (reg >> 8)
    return reg


def _raw_numpy(buf: np.ndarray) -> int:
    """Raw CRC (zero start register) of a uint8 array, computed over parallel chunks."""
    n = buf.size
    # Short chunks keep the per-byte loop short; 64-256 bytes measured fastest from 4 kB to 3 MB.
    log_chunk = 6 if n <= 1 << 16 else 7 if n <= 1 << 20 else 8
    chunk = 1 << log_chunk
    lanes = -(-n // chunk)
    # Leading zero bytes leave a zero register unchanged, so pad at the front.
    pad = lanes * chunk - n
    if pad:
        buf = np.concatenate([np.zeros(pad, dtype=np.uint8), buf])
    words = np.ascontiguousarray(buf.view("<u4").reshape(lanes, chunk // 4).T)
    t0, t1, t2, t3 = _TABLES
    reg = np.zeros(lanes, dtype=np.uint32)
    for w in words:
        x = reg ^ w
        reg = t3[x & 0xFF] ^ t2[(x >> 8) & 0xFF] ^ t1[(x >> 16) & 0xFF] ^ t0[x >> 24]
    # Join neighbouring chunks: crc(A || B) = zeros_len(B)(crc(A)) ^ crc(B).
    k = log_chunk
    while reg.size > 1:
        if reg.size % 2:  # a zero chunk in front changes nothing
            reg = np.concatenate([np.zeros(1, dtype=np.uint32), reg])
        reg = _apply_tables(_zero_tables(k), reg[0::2]) ^ reg[1::2]
        k += 1
    return int(reg[0])


def _as_uint8(data: Buffer) -> np.ndarray:
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    return np.frombuffer(data, dtype=np.uint8)


def crc32c_pure(data: Buffer, value: int = 0) -> int:
    """CRC-32C of ``data`` continuing from ``value``, without any optional package."""
    if not 0 <= value <= _M32:
        raise ValueError(f"value={value!r}: a CRC-32C is an unsigned 32-bit integer")
    buf = _as_uint8(data)
    reg = value ^ _M32
    if buf.size < _SMALL:
        return _raw_bytes(buf.tobytes(), reg) ^ _M32
    return (_shift(reg, buf.size) ^ _raw_numpy(buf)) ^ _M32


def _pick_backend() -> tuple[str, Callable[[Buffer, int], int]]:
    if os.environ.get("METASR_PURE_CRC32C", "") not in ("", "0"):
        return "numpy", crc32c_pure
    try:
        import google_crc32c  # type: ignore[import-not-found]

        if getattr(google_crc32c, "implementation", "") == "c":
            return "google_crc32c", lambda d, v: int(google_crc32c.extend(v, bytes(_as_uint8(d))))
    except ImportError:
        pass
    try:
        import crc32c as _crc32c_pkg  # type: ignore[import-not-found]

        return "crc32c", lambda d, v: int(_crc32c_pkg.crc32c(bytes(_as_uint8(d)), v))
    except (ImportError, AttributeError):
        pass
    return "numpy", crc32c_pure


BACKEND, _impl = _pick_backend()


def crc32c(data: Buffer, value: int = 0) -> int:
    """Standard CRC-32C of ``data`` (bytes-like or a numpy array's raw bytes), continuing ``value``."""
    return _impl(data, value)


def mask(crc: int) -> int:
    """TensorFlow/LevelDB masked CRC: rotate right by 15 bits, then add 0xa282ead8 (mod 2**32)."""
    return ((((crc >> 15) | (crc << 17)) & _M32) + _MASK_DELTA) & _M32


def unmask(masked: int) -> int:
    """Inverse of :func:`mask`."""
    rot = (masked - _MASK_DELTA) & _M32
    return ((rot >> 17) | (rot << 15)) & _M32

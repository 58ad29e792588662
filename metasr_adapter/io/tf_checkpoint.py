"""Read TensorFlow V2 checkpoint bundles (``PREFIX.index`` + ``PREFIX.data-SSSSS-of-NNNNN``)
without TensorFlow or protobuf.

Format, as TensorFlow's tensor bundle writes it:

* ``PREFIX.index`` is an SSTable (LevelDB table format). The last 48 bytes are the footer: two
  BlockHandles (offset, size as varint64) for the metaindex and index blocks, zero padding and
  the magic number 0xdb4775248b80fb57 (fixed64, little endian). Every block is followed by a
  5-byte trailer: a compression type byte (0 = none) and the masked CRC-32C of the block plus
  that byte. A block holds prefix-compressed entries ``varint shared, varint non_shared,
  varint value_len, key suffix, value``, then ``uint32`` restart offsets and their count. The
  index block maps separator keys to the BlockHandles of the data blocks.
* In the data blocks the empty key holds a ``BundleHeaderProto`` (1 num_shards, 2 endianness,
  3 version) and every other key, a tensor name, holds a ``BundleEntryProto`` (1 dtype,
  2 shape, 3 shard_id, 4 offset, 5 size, 6 crc32c as fixed32, 7 slices).
* The tensor bytes sit at ``[offset, offset + size)`` of shard ``shard_id``; ``crc32c`` is the
  masked CRC-32C of exactly those bytes.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Union

import numpy as np

from .crc32c import crc32c, mask

__all__ = [
    "CheckpointError",
    "TensorEntry",
    "read_tf_checkpoint",
    "list_tf_checkpoint",
    "tf_checkpoint_entries",
    "resolve_tf_prefix",
    "is_tf_checkpoint",
]

PathLike = Union[str, "os.PathLike[str]"]

_MAGIC = 0xDB4775248B80FB57
_FOOTER_LEN = 48
_TRAILER_LEN = 5
_BUNDLE_VERSION = 1  # the tensor-bundle format version this reader implements
_DATA_SUFFIX = re.compile(r"\.data-\d{5}-of-\d{5}$")
_FIX = ("re-download or re-export the checkpoint, and pass its prefix "
        "(the path without '.index' / '.data-…', e.g. 'Model/Pretrained')")

# TensorFlow DataType enum -> (name, little-endian numpy dtype of the stored bytes or None)
_DTYPES: dict[int, tuple[str, str | None]] = {
    1: ("float32", "<f4"), 2: ("float64", "<f8"), 3: ("int32", "<i4"), 4: ("uint8", "u1"),
    5: ("int16", "<i2"), 6: ("int8", "i1"), 7: ("string", None), 8: ("complex64", "<c8"),
    9: ("int64", "<i8"), 10: ("bool", "?"), 11: ("qint8", "i1"), 12: ("quint8", "u1"),
    13: ("qint32", "<i4"), 14: ("bfloat16", "<u2"), 15: ("qint16", "<i2"), 16: ("quint16", "<u2"),
    17: ("uint16", "<u2"), 18: ("complex128", "<c16"), 19: ("float16", "<f2"),
    20: ("resource", None), 21: ("variant", None), 22: ("uint32", "<u4"), 23: ("uint64", "<u8"),
}


class CheckpointError(ValueError):
    """A TensorFlow checkpoint that cannot be read; the message names the file, the tensor,
    what is wrong and how to fix it."""


class _Malformed(Exception):
    """Internal: a structural decoding error, re-raised as CheckpointError with context."""


@dataclass(frozen=True)
class TensorEntry:
    """One ``BundleEntryProto``: where a tensor's bytes are and what they should look like."""

    name: str
    tf_dtype: int
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int
    masked_crc32c: int
    num_slices: int = 0

    @property
    def dtype_name(self) -> str:
        return _DTYPES.get(self.tf_dtype, (f"DataType({self.tf_dtype})", None))[0]


# ----------------------------------------------------------------------------- protobuf wire

def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= end:
            raise _Malformed("varint runs past the end of its buffer")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise _Malformed("varint longer than 10 bytes")


def _parse_proto(buf: bytes) -> dict[int, list[int | bytes]]:
    """Decode protobuf wire format into ``{field_number: [values]}`` (ints or bytes)."""
    fields: dict[int, list[int | bytes]] = {}
    pos, end = 0, len(buf)
    while pos < end:
        tag, pos = _varint(buf, pos, end)
        number, wire = tag >> 3, tag & 7
        if number == 0:
            raise _Malformed("protobuf field number 0")
        value: int | bytes
        if wire == 0:
            value, pos = _varint(buf, pos, end)
        elif wire in (1, 5):
            n = 8 if wire == 1 else 4
            if pos + n > end:
                raise _Malformed("fixed-width protobuf field runs past the end")
            value = int.from_bytes(buf[pos:pos + n], "little")
            pos += n
        elif wire == 2:
            n, pos = _varint(buf, pos, end)
            if pos + n > end:
                raise _Malformed("length-delimited protobuf field runs past the end")
            value = bytes(buf[pos:pos + n])
            pos += n
        else:
            raise _Malformed(f"unsupported protobuf wire type {wire} (field {number})")
        fields.setdefault(number, []).append(value)
    return fields


def _int_field(fields: dict[int, list[int | bytes]], number: int, default: int = 0) -> int:
    values = fields.get(number)
    if not values:
        return default
    v = values[-1]  # proto3: the last occurrence wins
    if not isinstance(v, int):
        raise _Malformed(f"field {number} should be an integer")
    return v - (1 << 64) if v >= 1 << 63 else v  # int32/int64 are two's complement varints


def _msg_field(fields: dict[int, list[int | bytes]], number: int) -> list[bytes]:
    values = fields.get(number, [])
    if not all(isinstance(v, bytes) for v in values):
        raise _Malformed(f"field {number} should be a message")
    return values  # type: ignore[return-value]


def _parse_shape(buf: bytes) -> tuple[int, ...]:
    fields = _parse_proto(buf)
    if _int_field(fields, 3):
        raise _Malformed("shape has unknown rank")
    dims = tuple(_int_field(_parse_proto(d), 1) for d in _msg_field(fields, 2))
    if any(d < 0 for d in dims):
        raise _Malformed(f"shape {dims} has an unknown (negative) dimension")
    return dims


def _parse_entry(name: str, buf: bytes) -> TensorEntry:
    f = _parse_proto(buf)
    shape_msgs = _msg_field(f, 2)
    crc_values = f.get(6, [])
    return TensorEntry(
        name=name,
        tf_dtype=_int_field(f, 1),
        shape=_parse_shape(shape_msgs[-1]) if shape_msgs else (),
        shard_id=_int_field(f, 3),
        offset=_int_field(f, 4),
        size=_int_field(f, 5),
        masked_crc32c=int(crc_values[-1]) if crc_values else 0,  # type: ignore[arg-type]
        num_slices=len(_msg_field(f, 7)),
    )


# ----------------------------------------------------------------------------- SSTable

def _read_block(data: bytes, offset: int, size: int, limit: int, verify: bool) -> bytes:
    if offset + size + _TRAILER_LEN > limit:
        raise _Malformed(f"block [{offset}, {offset + size}) plus its trailer lies beyond the end of the "
                         f"table contents ({limit} bytes): the file is truncated")
    contents = data[offset:offset + size]
    ctype = data[offset + size]
    if verify:
        stored = int.from_bytes(data[offset + size + 1:offset + size + _TRAILER_LEN], "little")
        actual = mask(crc32c(data[offset:offset + size + 1]))
        if stored != actual:
            raise _Malformed(f"checksum mismatch in the block at offset {offset}: stored masked CRC32C "
                             f"0x{stored:08x}, computed 0x{actual:08x}: the file is corrupted")
    if ctype == 1:
        raise _Malformed(f"the block at offset {offset} is Snappy-compressed, which this reader does not "
                         "support (TensorFlow writes checkpoint indexes uncompressed)")
    if ctype != 0:
        raise _Malformed(f"the block at offset {offset} has unknown compression type {ctype}")
    return contents


def _block_entries(block: bytes) -> list[tuple[bytes, bytes]]:
    if len(block) < 4:
        raise _Malformed("block shorter than its restart count")
    num_restarts = int.from_bytes(block[-4:], "little")
    limit = len(block) - 4 - 4 * num_restarts
    if limit < 0:
        raise _Malformed(f"block claims {num_restarts} restart points, more than fit in {len(block)} bytes")
    out: list[tuple[bytes, bytes]] = []
    key = b""
    pos = 0
    while pos < limit:
        shared, pos = _varint(block, pos, limit)
        non_shared, pos = _varint(block, pos, limit)
        value_len, pos = _varint(block, pos, limit)
        if shared > len(key) or pos + non_shared + value_len > limit:
            raise _Malformed("block entry runs past the end of the block")
        key = key[:shared] + block[pos:pos + non_shared]
        pos += non_shared
        out.append((key, block[pos:pos + value_len]))
        pos += value_len
    return out


def _read_table(path: Path, verify: bool) -> list[tuple[bytes, bytes]]:
    """All (key, value) pairs of an SSTable file, in order."""
    data = path.read_bytes()
    n = len(data)
    if n < _FOOTER_LEN:
        raise CheckpointError(f"{path}: truncated index: {n} bytes, shorter than the {_FOOTER_LEN}-byte "
                              f"SSTable footer; {_FIX}")
    magic = int.from_bytes(data[-8:], "little")
    if magic != _MAGIC:
        raise CheckpointError(f"{path}: bad magic number 0x{magic:016x} at the end of the file (a TensorFlow "
                              f"V2 checkpoint .index ends with 0x{_MAGIC:016x}): the .index is truncated or "
                              f"corrupted, or is not a V2 checkpoint index; {_FIX}")
    limit = n - _FOOTER_LEN
    try:
        footer = data[limit:n - 8]
        _meta_off, pos = _varint(footer, 0, len(footer))
        _meta_size, pos = _varint(footer, pos, len(footer))
        index_off, pos = _varint(footer, pos, len(footer))
        index_size, pos = _varint(footer, pos, len(footer))
        pairs: list[tuple[bytes, bytes]] = []
        for _, handle in _block_entries(_read_block(data, index_off, index_size, limit, verify)):
            off, p = _varint(handle, 0, len(handle))
            size, _ = _varint(handle, p, len(handle))
            pairs.extend(_block_entries(_read_block(data, off, size, limit, verify)))
    except _Malformed as e:
        raise CheckpointError(f"{path}: corrupted or truncated index: {e}; {_FIX}") from None
    return pairs


# ----------------------------------------------------------------------------- bundle

def _prefix_in_dir(d: Path) -> str:
    ckpt = d / "checkpoint"  # TF's text file naming the latest checkpoint
    if ckpt.is_file():
        m = re.search(r'^model_checkpoint_path:\s*"(.*)"\s*$', ckpt.read_text(errors="replace"), re.M)
        if m:
            named = Path(m.group(1))
            for cand in (named if named.is_absolute() else d / named, d / named.name):
                if Path(f"{cand}.index").is_file():
                    return str(cand)
    found = sorted(d.glob("*.index"))
    if len(found) == 1:
        return str(found[0])[: -len(".index")]
    which = ", ".join(p.name for p in found[:10]) or "none"
    raise FileNotFoundError(f"{d} is a directory with {len(found)} checkpoint .index files ({which}); "
                            "pass one checkpoint prefix, e.g. DIR/NAME for DIR/NAME.index")


def resolve_tf_prefix(path: PathLike) -> Path:
    """Checkpoint prefix from a prefix, a ``.index`` path, a ``.data-*`` path or a directory."""
    s = os.fspath(path)
    if s.endswith(".index"):
        prefix = s[: -len(".index")]
    elif _DATA_SUFFIX.search(s):
        prefix = _DATA_SUFFIX.sub("", s)
    elif os.path.isdir(s):
        prefix = _prefix_in_dir(Path(s))
    else:
        prefix = s
    index = Path(prefix + ".index")
    if not index.is_file():
        raise FileNotFoundError(
            f"no TensorFlow checkpoint index {index} (from {s!r}): pass the checkpoint prefix "
            "(e.g. 'Model/Pretrained' for Model/Pretrained.index + Model/Pretrained.data-00000-of-00001), "
            "the .index path, a .data-* path or a directory holding one checkpoint")
    return Path(prefix)


def is_tf_checkpoint(path: PathLike) -> bool:
    """True when ``path`` resolves to a checkpoint whose ``.index`` exists."""
    try:
        resolve_tf_prefix(path)
    except (FileNotFoundError, OSError):
        return False
    return True


@dataclass(frozen=True)
class _Bundle:
    prefix: Path
    num_shards: int
    big_endian: bool
    entries: dict[str, TensorEntry]


def _read_bundle(path: PathLike, verify: bool) -> _Bundle:
    prefix = resolve_tf_prefix(path)
    index = Path(f"{prefix}.index")
    pairs = _read_table(index, verify)
    if not pairs or pairs[0][0] != b"":
        raise CheckpointError(f"{index}: the index has no bundle header (empty key); it is not a TensorFlow "
                              f"V2 checkpoint index; {_FIX}")
    try:
        header = _parse_proto(pairs[0][1])
        num_shards = _int_field(header, 1)
        endianness = _int_field(header, 2)
        versions = _msg_field(header, 3)
        version = _parse_proto(versions[-1]) if versions else {}
        min_consumer = _int_field(version, 2)
        bad = {v for v in version.get(3, []) if isinstance(v, int)}
    except _Malformed as e:
        raise CheckpointError(f"{index}: corrupted bundle header: {e}; {_FIX}") from None
    if num_shards < 1 or endianness not in (0, 1):
        raise CheckpointError(f"{index}: bundle header has num_shards={num_shards}, endianness={endianness}; "
                              f"the index is corrupted; {_FIX}")
    if min_consumer > _BUNDLE_VERSION or _BUNDLE_VERSION in bad:
        raise CheckpointError(f"{index}: written by a newer tensor-bundle format (min_consumer={min_consumer}, "
                              f"bad_consumers={sorted(bad)}); this reader implements version {_BUNDLE_VERSION}")
    entries: dict[str, TensorEntry] = {}
    for key, value in pairs[1:]:
        if key[:1] == b"\x00":  # data of one slice of a partitioned variable, not a tensor name
            continue
        name = key.decode("utf-8", errors="backslashreplace")
        try:
            entry = _parse_entry(name, value)
        except _Malformed as e:
            raise CheckpointError(f"{index}: tensor {name!r}: corrupted entry: {e}; {_FIX}") from None
        if not 0 <= entry.shard_id < num_shards or entry.offset < 0 or entry.size < 0:
            raise CheckpointError(f"{index}: tensor {name!r}: entry points at shard {entry.shard_id} of "
                                  f"{num_shards}, offset {entry.offset}, size {entry.size}; the index is "
                                  f"corrupted; {_FIX}")
        entries[name] = entry
    return _Bundle(prefix, num_shards, endianness == 1, entries)


def _numpy_dtype(entry: TensorEntry, bfloat16: str) -> np.dtype:
    """dtype of the array :func:`read_tf_checkpoint` returns for ``entry``."""
    name, code = _DTYPES.get(entry.tf_dtype, (None, None))
    if code is None:
        return np.dtype(object)
    if name == "bfloat16" and bfloat16 == "float32":
        return np.dtype(np.float32)
    return np.dtype(code).newbyteorder("=")


def tf_checkpoint_entries(prefix: PathLike, *, verify: bool = True) -> dict[str, TensorEntry]:
    """Raw index entries (dtype enum, shape, shard, offset, size, masked CRC) by tensor name."""
    return dict(_read_bundle(prefix, verify).entries)


def list_tf_checkpoint(prefix: PathLike, *, verify: bool = True) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
    """``{name: (dtype, shape)}`` of every tensor, from the ``.index`` alone (no ``.data`` read).

    The dtype is the one :func:`read_tf_checkpoint` returns (bfloat16 → float32; string and other
    non-numeric tensors → object).
    """
    return {n: (_numpy_dtype(e, "float32"), e.shape) for n, e in _read_bundle(prefix, verify).entries.items()}


def _shard_path(prefix: Path, shard: int, num_shards: int) -> Path:
    return Path(f"{prefix}.data-{shard:05d}-of-{num_shards:05d}")


def _decode(entry: TensorEntry, raw: bytearray, big_endian: bool, bfloat16: str, where: Path) -> np.ndarray:
    name, code = _DTYPES.get(entry.tf_dtype, (None, None))
    if name is None:
        raise CheckpointError(f"{where}: tensor {entry.name!r} has unknown TensorFlow dtype enum {entry.tf_dtype}; "
                              "the index is corrupted or from a newer TensorFlow")
    if code is None:
        raise NotImplementedError(f"tensor {entry.name!r} in {where} has dtype {name}, which this reader does not "
                                  "decode (numeric and bool tensors only); leave it out with names=[...]")
    dt = np.dtype(code)
    count = math.prod(entry.shape)
    if count * dt.itemsize != entry.size:
        raise CheckpointError(f"{where}: tensor {entry.name!r}: the index gives {entry.size} bytes, but shape "
                              f"{entry.shape} of {name} needs {count * dt.itemsize}; the index is corrupted; {_FIX}")
    if big_endian:
        dt = dt.newbyteorder(">")
    arr = np.frombuffer(raw, dtype=dt).reshape(entry.shape)
    if big_endian:
        arr = arr.astype(dt.newbyteorder("="))
    if name == "bfloat16" and bfloat16 == "float32":
        arr = (arr.astype(np.uint32) << np.uint32(16)).view(np.float32)
    return arr


def read_tf_checkpoint(prefix: PathLike, *, verify: bool = True, names: Iterable[str] | None = None,
                       bfloat16: str = "float32") -> dict[str, np.ndarray]:
    """Read tensors of a TensorFlow V2 checkpoint into numpy arrays (shapes as stored, e.g. HWIO).

    ``prefix`` may also be the ``.index`` path, a ``.data-*`` path or a directory with one checkpoint.
    ``verify`` checks the index block CRCs and every tensor's stored CRC-32C. ``names`` restricts
    the read to those tensors (``KeyError`` for unknown ones). ``bfloat16='raw'`` returns bfloat16
    tensors as their uint16 bit patterns instead of float32.

    Raises ``FileNotFoundError`` when there is no ``.index``, ``CheckpointError`` (a ValueError)
    for a missing or truncated ``.data`` shard, a checksum mismatch or a corrupted index, and
    ``NotImplementedError`` for string/resource/variant tensors and partitioned variables.
    """
    if bfloat16 not in ("float32", "raw"):
        raise ValueError(f"bfloat16={bfloat16!r}: use 'float32' (convert) or 'raw' (uint16 bit patterns)")
    bundle = _read_bundle(prefix, verify)
    if names is None:
        wanted = list(bundle.entries.values())
    else:
        names = list(names)
        unknown = [n for n in names if n not in bundle.entries]
        if unknown:
            have = ", ".join(sorted(bundle.entries)[:8])
            raise KeyError(f"{unknown} not in checkpoint {bundle.prefix} (it has {len(bundle.entries)} tensors: {have}, …)")
        wanted = [bundle.entries[n] for n in dict.fromkeys(names)]
    for e in wanted:
        if e.num_slices:
            raise NotImplementedError(f"tensor {e.name!r} in {bundle.prefix} is a partitioned variable saved in "
                                      f"{e.num_slices} slices, which this reader does not assemble; leave it out "
                                      "with names=[...]")
    by_shard: dict[int, list[TensorEntry]] = {}
    for e in wanted:
        by_shard.setdefault(e.shard_id, []).append(e)
    out: dict[str, np.ndarray] = {}
    for shard, entries in sorted(by_shard.items()):
        path = _shard_path(bundle.prefix, shard, bundle.num_shards)
        if not path.is_file():
            some = ", ".join(repr(e.name) for e in entries[:3])
            raise CheckpointError(f"missing data shard {path}: it holds {len(entries)} tensor(s) ({some}…) of "
                                  f"checkpoint {bundle.prefix}; copy the .data-* file(s) next to the .index with "
                                  f"the same prefix, or {_FIX}")
        with open(path, "rb") as f:
            file_size = os.fstat(f.fileno()).st_size
            entries.sort(key=lambda e: e.offset)
            for e in entries:  # report a short file before any checksum error it would cause
                end = e.offset + e.size
                if end > file_size:
                    raise CheckpointError(f"{path}: truncated data: tensor {e.name!r} needs bytes [{e.offset}, {end}) "
                                          f"but the file has only {file_size} bytes; {_FIX}")
            for e in entries:
                end = e.offset + e.size
                f.seek(e.offset)
                raw = bytearray(e.size)
                if f.readinto(raw) != e.size:
                    raise CheckpointError(f"{path}: short read for tensor {e.name!r}; {_FIX}")
                if verify:
                    actual = mask(crc32c(raw))
                    if actual != e.masked_crc32c:
                        raise CheckpointError(
                            f"{path}: checksum mismatch for tensor {e.name!r} (bytes [{e.offset}, {end})): stored "
                            f"masked CRC32C 0x{e.masked_crc32c:08x}, computed 0x{actual:08x}; the data file is "
                            f"corrupted: {_FIX}")
                out[e.name] = _decode(e, raw, bundle.big_endian, bfloat16, path)
    return {e.name: out[e.name] for e in wanted}

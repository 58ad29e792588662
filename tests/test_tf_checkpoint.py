"""TensorFlow V2 checkpoint reader and CRC-32C.

A test-only writer of the bundle format (below) exercises the reader on a fresh clone; the
official MZSR checkpoint in ../shared checks it against TensorFlow's own conversion.
"""
from __future__ import annotations

import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from conftest import shared_path
from metasr_adapter.io import crc32c as crcmod
from metasr_adapter.io.tf_checkpoint import (
    CheckpointError,
    list_tf_checkpoint,
    read_tf_checkpoint,
    tf_checkpoint_entries,
)

# --------------------------------------------------------------------------- test-only writer

MAGIC = 0xDB4775248B80FB57
# TensorFlow's DataType enum (tensorflow/core/framework/types.proto)
TF_ENUM = {"float32": 1, "float64": 2, "int32": 3, "uint8": 4, "int16": 5, "int8": 6, "string": 7,
           "int64": 9, "bool": 10, "bfloat16": 14, "uint16": 17, "float16": 19, "uint32": 22, "uint64": 23}


def ref_crc32c(data: bytes) -> int:
    """Bit-at-a-time CRC-32C straight from its definition (reflected poly 0x82F63B78)."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def ref_mask(crc: int) -> int:
    rotated = ((crc >> 15) | (crc << 17)) & 0xFFFFFFFF
    return (rotated + 0xA282EAD8) & 0xFFFFFFFF


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        low = n & 0x7F
        n >>= 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _f_varint(num: int, value: int) -> bytes:
    return _varint(num << 3) + _varint(value)


def _f_bytes(num: int, payload: bytes) -> bytes:
    return _varint((num << 3) | 2) + _varint(len(payload)) + payload


def _f_fixed32(num: int, value: int) -> bytes:
    return _varint((num << 3) | 5) + struct.pack("<I", value)


def _block(pairs: list[tuple[bytes, bytes]], restart_interval: int) -> bytes:
    out = bytearray()
    restarts: list[int] = []
    prev = b""
    for i, (key, value) in enumerate(pairs):
        if i % restart_interval == 0:
            restarts.append(len(out))
            shared = 0
        else:
            shared = 0
            while shared < min(len(prev), len(key)) and prev[shared] == key[shared]:
                shared += 1
        out += _varint(shared) + _varint(len(key) - shared) + _varint(len(value)) + key[shared:] + value
        prev = key
    for r in restarts or [0]:
        out += struct.pack("<I", r)
    out += struct.pack("<I", len(restarts or [0]))
    return bytes(out)


def _append_block(table: bytearray, block: bytes) -> bytes:
    handle = _varint(len(table)) + _varint(len(block))
    table += block + b"\x00" + struct.pack("<I", ref_mask(ref_crc32c(block + b"\x00")))
    return handle


def write_bundle(prefix: Path, tensors: dict[str, object], *, num_shards: int = 1, per_block: int = 3,
                 restart_interval: int = 2, big_endian: bool = False) -> Path:
    """Write a TF V2 bundle. Values: numpy arrays, or (dtype_name, shape, raw_bytes) tuples."""
    shards = [bytearray() for _ in range(num_shards)]
    pairs: list[tuple[bytes, bytes]] = []
    for i, name in enumerate(sorted(tensors)):
        value = tensors[name]
        if isinstance(value, tuple):
            dtype_name, shape, raw = value
        else:
            arr = np.asarray(value)
            dtype_name, shape = arr.dtype.name, arr.shape
            raw = arr.astype(arr.dtype.newbyteorder(">" if big_endian else "<")).tobytes()
        shard = i % num_shards
        offset = len(shards[shard])
        shards[shard] += raw
        shards[shard] += b"\x00" * 3  # padding between tensors: offsets must be honoured
        shape_msg = b"".join(_f_bytes(2, _f_varint(1, d)) for d in shape)
        entry = _f_varint(1, TF_ENUM[dtype_name]) + _f_bytes(2, shape_msg)
        if shard:
            entry += _f_varint(3, shard)
        if offset:
            entry += _f_varint(4, offset)
        entry += _f_varint(5, len(raw)) + _f_fixed32(6, ref_mask(ref_crc32c(bytes(raw))))
        pairs.append((name.encode(), entry))
    header = _f_varint(1, num_shards) + (_f_varint(2, 1) if big_endian else b"") + _f_bytes(3, _f_varint(1, 1))
    pairs.insert(0, (b"", header))
    table = bytearray()
    index_pairs = []
    for start in range(0, len(pairs), per_block):
        chunk = pairs[start:start + per_block]
        index_pairs.append((chunk[-1][0], _append_block(table, _block(chunk, restart_interval))))
    meta_handle = _append_block(table, _block([], 1))
    index_handle = _append_block(table, _block(index_pairs, 1))
    footer = meta_handle + index_handle
    table += footer + b"\x00" * (40 - len(footer)) + struct.pack("<Q", MAGIC)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{prefix}.index").write_bytes(bytes(table))
    for s, data in enumerate(shards):
        Path(f"{prefix}.data-{s:05d}-of-{num_shards:05d}").write_bytes(bytes(data))
    return prefix


def sample_tensors(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "MODEL/conv1/kernel": rng.standard_normal((3, 3, 3, 4)).astype(np.float32),
        "MODEL/conv1/bias": rng.standard_normal(4).astype(np.float32),
        "MODEL/conv1/kernel/Adam": rng.standard_normal((3, 3, 3, 4)).astype(np.float32),
        "global_step": np.array(500000, dtype=np.int32),
        "beta1_power": np.array(0.9, dtype=np.float32),
        "f64": rng.standard_normal((2, 5)),
        "f16": rng.standard_normal(7).astype(np.float16),
        "i8": rng.integers(-128, 128, 6, dtype=np.int8),
        "i16": rng.integers(-30000, 30000, 6, dtype=np.int16),
        "i64": rng.integers(-(2 ** 62), 2 ** 62, 3, dtype=np.int64),
        "u8": rng.integers(0, 256, (2, 2, 2), dtype=np.uint8),
        "u16": rng.integers(0, 65536, 5, dtype=np.uint16),
        "u32": rng.integers(0, 2 ** 32, 4, dtype=np.uint32),
        "u64": rng.integers(0, 2 ** 63, 4, dtype=np.uint64),
        "flags": np.array([True, False, True]),
        "empty": np.zeros((0, 3), dtype=np.float32),
    }


@pytest.fixture
def bundle(tmp_path: Path, rng: np.random.Generator) -> tuple[Path, dict[str, np.ndarray]]:
    tensors = sample_tensors(rng)
    return write_bundle(tmp_path / "ckpt" / "model.ckpt-10", tensors), tensors


def _data(prefix: Path, shard: int = 0, num: int = 1) -> Path:
    return Path(f"{prefix}.data-{shard:05d}-of-{num:05d}")


# --------------------------------------------------------------------------- CRC-32C

def test_crc32c_rfc3720_vectors() -> None:
    for fn in (crcmod.crc32c, crcmod.crc32c_pure):
        assert fn(bytes(32)) == 0x8A9136AA
        assert fn(b"\xff" * 32) == 0x62A8AB43
        assert fn(bytes(range(32))) == 0x46DD794E
        assert fn(bytes(range(31, -1, -1))) == 0x113FDB5C
        assert fn(b"123456789") == 0xE3069283
        assert fn(b"") == 0


@pytest.mark.parametrize("n", [1, 3, 100, 3071, 3072, 4099, 70001])
def test_crc32c_pure_matches_bitwise_definition(n: int, rng: np.random.Generator) -> None:
    data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
    expected = ref_crc32c(data)
    assert crcmod.crc32c_pure(data) == expected
    assert crcmod.crc32c_pure(np.frombuffer(data, np.uint8)) == expected
    k = n // 3  # continuing from a previous value
    assert crcmod.crc32c_pure(data[k:], crcmod.crc32c_pure(data[:k])) == expected
    assert crcmod.crc32c(data) == expected


def test_mask_unmask() -> None:
    for crc in (0, 1, 0xE3069283, 0xFFFFFFFF, 0x80000000):
        assert crcmod.mask(crc) == ref_mask(crc)
        assert crcmod.unmask(crcmod.mask(crc)) == crc


def test_crc32c_rejects_bad_value() -> None:
    with pytest.raises(ValueError, match="32-bit"):
        crcmod.crc32c_pure(b"x", value=-1)


# --------------------------------------------------------------------------- reading

def test_roundtrip_all_dtypes(bundle: tuple[Path, dict[str, np.ndarray]]) -> None:
    prefix, tensors = bundle
    got = read_tf_checkpoint(prefix)
    assert sorted(got) == sorted(tensors)
    for name, arr in tensors.items():
        assert got[name].dtype == arr.dtype, name
        assert got[name].shape == arr.shape, name
        assert np.array_equal(got[name], arr), name
    listing = list_tf_checkpoint(prefix)
    assert {n: (dt, shape) for n, (dt, shape) in listing.items()} == {
        n: (a.dtype, a.shape) for n, a in tensors.items()}


def test_accepts_index_data_and_directory_paths(bundle: tuple[Path, dict[str, np.ndarray]]) -> None:
    prefix, tensors = bundle
    for p in (f"{prefix}.index", _data(prefix), prefix.parent, str(prefix)):
        got = read_tf_checkpoint(p, names=["MODEL/conv1/bias"])
        assert list(got) == ["MODEL/conv1/bias"]
        assert np.array_equal(got["MODEL/conv1/bias"], tensors["MODEL/conv1/bias"])


def test_directory_checkpoint_file_picks_latest(tmp_path: Path) -> None:
    write_bundle(tmp_path / "a", {"x": np.arange(3, dtype=np.float32)})
    write_bundle(tmp_path / "b", {"x": np.arange(5, dtype=np.float32)})
    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "/elsewhere/b"\nall_model_checkpoint_paths: "a"\n')
    assert read_tf_checkpoint(tmp_path)["x"].shape == (5,)


def test_names_filter_and_unknown_name(bundle: tuple[Path, dict[str, np.ndarray]]) -> None:
    prefix, _ = bundle
    assert list(read_tf_checkpoint(prefix, names=["i8", "u8"])) == ["i8", "u8"]
    with pytest.raises(KeyError, match="nope"):
        read_tf_checkpoint(prefix, names=["nope"])


def test_multiple_shards_and_block_layouts(tmp_path: Path, rng: np.random.Generator) -> None:
    tensors = sample_tensors(rng)
    prefix = write_bundle(tmp_path / "m", tensors, num_shards=3, per_block=1, restart_interval=1)
    got = read_tf_checkpoint(prefix)
    assert all(np.array_equal(got[n], a) for n, a in tensors.items())
    prefix = write_bundle(tmp_path / "one", tensors, per_block=100, restart_interval=16)
    got = read_tf_checkpoint(prefix)
    assert all(np.array_equal(got[n], a) for n, a in tensors.items())


def test_big_endian_bundle(tmp_path: Path, rng: np.random.Generator) -> None:
    tensors = {"w": rng.standard_normal((2, 3)).astype(np.float32), "n": np.arange(4, dtype=np.int64)}
    got = read_tf_checkpoint(write_bundle(tmp_path / "be", tensors, big_endian=True))
    for n, a in tensors.items():
        assert got[n].dtype.isnative and np.array_equal(got[n], a)


def test_bfloat16(tmp_path: Path) -> None:
    values = np.array([1.0, -2.5, 3.140625, 0.0], dtype=np.float32)  # exactly representable in bfloat16
    bits = (values.view(np.uint32) >> 16).astype("<u2")
    prefix = write_bundle(tmp_path / "bf", {"b": ("bfloat16", (4,), bits.tobytes())})
    assert np.array_equal(read_tf_checkpoint(prefix)["b"], values)
    assert np.array_equal(read_tf_checkpoint(prefix, bfloat16="raw")["b"], bits)
    assert list_tf_checkpoint(prefix)["b"] == (np.dtype(np.float32), (4,))


def test_string_tensor_not_implemented(tmp_path: Path) -> None:
    prefix = write_bundle(tmp_path / "s", {"names": ("string", (1,), b"\x03abc"), "x": np.ones(2, np.float32)})
    with pytest.raises(NotImplementedError, match="'names'.*string"):
        read_tf_checkpoint(prefix)
    assert np.array_equal(read_tf_checkpoint(prefix, names=["x"])["x"], np.ones(2, np.float32))


# --------------------------------------------------------------------------- failures

def test_truncated_data(bundle: tuple[Path, dict[str, np.ndarray]]) -> None:
    prefix, _ = bundle
    data = _data(prefix)
    data.write_bytes(data.read_bytes()[:-5])  # 3 bytes of padding + 2 of the last tensor, 'u8'
    with pytest.raises(CheckpointError, match=r"truncated data: tensor 'u8'.*re-download") as e:
        read_tf_checkpoint(prefix)
    assert str(data) in str(e.value)


def test_flipped_byte_names_tensor(bundle: tuple[Path, dict[str, np.ndarray]]) -> None:
    prefix, tensors = bundle
    entry = tf_checkpoint_entries(prefix)["MODEL/conv1/kernel/Adam"]
    data = _data(prefix)
    raw = bytearray(data.read_bytes())
    raw[entry.offset + 17] ^= 0x01
    data.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=r"checksum mismatch for tensor 'MODEL/conv1/kernel/Adam'"):
        read_tf_checkpoint(prefix)
    # other tensors still read; verify=False returns the damaged values
    assert np.array_equal(read_tf_checkpoint(prefix, names=["i8"])["i8"], tensors["i8"])
    damaged = read_tf_checkpoint(prefix, verify=False)["MODEL/conv1/kernel/Adam"]
    assert not np.array_equal(damaged, tensors["MODEL/conv1/kernel/Adam"])


def test_missing_shard(tmp_path: Path, rng: np.random.Generator) -> None:
    prefix = write_bundle(tmp_path / "m", sample_tensors(rng), num_shards=2)
    _data(prefix, 1, 2).unlink()
    with pytest.raises(CheckpointError, match=r"missing data shard .*m\.data-00001-of-00002"):
        read_tf_checkpoint(prefix)
    read_tf_checkpoint(prefix, names=["MODEL/conv1/bias"])  # shard 0 alone still reads
    assert len(list_tf_checkpoint(prefix)) == len(sample_tensors(rng))  # the listing needs no data


def test_missing_index(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nothere\.index.*prefix"):
        read_tf_checkpoint(tmp_path / "nothere")


def test_bad_magic(bundle: tuple[Path, dict[str, np.ndarray]]) -> None:
    prefix, _ = bundle
    index = Path(f"{prefix}.index")
    raw = bytearray(index.read_bytes())
    raw[-1] ^= 0xFF
    index.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=r"bad magic number.*truncated or corrupted") as e:
        read_tf_checkpoint(prefix)
    assert str(index) in str(e.value)


@pytest.mark.parametrize("keep", [30, -9, -60])
def test_truncated_index(bundle: tuple[Path, dict[str, np.ndarray]], keep: int) -> None:
    prefix, _ = bundle
    index = Path(f"{prefix}.index")
    index.write_bytes(index.read_bytes()[:keep])
    with pytest.raises(CheckpointError, match="truncated"):
        read_tf_checkpoint(prefix)


def test_index_with_bytes_missing_before_footer(bundle: tuple[Path, dict[str, np.ndarray]]) -> None:
    prefix, _ = bundle
    index = Path(f"{prefix}.index")
    raw = index.read_bytes()
    index.write_bytes(raw[:-80] + raw[-48:])  # footer intact, blocks cut short
    with pytest.raises(CheckpointError, match=r"corrupted or truncated index: .*beyond the end"):
        read_tf_checkpoint(prefix)


def test_index_block_checksum(bundle: tuple[Path, dict[str, np.ndarray]]) -> None:
    prefix, tensors = bundle
    index = Path(f"{prefix}.index")
    raw = bytearray(index.read_bytes())
    pos = raw.find(b"i16")
    raw[pos] ^= 0x20  # 'i16' -> 'I16' in a data block
    index.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="checksum mismatch in the block"):
        read_tf_checkpoint(prefix)
    assert "I16" in read_tf_checkpoint(prefix, verify=False)  # the change is real; only the CRC caught it


def test_index_pointing_past_shard_end(tmp_path: Path) -> None:
    prefix = write_bundle(tmp_path / "x", {"a": np.ones(4, np.float32), "b": np.ones(4, np.float32)})
    _data(prefix).write_bytes(b"")
    with pytest.raises(CheckpointError, match="truncated data: tensor 'a'.*only 0 bytes"):
        read_tf_checkpoint(prefix)


# --------------------------------------------------------------------------- official checkpoint

@pytest.mark.shared
def test_official_checkpoint_equals_tensorflow_conversion() -> None:
    index = shared_path("weights", "mzsr_official", "Pretrained.index")
    npz = shared_path("weights", "mzsr_official", "mzsr_pretrained_bicubic.npz")
    got = read_tf_checkpoint(index)
    with np.load(npz) as ref:
        assert sorted(got) == sorted(ref.files)
        assert len(got) == 51
        for name in ref.files:
            assert got[name].dtype == ref[name].dtype, name
            assert got[name].shape == ref[name].shape, name
            assert np.array_equal(got[name], ref[name]), name
    assert int(got["global_step"]) == 500000
    assert got["MODEL/conv1/kernel"].shape == (3, 3, 3, 64)
    n_params = sum(got[f"MODEL/conv{k}/{p}"].size for k in range(1, 9) for p in ("kernel", "bias"))
    assert n_params == 225_091  # SPEC §0


@pytest.mark.shared
def test_corrupted_copy_of_official_checkpoint(tmp_path: Path) -> None:
    src = shared_path("weights", "mzsr_official", "Pretrained.index").parent
    for f in ("Pretrained.index", "Pretrained.data-00000-of-00001"):
        shutil.copyfile(src / f, tmp_path / f)
    prefix = tmp_path / "Pretrained"
    entry = tf_checkpoint_entries(prefix)["MODEL/conv4/kernel"]
    data = _data(prefix)
    raw = bytearray(data.read_bytes())
    raw[entry.offset + entry.size // 2] ^= 0x40
    data.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=r"checksum mismatch for tensor 'MODEL/conv4/kernel'"):
        read_tf_checkpoint(prefix)
    data.write_bytes(bytes(raw[: len(raw) // 2]))
    with pytest.raises(CheckpointError, match="truncated data"):
        read_tf_checkpoint(prefix)

"""Reading, loading and saving weights in every accepted form."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import shared_path
from metasr_adapter.adapters.mzsr import MZSRNet
from metasr_adapter.io.weights import (CHECKSUM_KEY, WeightsCorruptedError, WeightsMismatchError, load_weights,
                                        read_metadata, read_weights, save_weights)
from test_tf_checkpoint import write_bundle


def small_net(seed: int = 0) -> MZSRNet:
    torch.manual_seed(seed)
    net = MZSRNet(width=4, depth=3)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_()
    return net


def tf_arrays(net: MZSRNet) -> dict[str, np.ndarray]:
    """The net's weights as the official checkpoint names them: OIHW -> HWIO kernels."""
    out: dict[str, np.ndarray] = {}
    for k in range(1, net.depth + 1):
        conv = getattr(net, f"conv{k}")
        out[f"MODEL/conv{k}/kernel"] = conv.weight.detach().numpy().transpose(2, 3, 1, 0).copy()
        out[f"MODEL/conv{k}/bias"] = conv.bias.detach().numpy().copy()
        out[f"MODEL/conv{k}/kernel/Adam"] = np.zeros_like(out[f"MODEL/conv{k}/kernel"])
    out["global_step"] = np.array(7, dtype=np.int32)
    return out


def assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].shape == b[k].shape, k
        assert torch.equal(a[k].float(), b[k].float()), k


def test_save_load_roundtrip(tmp_path: Path) -> None:
    net = small_net(0)
    path = save_weights(net, tmp_path / "out" / "net.pth", step=3, kernel="gd2.0", scales=[2, 4])
    assert path == tmp_path / "out" / "net.pth"
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert raw["metadata"] == {"step": 3, "kernel": "gd2.0", "scales": [2, 4], "model": "MZSRNet"}
    assert_same_state(raw["params"], net.state_dict())
    other = load_weights(small_net(1), path)
    assert_same_state(other.state_dict(), net.state_dict())
    assert [p.name for p in path.parent.iterdir()] == ["net.pth"]  # no temp file left behind


def _flip_exponent_byte(path: Path, tensor: torch.Tensor) -> None:
    """Damage one float32 value of ``tensor`` in the file at ``path``: XOR a bit of its exponent byte."""
    raw = bytearray(path.read_bytes())
    at = raw.find(tensor.detach().contiguous().numpy().tobytes())
    assert at >= 0, "the tensor's bytes are not stored as they are"
    raw[at + 3] ^= 0x40  # little-endian float32: the 4th byte holds the sign and the exponent's high bits
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_a_damaged_file_written_by_save_weights_is_refused(tmp_path: Path, suffix: str) -> None:
    """Issue 20: one flipped exponent byte in a non-bundled file changed the results and the run exited 0.
    save_weights records a checksum of the tensors; reading verifies it. Files without one load as before."""
    net = small_net(0)
    path = save_weights(net, tmp_path / f"net{suffix}", arch="mzsr", scale=2.0)
    assert read_metadata(path) == {"arch": "mzsr", "scale": 2.0, "model": "MZSRNet"}  # the checksum is not metadata
    assert_same_state(load_weights(small_net(1), path).state_dict(), net.state_dict())  # intact: loads
    _flip_exponent_byte(path, net.conv2.weight)
    with pytest.raises(WeightsCorruptedError, match=rf"{path.name} is corrupted.*download it again.*re-train"):
        read_weights(path)
    with pytest.raises(ValueError, match="corrupted"):  # the command line's one-line error (a ValueError)
        load_weights(small_net(1), path)

    # third-party files (no checksum) are read as before, damaged or not: there is nothing to check against
    other = tmp_path / f"third_party{suffix}"
    sd = {k: v.clone() for k, v in net.state_dict().items()}
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(sd, str(other), metadata={"format": "pt"})
    else:
        torch.save({"params": sd, "metadata": {"arch": "mzsr"}}, other)
    assert_same_state(read_weights(other), sd)
    _flip_exponent_byte(other, sd["conv2.weight"])
    assert not torch.equal(read_weights(other)["conv2.weight"], sd["conv2.weight"])


def test_the_checksum_does_not_depend_on_format_or_metadata(tmp_path: Path) -> None:
    """The recorded checksum is the tensors' fingerprint: saving the same tensors again with other metadata
    (tools/package_weights.py re-saves a run's weights) records the same value; 0-d tensors are handled."""
    from safetensors import safe_open

    sd = {**small_net(0).state_dict(), "step": torch.tensor(7)}  # a 0-d int64 buffer
    a = save_weights(sd, tmp_path / "a.pth", name="x")
    b = save_weights(read_weights(a), tmp_path / "b.safetensors", name="y", commit="abc")
    with safe_open(str(b), framework="pt") as f:
        recorded = f.metadata()[CHECKSUM_KEY]
    assert recorded == torch.load(a, weights_only=True)[CHECKSUM_KEY] and recorded.startswith("tensors:")
    assert_same_state(read_weights(b), sd)


def test_save_is_atomic_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = save_weights(small_net(0), tmp_path / "net.pth")
    before = path.read_bytes()

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        save_weights(small_net(1), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["net.pth"]


def test_save_rejects_metadata_that_weights_only_cannot_load(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="'cfg'"):
        save_weights(small_net(0), tmp_path / "n.pth", cfg=object())
    assert not list(tmp_path.iterdir())


def test_save_state_dict_and_numpy_metadata(tmp_path: Path) -> None:
    sd = small_net(0).state_dict()
    path = save_weights(sd, tmp_path / "sd.pt", psnr=np.float32(30.5), where=tmp_path)
    raw = torch.load(path, weights_only=True)
    assert raw["metadata"] == {"psnr": 30.5, "where": str(tmp_path)}
    assert_same_state(read_weights(path), sd)


def test_basicsr_params_and_params_ema(tmp_path: Path) -> None:
    a, b = small_net(0).state_dict(), small_net(1).state_dict()
    path = tmp_path / "basicsr.pth"
    torch.save({"params": a, "params_ema": b}, path)
    assert_same_state(read_weights(path), b)  # 'auto' prefers params_ema
    assert_same_state(read_weights(path, param_key="params"), a)
    assert_same_state(load_weights(small_net(2), path, param_key="params").state_dict(), a)
    with pytest.raises(KeyError, match="'weights'.*'params'"):
        read_weights(path, param_key="weights")


@pytest.mark.parametrize("wrap", ["state_dict", "model", "plain"])
def test_other_containers_and_dataparallel_prefix(tmp_path: Path, wrap: str) -> None:
    sd = small_net(0).state_dict()
    prefixed = {f"module.{k}": v for k, v in sd.items()}
    obj = prefixed if wrap == "plain" else {wrap: prefixed, "epoch": 3}
    path = tmp_path / "dp.pth"
    torch.save(obj, path)
    assert_same_state(read_weights(path), sd)


class _NotAllowed:
    pass


def test_weights_only_refuses_arbitrary_objects(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"params": small_net(0).state_dict(), "obj": _NotAllowed()}, path)
    with pytest.raises(ValueError, match="weights_only=True"):
        read_weights(path)


def test_strict_errors_list_keys_and_shapes(tmp_path: Path) -> None:
    sd = small_net(0).state_dict()
    del sd["conv2.bias"]
    sd["extra.weight"] = torch.zeros(2)
    sd["conv1.bias"] = torch.zeros(5)
    path = save_weights(sd, tmp_path / "bad.pth")
    with pytest.raises(WeightsMismatchError) as e:
        load_weights(small_net(1), path)
    msg = str(e.value)
    assert "missing keys (1): conv2.bias" in msg
    assert "unexpected keys (1): extra.weight" in msg
    assert "conv1.bias: model expects (4,), weights have (5,)" in msg
    assert "strict=False" in msg and "param_key" in msg


def test_non_strict_loads_matching_subset(tmp_path: Path) -> None:
    src = small_net(0).state_dict()
    sd = dict(src)
    sd["conv1.bias"] = torch.zeros(5)
    del sd["conv3.weight"]
    target = small_net(1)
    keep = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.warns(UserWarning, match="conv1.bias"):
        load_weights(target, sd, strict=False)
    got = target.state_dict()
    assert torch.equal(got["conv2.weight"], src["conv2.weight"])
    assert torch.equal(got["conv1.bias"], keep["conv1.bias"])
    assert torch.equal(got["conv3.weight"], keep["conv3.weight"])


def test_npz_with_torch_names(tmp_path: Path) -> None:
    sd = small_net(0).state_dict()
    path = tmp_path / "w.npz"
    np.savez(path, **{k: v.numpy() for k, v in sd.items()})
    assert_same_state(read_weights(path), sd)


def test_npz_with_official_tf_names(tmp_path: Path) -> None:
    net = small_net(0)
    path = tmp_path / "tf.npz"
    np.savez(path, **tf_arrays(net))
    assert_same_state(read_weights(path), net.state_dict())


def test_tf_checkpoint_prefix(tmp_path: Path) -> None:
    net = small_net(0)
    prefix = write_bundle(tmp_path / "ckpt" / "model", tf_arrays(net))
    for p in (prefix, f"{prefix}.index", prefix.parent):
        loaded = load_weights(small_net(3), p)
        assert_same_state(loaded.state_dict(), net.state_dict())
    x = torch.rand(1, 3, 8, 8)
    assert torch.equal(loaded(x), net(x))


def test_missing_file_names_it_and_forms(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match=r"nope\.pth.*TensorFlow checkpoint prefix.*\.npz"):
        read_weights(missing)
    with pytest.raises(FileNotFoundError):
        load_weights(small_net(0), os.fspath(tmp_path / "prefix_without_index"))


@pytest.mark.shared
def test_official_tf_prefix_equals_npz() -> None:
    index = shared_path("weights", "mzsr_official", "Pretrained.index")
    npz = shared_path("weights", "mzsr_official", "mzsr_pretrained_bicubic.npz")
    prefix = str(index)[: -len(".index")]
    from_tf = load_weights(MZSRNet(), prefix).state_dict()
    from_npz = load_weights(MZSRNet(), npz).state_dict()
    assert_same_state(from_tf, from_npz)
    assert sum(v.numel() for v in from_tf.values()) == 225_091
    with np.load(npz) as ref:  # HWIO -> OIHW, checked independently of the mapping code
        assert np.array_equal(from_tf["conv2.weight"].numpy(), ref["MODEL/conv2/kernel"].transpose(3, 2, 0, 1))


def test_safetensors_round_trip_keeps_weights_and_metadata(tmp_path):
    from metasr_adapter.io.pretrained import load_model
    from metasr_adapter.io.weights import read_metadata, read_weights, save_weights

    torch.manual_seed(0)
    net = MZSRNet(width=8, depth=3)
    meta = {"arch": "mzsr", "arch_kwargs": {"width": 8, "depth": 3}, "scale": 2.0, "ds_method": "direct",
            "schedule": "mzsr_direct", "loss": "l1", "adapt_params": ["conv3.*"]}
    path = save_weights(net, tmp_path / "w.safetensors", **meta)
    assert path.read_bytes()[:8] != b"PK\x03\x04"  # not a zip/pickle: a safetensors header
    got = read_metadata(path)
    assert {k: got[k] for k in meta} == meta
    state = read_weights(path)
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())
    rebuilt = load_model(weights=path)  # arch and kwargs from the header
    assert all(torch.equal(rebuilt.state_dict()[k], v) for k, v in net.state_dict().items())


def test_a_truncated_safetensors_file_says_so(tmp_path):
    from metasr_adapter.io.weights import read_weights, save_weights

    path = save_weights(MZSRNet(width=8, depth=3), tmp_path / "w.safetensors")
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(ValueError, match="not a readable .safetensors file.*truncated"):
        read_weights(path)


def test_save_weights_refuses_an_unknown_suffix(tmp_path):
    from metasr_adapter.io.weights import save_weights

    with pytest.raises(ValueError, match=r"\.safetensors, \.pth or \.pt"):
        save_weights(MZSRNet(width=8, depth=3), tmp_path / "w.npz")


def test_the_tensor_fingerprint_ignores_format_and_metadata_but_not_values(tmp_path):
    from metasr_adapter.io.weights import read_weights, save_weights, tensor_fingerprint

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Conv2d(4, 3, 1))
    a = save_weights(net, tmp_path / "a.pth", arch="x", scale=2.0)
    b = save_weights(net, tmp_path / "b.safetensors", arch="y", note="other metadata")
    assert a.read_bytes() != b.read_bytes()
    fp = tensor_fingerprint(net)
    assert fp.startswith("tensors:") and fp == tensor_fingerprint(read_weights(a)) == tensor_fingerprint(read_weights(b))
    state = read_weights(a)
    state["0.bias"] = state["0.bias"].clone()
    state["0.bias"][0] += 1e-6
    assert tensor_fingerprint(state) != fp
    assert tensor_fingerprint({k: v.double() for k, v in read_weights(a).items()}) != fp  # dtype counts

"""Regression tests of the correctness pass: each failed before its fix."""
from __future__ import annotations

import os
import stat

import numpy as np
import pytest
import torch
from torch import nn

from metasr_adapter import MetaSR
from metasr_adapter.adapters.mzsr import MZSRNet
from metasr_adapter.devices import resolve_device, same_device


@pytest.fixture
def small_lr(rng: np.random.Generator) -> np.ndarray:
    return (rng.random((24, 28, 3)) * 255).astype(np.uint8)


def _net(seed: int = 0, width: int = 8, depth: int = 3) -> MZSRNet:
    torch.manual_seed(seed)
    return MZSRNet(width=width, depth=depth)


# ---- devices -----------------------------------------------------------------------------------
def test_device_spellings_of_one_device_compare_equal() -> None:
    assert torch.device("cpu") != torch.device("cpu", 0)  # why the helper exists
    assert same_device("cpu", torch.device("cpu", 0)) and same_device("cpu:0", "cpu")
    assert resolve_device("cpu:0") == torch.device("cpu")


def test_metasr_accepts_an_indexed_spelling_of_the_models_device(small_lr: np.ndarray) -> None:
    msr = MetaSR(_net(), 2, device="cpu:0")  # raised "model is on cpu but device=cpu:0" before
    assert msr.adapt(small_lr, "gd2.0", steps=1).shape == (48, 56, 3)


def test_bad_device_names_say_what_to_use() -> None:
    with pytest.raises(ValueError, match="cpu, cuda, cuda:N or auto"):
        resolve_device("foo")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="needs CUDA"):
            resolve_device("cuda")


# ---- grad modes --------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
def test_adapt_works_inside_no_grad_and_inference_mode(small_lr: np.ndarray, mode: str) -> None:
    msr = MetaSR(_net(), 2)
    ref = msr.adapt(small_lr, "gd2.0", steps=2)
    ctx = torch.no_grad() if mode == "no_grad" else torch.inference_mode()
    with ctx:
        out = msr.adapt(small_lr, "gd2.0", steps=2)
        t = torch.from_numpy(small_lr).permute(2, 0, 1).float()[None] / 255  # an inference tensor in that mode
        out_t = msr.adapt(t, "gd2.0", steps=2)
    np.testing.assert_array_equal(out, ref)
    assert not out_t.requires_grad and out_t.shape == (1, 3, 48, 56)


# ---- which parameters adapt ------------------------------------------------------------------------
def test_frozen_parameters_stay_frozen_unless_named(small_lr: np.ndarray) -> None:
    net = _net()
    net.conv1.requires_grad_(False)
    session = MetaSR(net, 2).start(small_lr, "gd2.0")
    session.step()
    assert torch.equal(session.params["conv1.weight"], net.conv1.weight)  # adapted before the fix
    assert not torch.equal(session.params["conv3.weight"], net.conv3.weight)
    named = MetaSR(net, 2, adapt_params=["conv1.*"]).start(small_lr, "gd2.0")
    named.step()
    assert not torch.equal(named.params["conv1.weight"], net.conv1.weight)
    assert torch.equal(named.params["conv3.weight"], net.conv3.weight)


def test_a_fully_frozen_model_names_the_fix() -> None:
    net = _net().requires_grad_(False)
    with pytest.raises(ValueError, match=r"adapt_params=\['\*'\]"):
        MetaSR(net, 2)
    assert MetaSR(net, 2, adapt_params=["*"]).adapt_names  # the caller asks: all adapt


def test_meta_training_and_test_time_share_the_rule() -> None:
    from metasr_adapter.meta.learner import MAMLConfig, MetaLearner

    net = _net()
    net.conv2.requires_grad_(False)
    learner = MetaLearner(net, MAMLConfig(adapt_params=["conv3.*"]))
    assert MetaSR(net, 2, adapt_params=["conv3.*"]).adapt_names == learner.adapt_names == ["conv3.weight", "conv3.bias"]


# ---- no silent crops -------------------------------------------------------------------------------
class _PostUpsample(nn.Module):
    """Upsamples by itself by ``factor`` (not the wrapper's scale when they disagree)."""

    upsample_input = False

    def __init__(self, factor: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3 * factor * factor, 3, padding=1)
        self.shuffle = nn.PixelShuffle(factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shuffle(self.conv(x))


def test_an_output_of_the_wrong_size_raises_instead_of_being_cropped(small_lr: np.ndarray) -> None:
    msr = MetaSR(_PostUpsample(4), 2)  # an x4 network wrapped as x2: cropped to a quarter before
    with pytest.raises(ValueError, match=r"96x112 but x2 SR of this input is 48x56.*upsample_input"):
        msr.adapt(small_lr, "gd2.0", steps=0)


def test_zssr_uses_the_same_output_contract(small_lr: np.ndarray) -> None:
    from metasr_adapter.zssr.core import ZSSR, ZSSRConfig

    class NoAttr(nn.Module):  # a user's x4 network without the attribute: it upsamples by itself
        def __init__(self) -> None:
            super().__init__()
            self.body = _PostUpsample(4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.body(x)

    net = NoAttr()
    assert not hasattr(net, "upsample_input")  # ZSSR assumed True and cut the x4 output to a quarter
    cfg = ZSSRConfig.preset("fast", max_iters=1)
    with pytest.raises(ValueError, match="upsample_input=False"):
        ZSSR(cfg, model=net).run(small_lr, None, 2)


# ---- non-finite steps ------------------------------------------------------------------------------
def test_nan_weights_stop_with_the_step_and_learning_rate(small_lr: np.ndarray) -> None:
    net = _net()
    with torch.no_grad():
        net.conv2.weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match=r"step 0.*learning rate 0\.02"):
        MetaSR(net, 2).adapt(small_lr, "gd2.0", steps=1)


def test_a_diverging_learning_rate_is_caught(small_lr: np.ndarray) -> None:
    with pytest.raises(FloatingPointError, match=r"learning rate 1e\+30"):
        MetaSR(_net(), 2).adapt(small_lr, "gd2.0", steps=3, lr=1e30)


# ---- weights ---------------------------------------------------------------------------------------
def test_load_model_builds_the_saved_architecture(tmp_path) -> None:
    from metasr_adapter.adapters.idn import IDN
    from metasr_adapter.io.pretrained import load_model
    from metasr_adapter.io.weights import save_weights

    path = tmp_path / "idn.pth"
    save_weights(IDN(scale=2), path, arch="idn", arch_kwargs={"scale": 2})
    assert isinstance(load_model(weights=path), IDN)  # TypeError about width before
    with pytest.raises(ValueError, match="holds 'idn' weights but arch='mzsr'"):
        load_model("mzsr", path)


def test_a_pickled_module_gets_a_clear_error(tmp_path) -> None:
    from metasr_adapter.io.pretrained import load_model

    path = tmp_path / "whole_model.pth"
    torch.save(_net(), path)  # the whole module, not a state dict
    with pytest.raises(ValueError, match=r"save the state dict instead"):
        load_model("mzsr", path)


def test_no_weights_and_none_bundled_is_refused() -> None:
    from metasr_adapter.io.pretrained import load_model

    with pytest.raises(ValueError, match="weights='random'"):
        load_model("rcan")
    assert isinstance(load_model("mzsr", "random"), MZSRNet)


# ---- files -----------------------------------------------------------------------------------------
def test_written_files_get_the_usual_permissions(tmp_path) -> None:
    from metasr_adapter.atomic import atomic_write_text

    old = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # 0600 before


def test_checked_files_detect_a_flipped_byte_and_truncation(tmp_path) -> None:
    from metasr_adapter.atomic import DamagedFileError, load_checked, save_checked

    path = save_checked({"w": torch.arange(1000.0)}, tmp_path / "c.pt")
    assert torch.equal(load_checked(path)["w"], torch.arange(1000.0))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(DamagedFileError, match="sha256"):
        load_checked(path)
    path.write_bytes(bytes(data[:100]))
    with pytest.raises(DamagedFileError):
        load_checked(path)
    path.write_bytes(b"")
    with pytest.raises(DamagedFileError, match="empty"):
        load_checked(path)


# ---- recipes ---------------------------------------------------------------------------------------
def test_an_override_replaces_a_dict_value(tmp_path) -> None:
    from metasr_adapter.training.recipes import load_recipe

    f = tmp_path / "r.yaml"
    f.write_text("model:\n  name: rcan\n  arch_kwargs: {num_block: 2}\n")
    assert load_recipe(f, ["model.arch_kwargs={}"])["model"]["arch_kwargs"] == {}  # merged (no-op) before


@pytest.mark.parametrize("override", ["meta.iterations=-5", "meta.inner_lr=-1", "meta.inner_lr=[0.01, -1]",
                                      "pretrain.lr=0", "meta.meta_batch=0"])
def test_out_of_range_recipe_values_are_refused(override: str) -> None:
    from metasr_adapter.training.recipes import load_recipe

    key = override.split("=")[0]
    with pytest.raises(ValueError, match=rf"{key}.*must be"):
        load_recipe(None, [override])


def test_meta_settings_reach_the_learner_from_a_recipe() -> None:
    from metasr_adapter.training.recipes import load_recipe

    r = load_recipe(None, ["meta.adam_variant=tf", "meta.channels_last=true", "meta.anneal_span=50"])
    assert (r["meta"]["adam_variant"], r["meta"]["channels_last"], r["meta"]["anneal_span"]) == ("tf", True, 50.0)


# ---- tiled inference -------------------------------------------------------------------------------
@pytest.mark.parametrize("tile", [7, 16, 40])
def test_tiled_sr_equals_the_whole_image(rng, tile):
    img = (rng.random((37, 29, 3)) * 255).astype(np.uint8)
    net = _net(width=8, depth=4)
    whole = MetaSR(net, 2).start(img, "gd2.0")
    tiled = MetaSR(net, 2, tile=tile).start(img, "gd2.0")
    for s in (whole, tiled):
        s.step()
    torch.testing.assert_close(tiled.sr_tensor(), whole.sr_tensor(), rtol=0, atol=2e-6)


def test_tiled_sr_never_upsamples_the_whole_image(rng, monkeypatch):
    """Under a tile budget the bicubic-upsampled input is made per tile: a full-size float64 copy of a
    4000x3000 photo alone took 1.15 GB (benchmarks/bench_memory.py)."""
    img = (rng.random((40, 36, 3)) * 255).astype(np.uint8)
    net = _net(width=8, depth=4)
    seen: list[tuple[int, int]] = []
    real = MetaSR._network_input

    def spy(self, x, out_shape):
        y = real(self, x, out_shape)
        seen.append(tuple(y.shape[-2:]))
        return y

    monkeypatch.setattr(MetaSR, "_network_input", spy)
    whole = MetaSR(net, 2).adapt(img, "gd2.0", steps=1)
    assert (80, 72) in seen  # without a budget the whole image is upsampled once
    seen.clear()
    tiled = MetaSR(net, 2, tile=16).adapt(img, "gd2.0", steps=1)
    assert seen and max(h * w for h, w in seen[1:]) < 80 * 72 / 4  # seen[0] is the son's (LR-size) input
    assert np.abs(tiled.astype(int) - whole.astype(int)).max() <= 1


def test_numpy_results_convert_in_bands_without_changing_a_value(rng, monkeypatch):
    from metasr_adapter.ops import imageio

    x = torch.rand(1, 3, 23, 17, dtype=torch.float32) * 1.2 - 0.1
    for dtype in (np.uint8, np.uint16, np.float32):
        fmt = imageio.ImageFormat("numpy", np.dtype(dtype), "HWC", 3)
        monkeypatch.setattr(imageio, "_RESTORE_BAND_PIXELS", 1 << 30)
        one = fmt.restore(x)
        monkeypatch.setattr(imageio, "_RESTORE_BAND_PIXELS", 40)  # bands of 2 rows
        assert one.dtype == np.dtype(dtype) and np.array_equal(fmt.restore(x), one)
    gray = imageio.ImageFormat("numpy", np.dtype(np.uint8), "HW", 1).restore(x, alpha=None)
    assert gray.shape == (23, 17)
    rgba = imageio.ImageFormat("numpy", np.dtype(np.uint8), "HWC", 4).restore(x, alpha=x[:, :1])
    assert rgba.shape == (23, 17, 4) and np.array_equal(rgba[..., 3], np.round(x[0, 0].clamp(0, 1).double().numpy() * 255))


def test_tiling_a_post_upsampling_network_with_a_given_overlap(rng):
    img = (rng.random((26, 30, 3)) * 255).astype(np.uint8)
    torch.manual_seed(0)
    net = _PostUpsample(2)  # one 3x3 conv before the shuffle: radius 1
    ref = MetaSR(net, 2).adapt(img, "gd2.0", steps=0)
    assert np.array_equal(MetaSR(net, 2, tile=6, tile_overlap=1).adapt(img, "gd2.0", steps=0), ref)
    with pytest.raises(ValueError, match="tile_overlap=N"):
        MetaSR(net, 2, tile=6)  # no declared radius: the exact overlap is unknown


def test_networks_with_global_context_are_not_tiled():
    from metasr_adapter.adapters.rcan import RCAN

    with pytest.raises(ValueError, match="global_context"):
        MetaSR(RCAN(scale=2, num_group=1, num_block=1, num_feat=8, squeeze_factor=4), 2, tile=32)


# ---- crops above a pixel budget ----------------------------------------------------------------------
def test_adaptation_crops_above_the_pixel_budget_and_not_below(rng):
    img = (rng.random((40, 48, 3)) * 255).astype(np.uint8)
    net = _net(width=8, depth=3)
    full = MetaSR(net, 2).start(img, "gd2.0")
    under = MetaSR(net, 2, max_pixels=40 * 48).start(img, "gd2.0")
    for s in (full, under):
        s.step()
    torch.testing.assert_close(under.params["conv1.weight"], full.params["conv1.weight"])  # no crop: identical
    crop = MetaSR(net, 2, max_pixels=256).start(img, "gd2.0")
    inp, target = crop._training_pair()
    assert target.shape[-2:] == (16, 16) and inp.shape[-2:] == (16, 16)
    # aligned: the crop of the son's input sits where the target crop sits on the LR grid
    hits = [(i, j) for i in range(25) for j in range(33)
            if torch.equal(full.lr_image[..., i : i + 16, j : j + 16], target)]
    assert len(hits) == 1 and torch.equal(full.son_input[..., hits[0][0] : hits[0][0] + 16, hits[0][1] : hits[0][1] + 16], inp)
    crop.step()
    assert not torch.equal(crop.params["conv1.weight"], full.params["conv1.weight"])


def test_crops_for_a_network_that_upsamples_by_itself(rng):
    img = (rng.random((40, 48, 3)) * 255).astype(np.uint8)
    torch.manual_seed(0)
    s = MetaSR(_PostUpsample(2), 2, max_pixels=256).start(img, "gd2.0")
    inp, target = s._training_pair()
    assert tuple(target.shape[-2:]) == (2 * inp.shape[-2], 2 * inp.shape[-1]) == (16, 16)
    s.step()


def test_the_adapted_weights_of_one_image_can_be_exported(rng, tmp_path):
    from metasr_adapter.io.weights import read_metadata, read_weights

    img = (rng.random((24, 28, 3)) * 255).astype(np.uint8)
    net = _net()
    session = MetaSR(net, 2).start(img, "gd2.0")
    for _ in range(2):
        session.step()
    path = session.save_adapted(str(tmp_path / "adapted.safetensors"), arch="mzsr",
                                arch_kwargs={"width": 8, "depth": 3})
    reloaded = _net(seed=1)
    reloaded.load_state_dict(read_weights(path))
    assert read_metadata(path)["adapted_steps"] == 2
    # the exported network, wrapped anew with 0 steps, gives the adapted session's result
    again = MetaSR(reloaded, 2).adapt(img, "gd2.0", steps=0)
    np.testing.assert_array_equal(again, session.result())


@pytest.mark.slow
def test_compiled_adaptation_matches_eager(rng):
    """torch.compile is optional and slow to start (tens of seconds on 2 cores): run with -m slow."""
    img = (rng.random((24, 28, 3)) * 255).astype(np.uint8)
    net = _net()
    eager = MetaSR(net, 2).adapt(img, "gd2.0", steps=2)
    compiled = MetaSR(net, 2, compile=True).adapt(img, "gd2.0", steps=2)
    assert np.abs(compiled.astype(int) - eager.astype(int)).max() <= 1

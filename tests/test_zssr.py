"""ZSSR: kernel centring, father sampling, the training loop, outputs, presets and the CLI."""
from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
from conftest import shared_path
from torch import nn

from metasr_adapter.ops.degrade import degrade, imresize
from metasr_adapter.zssr.core import (
    PRESETS,
    ZSSR,
    ZSSRConfig,
    father_probabilities,
    kernel_shift,
    resolve_zssr_kernel,
    zssr_super_resolve,
)
from metasr_adapter.cli.zssr import zssr_main


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _crop(photo: np.ndarray, size: int, top: int = 200, left: int = 200) -> np.ndarray:
    return np.ascontiguousarray(photo[top : top + size, left : left + size])


def _fast(**kw) -> ZSSRConfig:
    return ZSSRConfig.preset("fast", **kw)


# ------------------------------------------------------------------------------------------
# kernel centring
# ------------------------------------------------------------------------------------------
def test_kernel_shift_delta_integer_shift_by_hand():
    # 9x9 delta at (4, 4); x3 wants the centre of mass at 9//2 + (3-1)/2 = 5: a shift of (1, 1),
    # padding ceil(1)+1 = 2 on each side -> 13x13 with the delta at (2+5, 2+5) = (7, 7)
    k = np.zeros((9, 9))
    k[4, 4] = 1.0
    out = kernel_shift(k, 3)
    expected = np.zeros((13, 13))
    expected[7, 7] = 1.0
    np.testing.assert_allclose(out, expected, atol=1e-12)


def test_kernel_shift_delta_half_pixel_by_hand():
    # x2: target 4 + 0.5 -> shift 0.5, padding 2 -> 13x13 whose mass is centred at 6.5 in both axes:
    # index i mirrors to 13 - i, so out[1:, 1:] is symmetric under a flip; the two taps around
    # 6.5 carry most of the mass (a cubic spline's half-pixel ringing decays fast) and it sums to 1
    k = np.zeros((9, 9))
    k[4, 4] = 1.0
    out = kernel_shift(k, 2)
    assert out.shape == (13, 13)
    assert out.sum() == pytest.approx(1.0)
    inner = out[1:, 1:]
    np.testing.assert_allclose(inner, inner[::-1, ::-1], atol=1e-5)
    rows = out.sum(axis=1)
    assert float(np.dot(np.arange(13), rows)) == pytest.approx(6.5, abs=1e-4)
    assert rows[6] == pytest.approx(rows[7], abs=1e-5) and rows[6] + rows[7] > 0.95


def test_kernel_shift_even_box_by_hand():
    # 4x4 box: centre of mass 1.5; x2 wants 4//2 + 0.5 = 2.5 -> shift 1, pad 2 -> 8x8 with the box
    # in rows/cols 3..6 (centre of mass 4.5 = 8//2 + 0.5)
    out = kernel_shift(np.full((4, 4), 1 / 16), 2)
    expected = np.zeros((8, 8))
    expected[3:7, 3:7] = 1 / 16
    np.testing.assert_allclose(out, expected, atol=1e-12)


def test_kernel_shift_aligns_direct_subsampling_with_bicubic_on_a_ramp():
    # Correlating a linear ramp with a normalised kernel and keeping pixel 2j gives 2j + (CoM - k//2);
    # bicubic downscaling by 2 puts LR pixel j at 2j + 0.5. After kernel_shift they agree, even for
    # an off-centre kernel.
    yy, xx = np.mgrid[0:11, 0:11]
    off = np.exp(-((yy - 3.2) ** 2 + (xx - 6.7) ** 2) / 3.0)
    off /= off.sum()
    ramp = torch.arange(64, dtype=torch.float64).expand(1, 1, 64, 64).clone()
    ours = degrade(ramp, kernel_shift(off, 2), 2, ds_method="direct")
    bic = imresize(ramp, 0.5)
    inner = (slice(None), slice(None), slice(8, -8), slice(8, -8))
    np.testing.assert_allclose(ours[inner].numpy(), bic[inner].numpy(), atol=2e-3)
    unshifted = degrade(ramp, off, 2, ds_method="direct")
    assert float((unshifted[inner] - bic[inner]).abs().max()) > 1.0  # the raw kernel is misaligned


def test_estimated_kernels_with_negative_entries_are_accepted_with_a_warning(tmp_path):
    # estimated kernels (e.g. the official real_example/charlie_0.mat) dip slightly below zero;
    # the official ZSSR uses them as they are, rescaled here to sum 1
    k = np.full((3, 3), 0.125)
    k[0, 0] = -0.1
    k[1, 1] = 0.2  # sum = 7·0.125 - 0.1 + 0.2 = 0.975
    with pytest.warns(UserWarning, match="negative"):
        spec = resolve_zssr_kernel(k)
    np.testing.assert_allclose(spec.kernel, k / 0.975)
    assert spec.ds_method == "direct"
    np.save(tmp_path / "k.npy", k)
    with pytest.warns(UserWarning, match="negative"):
        assert resolve_zssr_kernel(str(tmp_path / "k.npy")).kernel.sum() == pytest.approx(1.0)
    # ordinary kernels and names go through the project's resolver (KernelSpec)
    from metasr_adapter.ops.kernels import KernelSpec

    assert isinstance(resolve_zssr_kernel(np.full((3, 3), 1 / 9)), KernelSpec)
    assert resolve_zssr_kernel(None).kernel is None
    with pytest.raises(ValueError, match="positive sum"):
        resolve_zssr_kernel(-np.ones((3, 3)))


# ------------------------------------------------------------------------------------------
# fathers
# ------------------------------------------------------------------------------------------
def test_father_probabilities_grow_with_size_by_hand():
    # areas relative to a 100x100 input: 1, 0.64, 0.25 -> / 1.89
    p = father_probabilities([(100, 100), (80, 80), (50, 50)], (100, 100))
    np.testing.assert_allclose(p, np.array([1.0, 0.64, 0.25]) / 1.89)
    assert p[0] > p[1] > p[2]
    # a synthesised father twice as large (area 4) weighs 1/4, like a father of a quarter area
    q = father_probabilities([(100, 100), (200, 200), (50, 50)], (100, 100))
    np.testing.assert_allclose(q, np.array([1.0, 0.25, 0.25]) / 1.5)


def test_father_sampling_frequencies_follow_probabilities(photo):
    # a run records which fathers it drew through the crop sizes: whole fathers (crop >= image)
    lr = _crop(photo, 40)
    cfg = _fast(max_iters=400, crop_size=64, father_levels=3, lr_min_iters=10_000, allow_rotation=False,
                test_every=10_000, self_ensemble=False, back_projection_iters=0)
    z = ZSSR(cfg, model=_ZeroNet())  # a free network: only the sampling is under test
    sizes: list[int] = []
    z._forward_orig = z._forward

    def spy(net, son, sf, out_hw):
        if torch.is_grad_enabled():
            sizes.append(out_hw[0])
        return z._forward_orig(net, son, sf, out_hw)

    z._forward = spy
    z.run(lr, None, 2, progress=False)
    counts = {s: sizes.count(s) / len(sizes) for s in set(sizes)}
    # levels 40, 30, 20 -> weights 1, 0.5625, 0.25 (/1.8125)
    assert set(counts) == {40, 30, 20}
    for size, w in ((40, 1.0), (30, 0.5625), (20, 0.25)):
        assert counts[size] == pytest.approx(w / 1.8125, abs=0.07)


# ------------------------------------------------------------------------------------------
# training and outputs
# ------------------------------------------------------------------------------------------
def test_short_run_lowers_the_loss_and_returns_the_right_format(photo):
    # width 32 instead of 64 keeps this a few seconds; the loop is the same
    lr = _crop(photo, 32)
    cfg = _fast(max_iters=200, crop_size=32, lr_min_iters=10_000, width=32)
    steps = []
    sr, info = ZSSR(cfg).run(lr, None, 2, progress=False, callback=steps.append, return_info=True)
    assert sr.shape == (64, 64, 3) and sr.dtype == np.uint8
    assert len(steps) == 200 and steps[0].iteration == 0 and steps[-1].lr == pytest.approx(1e-3)
    stage = info.stages[0]
    assert stage["iterations"] == 200 and info.iters_per_second > 0
    losses = stage["losses"]
    assert np.mean(losses[-30:]) < np.mean(losses[:30])
    rec = [v for _, v in stage["rec_mse"]]
    assert rec[-1] < rec[0]
    # the first measurement is (nearly) plain bicubic: training beats it clearly
    assert rec[-1] < 0.9 * rec[0]


def test_formats_float_tensor_gray_and_odd_sizes(photo):
    cfg = _fast(max_iters=3)
    lr = _crop(photo, 21)[:, :17]
    f = ZSSR(cfg).run(lr.astype(np.float32) / 255, None, 2, progress=False)
    assert f.shape == (42, 34, 3) and f.dtype == np.float32 and 0 <= f.min() and f.max() <= 1
    t = torch.from_numpy(lr.transpose(2, 0, 1).astype(np.float32) / 255)[None]
    out = ZSSR(cfg).run(t, None, 2, progress=False)
    assert isinstance(out, torch.Tensor) and out.shape == (1, 3, 42, 34)
    np.testing.assert_allclose(out[0].permute(1, 2, 0).numpy(), f, atol=1e-6)  # same seed, same result
    g = ZSSR(cfg).run(lr[:, :, 1], None, 2, progress=False)
    assert g.shape == (42, 34) and g.dtype == np.uint8


def test_seed_makes_runs_deterministic(photo):
    lr = _crop(photo, 24)
    a = ZSSR(_fast(max_iters=5, seed=1)).run(lr, None, 2, progress=False)
    b = ZSSR(_fast(max_iters=5, seed=1)).run(lr, None, 2, progress=False)
    c = ZSSR(_fast(max_iters=5, seed=2)).run(lr, None, 2, progress=False)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


class _ZeroNet(nn.Module):
    """Outputs zeros whatever its weight: shows what back-projection alone makes of the result."""

    upsample_input = True

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))
        self.eval_calls: list[tuple[int, int]] = []

    def forward(self, x):
        if not self.training:
            self.eval_calls.append(tuple(x.shape[-2:]))
        return x * 0 * self.w


def test_back_projection_by_hand_on_a_constant_image():
    # LR = 0.5 everywhere, network output 0. One back-projection step adds up(LR - down(0)) = 0.5
    # (bicubic of a constant is that constant), so the SR becomes exactly 0.5; without it, 0.
    lr = np.full((12, 12, 3), 0.5, dtype=np.float32)
    cfg = _fast(max_iters=2, back_projection_iters=1)
    out = ZSSR(cfg, model=_ZeroNet()).run(lr, None, 2, progress=False)
    np.testing.assert_allclose(out, 0.5, atol=1e-6)
    out0 = ZSSR(cfg.replace(back_projection_iters=0), model=_ZeroNet()).run(lr, None, 2, progress=False)
    np.testing.assert_allclose(out0, 0.0, atol=1e-7)


def test_back_projection_makes_the_result_consistent_with_the_lr(photo):
    lr = _crop(photo, 24)
    x = torch.from_numpy(lr.transpose(2, 0, 1).astype(np.float32) / 255)[None]
    errs = []
    for bp in (0, 8):
        sr = ZSSR(_fast(max_iters=5, back_projection_iters=bp)).run(x, None, 2, progress=False)
        errs.append(float((imresize(sr, 0.5) - x).abs().mean()))
    assert errs[1] < 0.5 * errs[0]


def test_self_ensemble_runs_the_network_on_all_eight_transforms():
    lr = np.full((12, 14, 3), 0.25, dtype=np.float32)
    net = _ZeroNet()
    z = ZSSR(_fast(max_iters=1, self_ensemble=True, father_min_scale=1.0), model=net)
    z.run(lr, None, 2, progress=False)
    calls = z.net.eval_calls
    assert len(calls) == 8
    assert sorted(set(calls)) == [(24, 28), (28, 24)]  # the bicubic-upsampled input, rotated or not
    z1 = ZSSR(_fast(max_iters=1, self_ensemble=False, father_min_scale=1.0), model=_ZeroNet())
    z1.run(lr, None, 2, progress=False)
    assert z1.net.eval_calls == [(24, 28)]
    assert net.eval_calls == []  # the given model is copied, never changed


def test_noise_on_sons_has_the_requested_std():
    z = ZSSR(_fast(noise_std=0.1))
    father = torch.full((1, 3, 128, 128), 0.5)
    son = z._son(father, (2.0, 2.0), None, "bicubic", torch.Generator().manual_seed(0))
    assert son.shape == (1, 3, 64, 64)
    assert float(son.mean()) == pytest.approx(0.5, abs=0.01)
    assert float(son.std()) == pytest.approx(0.1, rel=0.05)
    quiet = ZSSR(_fast())._son(father, (2.0, 2.0), None, "bicubic", torch.Generator().manual_seed(0))
    assert torch.allclose(quiet, torch.full_like(quiet, 0.5), atol=1e-6)


def test_given_kernel_and_gradual_presets_run(photo):
    lr = _crop(photo, 30)[:, :26]
    yy, xx = np.mgrid[0:9, 0:9]
    k = np.exp(-((yy - 4) ** 2 / 2.0 + (xx - 4) ** 2 / 5.0))
    k /= k.sum()
    fast = {key: v for key, v in PRESETS["fast"].items() if key != "back_projection_iters"}
    out = ZSSR(ZSSRConfig.preset("kernel", **fast)).run(lr, k, 2, progress=False)
    assert out.shape == (60, 52, 3)
    grad_cfg = ZSSRConfig.preset("gradual_x2", **{**fast, "max_iters": 3})
    sr, info = ZSSR(grad_cfg).run(lr, None, 2, progress=False, return_info=True)
    assert sr.shape == (60, 52, 3)
    expected = [tuple(map(float, s)) for s in PRESETS["gradual_x2"]["scale_factors"]]
    assert [tuple(s["scale"]) for s in info.stages] == expected
    assert [s["back_projection_iters"] for s in info.stages] == [6, 6, 8, 10, 10, 12]


def test_bf16_option_runs(photo):
    lr = _crop(photo, 12)
    with pytest.warns(RuntimeWarning, match="bf16") if not _fast_bf16() else contextlib.nullcontext():
        cfg = _fast(max_iters=2, crop_size=12, precision="bf16", self_ensemble=False)
        out = ZSSR(cfg).run(lr, None, 2, progress=False)
    assert out.shape == (24, 24, 3) and out.dtype == np.uint8


def _fast_bf16() -> bool:
    from metasr_adapter.precision import bf16_supported

    return bf16_supported(torch.device("cpu"))


# ------------------------------------------------------------------------------------------
# configuration errors and entry points
# ------------------------------------------------------------------------------------------
def test_config_errors_name_the_problem(photo):
    with pytest.raises(ValueError, match="preset"):
        ZSSRConfig.preset("nope")
    with pytest.raises(ValueError, match="max_iters"):
        ZSSR(ZSSRConfig(max_iters=0))
    with pytest.raises(ValueError, match="last scale factor"):
        ZSSR(ZSSRConfig.preset("gradual_x2")).run(_crop(photo, 40), None, 4, progress=False)
    with pytest.raises(ValueError, match="too small"):
        ZSSR(_fast()).run(_crop(photo, 8), None, 2, progress=False)
    with pytest.raises(ValueError, match="back_projection_iters"):
        ZSSRConfig(scale_factors=[2.0], back_projection_iters=[1, 2]).validate()
    # presets are copies: changing one config does not change the next
    cfg = ZSSRConfig.preset("gradual_x2")
    cfg.scale_factors.append(3.0)
    assert len(ZSSRConfig.preset("gradual_x2").scale_factors) == 6


def test_zssr_super_resolve_returns_numpy(photo):
    out = zssr_super_resolve(_crop(photo, 20), None, 2, _fast(max_iters=2))
    assert isinstance(out, np.ndarray) and out.shape == (40, 40, 3) and out.dtype == np.uint8


def test_cli_writes_the_image_and_reports_psnr(tmp_path, photo, capsys):
    from metasr_adapter.ops.imageio import read_image, write_image

    gt = _crop(photo, 48)
    lr = np.round(imresize(torch.from_numpy(gt.transpose(2, 0, 1).astype(np.float64) / 255)[None], 0.5)
                  .clamp(0, 1)[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    write_image(tmp_path / "lr.png", lr)
    write_image(tmp_path / "gt.png", gt)
    rc = zssr_main([str(tmp_path / "lr.png"), "-o", str(tmp_path / "sr.png"), "--preset", "fast", "--iters", "3",
                    "--gt", str(tmp_path / "gt.png"), "--quiet", "--device", "cpu"])
    assert rc == 0
    assert read_image(tmp_path / "sr.png").shape == (48, 48, 3)
    text = capsys.readouterr().out
    assert "PSNR vs GT" in text and "bicubic" in text
    assert zssr_main([str(tmp_path / "missing.png"), "-o", str(tmp_path / "x.png")]) == 2


@pytest.mark.shared
def test_cli_runs_on_the_official_kernel_example(tmp_path):
    from metasr_adapter.ops.imageio import read_image

    folder = shared_path("data", "zssr", "kernel_example")
    lr_path = folder / "BSD100_100_lr_rand_ker_c_X2.png"
    rc = zssr_main([str(lr_path), "--kernel", str(folder / "BSD100_100_lr_rand_ker_c_X2_0.mat"), "-o",
                    str(tmp_path / "sr.png"), "--iters", "2", "--quiet", "--device", "cpu"])  # 'kernel' preset
    assert rc == 0
    h, w = read_image(lr_path).shape[:2]
    assert read_image(tmp_path / "sr.png").shape == (2 * h, 2 * w, 3)


@pytest.mark.shared
def test_cli_runs_on_the_official_real_example(tmp_path):
    # a real photo with its estimated kernel (small negative entries, used as given) and the 'real' preset
    from metasr_adapter.ops.imageio import read_image

    folder = shared_path("data", "zssr", "real_example")
    lr_path = folder / "charlie.png"
    with pytest.warns(UserWarning, match="negative entries"):
        rc = zssr_main([str(lr_path), "--kernel", str(folder / "charlie_0.mat"), "--preset", "real", "-o",
                        str(tmp_path / "sr.png"), "--iters", "2", "--quiet", "--device", "cpu"])
    assert rc == 0
    h, w = read_image(lr_path).shape[:2]
    assert read_image(tmp_path / "sr.png").shape == (2 * h, 2 * w, 3)

"""Blind mode: kernel estimation (gaussian search, KernelGAN), its errors, MetaSR.adapt(kernel="estimate"), the CLI.

The LR images are made here from the photo bundled with matplotlib: halved (bicubic) so that it is sharper
than the JPEG, cropped, blurred with a known kernel and subsampled directly by 2, as the estimators assume.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from metasr_adapter import KernelEstimate, MetaSR, MZSRNet, estimate_kernel, load_pretrained
from metasr_adapter.estimate import api as estimate_api
from metasr_adapter.estimate import kernel_error, kernel_psnr
from metasr_adapter.estimate.checks import MIN_GRADIENT_RMS, texture_map, textured_crops, window_texture
from metasr_adapter.estimate.kernel_metrics import center_of_mass, pad_to
from metasr_adapter.estimate.kernelgan import LinearGenerator, bicubic_kernel
from metasr_adapter.ops.degrade import degrade, imresize
from metasr_adapter.ops.kernels import anisotropic_gaussian, named_kernel, read_kernel_file

NARROW = (0.8, 0.8, 0.0)      # (λ1, λ2, θ): variances and angle
WIDE = (5.0, 3.0, 0.6)


@pytest.fixture(scope="module")
def hr(photo) -> torch.Tensor:
    x = torch.from_numpy(photo.copy()).permute(2, 0, 1)[None].double() / 255
    return imresize(x, 0.5).clamp(0, 1)[..., 40:232, 40:232]  # 192x192 "HR"


def make_lr(hr: torch.Tensor, params: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    l1, l2, theta = params
    k = anisotropic_gaussian(15, theta, l1, l2)
    lr = degrade(hr, k, 2).clamp(0, 1)
    return np.round(lr[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8), k


@pytest.fixture(scope="module")
def mzsr():
    return load_pretrained("mzsr_x2_direct")


def size_of(est: KernelEstimate) -> float:
    """Geometric-mean variance of a gaussian estimate."""
    return math.sqrt(est.params["l1"] * est.params["l2"])


# -- kernel metrics and helpers ---------------------------------------------------------------------
def test_kernel_error_ignores_whole_pixel_shifts_and_size():
    k = anisotropic_gaussian(11, 0.3, 2.0, 1.0)
    shifted = np.roll(pad_to(k, 15), (1, -2), axis=(0, 1))
    assert kernel_psnr(shifted, k) > 60
    wrong = anisotropic_gaussian(15, 0.3, 4.0, 4.0)
    err = kernel_error(wrong, k)
    assert err["psnr"] < 30 and err["mse"] > 0


def test_linear_generator_kernel_is_what_it_applies():
    """The delta read-out equals G's action: G(x) == blur(x, kernel) then direct x2 subsampling."""
    torch.manual_seed(0)
    g = LinearGenerator((7, 5, 3, 1, 1, 1), width=8).double()
    x = torch.rand(1, 1, 40, 40, dtype=torch.float64)
    k = g.kernel().detach()
    ref = torch.nn.functional.conv2d(x, k[None, None])[..., ::2, ::2]
    torch.testing.assert_close(g(x).detach(), ref)
    b = bicubic_kernel(13)
    assert b.shape == (13, 13) and abs(b.sum() - 1) < 1e-12 and center_of_mass(b) == pytest.approx((6, 6))


def test_textured_crops_prefer_texture_and_stay_aligned():
    x = torch.zeros(1, 3, 96, 96, dtype=torch.float64)
    x[..., 50:90, 10:50] = torch.rand(1, 3, 40, 40, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    (i, j), = textured_crops(x, 32, 1, generator=torch.Generator().manual_seed(0))
    assert i % 2 == 0 and j % 2 == 0
    assert 50 - 16 <= i <= 90 - 16 and 10 - 16 <= j <= 50 - 16  # the crop lies mostly on the textured square


@pytest.mark.parametrize("shape,size,dtype", [((1, 3, 70, 90), 24, torch.float64), ((1, 3, 70, 90), 70, torch.float64),
                                             ((1, 1, 40, 33), 1, torch.float32), ((1, 3, 41, 60), 17, torch.float32)])
def test_window_texture_is_the_pooled_texture_map(shape, size, dtype):
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64).to(dtype)
    x[..., :20, :20] = 0.5  # a flat corner: windows of zero texture stay >= 0
    pooled = torch.nn.functional.avg_pool2d(torch.nn.functional.pad(texture_map(x.double()), (0, 1, 0, 1)), size,
                                            stride=1)[0, 0]
    got = window_texture(x, size)
    assert got.dtype == dtype and got.shape == pooled.shape == (shape[2] - size + 1, shape[3] - size + 1)
    torch.testing.assert_close(got.double(), pooled, rtol=1e-5 if dtype == torch.float32 else 1e-12, atol=1e-12)
    assert got.min() >= 0


def test_window_texture_refuses_a_window_larger_than_the_image():
    with pytest.raises(ValueError, match="window size 41 does not fit the 40x50 image"):
        window_texture(torch.rand(1, 3, 40, 50), 41)


# -- bad input ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["gaussian", "kernelgan"])
def test_too_small_image_names_its_size_and_the_fix(method):
    img = np.random.default_rng(0).integers(0, 256, (20, 40, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"20x40 pixels is too small.*at least 32x32.*kernel="):
        estimate_kernel(img, 2, method)


def test_flat_image_names_its_gradient_and_the_fix():
    img = np.full((64, 64, 3), 0.5, dtype=np.float32)
    img += np.random.default_rng(0).normal(0, 1e-4, img.shape).astype(np.float32)  # far below one grey level
    with pytest.raises(ValueError, match=r"too flat.*RMS gradient is \d\.\d\de-0\d.*more detailed image"):
        estimate_kernel(img, 2)
    assert MIN_GRADIENT_RMS > 1e-4


@pytest.mark.parametrize("scale", [3, 4, 1.5])
def test_unsupported_scale_names_the_value(scale, photo):
    with pytest.raises(ValueError, match=rf"scale={scale!r} is not supported.*scale=2 only"):
        estimate_kernel(photo[:64, :64], scale)


def test_bad_method_and_option_are_refused(photo):
    with pytest.raises(ValueError, match="method='sharp'.*gaussian, kernelgan"):
        estimate_kernel(photo[:64, :64], 2, "sharp")
    with pytest.raises(ValueError, match="unknown option.*iterations"):
        estimate_kernel(photo[:64, :64], 2, "kernelgan", iterations=3)


# -- the gaussian search ------------------------------------------------------------------------------
def test_gaussian_search_tells_a_narrow_kernel_from_a_wide_one(hr, mzsr, one_torch_thread):
    """Each estimate is nearer its own truth than the other's, wider for the wide kernel, and closer to the truth
    than MZSR's default kernel gd2.0 is."""
    gd20 = named_kernel("gd2.0").kernel
    est = {}
    for name, params in (("narrow", NARROW), ("wide", WIDE)):
        lr, k = make_lr(hr, params)
        e = estimate_kernel(lr, 2, model=mzsr, max_evals=10, crops=2)
        assert e.kernel.shape == (15, 15) and abs(e.kernel.sum() - 1) < 1e-9 and e.kernel.min() >= 0
        assert len(e.loss_history) == 10 and e.seconds > 0
        assert kernel_psnr(e.kernel, k) > kernel_psnr(gd20, k) + 1.0, (name, e.summary())
        est[name] = size_of(e)
    true_narrow, true_wide = math.sqrt(NARROW[0] * NARROW[1]), math.sqrt(WIDE[0] * WIDE[1])
    assert est["wide"] > 1.5 * est["narrow"], est
    for name, own, other in (("narrow", true_narrow, true_wide), ("wide", true_wide, true_narrow)):
        assert abs(math.log(est[name] / own)) < abs(math.log(est[name] / other)), est


@pytest.mark.slow
def test_gaussian_search_default_budget_on_an_anisotropic_kernel(hr, mzsr, one_torch_thread):
    """The full default search: converged, closer than gd2.0, orientation within 30° of the truth."""
    params = (5.0, 1.5, 0.6)
    lr, k = make_lr(hr, params)
    e = estimate_kernel(lr, 2, model=mzsr)
    assert e.converged, e.reason
    assert kernel_psnr(e.kernel, k) > kernel_psnr(named_kernel("gd2.0").kernel, k)
    if e.params["l1"] / e.params["l2"] > 1.2:
        d = abs(e.params["theta"] - params[2]) % math.pi
        assert min(d, math.pi - d) < math.radians(30), e.summary()


def test_gaussian_estimate_is_deterministic_and_leaves_the_model_alone(hr, one_torch_thread):
    torch.manual_seed(0)
    net = MZSRNet(width=8, depth=3)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    lr, _ = make_lr(hr, WIDE)
    a = estimate_kernel(lr, 2, model=net, max_evals=6, crops=1, seed=3)
    b = estimate_kernel(lr, 2, model=MetaSR(net, 2), max_evals=6, crops=1, seed=3)
    np.testing.assert_array_equal(a.kernel, b.kernel)
    assert a.loss_history == b.loss_history
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


# -- KernelGAN ---------------------------------------------------------------------------------------
def test_kernelgan_recovers_a_wide_kernel_better_than_its_bicubic_start(hr, one_torch_thread):
    lr, k = make_lr(hr, WIDE)
    e = estimate_kernel(lr, 2, "kernelgan", iters=200, g_width=32)
    assert e.method == "kernelgan" and e.kernel.shape == (15, 15)
    assert abs(e.kernel.sum() - 1) < 1e-9 and e.kernel.min() >= 0
    assert len(e.loss_history) == 200
    err = kernel_psnr(e.kernel, k)
    assert err > kernel_psnr(bicubic_kernel(13), k) + 3, e.summary()
    assert err > kernel_psnr(named_kernel("gd2.0").kernel, k) + 1, e.summary()
    r, c = center_of_mass(e.kernel)
    assert abs(r - 7) < 1.5 and abs(c - 7) < 1.5


# -- MetaSR.adapt(kernel="estimate") -----------------------------------------------------------------
@pytest.fixture
def small_budget(monkeypatch):
    """``kernel="estimate"`` with a 20-score search on 2 crops, to keep the test short."""
    real = estimate_api.estimate_kernel

    def quick(*args, **kwargs):
        return real(*args, **{"max_evals": 20, "crops": 2, **kwargs})

    monkeypatch.setattr(estimate_api, "estimate_kernel", quick)


def test_adapt_with_estimate(hr, mzsr, small_budget, one_torch_thread):
    lr, _ = make_lr(hr, WIDE)
    sr, info = mzsr.adapt(lr, kernel="estimate", steps=1, return_info=True)
    assert sr.shape == (192, 192, 3) and sr.dtype == np.uint8
    est = info.kernel_estimate
    assert isinstance(est, KernelEstimate) and est.method == "gaussian" and est.converged
    assert len(info.losses) == 1
    # the estimate is what the adaptation used: the same SR as passing its kernel explicitly
    np.testing.assert_array_equal(sr, mzsr.adapt(lr, kernel=est.kernel, steps=1))
    with pytest.raises(ValueError, match="ds_method='bicubic'.*direct"):
        mzsr.adapt(lr, kernel="estimate", steps=1, ds_method="bicubic")


def test_a_non_converged_estimate_is_never_used(hr, monkeypatch):
    lr, _ = make_lr(hr, WIDE)

    def unsure(*args, **kwargs):
        return KernelEstimate(kernel=anisotropic_gaussian(15, 0, 2, 2), method="gaussian", converged=False,
                              seconds=0.1, reason="the loss hardly depends on the kernel")

    monkeypatch.setattr(estimate_api, "estimate_kernel", unsure)
    msr = MetaSR(MZSRNet(width=8, depth=3), 2)
    with pytest.raises(ValueError, match=r"did not converge, so it was not used: the loss hardly.*kernel='K.mat'"):
        msr.adapt(lr, kernel="estimate", steps=1)


# -- command line ------------------------------------------------------------------------------------
def test_cli_estimate_kernel_writes_a_readable_mat_and_plot(hr, tmp_path, capsys, one_torch_thread):
    from metasr_adapter.cli.main import main
    from metasr_adapter.ops.imageio import write_image

    lr, _ = make_lr(hr, WIDE)
    src = tmp_path / "lr.png"
    write_image(src, lr)
    out, png = tmp_path / "K.mat", tmp_path / "K.png"
    code = main(["estimate-kernel", str(src), "-o", str(out), "--evals", "8", "--plot", str(png), "--quiet",
                 "--json", str(tmp_path / "K.json")])
    text = capsys.readouterr()
    assert code in (0, 1), text.err  # 1: written, but flagged as not converged (8 scores are few)
    assert ("NOT converged" in text.out) == (code == 1)
    k = read_kernel_file(out)
    assert k.shape == (15, 15) and abs(k.sum() - 1) < 1e-9
    assert png.stat().st_size > 1000 and (tmp_path / "K.json").is_file()

    npy = tmp_path / "K.npy"
    code = main(["estimate-kernel", str(src), "-o", str(npy), "--method", "kernelgan", "--iters", "20", "--quiet"])
    assert code in (0, 1) and read_kernel_file(npy).shape == (15, 15)


@pytest.mark.parametrize("argv, message", [
    (["estimate-kernel", "LR", "-o", "K.txt"], "written as .mat"),
    (["estimate-kernel", "LR", "-o", "K.mat", "--scale", "4"], "scale=4.0 is not supported"),
    (["eval", "--gt-dir", ".", "--kernel", "estimate"], "--kernel estimate works with `metasr adapt`"),
    (["adapt", "LR", "--kernel", "estimate", "--ds-method", "bicubic", "-o", "SR.png"], "direct"),
    (["eval", "--gt-dir", ".", "--method", "zssr", "--kernel", "estimate"], "`metasr adapt` and `metasr zssr`"),
    (["zssr", "LR", "--estimator", "kernelgan", "-o", "SR.png"], "--estimator kernelgan is used only with --kernel estimate"),
    (["zssr", "LR", "--kernel", "gd2.0", "--estimator", "gaussian", "-o", "SR.png"], "given --kernel gd2.0"),
])
def test_cli_estimate_errors_are_one_line(tmp_path, capsys, argv, message):
    from metasr_adapter.cli.main import main

    argv = [str(tmp_path / a) if a in ("LR", "K.txt", "K.mat", "SR.png") else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_cli_adapt_with_kernel_estimate(hr, tmp_path, capsys, small_budget, one_torch_thread):
    from metasr_adapter.cli.main import main
    from metasr_adapter.ops.imageio import read_image, write_image

    lr, _ = make_lr(hr, WIDE)
    src, out = tmp_path / "lr.png", tmp_path / "sr.png"
    write_image(src, lr[:, :80])
    assert main(["adapt", str(src), "--kernel", "estimate", "--steps", "1", "-o", str(out)]) == 0, capsys.readouterr().err
    assert "estimated kernel: gaussian" in capsys.readouterr().out
    assert read_image(out).shape == (192, 160, 3)


def test_cli_zssr_with_kernel_estimate(hr, tmp_path, capsys, small_budget, one_torch_thread):
    """`metasr zssr --kernel estimate`: the estimate (printed) is the kernel ZSSR trains with."""
    from metasr_adapter.cli.main import main
    from metasr_adapter.ops.imageio import read_image, write_image

    lr, _ = make_lr(hr, WIDE)
    src, out = tmp_path / "lr.png", tmp_path / "sr.png"
    write_image(src, lr[:64, :64])
    code = main(["zssr", str(src), "--kernel", "estimate", "--iters", "3", "--quiet", "-o", str(out), "--threads", "1"])
    text = capsys.readouterr()
    assert code == 0, text.err
    assert "estimated kernel: gaussian" in text.out and "preset 'kernel'" in text.out
    assert read_image(out).shape == (128, 128, 3)
    assert main(["zssr", str(src), "--kernel", "estimate", "--scale", "4", "-o", str(out)]) == 2
    assert "scale=4.0 is not supported" in capsys.readouterr().err


def test_folder_sidecars_carry_each_images_estimate(hr, tmp_path, small_budget, one_torch_thread):
    import json

    from metasr_adapter.adapt.batch import adapt_folder
    from metasr_adapter.ops.imageio import write_image

    lr, _ = make_lr(hr, WIDE)
    write_image(tmp_path / "in" / "a.png", lr[:, :80])
    msr = MetaSR(MZSRNet(width=8, depth=3), 2)
    [outcome] = adapt_folder(msr, tmp_path / "in", tmp_path / "out", kernel="estimate", steps=1, progress=False)
    assert outcome.status == "done", outcome.error
    est = json.loads((tmp_path / "out" / "a.png.json").read_text())["kernel_estimate"]
    assert est["method"] == "gaussian" and np.asarray(est["kernel"]).shape == (15, 15)
    assert est["converged"] and abs(np.sum(est["kernel"]) - 1) < 1e-6

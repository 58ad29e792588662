"""The photo path (issue #18): one degradation description (grid, blur, noise, JPEG), its estimate, the photo
training pairs, and ``upscale_photo`` with its held-out check."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from metasr_adapter.ops.degradation_spec import DegradationSpec, PhotoDegradations, gaussian_blur_kernel
from metasr_adapter.ops.degrade import degrade, subsample_centred
from metasr_adapter.ops.jpeg import ijg_luma_table, jpeg_compress, quality_from_table, read_jpeg_quality
from metasr_adapter.ops.kernels import KernelSpec


# -- the centred grid ------------------------------------------------------------------------------
def test_centred_subsampling_is_the_block_mean_and_keeps_an_odd_border():
    x = torch.arange(5 * 7, dtype=torch.float64).reshape(1, 1, 5, 7)
    y = subsample_centred(x, 2)
    assert y.shape == (1, 1, 3, 4)  # ceil: the last row and column are kept, not dropped
    assert torch.allclose(y[..., :2, :3], F.avg_pool2d(x[..., :4, :6], 2))
    assert y[0, 0, 2, 3] == x[0, 0, 4, 6]  # a 1x1 corner block is its own mean
    assert y[0, 0, 0, 3] == x[0, 0, :2, 6].mean()
    with pytest.raises(ValueError, match="integer factor"):
        subsample_centred(x, 1.5)


def test_degrade_on_the_centred_grid_blurs_then_averages_blocks():
    x = torch.rand(1, 3, 16, 16, dtype=torch.float64)
    k = gaussian_blur_kernel(1.0)
    y = degrade(x, k, 2, "centred")
    from metasr_adapter.ops.degrade import blur

    assert torch.allclose(y, F.avg_pool2d(blur(x, k), 2))
    # no kernel on the centred grid: the plain area downscale
    assert torch.allclose(degrade(x, None, 2, "centred"), F.avg_pool2d(x, 2))


def test_the_centred_grid_sits_half_a_pixel_from_the_direct_one():
    """A ramp along x sampled by the two grids: centred LR pixels sit at 2i + 0.5, direct ones at 2i."""
    ramp = torch.arange(32, dtype=torch.float64).repeat(32, 1)[None, None]
    k = gaussian_blur_kernel(0.2)  # nearly a delta
    direct = degrade(ramp, k, 2, "direct")[0, 0, 5, 3:10]
    centred = degrade(ramp, k, 2, "centred")[0, 0, 5, 3:10]
    assert torch.allclose(centred - direct, torch.full_like(direct, 0.5), atol=1e-6)


# -- JPEG ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("writer", ["opencv", "pil"])
@pytest.mark.parametrize("quality", [35, 75, 92])
def test_the_jpeg_quality_is_read_back_from_the_quantisation_tables(tmp_path, writer, quality):
    img = (np.random.default_rng(0).random((48, 48, 3)) * 255).astype(np.uint8)
    path = tmp_path / "x.jpg"
    if writer == "opencv":
        import cv2

        cv2.imwrite(str(path), img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    else:
        from PIL import Image

        Image.fromarray(img).save(path, quality=quality)
    assert read_jpeg_quality(path) == quality


def test_a_png_has_no_jpeg_quality_and_tables_must_have_64_entries(tmp_path):
    from metasr_adapter.ops.imageio import write_image

    write_image(tmp_path / "x.png", np.zeros((8, 8, 3), np.uint8))
    assert read_jpeg_quality(tmp_path / "x.png") is None
    assert quality_from_table(ijg_luma_table(50)) == (50, 0.0)
    with pytest.raises(ValueError, match="64 entries"):
        quality_from_table([1, 2, 3])


def test_jpeg_compress_keeps_shape_dtype_and_rejects_bad_quality():
    x = torch.rand(2, 3, 24, 24, dtype=torch.float64)
    y = jpeg_compress(x, 50)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert torch.allclose(y * 255, (y * 255).round())  # decoded 8-bit values
    assert (y - x).abs().mean() > 1e-3  # it did compress
    with pytest.raises(ValueError, match="1..100"):
        jpeg_compress(x, 0)


# -- DegradationSpec -------------------------------------------------------------------------------
def test_a_degradation_spec_round_trips_through_its_dict_and_applies_its_chain():
    spec = DegradationSpec(KernelSpec(kernel=gaussian_blur_kernel(0.8), ds_method="centred"), 3 / 255, 80)
    again = DegradationSpec.from_dict(spec.to_dict())
    assert again.grid == "centred" and again.jpeg_quality == 80 and again.noise_std == pytest.approx(3 / 255)
    assert np.allclose(again.kernel.kernel, spec.kernel.kernel, atol=1e-7)
    x = torch.rand(1, 3, 32, 32, dtype=torch.float64)
    y = spec.apply(x, 2, generator=torch.Generator().manual_seed(0))
    assert y.shape == (1, 3, 16, 16)
    assert torch.allclose(y * 255, (y * 255).round())
    assert "centred grid" in spec.describe() and "JPEG q80" in spec.describe()


@pytest.mark.parametrize("kwargs, needle", [({"noise_std": -1.0}, "noise_std"), ({"jpeg_quality": 101}, "jpeg_quality"),
                                            ({"jpeg_quality": 2.5}, "jpeg_quality")])
def test_a_degradation_spec_names_the_bad_value(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        DegradationSpec(KernelSpec(kernel=None, ds_method="bicubic"), **kwargs)


def test_the_photo_family_covers_every_grid_sharp_kernels_noise_and_jpeg():
    fam = PhotoDegradations()
    rng = np.random.RandomState(0)
    draws = [fam.sample(rng) for _ in range(400)]
    assert {d.grid for d in draws} == {"direct", "centred", "bicubic"}
    from metasr_adapter.ops.degradation_spec import _kernel_sigma

    sigmas = [_kernel_sigma(d.kernel.kernel) for d in draws if d.kernel.kernel is not None]
    assert min(sigmas) < 0.3 and max(sigmas) > 2.0  # sharp (MZSR's family starts at σ = 1) to blurry
    assert 0.2 < np.mean([d.jpeg_quality is not None for d in draws]) < 0.9
    assert 0.2 < np.mean([d.noise_std > 0 for d in draws]) < 0.7
    again = [PhotoDegradations().sample(np.random.RandomState(0)) for _ in range(1)]
    assert again[0].describe() == draws[0].describe()
    with pytest.raises(ValueError, match="grid_probs"):
        PhotoDegradations(grid_probs=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="unknown photo-degradation"):
        PhotoDegradations.from_dict({"sigma": 1})


def test_photo_pairs_are_a_function_of_seed_and_step(tmp_path):
    from metasr_adapter.meta.pretrain import PhotoPairSampler
    from metasr_adapter.meta.tasks import PatchPool
    from metasr_adapter.ops.imageio import write_image

    rng = np.random.default_rng(0)
    for i in range(2):
        write_image(tmp_path / f"{i}.png", (rng.random((64, 64, 3)) * 255).astype(np.uint8))
    pool = PatchPool(tmp_path, 32, 16, grad_threshold=-100.0)
    s = PhotoPairSampler(pool, 4, scale=2, seed=3)
    a, b = s.sample_arrays(5), s.sample_arrays(5)
    assert a["x"].shape == (4, 3, 16, 16) and a["y"].shape == (4, 3, 32, 32)
    assert torch.equal(a["x"], b["x"]) and torch.equal(a["y"], b["y"])
    assert not torch.equal(s.sample_arrays(6)["x"], a["x"])


# -- estimation ------------------------------------------------------------------------------------
def test_the_noise_estimate_reads_pure_gaussian_noise_and_ignores_flat_texture():
    from metasr_adapter.estimate.degradation import estimate_noise_std

    gen = torch.Generator().manual_seed(0)
    x = 0.5 + 5 / 255 * torch.randn(1, 3, 256, 256, generator=gen, dtype=torch.float64)
    assert estimate_noise_std(x) * 255 == pytest.approx(5.0, rel=0.08)
    clean = torch.linspace(0, 1, 256, dtype=torch.float64).repeat(1, 3, 256, 1)  # a smooth ramp
    assert estimate_noise_std(clean) * 255 < 0.5


@pytest.fixture(scope="module")
def tiny_idn():
    from metasr_adapter import IDN

    torch.manual_seed(0)
    return IDN(2, num_feat=16, num_blocks=1, diff=4, groups=1)


def test_the_estimate_carries_the_files_jpeg_quality_and_scores_every_candidate(photo, tiny_idn, one_torch_thread):
    from metasr_adapter import MetaSR
    from metasr_adapter.estimate.degradation import BLUR_CANDIDATES, estimate_degradation

    msr = MetaSR(tiny_idn, 2, loss="l2", schedule=0.5)
    est = estimate_degradation(photo[:128, :128], msr, jpeg_quality=70, crops=2, crop=48)
    assert est.spec.jpeg_quality == 70 and est.spec.grid in ("centred", "bicubic")
    assert len(est.candidates) == len(BLUR_CANDIDATES) + 1  # + a plain bicubic resize
    best = min(est.candidates, key=lambda c: c["loss"])
    assert best["kernel"] == (est.spec.kernel.name or "bicubic")
    with pytest.raises(ValueError, match="grid='bicubic'"):
        estimate_degradation(photo[:64, :64], msr, grid="bicubic")


# -- the photo path --------------------------------------------------------------------------------
def test_a_rejected_adaptation_returns_the_plain_networks_output(photo, tiny_idn, one_torch_thread):
    from metasr_adapter import MetaSR
    from metasr_adapter.pipelines.photo import upscale_photo

    msr = MetaSR(tiny_idn, 2, loss="l2", schedule=0.5)
    lr = photo[:96, :96]
    spec = DegradationSpec(KernelSpec(kernel=None, ds_method="bicubic"))
    plain = upscale_photo(lr, msr, steps=0, degradation=spec)
    sr, info = upscale_photo(lr, msr, steps=2, degradation=spec, margin=0.99, return_info=True)
    assert info.choice == "plain" and "kept the plain network" in info.reason
    assert np.array_equal(sr, plain)
    assert info.heldout_loss_plain is not None and info.heldout_loss_adapted is not None


def test_an_adaptation_that_fits_the_held_out_band_better_is_used(photo, one_torch_thread):
    """An untrained network's output is far from the image; adaptation steps fit the son → LR task, and the
    held-out band confirms it, so the adapted weights make the SR image."""
    from metasr_adapter import MetaSR, MZSRNet
    from metasr_adapter.pipelines.photo import upscale_photo

    torch.manual_seed(0)
    msr = MetaSR(MZSRNet(width=8, depth=3), 2, schedule=0.05)
    lr = photo[100:196, 100:196]
    spec = DegradationSpec(KernelSpec(kernel=None, ds_method="bicubic"))
    sr, info = upscale_photo(lr, msr, steps=5, degradation=spec, return_info=True)
    assert info.choice == "adapted", info.reason
    assert info.heldout_loss_adapted < info.heldout_loss_plain
    assert not np.array_equal(sr, upscale_photo(lr, msr, steps=0, degradation=spec))


def test_the_photo_path_refuses_bad_steps_and_margin(photo, tiny_idn):
    from metasr_adapter import MetaSR
    from metasr_adapter.pipelines.photo import upscale_photo

    msr = MetaSR(tiny_idn, 2)
    with pytest.raises(ValueError, match="steps"):
        upscale_photo(photo[:64, :64], msr, steps=-1)
    with pytest.raises(ValueError, match="margin"):
        upscale_photo(photo[:64, :64], msr, margin=1.5)


def test_adaptation_son_uses_the_whole_degradation_chain(photo, tiny_idn):
    """A DegradationSpec as the kernel makes the son with its JPEG: the son's values are decoded 8-bit JPEG."""
    from metasr_adapter import MetaSR

    msr = MetaSR(tiny_idn, 2)
    spec = DegradationSpec(KernelSpec(kernel=None, ds_method="bicubic"), 0.0, 40)
    session = msr.start(photo[:64, :64], spec)
    son = session.son.double()
    x = torch.from_numpy(photo[:64, :64].astype(np.float64) / 255).permute(2, 0, 1)[None]
    assert torch.allclose(son, spec.apply(x, 2).to(son.dtype), atol=1e-6)
    with pytest.raises(ValueError, match="contradicts"):
        msr.start(photo[:64, :64], spec, ds_method="direct")


def test_idn_declares_a_receptive_radius_that_bounds_an_impulse_response():
    from metasr_adapter import IDN

    torch.manual_seed(0)
    m = IDN(2).eval()
    x = torch.rand(1, 3, 80, 80)
    x2 = x.clone()
    x2[..., 40, 40] += 1.0
    with torch.no_grad():
        diff = (m(x2) - m(x)).abs().sum(1)[0]
    rows = torch.nonzero(diff.sum(1) > 0).flatten()
    reach = max(40 - int(rows.min()) // 2, int(rows.max()) // 2 - 40)  # in LR pixels
    assert 0 < reach <= m.receptive_radius


def _web_jpeg(img: np.ndarray, quality: int = 85) -> bytes:
    from PIL import Image

    h, w = img.shape[:2]
    buf = io.BytesIO()
    Image.fromarray(img).resize((w // 2, h // 2), Image.BICUBIC).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def test_the_default_command_beats_bicubic_on_a_web_jpeg(tmp_path, photo, capsys):
    """Issue #18: `metasr adapt photo.jpg -o out.png` with no options made a web JPEG 2-5 dB worse than PIL
    bicubic (it assumed gd2.0 and direct subsampling). Now it runs the photo path and beats bicubic."""
    from PIL import Image

    from metasr_adapter.cli.main import main
    from metasr_adapter.ops.imageio import read_image
    from metasr_adapter.ops.metrics import psnr

    hr = np.ascontiguousarray(photo[96:352, 128:384])  # 256x256 of the face and uniform
    lr_path = tmp_path / "web.jpg"
    lr_path.write_bytes(_web_jpeg(hr))
    out = tmp_path / "sr.png"
    assert main(["adapt", str(lr_path), "-o", str(out), "--threads", "1"]) == 0
    text = capsys.readouterr().out
    assert "weights: idn_x2_" in text and "JPEG q85" in text and "choice:" in text
    sr = read_image(out)
    lr = read_image(lr_path)
    bic = np.asarray(Image.fromarray(lr).resize((256, 256), Image.BICUBIC))
    assert psnr(sr, hr, crop_border=2) > psnr(bic, hr, crop_border=2) + 0.3


def test_a_plain_resize_goes_to_the_network_trained_for_it_and_a_blurred_photo_does_not(photo, one_torch_thread):
    """The photo weights lose ~1 dB to idn_x2_bicubic on plain bicubic resizes (BSD100, benchmarks/real_photos.py):
    when the estimate finds no blur beyond a bicubic resize, the default hands the photo to the network trained for
    exactly that, and says so; a blurred, area-downscaled photo stays with the photo weights."""
    from PIL import Image
    from scipy.ndimage import gaussian_filter

    from metasr_adapter.ops.metrics import psnr
    from metasr_adapter.pipelines.photo import load_grid_specialists, load_photo_model, upscale_photo

    hr = np.ascontiguousarray(photo[96:352, 128:384])
    resized = np.asarray(Image.fromarray(hr).resize((128, 128), Image.BICUBIC))
    msr, name = load_photo_model()
    specialists = load_grid_specialists()
    assert name == "idn_x2_photo" and specialists["bicubic"][1] == "idn_x2_bicubic"
    sr, info = upscale_photo(resized, msr, steps=0, weights_name=name, specialists=specialists, return_info=True)
    assert info.weights == "idn_x2_bicubic" and "plain bicubic resize" in info.routed
    assert "idn_x2_bicubic" in info.summary_lines()[0] and info.to_dict()["routed"] == info.routed
    alone = upscale_photo(resized, msr, steps=0, weights_name=name)  # an explicit msr alone: no routing
    assert psnr(sr, hr, crop_border=2) > psnr(alone, hr, crop_border=2) + 0.3
    blurred = np.stack([gaussian_filter(hr[..., c] / 255.0, 1.2) for c in range(3)], -1)
    camera = np.round(blurred.reshape(128, 2, 128, 2, 3).mean(axis=(1, 3)) * 255).astype(np.uint8)
    _, info = upscale_photo(camera, msr, steps=0, weights_name=name, specialists=specialists, return_info=True)
    assert info.weights == "idn_x2_photo" and info.routed is None


def test_the_folder_sidecar_records_the_photo_estimate_and_choice(tmp_path, photo, capsys):
    import json

    from metasr_adapter.cli.main import main

    src = tmp_path / "in"
    src.mkdir()
    (src / "a.jpg").write_bytes(_web_jpeg(np.ascontiguousarray(photo[96:256, 128:288]), 70))
    assert main(["adapt", str(src), "-o", str(tmp_path / "out"), "--threads", "1", "--steps", "1"]) == 0
    side = json.loads((tmp_path / "out" / "a.png.json").read_text())
    assert side["status"] == "done" and side["kernel"] == "photo"
    assert side["details"]["estimate"]["degradation"]["jpeg_quality"] == 70
    assert side["details"]["choice"] in ("adapted", "plain") and side["details"]["reason"]


def test_photo_is_only_a_kernel_of_metasr_adapt(tmp_path, capsys):
    from metasr_adapter.cli.main import main

    assert main(["eval", "--gt-dir", str(tmp_path), "--kernel", "photo"]) == 2
    assert "--kernel photo works with `metasr adapt`" in capsys.readouterr().err


def test_metasr_takes_its_defaults_from_the_loaded_weights():
    """Issue #20.3: MetaSR(load_model(weights="idn_x2_mlsr"), 2) adapted with L1 at 0.02 while
    load_pretrained("idn_x2_mlsr") used L2 at 0.65025. The weights' metadata is now the default; explicit
    arguments still win."""
    from metasr_adapter import MetaSR, load_model, load_pretrained

    a = MetaSR(load_model(weights="idn_x2_mlsr"), 2)
    b = load_pretrained("idn_x2_mlsr")
    assert a.schedule(0) == b.schedule(0) == pytest.approx(0.65025)
    x, y = torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8)
    assert float(a.loss_fn(x, y)) == pytest.approx(float(((x - y) ** 2).mean()))
    assert MetaSR(load_model(weights="idn_x2_mlsr")).scale == 2.0
    c = MetaSR(load_model(weights="idn_x2_mlsr"), 2, schedule=0.01, loss="l1")
    assert c.schedule(0) == pytest.approx(0.01)
    assert float(c.loss_fn(x, y)) == pytest.approx(float((x - y).abs().mean()))


@pytest.mark.parametrize("fast", [True, False])
def test_the_photo_path_runs_bf16_where_it_is_fast_and_says_so(tmp_path, photo, capsys, monkeypatch, fast):
    """Issue #21.3: on CPUs with AVX512-BF16/AMX the photo path defaults to bf16 (1.7x faster on BSD100, no image
    moved by more than 0.003 dB; benchmarks/results/real_photos/precision/); elsewhere fp32. The first output
    line names the precision; --precision still wins, and the MZSR paths stay fp32."""
    import metasr_adapter.precision as prec
    from metasr_adapter.cli.main import main
    from metasr_adapter.pipelines.photo import load_photo_model, photo_precision

    monkeypatch.setattr(prec, "bf16_supported", lambda device: fast)
    want = "bf16" if fast else "fp32"
    assert photo_precision() == want and load_photo_model()[0].precision == want
    lr_path = tmp_path / "web.jpg"
    lr_path.write_bytes(_web_jpeg(np.ascontiguousarray(photo[96:224, 128:256])))
    assert main(["adapt", str(lr_path), "-o", str(tmp_path / "sr.png"), "--threads", "1", "--steps", "1"]) == 0
    assert f"({want})" in capsys.readouterr().out
    assert main(["adapt", str(lr_path), "-o", str(tmp_path / "sr2.png"), "--threads", "1", "--steps", "1",
                 "--precision", "fp32"]) == 0
    assert "(fp32)" in capsys.readouterr().out
    assert load_photo_model(precision="fp32")[0].precision == "fp32"

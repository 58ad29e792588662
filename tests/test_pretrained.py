"""The project's own bundled weights: found by name, intact, described, and they adapt."""
from __future__ import annotations

import numpy as np
import pytest

from metasr_adapter.cli.main import main
from metasr_adapter.pipelines.evaluate import synthesize_lr
from metasr_adapter.ops.imageio import read_image, write_image
from metasr_adapter.ops.kernels import resolve_kernel
from metasr_adapter.ops.metrics import psnr
from metasr_adapter.adapt.metasr import load_pretrained
from metasr_adapter.io import pretrained
from metasr_adapter.io.pretrained import WeightsInfo, default_weights, get_weights, list_weights
from metasr_adapter.io.weights import read_metadata

NAMES = ("mzsr_x2_direct", "mzsr_x2_bicubic")


@pytest.mark.parametrize("name", NAMES)
def test_bundled_weights_are_registered_intact_and_described(name):
    info = get_weights(name)
    assert name in list_weights("mzsr")
    info.verify()  # sha256 of the file = the sidecar's
    meta = read_metadata(info.path)
    assert (meta["arch"], meta["scale"], meta["ds_method"], meta["schedule"]) == \
        (info.arch, info.scale, info.ds_method, info.schedule)
    lineage = info.lineage
    assert lineage["start"].startswith("random initialisation") and lineage["commits"]
    card = info.model_card.read_text()
    assert "DIV2K" in card and lineage["commits"][0][:10] in card and "random initialisation" in card
    assert info.path.stat().st_size < 2_000_000


IDN_NAMES = {"idn_x2_bicubic": "bicubic", "idn_x2_mlsr": "bicubic", "idn_x2_mlsr_direct": "direct"}  # name: the LR subsampling trained for


@pytest.mark.parametrize("name", sorted(IDN_NAMES))
def test_bundled_idn_weights_are_registered_intact_and_say_what_they_were_trained_for(name):
    info = get_weights(name)
    assert name in list_weights("idn")
    info.verify()
    meta = read_metadata(info.path)
    # the file and its sidecar agree on what the weights are for (idn_x2_bicubic once said 'direct')
    assert (meta["arch"], meta["scale"], meta["ds_method"], meta["schedule"], meta["loss"]) == \
        (info.arch, info.scale, info.ds_method, info.schedule, info.loss) == ("idn", 2.0, IDN_NAMES[name], 0.65025, "l2")
    assert info.lineage["descends_from_random_init"] and "random initialisation" in info.model_card.read_text()
    parent = info.lineage.get("parent")
    if parent:  # an MLSR model: its parent is bundled too, and its recorded sha256 is the parent file's
        assert parent["sha256"] == get_weights(parent["name"]).sha256


def test_the_bicubic_idn_is_the_default_for_bicubic_lr_images(tmp_path, photo):
    assert default_weights("idn", scale=2, ds_method="bicubic").name == "idn_x2_bicubic"
    assert default_weights("idn", scale=2, ds_method="direct").name == "idn_x2_mlsr_direct"  # blurred LR images
    gt = photo[40:136, 180:276]
    lr = tmp_path / "lr.png"
    write_image(lr, synthesize_lr(gt, resolve_kernel("bicubic"), 2))
    out = tmp_path / "sr.png"
    assert main(["adapt", str(lr), "--arch", "idn", "--kernel", "bicubic", "--steps", "1", "-o", str(out)]) == 0
    assert read_image(out).shape == (96, 96, 3)
    write_image(lr, synthesize_lr(gt, resolve_kernel("gd2.0"), 2))
    assert main(["adapt", str(lr), "--weights", "idn_x2_mlsr_direct", "--kernel", "gd2.0", "--steps", "5",
                 "-o", str(out)]) == 0
    assert read_image(out).shape == (96, 96, 3)


def test_a_damaged_bundled_file_is_refused(tmp_path):
    src = get_weights("mzsr_x2_direct")
    bad = tmp_path / "w.pth"
    bad.write_bytes(src.path.read_bytes()[:-10] + b"0123456789")
    info = WeightsInfo(**{**src.__dict__, "filename": str(bad)})
    with pytest.raises(ValueError, match="damaged"):
        info.verify()


def test_defaults_follow_the_kernel_subsampling():
    # a known g^d kernel: the weights that gain from their 10 steps (issue #19); blind mode: the ones good before
    assert default_weights("mzsr", scale=2, ds_method="direct").name == "mzsr_x2_direct_lslr_v3"
    assert default_weights("mzsr", scale=2, ds_method="direct", blind=True).name == "mzsr_x2_direct"
    # a known g^b kernel: the g^b weights with learned rates that gain from their 10 steps (issue #19)
    assert default_weights("mzsr", scale=2, ds_method="bicubic").name == "mzsr_x2_bicubic_lslr"
    # x4 (issue #19 item 6): our own Directx4 weights for g^d kernels, not for blind mode; no x4 g^b weights yet
    x4 = default_weights("mzsr", scale=4, ds_method="direct")
    assert x4.name == "mzsr_x4_direct" and x4.scale == 4 and x4.blind is False
    assert default_weights("mzsr", scale=4, ds_method="bicubic").name == "mzsr_x4_direct"  # the CLI says so
    assert default_weights("mzsr", scale=4, ds_method="direct", blind=True) is None
    assert default_weights("mzsr", ds_method="direct").name == "mzsr_x2_direct_lslr_v3"  # no scale asked: x2
    x4_msr = load_pretrained(scale=4)
    assert x4_msr.scale == 4 and x4_msr.weights_metadata["adapt_steps"] == 10
    with pytest.raises(ValueError, match="no bundled MZSR weights for x3"):
        load_pretrained(scale=3)
    with pytest.raises(ValueError, match="'mzsr_x2_direct' are x2"):
        load_pretrained("mzsr_x2_direct", scale=4)
    default = load_pretrained()
    assert default.weights_metadata["adapt_steps"] == 10 and default.weights_metadata["blind"] is False
    assert load_pretrained("mzsr_x2_direct").schedule(0) == pytest.approx(0.02)  # mzsr_direct starts at 2e-2
    assert load_pretrained("mzsr_x2_bicubic").schedule(0) == pytest.approx(0.01)  # SPEC §5's Bicubicx2 rates
    bicubic = load_pretrained(kernel_ds_method="bicubic")
    assert bicubic.weights_metadata["adapt_steps"] == 10 and "per_parameter" in bicubic.weights_metadata["schedule"]


def test_without_a_scale_the_defaults_are_x2_whatever_the_registry_order(monkeypatch):
    """``metasr adapt LR --kernel gd2.0`` (no --scale) must not pick preferred x4 weights listed first."""
    reordered = dict(sorted(pretrained.BUNDLED_WEIGHTS.items(), key=lambda kv: -float(kv[1].scale)))
    assert next(iter(reordered.values())).scale == 4
    monkeypatch.setattr(pretrained, "BUNDLED_WEIGHTS", reordered)
    assert default_weights("mzsr", ds_method="direct").name == "mzsr_x2_direct_lslr_v3"
    assert default_weights("mzsr").scale == 2
    assert default_weights("mzsr", scale=4, ds_method="direct").name == "mzsr_x4_direct"


def test_blind_mode_leaves_the_kernel_estimate_to_weights_fit_for_it(monkeypatch):
    """The command line's --kernel estimate loads the blind-mode weights; a library wrapper on weights unfit
    for it (learned rates, poor before adaptation) estimates with them and adapts with its own."""
    import argparse

    from metasr_adapter.cli.loading import choose_weights
    from metasr_adapter.estimate import api as estimate_api

    args = argparse.Namespace(weights=None, kernel="estimate", ds_method=None, arch=None, scale=None)
    assert choose_weights(args)[0] == "mzsr_x2_direct"
    args.kernel = "gd2.0"
    assert choose_weights(args)[0] == "mzsr_x2_direct_lslr_v3"
    assert estimate_api.blind_weights_name(2) == "mzsr_x2_direct"

    seen = []

    def fake_estimate(lr_img, scale, method, *, model, **kwargs):
        seen.append(model)
        from metasr_adapter.estimate.api import KernelEstimate
        from metasr_adapter.ops.kernels import anisotropic_gaussian

        return KernelEstimate(kernel=anisotropic_gaussian(15, 0, 2, 2), method="gaussian", converged=True, seconds=0)

    monkeypatch.setattr(estimate_api, "estimate_kernel", fake_estimate)
    img = np.zeros((40, 40, 3), np.uint8)
    lslr = load_pretrained()
    _, est = estimate_api.estimate_for_metasr(lslr, img)
    assert seen[-1] is not lslr and seen[-1].weights_metadata.get("blind") is True
    assert est.diagnostics["estimated_with"] == "mzsr_x2_direct"
    direct = load_pretrained("mzsr_x2_direct")
    _, est = estimate_api.estimate_for_metasr(direct, img)
    assert seen[-1] is direct and "estimated_with" not in est.diagnostics


@pytest.mark.parametrize("name, kernel", [("mzsr_x2_direct", "gd2.0"), ("mzsr_x2_bicubic", "gb1.3")])
def test_bundled_weights_beat_bicubic_on_an_unseen_photo(photo, name, kernel):
    """A photo none of the training images contain (a JPEG face): the weights' SR beats bicubic by far.
    (Adaptation itself gains on Set5, below; on this JPEG its 10 steps cost ~0.1 dB: see the model card.)"""
    from metasr_adapter.ops.degrade import imresize
    from metasr_adapter.ops.imageio import to_tensor
    from metasr_adapter.ops.metrics import to_uint8

    gt = photo[40:232, 180:372]
    spec = resolve_kernel(kernel)
    lr = synthesize_lr(gt, spec, 2)
    sr = load_pretrained(name).adapt(lr, spec, steps=1)
    x, _, _ = to_tensor(lr)
    bicubic = psnr(to_uint8(imresize(x, 2.0, output_shape=gt.shape[:2]).clamp(0, 1)), gt, crop_border=2)
    assert psnr(sr, gt, crop_border=2) > bicubic + 1.0


def test_the_default_weights_gain_from_their_steps_on_an_unseen_photo(photo):
    """The default for a known g^d kernel is meta-trained to be adapted (issue #19): on a photo none of the
    training images contain, its own step count (10) lifts it far above its start and above bicubic."""
    from metasr_adapter.ops.degrade import imresize
    from metasr_adapter.ops.imageio import to_tensor
    from metasr_adapter.ops.metrics import to_uint8

    gt = photo[40:232, 180:372]
    spec = resolve_kernel("gd2.0")
    lr = synthesize_lr(gt, spec, 2)
    msr = load_pretrained(precision="fp32")
    with pytest.warns(UserWarning, match="meta-trained for 10 adaptation steps"):
        start = psnr(msr.adapt(lr, spec, steps=0), gt, crop_border=2)
    adapted = psnr(msr.adapt(lr, spec), gt, crop_border=2)
    x, _, _ = to_tensor(lr)
    bicubic = psnr(to_uint8(imresize(x, 2.0, output_shape=gt.shape[:2]).clamp(0, 1)), gt, crop_border=2)
    assert adapted > start + 1.0 and adapted > bicubic + 1.0, (start, adapted, bicubic)


@pytest.mark.shared
@pytest.mark.parametrize("name, kernel, floor", [("mzsr_x2_direct", "official", 34.3), ("mzsr_x2_bicubic", "gb1.3", 34.0),
                                                 ("mzsr_x2_direct_lslr_v2", "official", 35.3),
                                                 ("mzsr_x2_direct_lslr_v3", "official", 35.4),
                                                 ("mzsr_x2_bicubic_lslr", "gb1.3", 35.4)])
def test_adaptation_earns_its_keep_on_set5(name, kernel, floor):
    """The shipped quality bar (issue: >= 34.3 dB after 10 steps on Set5 g^d_2.0, and 10 steps beat 0)."""
    from conftest import shared_path
    from metasr_adapter.pipelines.evaluate import evaluate_folder

    gt = shared_path("data", "set5")
    if kernel == "official":
        lr_dir, kernel = shared_path("data", "mzsr_g20", "Set5"), str(shared_path("data", "mzsr_g20", "kernel.mat"))
    else:
        lr_dir = None
    report = evaluate_folder(load_pretrained(name), gt, lr_dir=lr_dir, kernel=kernel, steps=[0, 10], progress=False)
    assert report.mean_psnr[10] > report.mean_psnr[0] + 0.2, report.mean_psnr
    assert report.mean_psnr[10] >= floor, report.mean_psnr


def test_cli_uses_the_bundled_weights_that_match_the_kernel(tmp_path, photo, capsys):
    gt = photo[40:232, 180:372]
    lr = tmp_path / "lr.png"
    write_image(lr, synthesize_lr(gt, resolve_kernel("gb1.3"), 2))
    out = tmp_path / "sr.png"
    assert main(["adapt", str(lr), "--kernel", "gb1.3", "--steps", "1", "-o", str(out)]) == 0
    assert read_image(out).shape == (192, 192, 3)
    assert "note:" not in capsys.readouterr().err  # the weights fit the kernel's subsampling
    assert main(["adapt", str(lr), "--kernel", "gb1.3", "--scale", "3", "-o", str(out)]) == 2
    assert "no bundled weights" in capsys.readouterr().err
    # x4 has direct-subsampling weights only: a g^b kernel gets them, with a note saying so
    assert main(["adapt", str(lr), "--kernel", "gb1.3", "--scale", "4", "--steps", "1", "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "no bundled weights for bicubic subsampling at x4; using mzsr_x4_direct" in err, err
    assert read_image(out).shape == (384, 384, 3)  # the 96x96 LR image at x4
    # blind mode at x4: the x4 weights are for a known kernel only, and the error says so
    assert main(["adapt", str(lr), "--kernel", "estimate", "--scale", "4", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "no bundled weights estimate kernels at --scale 4: mzsr_x4_direct is for a known kernel" in err, err


def test_demo_runs_on_the_bundled_weights(tmp_path, capsys):
    out = tmp_path / "demo.png"
    assert main(["demo", "--kernel", "gd2.0", "--steps", "2", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "mzsr_x2_direct" in text or "MZSRNet" in text
    assert out.is_file() and read_image(out).shape[1] > 800


def test_the_default_demo_is_a_web_jpeg_that_beats_bicubic(tmp_path, capsys):
    """Issue #18.6: `metasr demo` shows the photo path on a web-style JPEG, better than PIL bicubic, with
    labelled crops (the demo used to show an MZSR-style blur only)."""
    import re

    out = tmp_path / "demo.png"
    assert main(["demo", "--threads", "1", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "JPEG quality 75" in text and "choice:" in text
    scores = {m.group(1).strip(): float(m.group(2)) for m in re.finditer(r"^\s*(.+?)\s+(\d+\.\d{4})$", text, re.M)}
    assert scores["metasr adapt (default)"] > scores["PIL bicubic"] + 0.3, scores
    assert read_image(out).shape[1] > 800


def test_the_preferred_bundled_weights_are_the_default_of_their_kind(monkeypatch):
    """A sidecar's "preferred": true makes those weights the default of their architecture, scale and
    subsampling (a better meta-trained file replaces the default without renaming the older one)."""
    from metasr_adapter.io import pretrained

    base = dict(arch="mzsr", scale=2.0, schedule="mzsr_direct", description="d")
    reg = {"a_old": pretrained.WeightsInfo(name="a_old", filename="a.safetensors", ds_method="direct", **base),
           "b_new": pretrained.WeightsInfo(name="b_new", filename="b.safetensors", ds_method="direct",
                                           preferred=True, adapt_steps=10, **base),
           "c_bic": pretrained.WeightsInfo(name="c_bic", filename="c.safetensors", ds_method="bicubic", **base)}
    monkeypatch.setattr(pretrained, "BUNDLED_WEIGHTS", reg)
    assert pretrained.default_weights("mzsr", scale=2, ds_method="direct").name == "b_new"
    assert pretrained.default_weights("mzsr", scale=2, ds_method="bicubic").name == "c_bic"
    reg["b_new"] = pretrained.WeightsInfo(name="b_new", filename="b.safetensors", ds_method="direct", **base)
    assert pretrained.default_weights("mzsr", scale=2, ds_method="direct").name == "a_old"  # by name otherwise


def test_at_most_one_bundled_file_is_preferred_per_kind():
    """Two preferred files of one architecture, scale and subsampling would leave the default to the registry's
    order: replacing a default must un-prefer the old file."""
    from collections import Counter

    from metasr_adapter.io import pretrained

    kinds = Counter((w.arch, float(w.scale), w.ds_method) for w in pretrained.BUNDLED_WEIGHTS.values() if w.preferred)
    assert kinds and all(n == 1 for n in kinds.values()), kinds
    # the old default for a known g^d kernel stays bundled (its numbers reproduce) but is no longer chosen
    assert not pretrained.BUNDLED_WEIGHTS["mzsr_x2_direct_lslr"].preferred
    assert not pretrained.BUNDLED_WEIGHTS["mzsr_x2_direct_lslr_v2"].preferred
    assert not pretrained.BUNDLED_WEIGHTS["mzsr_x2_bicubic"].preferred


def test_adapt_takes_the_step_count_the_weights_were_meta_trained_for(tmp_path, photo, capsys):
    """Weights meta-trained for N steps (metadata adapt_steps) are adapted N steps when --steps is not given;
    --steps wins; weights without it take 1 step as before."""
    from metasr_adapter import MZSRNet
    from metasr_adapter.cli.main import main
    from metasr_adapter.io.weights import save_weights
    from metasr_adapter.ops.imageio import write_image

    write_image(tmp_path / "lr.png", photo[:32, :36])
    kw = dict(arch="mzsr", arch_kwargs={"width": 8, "depth": 3}, scale=2.0)
    three = save_weights(MZSRNet(width=8, depth=3), tmp_path / "three.pth", adapt_steps=3, **kw)
    plain = save_weights(MZSRNet(width=8, depth=3), tmp_path / "plain.pth", **kw)
    base = ["adapt", str(tmp_path / "lr.png"), "--kernel", "gd2.0", "--quiet", "--threads", "1", "--precision", "fp32"]
    for weights, extra, want in ((three, [], 3), (three, ["--steps", "2"], 2), (plain, [], 1), (three, ["--steps", "4"], 4)):
        assert main([*base, "--weights", str(weights), "-o", str(tmp_path / "o.png"), *extra]) == 0
        out = capsys.readouterr()
        assert f"after {want} step(s)" in out.out
        # fewer steps than the weights were meta-trained for: a warning that names both counts and the fix
        assert ("meta-trained for 3 adaptation steps; after --steps 2" in out.err) == (want == 2), out.err
        assert ("Leave --steps out" in out.err) == (want == 2)


def test_adapt_says_which_weights_and_back_projection_made_the_image(tmp_path, photo, capsys):
    """`metasr adapt --kernel K` chose the weights and their back-projection silently: the last line named neither."""
    from metasr_adapter import MZSRNet
    from metasr_adapter.cli.main import main
    from metasr_adapter.io.weights import save_weights
    from metasr_adapter.ops.imageio import write_image

    write_image(tmp_path / "lr.png", photo[:40, :40])
    base = ["adapt", str(tmp_path / "lr.png"), "--quiet", "--threads", "1", "-o", str(tmp_path / "o.png")]
    assert main([*base, "--kernel", "gb1.3", "--steps", "1"]) == 0
    want = default_weights("mzsr", scale=2, ds_method="bicubic")
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert f"with {want.name} after 1 step(s) and {want.back_projection} back-projection iteration(s)" in line, line
    plain = save_weights(MZSRNet(width=8, depth=3), tmp_path / "plain.pth", arch="mzsr",
                         arch_kwargs={"width": 8, "depth": 3}, scale=2.0)
    assert main([*base, "--kernel", "gd2.0", "--weights", str(plain)]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert "with plain.pth after 1 step(s) in" in line and "back-projection" not in line, line
    assert main([*base, "--kernel", "gb1.3", "--steps", "1", "--back-projection", "0"]) == 0
    assert "back-projection" not in capsys.readouterr().out


def test_the_library_adapts_as_many_steps_as_the_weights_were_meta_trained_for(tmp_path, photo):
    from metasr_adapter import MetaSR, MZSRNet, load_model
    from metasr_adapter.io.weights import save_weights

    kw = dict(arch="mzsr", arch_kwargs={"width": 8, "depth": 3}, scale=2.0)
    msr = MetaSR(load_model("mzsr", save_weights(MZSRNet(width=8, depth=3), tmp_path / "t.pth", adapt_steps=3, **kw)))
    _, info = msr.adapt(photo[:32, :36], "gd2.0", return_info=True)
    assert len(info.losses) == 3
    with pytest.warns(UserWarning, match="meta-trained for 3 adaptation steps; after steps=2"):
        _, info = msr.adapt(photo[:32, :36], "gd2.0", 2, return_info=True)
    assert len(info.losses) == 2
    _, info = MetaSR(MZSRNet(width=8, depth=3), 2).adapt(photo[:32, :36], "gd2.0", return_info=True)
    assert len(info.losses) == 1  # no such metadata: one step, as before


def test_weights_can_carry_their_back_projection_and_it_finishes_known_kernels_only(tmp_path, photo, monkeypatch):
    """Back-projection (SPEC §7) saved with the weights is MetaSR's default, like the step count: applied to the
    SR of a given kernel, never to an estimated kernel or a whole degradation; explicit arguments win."""
    from metasr_adapter import MetaSR, MZSRNet, load_model
    from metasr_adapter.estimate import api as estimate_api
    from metasr_adapter.estimate.api import KernelEstimate
    from metasr_adapter.io.weights import save_weights
    from metasr_adapter.ops.degradation_spec import DegradationSpec
    from metasr_adapter.ops.kernels import anisotropic_gaussian

    assert load_pretrained().back_projection == 4 and load_pretrained("mzsr_x2_direct").back_projection == 0
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    kw = dict(arch="mzsr", arch_kwargs={"width": 8, "depth": 3}, scale=2.0)
    path = save_weights(MZSRNet(width=8, depth=3), tmp_path / "bp.pth", back_projection=2, **kw)
    msr = MetaSR(load_model("mzsr", path))
    assert msr.back_projection == 2 and "back_projection=2" in repr(msr)
    assert MetaSR(load_model("mzsr", path), back_projection=0).back_projection == 0
    lr = photo[:40, :44]
    session = msr.start(lr, "gd2.0")
    session.step()
    default = session.result()
    np.testing.assert_array_equal(default, session.result(back_projection=2))
    assert not np.array_equal(default, session.result(back_projection=0))
    np.testing.assert_array_equal(msr.adapt(lr, "gd2.0", 1), default)
    # the command line follows the weights too; --back-projection 0 turns it off
    out = tmp_path / "o.png"
    base = ["adapt", "--weights", str(path), "--kernel", "gd2.0", "--steps", "1", "--quiet", "--threads", "1",
            "--precision", "fp32", "-o", str(out)]
    write_image(tmp_path / "lr.png", lr)
    assert main([base[0], str(tmp_path / "lr.png"), *base[1:]]) == 0
    np.testing.assert_array_equal(read_image(out), default)
    assert main([base[0], str(tmp_path / "lr.png"), *base[1:], "--back-projection", "0"]) == 0
    np.testing.assert_array_equal(read_image(out), session.result(back_projection=0))
    # a whole degradation (noise, JPEG) or an estimated kernel: no back-projection unless asked
    deg = msr.start(lr, DegradationSpec(kernel=resolve_kernel("gd2.0"), noise_std=0.01))
    assert deg.default_back_projection == 0

    def fake_estimate(lr_img, scale, method, *, model, **kwargs):
        return KernelEstimate(kernel=anisotropic_gaussian(15, 0, 2, 2), method="gaussian", converged=True, seconds=0)

    monkeypatch.setattr(estimate_api, "estimate_kernel", fake_estimate)
    blind = msr.start(lr, "estimate")
    assert blind.default_back_projection == 0 and session.default_back_projection == 2
    with pytest.raises(ValueError, match="back_projection=-1"):
        MetaSR(MZSRNet(width=8, depth=3), 2, back_projection=-1)

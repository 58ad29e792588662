"""The ``metasr`` command line, run in-process on small generated data."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from metasr_adapter import MZSRNet
from metasr_adapter.cli.main import main
from metasr_adapter.ops.imageio import read_image, write_image
from metasr_adapter.io.weights import save_weights


@pytest.fixture
def weights(tmp_path):
    torch.manual_seed(0)
    return save_weights(MZSRNet(width=8, depth=3), tmp_path / "tiny.pth")


@pytest.fixture
def folders(tmp_path, photo):
    gt_dir = tmp_path / "gt"
    for i, (t, l) in enumerate([(100, 100), (300, 200)]):
        write_image(gt_dir / f"img{i}.png", photo[t : t + 64, l : l + 60])
    return gt_dir


def test_adapt_writes_the_sr_image(tmp_path, photo, weights, capsys):
    lr = tmp_path / "lr.png"
    write_image(lr, photo[:40, :50])
    out = tmp_path / "sr.png"
    assert main(["adapt", str(lr), "--weights", str(weights), "--arch", "mzsr", "--steps", "2", "-o", str(out)]) == 2
    # weights saved without arch_kwargs don't fit the default 64-channel network: one clear line
    err = capsys.readouterr().err
    assert "do not fit MZSRNet" in err and "conv1.weight" in err and "Traceback" not in err
    # with arch_kwargs metadata the network is rebuilt to fit
    torch.manual_seed(0)
    w2 = save_weights(MZSRNet(width=8, depth=3), tmp_path / "tiny2.pth", arch_kwargs={"width": 8, "depth": 3})
    assert main(["adapt", str(lr), "--weights", str(w2), "--steps", "2", "-o", str(out)]) == 0
    assert read_image(out).shape == (80, 100, 3)


def test_adapt_and_eval_with_full_size_weights(tmp_path, photo, folders, capsys):
    torch.manual_seed(0)
    w = save_weights(MZSRNet(), tmp_path / "mzsr.pth")
    lr = tmp_path / "lr.png"
    write_image(lr, photo[:40, :50])
    out = tmp_path / "sr.png"
    assert main(["adapt", str(lr), "--weights", str(w), "--steps", "1", "-o", str(out)]) == 0
    assert read_image(out).shape == (80, 100, 3)

    js = tmp_path / "report.json"
    code = main(["eval", "--gt-dir", str(folders), "--kernel", "gd2.0", "--weights", str(w), "--steps", "0,2",
                 "--bicubic", "--json", str(js), "--save-dir", str(tmp_path / "sr")])
    assert code == 0
    text = capsys.readouterr().out
    assert "average" in text and "steps 2" in text and "bicubic" in text
    report = json.loads(js.read_text())
    assert report["columns"] == ["bicubic", "0", "2"]
    assert [r["name"] for r in report["images"]] == ["img0", "img1"]
    assert set(report["mean_psnr"]) == {"bicubic", "0", "2"}
    assert (tmp_path / "sr" / "steps02" / "img1.png").is_file()


def test_user_errors_are_one_line(tmp_path, capsys):
    code = main(["adapt", str(tmp_path / "missing.png"), "--weights", str(tmp_path / "w.pth"), "-o", "x.png"])
    assert code == 2
    err = capsys.readouterr().err
    assert "error" in err and "Traceback" not in err
    with pytest.raises(SystemExit):
        main(["eval", "--gt-dir", ".", "--steps", "a,b"])


def test_demo_writes_png_and_prints_psnr_per_step(tmp_path, capsys):
    torch.manual_seed(0)
    w = save_weights(MZSRNet(), tmp_path / "mzsr.pth")
    out = tmp_path / "demo.png"
    big = read_image(__import__("matplotlib").get_data_path() + "/sample_data/grace_hopper.jpg")
    img = tmp_path / "small.png"
    write_image(img, big[150:278, 150:278])
    assert main(["demo", "--weights", str(w), "--kernel", "gd2.0", "--steps", "2", "--image", str(img),
                 "-o", str(out)]) == 0
    text = capsys.readouterr().out
    for label in ("bicubic", "step 0", "step 1", "step 2"):
        assert label in text
    assert read_image(out).ndim == 3


@pytest.mark.shared
def test_eval_reproduces_spec_numbers_for_one_step():
    """SPEC §0 per-image Set5 g2.0 numbers with θ_T at 0 and 1 steps (10 steps: the slow test below)."""
    from conftest import shared_path

    from metasr_adapter import MetaSR
    from metasr_adapter.pipelines.evaluate import evaluate_folder
    from metasr_adapter.io.pretrained import load_model

    net = load_model("mzsr", str(shared_path("weights", "mzsr_official", "Pretrained.index")))
    report = evaluate_folder(
        MetaSR(net, 2, schedule="mzsr_direct"), shared_path("data", "set5"),
        lr_dir=shared_path("data", "mzsr_g20", "Set5"), kernel=str(shared_path("data", "mzsr_g20", "kernel.mat")),
        steps=[0, 1], progress=False,
    )
    expected = {"baby": (32.3547, 32.3595), "bird": (30.7035, 30.7057), "butterfly": (23.1813, 23.1935),
                "head": (32.1827, 32.1881), "woman": (27.2574, 27.2636)}
    for row in report.rows:
        assert row.psnr[0] == pytest.approx(expected[row.name][0], abs=0.002), row.name
        assert row.psnr[1] == pytest.approx(expected[row.name][1], abs=0.002), row.name
    assert report.mean_psnr[0] == pytest.approx(29.1360, abs=0.001)
    assert report.mean_psnr[1] == pytest.approx(29.1421, abs=0.001)


@pytest.mark.shared
def test_cli_eval_reproduces_spec_section_0(tmp_path, capsys):
    from conftest import shared_path

    js = tmp_path / "r.json"
    code = main(["eval", "--lr-dir", str(shared_path("data", "mzsr_g20", "Set5")), "--gt-dir", str(shared_path("data", "set5")),
                 "--kernel", str(shared_path("data", "mzsr_g20", "kernel.mat")),
                 "--weights", str(shared_path("weights", "mzsr_official", "Pretrained.index"))[: -len(".index")],
                 "--steps", "0,1,10", "--schedule", "mzsr_direct", "--json", str(js)])
    assert code == 0
    r = json.loads(js.read_text())
    assert r["mean_psnr"]["0"] == pytest.approx(29.1360, abs=0.001)
    assert r["mean_psnr"]["1"] == pytest.approx(29.1421, abs=0.001)
    assert r["mean_psnr"]["10"] == pytest.approx(29.1625, abs=0.001)
    per_image = {"baby": 32.3703, "bird": 30.7254, "butterfly": 23.2282, "head": 32.2037, "woman": 27.2848}
    for img in r["images"]:
        assert img["psnr"]["10"] == pytest.approx(per_image[img["name"]], abs=0.002)


def test_eval_zssr_picks_the_kernel_preset_without_centring(tmp_path, folders, capsys):
    # a blur kernel selects ZSSR's 'kernel' preset; LR synthesised by degrade() needs no kernel centring
    out = tmp_path / "zssr.json"
    rc = main(["eval", "--method", "zssr", "--gt-dir", str(folders), "--kernel", "gd2.0", "--zssr-iters", "2",
               "--bicubic", "--json", str(out), "--threads", "1"])
    assert rc == 0
    report = json.loads(out.read_text())
    cfg = report["settings"]["zssr_config"]
    assert cfg["max_iters"] == 2 and cfg["kernel_shift"] is False
    assert cfg["self_ensemble"] is False and cfg["back_projection_iters"] == 2  # the 'kernel' preset
    assert len(report["images"]) == 2
    assert all(np.isfinite(img["psnr"]["zssr"]) for img in report["images"])
    assert "zssr" in capsys.readouterr().out
    # bicubic LR and an explicit preset / centring are honoured
    rc = main(["eval", "--method", "zssr", "--gt-dir", str(folders), "--kernel", "bicubic", "--zssr-preset", "fast",
               "--zssr-iters", "1", "--zssr-kernel-shift", "--limit", "1", "--json", str(out), "--threads", "1"])
    assert rc == 0
    cfg = json.loads(out.read_text())["settings"]["zssr_config"]
    assert cfg["kernel_shift"] is True and cfg["crop_size"] == 48 and cfg["max_iters"] == 1


def test_adapt_wraps_a_basicsr_rcan_checkpoint(tmp_path, photo, capsys):
    from metasr_adapter.adapters.rcan import RCAN

    torch.manual_seed(0)
    net = RCAN(scale=2, num_feat=16, num_group=1, num_block=2, squeeze_factor=4)
    ckpt = tmp_path / "RCAN_x2_basicsr.pth"
    torch.save({"params_ema": net.state_dict()}, ckpt)  # a BasicSR-style file: no metadata
    write_image(tmp_path / "lr.png", photo[:30, :40])
    args = ["adapt", str(tmp_path / "lr.png"), "--arch", "rcan", "--weights", str(ckpt), "--param-key",
            "params_ema", "--kernel", "bicubic", "--steps", "1", "-o", str(tmp_path / "sr.png")]
    # without the architecture's settings the default (paper-size) RCAN does not fit: one clear line
    assert main(args) == 2
    assert "do not fit RCAN" in capsys.readouterr().err
    kw = '{"num_feat": 16, "num_group": 1, "num_block": 2, "squeeze_factor": 4}'
    assert main(args + ["--arch-kwargs", kw]) == 0
    assert read_image(tmp_path / "sr.png").shape == (60, 80, 3)
    assert main(args + ["--arch-kwargs", kw, "--scale", "2.5"]) == 2
    assert "integer factor" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(args + ["--arch-kwargs", "{num_feat: 16}"])
    assert "not valid JSON" in capsys.readouterr().err


# ---- user errors: one line, exit 2, before any work -------------------------------------------------
def _bad_files(tmp_path):
    (tmp_path / "text.mat").write_text("not a matlab file\n")
    (tmp_path / "text.npy").write_text("not a numpy file\n")
    (tmp_path / "bad.yaml").write_text("model: [unclosed\n")
    (tmp_path / "tag.yaml").write_text("model: !!python/object/apply:os.system ['true']\n")
    torch.save({"w": torch.zeros(2)}, tmp_path / "torch.npz")
    (tmp_path / "trunc.pth").write_bytes((tmp_path / "x2.pth").read_bytes()[:200])
    (tmp_path / "outdir").mkdir()


@pytest.mark.parametrize("argv, needle", [
    (["adapt", "{lr}", "--weights", "{w}", "--threads", "-1", "-o", "{tmp}/o.png"], "--threads -1"),
    (["adapt", "{lr}", "--weights", "{w}", "--device", "foo", "-o", "{tmp}/o.png"], "'foo' is not a device name"),
    (["adapt", "{lr}", "--weights", "{w}", "-o", "{tmp}/o.xyz"], "'.xyz' image"),
    (["adapt", "{lr}", "--weights", "{w}", "-o", "{tmp}/outdir"], "is a folder"),
    (["adapt", "{lr}", "--weights", "{w}", "-o", "{tmp}/text.mat/o.png"], "cannot write into"),
    (["adapt", "{lr}", "--weights", "{w}", "--back-projection", "-3", "-o", "{tmp}/o.png"], "--back-projection -3"),
    (["adapt", "{lr}", "--weights", "{w}", "--scale", "3", "-o", "{tmp}/o.png"], "trained for x2"),
    (["adapt", "{lr}", "--weights", "{tmp}/trunc.pth", "-o", "{tmp}/o.png"], "truncated"),
    (["adapt", "{lr}", "--weights", "{tmp}/torch.npz", "-o", "{tmp}/o.png"], "rename it to .pth"),
    (["adapt", "{lr}", "--weights", "{w}", "--kernel", "{tmp}/text.mat", "-o", "{tmp}/o.png"], "is not a MATLAB .mat file"),
    (["adapt", "{lr}", "--weights", "{w}", "--kernel", "{tmp}/text.npy", "-o", "{tmp}/o.png"], "is not a .npy array file"),
    (["adapt", "{lr}", "--arch", "rcan", "-o", "{tmp}/o.png"], "--weights random"),
    (["train", "{tmp}/bad.yaml", "--show"], "is not valid YAML"),
    (["train", "{tmp}/tag.yaml", "--show"], "no !!python tags"),
    (["eval", "--gt-dir", "{tmp}", "--weights", "{w}", "--json", "{tmp}/outdir"], "is a folder"),
])
def test_user_errors_are_one_line_with_exit_2(tmp_path, lr_png, tiny_x2, capsys, argv, needle):
    _bad_files(tmp_path)
    args = [a.format(lr=lr_png, w=tiny_x2, tmp=tmp_path) for a in argv]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert needle in err, err
    assert not (tmp_path / "o.png").exists()


def test_a_library_bug_is_not_reported_as_a_user_error(monkeypatch, lr_png, tiny_x2, tmp_path):
    import metasr_adapter.adapt.metasr as metasr_mod

    def broken(*args, **kwargs):
        raise TypeError("a bug inside the library")

    monkeypatch.setattr(metasr_mod.MetaSR, "adapt", broken)
    with pytest.raises(TypeError, match="a bug inside"):  # before: one 'error:' line, exit 2
        main(["adapt", str(lr_png), "--weights", str(tiny_x2), "--kernel", "gd2.0", "-o", str(tmp_path / "o.png")])


def test_zssr_command_and_eval_share_the_kernel_shift_switch():
    from metasr_adapter.cli.main import build_parser

    p = build_parser()
    assert p.parse_args(["zssr", "x.png", "-o", "y.png"]).kernel_shift is False  # always shifted before
    assert p.parse_args(["zssr", "x.png", "-o", "y.png", "--kernel-shift"]).kernel_shift is True
    assert p.parse_args(["eval", "--gt-dir", "g", "--method", "zssr", "--zssr-kernel-shift"]).kernel_shift is True


def test_eval_zssr_keeps_the_device(monkeypatch, folders):
    import metasr_adapter.pipelines.evaluate as ev

    seen = {}

    def fake(msr, gt_dir, **kwargs):
        seen.update(kwargs)
        return ev.EvalReport([ev.ImageResult("x", {"zssr": 30.0}, {"zssr": 0.9})], ["zssr"], {})

    monkeypatch.setattr(ev, "evaluate_folder", fake)
    assert main(["eval", "--gt-dir", str(folders), "--method", "zssr", "--device", "cpu:0", "--kernel", "gd2.0"]) == 0
    assert seen["zssr_config"].device == "cpu"  # dropped (None: CPU, whatever was asked) before


def test_adapt_a_folder_resumes_and_reports_failures_without_stopping(tmp_path, photo, tiny_x2, capsys):
    src = tmp_path / "lr"
    for i in range(3):
        write_image(src / f"img{i}.png", photo[i * 60 : i * 60 + 40, :50])
    write_image(src / "tiny.png", photo[:5, :5])  # too small to adapt: this one fails, the others go on
    out = tmp_path / "sr"
    assert main(["adapt", str(src), "--weights", str(tiny_x2), "--kernel", "gd2.0", "--steps", "1",
                 "-o", str(out)]) == 1
    assert sorted(p.name for p in out.glob("*.png")) == ["img0.png", "img1.png", "img2.png"]
    side = json.loads((out / "img1.png.json").read_text())
    assert side["status"] == "done" and len(side["losses"]) == 1 and side["kernel"] == "gd2.0"
    assert json.loads((out / "tiny.png.json").read_text())["status"] == "failed"
    text = capsys.readouterr()
    assert "3 written, 0 skipped" in text.out and "too small" in text.err
    (out / "img1.png").unlink()  # a kill after two images: the rerun writes only the missing one
    assert main(["adapt", str(tmp_path / "lr" / "img*.png"), "--weights", str(tiny_x2), "--kernel", "gd2.0",
                 "--steps", "1", "-o", str(out)]) == 0
    assert "1 written, 2 skipped" in capsys.readouterr().out


def test_adapt_many_streams_with_one_wrapper(photo, tiny_x2):
    from metasr_adapter import MetaSR
    from metasr_adapter.adapt.batch import adapt_many
    from metasr_adapter.io.pretrained import load_model

    net = load_model(weights=tiny_x2)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    msr = MetaSR(net, 2)
    crops = (photo[i * 50 : i * 50 + 40, :48] for i in range(3))  # a generator: nothing held in advance
    results = list(adapt_many(msr, crops, "gd2.0", steps=1))
    assert [sr.shape for sr, _ in results] == [(80, 96, 3)] * 3 and all(len(i.losses) == 1 for _, i in results)
    assert all(torch.equal(net.state_dict()[k], v) for k, v in before.items())


def test_the_command_line_bounds_memory_by_default_and_0_turns_it_off(tmp_path):
    """`metasr adapt big.jpg` without flags must not hold a 4000x3000 photo's activations at once."""
    from metasr_adapter.cli.loading import DEFAULT_MAX_PIXELS, DEFAULT_TILE, load_metasr
    from metasr_adapter.cli.main import build_parser

    args = lambda *extra: build_parser().parse_args(["adapt", "x.png", "-o", str(tmp_path / "y.png"), "--weights",
                                                      "random", *extra])
    msr = load_metasr(args())
    assert (msr.tile, msr.max_pixels) == (DEFAULT_TILE, DEFAULT_MAX_PIXELS) == (512, 512 * 512)
    msr = load_metasr(args("--tile", "0", "--max-pixels", "0"))
    assert (msr.tile, msr.max_pixels) == (None, None)
    msr = load_metasr(args("--tile", "96", "--max-pixels", "4096"))
    assert (msr.tile, msr.max_pixels) == (96, 4096)
    rcan = load_metasr(args("--arch", "rcan", "--arch-kwargs", '{"num_group": 1, "num_block": 1, "num_feat": 8}'))
    assert rcan.tile is None and rcan.max_pixels == DEFAULT_MAX_PIXELS  # channel attention: never tiled


def test_eval_handles_a_grayscale_gt_like_set14s(tmp_path, photo):
    """Set14 holds grayscale images: their synthesised LR and SR stay HxW, and they score next to RGB ones."""
    import cv2

    from metasr_adapter import MetaSR
    from metasr_adapter.pipelines.evaluate import evaluate_folder, synthesize_lr
    from metasr_adapter.adapters.mzsr import MZSRNet
    from metasr_adapter.ops.imageio import write_image
    from metasr_adapter.ops.kernels import resolve_kernel

    gray = cv2.cvtColor(np.ascontiguousarray(photo[:64, :64]), cv2.COLOR_RGB2GRAY)
    assert synthesize_lr(gray, resolve_kernel("bicubic"), 2).shape == (32, 32)
    write_image(tmp_path / "gt" / "gray.png", gray)
    write_image(tmp_path / "gt" / "rgb.png", photo[64:128, 64:128])
    report = evaluate_folder(MetaSR(MZSRNet(width=8, depth=3), 2), tmp_path / "gt", kernel="bicubic", steps=[0, 1],
                             progress=False)
    assert [r.name for r in report.rows] == ["gray", "rgb"] and all(np.isfinite(r.psnr[1]) for r in report.rows)


def test_eval_plots_psnr_against_the_steps_and_refuses_the_plot_where_there_are_no_steps(tmp_path, folders, capsys):
    import cv2

    torch.manual_seed(0)
    w = save_weights(MZSRNet(width=8, depth=3), tmp_path / "tiny.pth", arch_kwargs={"width": 8, "depth": 3})
    png = tmp_path / "plots" / "psnr.png"
    assert main(["eval", "--gt-dir", str(folders), "--kernel", "gd2.0", "--weights", str(w), "--steps", "0,1,3",
                 "--bicubic", "--plot", str(png)]) == 0
    assert f"wrote {png}" in capsys.readouterr().out
    img = cv2.imread(str(png))
    assert img is not None and img.shape[0] > 200 and img.shape[1] > 300
    # ZSSR has no step axis: refused before any work, naming the reason
    assert main(["eval", "--gt-dir", str(folders), "--method", "zssr", "--kernel", "gd2.0", "--plot", str(png)]) == 2
    assert "--plot" in capsys.readouterr().err
    # a plot needs an image name
    assert main(["eval", "--gt-dir", str(folders), "--kernel", "gd2.0", "--weights", str(w), "--plot",
                 str(tmp_path / "psnr.json")]) == 2
    assert "--plot" in capsys.readouterr().err


def test_adapt_with_winograd_says_so_and_matches_direct(tmp_path, photo, capsys):
    from metasr_adapter.ops import native

    if native.load("winograd") is None:
        pytest.skip(f"native kernels unavailable: {native.why_unavailable('winograd')}")
    torch.manual_seed(0)
    w16 = save_weights(MZSRNet(width=16, depth=3), tmp_path / "w16.pth", arch="mzsr",
                       arch_kwargs={"width": 16, "depth": 3}, scale=2.0, schedule="mzsr_direct", loss="l1")
    lr = tmp_path / "lr.png"
    write_image(lr, photo[:48, :40])
    common = ["adapt", str(lr), "--weights", str(w16), "--kernel", "gd0.2", "--steps", "2", "--quiet"]
    assert main([*common, "-o", str(tmp_path / "direct.png")]) == 0
    assert main([*common, "--conv-algorithm", "winograd", "-o", str(tmp_path / "wino.png")]) == 0
    out = capsys.readouterr().out
    assert "fp32, Winograd" in out  # Winograd makes fp32 the default precision, and the report says what ran
    a, b = (read_image(tmp_path / f).astype(np.int16) for f in ("direct.png", "wino.png"))
    assert a.shape == b.shape == (96, 80, 3) and np.abs(a - b).max() <= 1
    assert main([*common, "--conv-algorithm", "winograd", "--precision", "bf16", "-o", str(tmp_path / "x.png")]) == 2
    assert "--conv-algorithm winograd computes in fp32" in capsys.readouterr().err

"""Issue #20: the command line never overwrites its inputs, resumes a folder only when the work is the same,
and reports a user's mistake as one line with exit code 2 (Ctrl-C: one line, exit 130), not a traceback."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from metasr_adapter import MZSRNet
from metasr_adapter.cli.main import main
from metasr_adapter.io.weights import save_weights
from metasr_adapter.ops.imageio import read_image, write_image


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def lr_folder(tmp_path, photo):
    src = tmp_path / "lr"
    for i in range(2):
        write_image(src / f"img{i}.png", photo[i * 60 : i * 60 + 24, :28])
    return src


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def _images(folder) -> list[str]:
    return sorted(p.name for p in folder.glob("*.png")) if folder.is_dir() else []


# ---- 1. an output that is the input ----------------------------------------------------------------
def test_adapt_refuses_to_write_over_its_input(tmp_path, lr_png, tiny_x2, capsys):
    before = lr_png.read_bytes()
    (tmp_path / "sub").mkdir()
    os.symlink(lr_png, tmp_path / "link.png")
    for out in (lr_png, tmp_path / "sub" / ".." / "lr.png", tmp_path / "link.png"):
        assert main(["adapt", str(lr_png), "--weights", str(tiny_x2), "--kernel", "gd2.0", "-o", str(out)]) == 2
        err = _one_error_line(capsys)
        assert "the input image" in err and "another output name" in err, err
        assert lr_png.read_bytes() == before  # before: overwritten, exit 0


def test_zssr_refuses_to_write_over_its_input(lr_png, capsys):
    from metasr_adapter.cli.zssr import zssr_main

    before = lr_png.read_bytes()
    assert main(["zssr", str(lr_png), "--iters", "1", "--quiet", "-o", str(lr_png)]) == 2
    assert "the input image" in _one_error_line(capsys)
    assert zssr_main([str(lr_png), "--iters", "1", "--quiet", "-o", str(lr_png)]) == 2  # the stand-alone entry
    assert "the input image" in _one_error_line(capsys)
    assert lr_png.read_bytes() == before


# ---- 2. folder mode: one output per input, never the input folder, resume only the same work --------
def test_folder_refuses_inputs_that_map_to_one_output(tmp_path, photo, tiny_x2, capsys):
    src = tmp_path / "src"
    write_image(src / "a.png", photo[:24, :28])
    write_image(src / "a.jpg", photo[30:54, :28])
    out = tmp_path / "out"
    assert main(["adapt", str(src), "--weights", str(tiny_x2), "--kernel", "gd2.0", "-o", str(out)]) == 2
    err = _one_error_line(capsys)
    assert "a.png" in err and "a.jpg" in err and "rename" in err, err
    assert _images(out) == []  # refused before any image was written

    write_image(tmp_path / "d1" / "img.png", photo[:24, :28])
    write_image(tmp_path / "d2" / "img.png", photo[30:54, :28])
    assert main(["adapt", str(tmp_path / "d*" / "img.png"), "--weights", str(tiny_x2), "--kernel", "gd2.0",
                 "-o", str(out)]) == 2
    err = _one_error_line(capsys)
    assert os.path.join("d1", "img.png") in err and os.path.join("d2", "img.png") in err, err
    assert _images(out) == []


def test_adapt_folder_refuses_colliding_inputs_in_python_too(tmp_path, photo):
    from metasr_adapter import MetaSR
    from metasr_adapter.adapt.batch import adapt_folder

    write_image(tmp_path / "d1" / "img.png", photo[:24, :28])
    write_image(tmp_path / "d2" / "img.png", photo[30:54, :28])
    msr = MetaSR(MZSRNet(width=8, depth=3), 2)
    with pytest.raises(ValueError, match="same output"):
        adapt_folder(msr, [tmp_path / "d1", tmp_path / "d2"], tmp_path / "out", steps=0, progress=False)
    assert _images(tmp_path / "out") == []


def test_folder_refuses_the_input_folder_as_output(lr_folder, tiny_x2, capsys):
    before = {p.name: p.read_bytes() for p in lr_folder.iterdir()}
    for spec in (lr_folder, lr_folder / "*.png"):
        assert main(["adapt", str(spec), "--weights", str(tiny_x2), "--kernel", "gd2.0", "-o", str(lr_folder)]) == 2
        err = _one_error_line(capsys)
        assert "input folder" in err and "another folder" in err, err
        assert {p.name: p.read_bytes() for p in lr_folder.iterdir()} == before


def test_folder_resume_skips_only_the_same_work(tmp_path, lr_folder, tiny_x2, capsys):
    out = tmp_path / "sr"
    base = ["adapt", str(lr_folder), "--weights", str(tiny_x2), "-o", str(out)]
    assert main(base + ["--kernel", "gd2.0", "--steps", "1"]) == 0
    assert "2 written, 0 skipped" in capsys.readouterr().out
    settings = json.loads((out / "img0.png.json").read_text())["settings"]
    assert settings["kernel"] == "gd2.0" and settings["steps"] == 1 and settings["ds_method"] is None
    assert settings["weights"]["path"] == str(tiny_x2.resolve()) and len(settings["weights"]["sha256"]) == 64
    written = {p.name: p.read_bytes() for p in out.iterdir()}

    # other settings: before, "0 written, 2 skipped" and the old results presented as the new ones
    for other in (["--kernel", "gd2.0", "--steps", "2"], ["--kernel", "bicubic", "--steps", "1"],
                  ["--kernel", "gd2.0", "--steps", "1", "--ds-method", "bicubic"],
                  ["--kernel", "gd2.0", "--steps", "1", "--lr", "0.001"]):
        assert main(base + other) == 2
        err = _one_error_line(capsys)
        assert "other settings" in err and "another -o folder" in err and "delete" in err, err
        assert {p.name: p.read_bytes() for p in out.iterdir()} == written
    torch.manual_seed(1)  # other weights at the same path
    save_weights(MZSRNet(width=8, depth=3), tiny_x2, arch="mzsr", arch_kwargs={"width": 8, "depth": 3}, scale=2.0)
    assert main(base + ["--kernel", "gd2.0", "--steps", "1"]) == 2
    assert "weights" in _one_error_line(capsys)


def test_folder_resume_keeps_skipping_with_the_same_settings(tmp_path, lr_folder, tiny_x2, capsys):
    out = tmp_path / "sr"
    args = ["adapt", str(lr_folder), "--weights", str(tiny_x2), "--kernel", "gd2.0", "-o", str(out)]
    assert main(args) == 0
    assert "2 written" in capsys.readouterr().out
    assert main(args + ["--steps", "1"]) == 0  # the default step count, spelt out: the same work
    assert "0 written, 2 skipped" in capsys.readouterr().out
    (out / "img1.png").unlink()
    assert main([*args[:1], str(lr_folder / "img*.png"), *args[2:]]) == 0  # the same files by a glob
    assert "1 written, 1 skipped" in capsys.readouterr().out
    (out / "img1.png.json").unlink()  # an output nobody knows the settings of
    assert main(args) == 2
    err = _one_error_line(capsys)
    assert "img1.png" in err and "no sidecar" in err, err


def test_adapt_folder_records_settings_and_refuses_other_work_in_python(tmp_path, photo):
    from metasr_adapter import MetaSR
    from metasr_adapter.adapt.batch import adapt_folder

    write_image(tmp_path / "in" / "a.png", photo[:24, :28])
    msr = MetaSR(MZSRNet(width=8, depth=3), 2)
    kernel = np.ones((3, 3)) / 9
    [o] = adapt_folder(msr, tmp_path / "in", tmp_path / "out", kernel=kernel, steps=1, progress=False,
                       settings={"weights": "mine"})
    assert o.status == "done", o.error
    side = json.loads((tmp_path / "out" / "a.png.json").read_text())
    assert side["settings"]["steps"] == 1 and side["settings"]["weights"] == "mine"
    assert side["settings"]["kernel"]["shape"] == [3, 3]
    [o] = adapt_folder(msr, tmp_path / "in", tmp_path / "out", kernel=kernel, steps=1, progress=False,
                       settings={"weights": "mine"})
    assert o.status == "skipped"
    with pytest.raises(ValueError, match="other settings"):
        adapt_folder(msr, tmp_path / "in", tmp_path / "out", kernel=kernel * 0 + 1 / 9 + np.eye(3) / 100,
                     steps=1, progress=False, settings={"weights": "mine"})

    # a custom run_one (the photo path): its details still go into the sidecar, beside the settings
    def run_one(path):
        return np.zeros((48, 56, 3), np.uint8), {"choice": "plain", "losses": [0.5]}

    [o] = adapt_folder(msr, tmp_path / "in", tmp_path / "photo", kernel="photo", steps=5, run_one=run_one,
                       progress=False, settings={"weights": "idn"})
    side = json.loads((tmp_path / "photo" / "a.png.json").read_text())
    assert side["details"]["choice"] == "plain" and side["losses"] == [0.5]
    assert side["settings"]["kernel"] == "photo" and side["settings"]["steps"] == 5
    with pytest.raises(ValueError, match="steps"):
        adapt_folder(msr, tmp_path / "in", tmp_path / "photo", kernel="photo", steps=3, run_one=run_one,
                     progress=False, settings={"weights": "idn"})


def test_a_kill_between_the_two_writes_leaves_nothing_unknown(tmp_path, photo, monkeypatch):
    import metasr_adapter.adapt.batch as batch
    from metasr_adapter import MetaSR

    write_image(tmp_path / "in" / "a.png", photo[:24, :28])
    msr = MetaSR(MZSRNet(width=8, depth=3), 2)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(batch, "write_image", killed)  # Ctrl-C after the sidecar, before the image
        with pytest.raises(KeyboardInterrupt):
            batch.adapt_folder(msr, tmp_path / "in", tmp_path / "out", steps=0, progress=False)
    assert _images(tmp_path / "out") == []
    [o] = batch.adapt_folder(msr, tmp_path / "in", tmp_path / "out", steps=0, progress=False)
    assert o.status == "done"  # made again, never refused as an output of unknown origin
    [o] = batch.adapt_folder(msr, tmp_path / "in", tmp_path / "out", steps=0, progress=False)
    assert o.status == "skipped"


def test_the_photo_folder_sidecar_records_the_photo_settings(tmp_path, lr_folder, tiny_x2, capsys, monkeypatch):
    import importlib

    cli = importlib.import_module("metasr_adapter.cli.adapt")

    class FakeInfo:
        def to_dict(self):
            return {"choice": "adapted", "losses": [0.1]}

    def fake_photo(msr, path, grid, steps, weights, *, show, **_):  # the photo pipeline is tested in test_photo
        lr = read_image(path)
        return np.repeat(np.repeat(lr, 2, 0), 2, 1), FakeInfo()

    monkeypatch.setattr(cli, "run_photo", fake_photo)
    out = tmp_path / "sr"
    args = ["adapt", str(lr_folder), "--weights", str(tiny_x2), "-o", str(out)]
    assert main(args + ["--steps", "2"]) == 0
    side = json.loads((out / "img0.png.json").read_text())
    assert side["kernel"] == "photo" and side["details"]["choice"] == "adapted"
    s = side["settings"]
    assert s["kernel"] == "photo" and s["steps"] == 2 and s["weights"]["path"] == str(tiny_x2.resolve())
    assert s["grid"] == "centred"
    capsys.readouterr()
    assert main(args + ["--steps", "2"]) == 0
    assert "0 written, 2 skipped" in capsys.readouterr().out
    assert main(args + ["--steps", "3"]) == 2
    assert "other settings" in _one_error_line(capsys)


def test_a_sideways_phone_photo_comes_out_upright_in_its_colour_profile(tmp_path, photo, tiny_x2, capsys):
    """A JPEG stored sideways with EXIF orientation 6 and an ICC profile (as phones write them): the SR image is the
    upright view (what every viewer shows of the input) and carries the same profile; the command says it turned
    it, and a folder's sidecar records it."""
    from PIL import Image, ImageCms

    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()

    stored = photo[:40, :56]  # 56 wide, 40 high as stored; upright it is 40 wide, 56 high
    pil = Image.fromarray(stored)
    exif = pil.getexif()
    exif[0x0112] = 6
    src = tmp_path / "phone" / "p.jpg"
    src.parent.mkdir()
    pil.save(src, quality=95, exif=exif, icc_profile=profile)
    out = tmp_path / "sr.png"
    base = ["--weights", str(tiny_x2), "--kernel", "gd2.0", "--steps", "0", "--precision", "fp32"]
    assert main(["adapt", str(src), *base, "-o", str(out)]) == 0
    assert "turned upright by its EXIF orientation (6)" in capsys.readouterr().out
    assert read_image(out).shape[:2] == (112, 80)  # x2 of the upright 56x40, not of the stored 40x56
    with Image.open(out) as f:
        assert f.info.get("icc_profile") == profile
    assert main(["adapt", str(src.parent), *base, "-o", str(tmp_path / "many")]) == 0
    assert json.loads((tmp_path / "many" / "p.png.json").read_text())["exif_orientation"] == 6
    with Image.open(tmp_path / "many" / "p.png") as f:
        assert f.info.get("icc_profile") == profile


# ---- 3 to 5. one line and exit 2 instead of a traceback or a misleading message -----------------------
def _bad_inputs(tmp_path):
    torch.save([1, 2], tmp_path / "list.pth")
    (tmp_path / "afile.txt").write_text("a file, not a folder\n")
    write_image(tmp_path / "gt1" / "dot.png", np.zeros((1, 1, 3), np.uint8))
    (tmp_path / "recipe.yaml").write_text("name: tiny\n")


@pytest.mark.parametrize("argv, needles", [
    (["adapt", "{lr}", "--weights", "{w}", "--param-key", "nosuch", "--kernel", "gd2.0", "-o", "{tmp}/o.png"],
     ["'nosuch'", "'params'"]),
    (["adapt", "{lr}", "--weights", "{tmp}/list.pth", "--kernel", "gd2.0", "-o", "{tmp}/o.png"],
     ["holds a list", "state_dict"]),
    (["adapt", "{lr}", "--weights", "{w}", "--device", "meta", "--kernel", "gd2.0", "-o", "{tmp}/o.png"],
     ["'meta'", "use cpu"]),
    (["zssr", "{lr}", "--device", "meta", "--iters", "1", "-o", "{tmp}/o.png"], ["'meta'"]),
    (["eval", "--gt-dir", "{tmp}/gt1", "--weights", "{w}", "--steps", "0"], ["dot.png", "1x1"]),
    (["eval", "--gt-dir", "{tmp}/afile.txt", "--weights", "{w}"], ["--gt-dir", "is a file", "folder"]),
    (["eval", "--gt-dir", "{tmp}/gt1", "--lr-dir", "{tmp}/afile.txt", "--weights", "{w}"], ["--lr-dir", "is a file"]),
    (["train", "{tmp}/recipe.yaml", "--out", "{tmp}/afile.txt"], ["--out", "is a file", "folder"]),
    (["adapt", "{lr}", "--scale", "0", "--kernel", "gd2.0", "-o", "{tmp}/o.png"], ["--scale 0", "> 1"]),
    (["adapt", "{lr}", "--weights", "{w}", "--scale", "0", "--kernel", "gd2.0", "-o", "{tmp}/o.png"], ["> 1"]),
    (["eval", "--gt-dir", "{tmp}/gt1", "--scale", "-2", "--weights", "{w}"], ["--scale -2", "> 1"]),
    (["adapt", "{lr}", "--weights", "{w}", "--steps", "1000000000", "--kernel", "gd2.0", "-o", "{tmp}/o.png"],
     ["--steps 1000000000", "100000"]),
    (["eval", "--gt-dir", "{tmp}/gt1", "--weights", "{w}", "--steps", "0,1000000000"], ["1000000000", "100000"]),
    (["demo", "--weights", "{w}", "--kernel", "gd2.0", "--steps", "1000000000", "-o", "{tmp}/o.png"], ["100000"]),
])
def test_user_mistakes_are_one_line_with_exit_2(tmp_path, lr_png, tiny_x2, capsys, argv, needles):
    _bad_inputs(tmp_path)
    args = [a.format(lr=lr_png, w=tiny_x2, tmp=tmp_path) for a in argv]
    assert main(args) == 2
    err = _one_error_line(capsys)
    assert err.startswith(f"metasr {args[0]}: error: "), err
    for needle in needles:
        assert needle in err, err
    assert "no bundled weights" not in err and "not found" not in err, err
    assert not (tmp_path / "o.png").exists()


def test_a_read_only_output_folder_is_refused_before_any_work(tmp_path, lr_folder, tiny_x2, capsys):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    try:
        if os.access(out, os.W_OK):
            pytest.skip("running as root (or with CAP_DAC_OVERRIDE): a 0o555 folder is writable, nothing to refuse; "
                        "test_the_output_folder_check_asks_the_os covers the check")
        assert main(["adapt", str(lr_folder), "--weights", str(tiny_x2), "--kernel", "gd2.0", "-o", str(out)]) == 2
        err = _one_error_line(capsys)
        assert "cannot write into" in err and str(out) in err, err
        assert main(["adapt", str(lr_folder), "--weights", str(tiny_x2), "--kernel", "gd2.0",
                     "-o", str(out / "sub")]) == 2
        assert "cannot write into" in _one_error_line(capsys)
    finally:
        out.chmod(0o755)


def test_the_output_folder_check_asks_the_os(tmp_path, lr_folder, tiny_x2, capsys, monkeypatch):
    """The read-only case above, where permissions bind: os.access says no for the -o folder (root is never refused)."""
    out = tmp_path / "ro"
    out.mkdir()
    real_access = os.access

    def access(path, mode, *args, **kwargs):
        if os.path.realpath(path) == os.path.realpath(out) and mode & os.W_OK:
            return False
        return real_access(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)
    for target in (out, out / "new" / "deeper"):
        assert main(["adapt", str(lr_folder), "--weights", str(tiny_x2), "--kernel", "gd2.0", "-o", str(target)]) == 2
        err = _one_error_line(capsys)
        assert f"cannot write into {out}" in err and "writable" in err, err
    assert _images(out) == [] and not (out / "new").exists()


@pytest.mark.parametrize("folder", [False, True], ids=["one image", "folder"])
def test_ctrl_c_during_adapt_is_one_line_and_exit_130(tmp_path, lr_png, lr_folder, tiny_x2, capsys, monkeypatch,
                                                     folder):
    import metasr_adapter.adapt.metasr as metasr_mod

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(metasr_mod.MetaSR, "adapt", interrupted)
    src, out = (lr_folder, tmp_path / "sr") if folder else (lr_png, tmp_path / "sr.png")
    assert main(["adapt", str(src), "--weights", str(tiny_x2), "--kernel", "gd2.0", "-o", str(out)]) == 130
    lines = capsys.readouterr().err.strip().splitlines()  # after the progress bar's line: one line of ours
    ours = [line for line in lines if "metasr" in line or "Traceback" in line]
    assert len(ours) == 1 and ours[0] == lines[-1], lines
    err = lines[-1]
    assert err.startswith("metasr adapt: interrupted"), err
    assert ("again" in err) if folder else ("nothing" in err), err
    assert not out.is_file() and _images(out) == []


def test_a_chw_array_is_named_as_such(photo):
    from metasr_adapter import MetaSR
    from metasr_adapter.ops.imageio import to_tensor

    chw = np.ascontiguousarray(photo[:64, :80].transpose(2, 0, 1))
    assert chw.shape == (3, 64, 80)
    with pytest.raises(ValueError, match=r"\(3, 64, 80\).*CHW.*transpose\(1, 2, 0\)"):
        to_tensor(chw)
    with pytest.raises(ValueError, match="CHW"):
        to_tensor(chw[:1].astype(np.float32) / 255)
    with pytest.raises(ValueError, match="CHW"):
        MetaSR(MZSRNet(width=8, depth=3), 2).adapt(chw, "gd2.0", 0)
    rgb, _, _ = to_tensor(photo[:3, :5])  # a 3-row HWC image is still HWC
    assert tuple(rgb.shape) == (1, 3, 3, 5)


def test_list_images_says_a_file_is_not_a_folder(tmp_path):
    from metasr_adapter.ops.imageio import list_images

    (tmp_path / "x.png").write_bytes(b"")
    with pytest.raises(NotADirectoryError, match="is a file"):
        list_images(tmp_path / "x.png")
    with pytest.raises(FileNotFoundError, match="not found"):
        list_images(tmp_path / "missing")


def test_modcrop_refuses_an_image_smaller_than_the_scale():
    from metasr_adapter.ops.imageio import modcrop

    with pytest.raises(ValueError, match="1x1 pixels.*scale 2"):
        modcrop(np.zeros((1, 1, 3), np.uint8), 2)
    assert modcrop(np.zeros((5, 3, 3), np.uint8), 2).shape == (4, 2, 3)


def test_weights_errors_are_user_errors_for_library_callers_too(tmp_path, tiny_x2):
    from metasr_adapter.errors import UserInputError
    from metasr_adapter.io.weights import read_weights

    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(TypeError) as info:  # still a TypeError / KeyError for code that catches those
        read_weights(tmp_path / "list.pth")
    assert isinstance(info.value, UserInputError)
    with pytest.raises(KeyError) as info:
        read_weights(tiny_x2, param_key="nosuch")
    assert isinstance(info.value, UserInputError) and "'params'" in str(info.value)


def test_resolve_device_refuses_devices_that_cannot_run_a_network():
    from metasr_adapter.devices import resolve_device

    with pytest.raises(ValueError, match="'meta'"):
        resolve_device("meta")
    assert resolve_device("cpu").type == "cpu"


# ---- structure: --kernel and --weights are parsed once, at the edge ---------------------------------
@pytest.mark.parametrize("folder", [False, True])
def test_adapt_reads_the_kernel_file_and_the_weights_file_once(tmp_path, lr_png, lr_folder, tiny_x2, monkeypatch,
                                                               folder):
    """One `metasr adapt` read its .npy kernel twice and its .pth three times (issue #20, structure 3); a folder
    read the kernel once per image. Now each file is read once and the parsed objects are passed down."""
    from metasr_adapter.ops.kernels import named_kernel

    kernel = tmp_path / "k.npy"
    np.save(kernel, named_kernel("gd2.0").kernel)
    reads = {"np.load": 0, "torch.load": 0}
    real_np, real_torch = np.load, torch.load

    def np_load(path, *a, **k):
        reads["np.load"] += str(path) == str(kernel)
        return real_np(path, *a, **k)

    def torch_load(path, *a, **k):
        reads["torch.load"] += str(path) == str(tiny_x2)
        return real_torch(path, *a, **k)

    monkeypatch.setattr(np, "load", np_load)
    monkeypatch.setattr(torch, "load", torch_load)
    src, out = (lr_folder, tmp_path / "out") if folder else (lr_png, tmp_path / "sr.png")
    assert main(["adapt", str(src), "-o", str(out), "--weights", str(tiny_x2), "--kernel", str(kernel),
                 "--steps", "1", "--quiet"]) == 0
    assert reads == {"np.load": 1, "torch.load": 1}


def test_a_photo_at_a_scale_its_weights_lack_names_the_bundled_weights_that_have_it(tmp_path, lr_png, capsys):
    """`metasr adapt photo.jpg --scale 4` failed with 'use --scale 2 or weights trained for x4', naming none."""
    from metasr_adapter.io.pretrained import BUNDLED_WEIGHTS
    from metasr_adapter.pipelines.photo import default_photo_weights

    photo_w = default_photo_weights()
    if photo_w is None:
        pytest.skip("this install ships no photo weights")
    out = tmp_path / "sr.png"
    for scale in (4, 3):
        at = [w.name for w in BUNDLED_WEIGHTS.values() if float(w.scale) == scale]
        assert main(["adapt", str(lr_png), "--scale", str(scale), "-o", str(out)]) == 2
        err = _one_error_line(capsys)
        assert f"--scale {scale}" in err and photo_w in err
        if at:
            assert all(name in err for name in at) and "--kernel" in err
        else:
            assert f"no bundled weights are x{scale}" in err and "--weights PATH" in err
        assert not out.exists()


def test_an_undecodable_photo_fails_before_any_network_loads_or_work_is_announced(tmp_path, capsys, monkeypatch):
    """A .heic (or any file PIL/OpenCV cannot read) printed 'estimating the degradation...' after loading the photo
    networks, then failed."""
    import importlib

    cli_adapt = importlib.import_module("metasr_adapter.cli.adapt")

    def no_setup(args):
        raise AssertionError("the photo networks were loaded for an unreadable file")

    monkeypatch.setattr(cli_adapt, "photo_setup", no_setup)
    bad = tmp_path / "IMG_0001.heic"
    bad.write_bytes(b"\x00\x00\x00\x18ftypheic" + bytes(64))
    assert main(["adapt", str(bad), "-o", str(tmp_path / "sr.png")]) == 2
    out = capsys.readouterr()
    assert out.out == ""
    assert "could not decode" in out.err and "IMG_0001.heic" in out.err and len(out.err.strip().splitlines()) == 1

"""Issue #20, item 7: no command-line option is silently ignored. An option the chosen method cannot use is
refused with one line and exit 2; one it can use reaches the code that runs (device, precision, scale)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from metasr_adapter import MZSRNet
from metasr_adapter.cli.main import main
from metasr_adapter.ops.imageio import read_image, write_image
from test_cli_robustness import _one_error_line, _one_thread  # noqa: F401 - _one_thread: an autouse fixture


@pytest.fixture
def lr_png(tmp_path, photo):
    path = tmp_path / "lr.png"
    write_image(path, photo[100:164, 100:164])
    return path


@pytest.fixture
def gt_dir(tmp_path, photo):
    folder = tmp_path / "gt"
    write_image(folder / "a.png", photo[:48, :48])
    return folder


class _Ran(Exception):
    """Raised by a stub where the real work would start: the options were accepted."""


def _capture(monkeypatch, module, name: str) -> dict:
    """Replace ``module.name`` by a stub that records its keyword arguments and stops the run."""
    seen: dict = {}

    def stub(*args, **kwargs):
        seen.update(kwargs)
        raise _Ran

    monkeypatch.setattr(module, name, stub)
    return seen


# ---- eval --method zssr: the MetaSR-only options ---------------------------------------------------

@pytest.mark.parametrize("extra, flag", [
    (["--weights", "missing.pth"], "--weights"),
    (["--arch", "nosuch"], "--arch"),
    (["--arch-kwargs", '{"width": 8}'], "--arch-kwargs"),
    (["--param-key", "params"], "--param-key"),
    (["--schedule", "mzsr_direct"], "--schedule"),
    (["--lr", "0.01"], "--lr"),
    (["--loss", "l2"], "--loss"),
    (["--steps", "0,1"], "--steps"),
    (["--self-ensemble"], "--self-ensemble"),
    (["--back-projection", "2"], "--back-projection"),
    (["--tile", "64"], "--tile"),
    (["--max-pixels", "4096"], "--max-pixels"),
])
def test_eval_zssr_refuses_the_options_of_metasr(gt_dir, capsys, monkeypatch, extra, flag):
    import metasr_adapter.pipelines.evaluate as evaluate

    _capture(monkeypatch, evaluate, "evaluate_folder")  # were the run to start, _Ran would escape main
    assert main(["eval", "--gt-dir", str(gt_dir), "--method", "zssr", "--kernel", "bicubic", *extra]) == 2
    err = _one_error_line(capsys)
    assert flag in err and "zssr" in err.lower(), err


def test_eval_zssr_names_every_option_it_ignores(gt_dir, capsys, monkeypatch):
    import metasr_adapter.pipelines.evaluate as evaluate

    _capture(monkeypatch, evaluate, "evaluate_folder")
    argv = ["eval", "--gt-dir", str(gt_dir), "--method", "zssr", "--weights", "missing.pth", "--arch", "nosuch"]
    assert main(argv) == 2
    err = _one_error_line(capsys)
    assert "--weights" in err and "--arch" in err and "from scratch" in err, err


@pytest.mark.parametrize("extra, flag", [
    (["--zssr-preset", "fast"], "--zssr-preset"),
    (["--zssr-iters", "10"], "--zssr-iters"),
    (["--kernel-shift"], "--kernel-shift"),
])
def test_eval_metasr_refuses_the_options_of_zssr(gt_dir, capsys, monkeypatch, extra, flag):
    import metasr_adapter.pipelines.evaluate as evaluate

    _capture(monkeypatch, evaluate, "evaluate_folder")
    assert main(["eval", "--gt-dir", str(gt_dir), "--kernel", "bicubic", "--weights", "random", *extra]) == 2
    err = _one_error_line(capsys)
    assert flag in err and "--method zssr" in err, err


def test_eval_zssr_still_takes_its_own_options(gt_dir, monkeypatch):
    import metasr_adapter.pipelines.evaluate as evaluate

    seen = _capture(monkeypatch, evaluate, "evaluate_folder")
    with pytest.raises(_Ran):
        main(["eval", "--gt-dir", str(gt_dir), "--method", "zssr", "--kernel", "bicubic", "--zssr-iters", "7",
              "--precision", "fp32", "--device", "cpu", "--scale", "2", "--param-key", "auto"])
    assert seen["method"] == "zssr" and seen["zssr_config"].max_iters == 7
    assert seen["zssr_config"].device == "cpu"


def test_eval_metasr_keeps_its_default_steps(gt_dir, monkeypatch):
    import metasr_adapter.pipelines.evaluate as evaluate

    seen = _capture(monkeypatch, evaluate, "evaluate_folder")
    with pytest.raises(_Ran):
        main(["eval", "--gt-dir", str(gt_dir), "--kernel", "bicubic", "--weights", "random"])
    assert list(seen["steps"]) == [0, 1, 10]


# ---- estimate-kernel --estimator kernelgan: --device and --precision --------------------------------

def test_estimate_kernel_kernelgan_gets_the_device(tmp_path, lr_png, monkeypatch):
    import metasr_adapter.estimate.api as api

    seen = _capture(monkeypatch, api, "estimate_kernel")
    with pytest.raises(_Ran):
        main(["estimate-kernel", str(lr_png), "-o", str(tmp_path / "k.npy"), "--estimator", "kernelgan",
              "--device", "cpu", "--precision", "fp32"])
    assert str(seen.get("device")) == "cpu"


@pytest.mark.parametrize("extra, flag", [
    (["--precision", "bf16"], "--precision bf16"),
    (["--weights", "missing.pth"], "--weights"),
    (["--arch", "nosuch"], "--arch"),
    (["--evals", "5"], "--evals"),
])
def test_estimate_kernel_kernelgan_refuses_what_it_cannot_use(tmp_path, lr_png, capsys, monkeypatch, extra, flag):
    import metasr_adapter.estimate.api as api

    _capture(monkeypatch, api, "estimate_kernel")
    argv = ["estimate-kernel", str(lr_png), "-o", str(tmp_path / "k.npy"), "--estimator", "kernelgan", *extra]
    assert main(argv) == 2
    err = _one_error_line(capsys)
    assert flag in err and "kernelgan" in err, err


def test_estimate_kernel_gaussian_refuses_iters(tmp_path, lr_png, capsys, monkeypatch):
    import metasr_adapter.estimate.api as api

    _capture(monkeypatch, api, "estimate_kernel")
    assert main(["estimate-kernel", str(lr_png), "-o", str(tmp_path / "k.npy"), "--iters", "5"]) == 2
    err = _one_error_line(capsys)
    assert "--kernelgan-iters 5" in err and "--evals" in err, err


def test_kernelgan_runs_on_the_given_device(photo):
    from metasr_adapter.estimate.api import estimate_kernel

    img = photo[100:164, 100:164]
    a = estimate_kernel(img, 2, "kernelgan", iters=4, device="cpu")
    b = estimate_kernel(img, 2, "kernelgan", iters=4)
    assert np.array_equal(a.kernel, b.kernel)
    assert a.diagnostics["device"] == "cpu"
    with pytest.raises(ValueError, match="device"):
        estimate_kernel(img, 2, "kernelgan", iters=4, device="meta")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_kernelgan_on_cuda_matches_the_cpu_closely(photo):  # pragma: no cover - GPU machines
    from metasr_adapter.estimate.api import estimate_kernel

    img = photo[100:164, 100:164]
    a = estimate_kernel(img, 2, "kernelgan", iters=30, device="cpu")
    b = estimate_kernel(img, 2, "kernelgan", iters=30, device="cuda")
    assert b.diagnostics["device"].startswith("cuda")
    assert np.abs(a.kernel - b.kernel).max() < 0.02


# ---- zssr --kernel estimate: the estimate runs on --device ----------------------------------------

@pytest.mark.parametrize("estimator", ["gaussian", "kernelgan"])
def test_zssr_estimates_the_kernel_on_its_device(tmp_path, lr_png, monkeypatch, estimator):
    import metasr_adapter.estimate.api as api

    seen = _capture(monkeypatch, api, "estimate_kernel")
    with pytest.raises(_Ran):
        main(["zssr", str(lr_png), "-o", str(tmp_path / "sr.png"), "--kernel", "estimate", "--estimator", estimator,
              "--device", "cpu"])
    assert str(seen.get("device")) == "cpu"


def test_the_gaussian_estimate_loads_its_bundled_network_on_the_device(monkeypatch):
    import metasr_adapter.adapt.metasr as metasr_mod
    from metasr_adapter.estimate.api import _as_metasr

    seen = _capture(monkeypatch, metasr_mod, "load_pretrained")
    with pytest.raises(_Ran):
        _as_metasr(None, 2, device="cpu")
    assert str(seen.get("device")) == "cpu"


# ---- --arch spandrel: the scale comes from the checkpoint unless --scale is given --------------------

@pytest.fixture
def fake_spandrel_x4(tmp_path, monkeypatch):
    """``load_model('spandrel', ...)`` returning a x4 network (spandrel itself is optional)."""
    import metasr_adapter.io.pretrained as pretrained

    real = pretrained.load_model

    def load_model(arch=None, weights=None, *args, **kwargs):
        if arch == "spandrel":
            torch.manual_seed(0)
            net = MZSRNet(width=8, depth=3)  # takes the upsampled image: any scale
            net.scale, net.architecture = 4, "FakeNet"
            return net
        return real(arch, weights, *args, **kwargs)

    monkeypatch.setattr(pretrained, "load_model", load_model)
    ckpt = tmp_path / "fake_x4.pth"
    torch.save({"w": torch.zeros(1)}, ckpt)
    return ckpt


def test_spandrel_takes_the_detected_scale_without_scale(tmp_path, fake_spandrel_x4, capsys):
    lr = tmp_path / "small.png"
    write_image(lr, (np.random.default_rng(0).random((20, 24, 3)) * 255).astype(np.uint8))
    out = tmp_path / "sr.png"
    argv = ["adapt", str(lr), "--arch", "spandrel", "--weights", str(fake_spandrel_x4), "--kernel", "bicubic",
            "--steps", "0", "--quiet", "-o", str(out)]
    assert main(argv) == 0, capsys.readouterr().err
    assert read_image(out).shape == (80, 96, 3)
    assert main([*argv, "--scale", "4"]) == 0
    assert main([*argv, "--scale", "2"]) == 2
    err = _one_error_line(capsys)
    assert "--scale 2" in err and "x4" in err, err


@pytest.mark.parametrize("fast", [True, False])
def test_adapt_runs_bf16_by_default_where_it_is_fast_and_says_so(tmp_path, photo, monkeypatch, capsys, fast):
    """#21.3: with --precision left out, `metasr adapt` runs bf16 where bf16 is fast (Set5's Table 2 cells moved
    by at most 0.04 dB, 1.8x faster) and names the precision in its output; eval stays fp32; --precision wins."""
    import metasr_adapter.precision as precision
    from metasr_adapter import MZSRNet
    from metasr_adapter.io.weights import save_weights
    from metasr_adapter.ops.imageio import write_image

    monkeypatch.setattr(precision, "bf16_supported", lambda device: fast)
    weights = save_weights(MZSRNet(width=8, depth=3), tmp_path / "w.pth", arch="mzsr",
                           arch_kwargs={"width": 8, "depth": 3}, scale=2.0)
    write_image(tmp_path / "lr.png", photo[:24, :28])
    base = ["adapt", str(tmp_path / "lr.png"), "--weights", str(weights), "--kernel", "gd2.0", "--quiet",
            "--steps", "1", "--threads", "1"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # bf16 forced on a CPU without fast bf16 kernels
        assert main([*base, "-o", str(tmp_path / "a.png")]) == 0
    out = capsys.readouterr().out
    assert ("bf16 (bf16 where it is fast" in out) if fast else out.rstrip().endswith("fp32"), out
    assert main([*base, "-o", str(tmp_path / "b.png"), "--precision", "fp32"]) == 0
    assert capsys.readouterr().out.rstrip().endswith("fp32")
    from metasr_adapter.cli.loading import default_precision

    assert default_precision("eval", torch.device("cpu")) == "fp32"
    assert default_precision("demo", torch.device("cpu")) == ("bf16" if fast else "fp32")

"""`metasr train`: end to end on a tiny budget, checkpoints, exact resume after SIGKILL, pretraining."""
from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from metasr_adapter.atomic import load_checked, save_checked
from metasr_adapter.meta.pretrain import PairSampler, Pretrainer, staircase_lr
from metasr_adapter.meta.tasks import PatchPool
from metasr_adapter.training.run_state import KILL_ENV, MetricsLog, TrainingInterrupted
from metasr_adapter.training.train import run_training

pytestmark = [pytest.mark.filterwarnings("ignore:eval.gt_dir is not set"), pytest.mark.usefixtures("one_torch_thread")]

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "mzsr_x2.yaml"




def _write(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.ascontiguousarray(img[:, :, ::-1]))


@pytest.fixture
def data(tmp_path: Path, photo: np.ndarray) -> dict[str, Path]:
    """Training images and evaluation GT cut from the bundled photo (no ../shared needed)."""
    train, gt = tmp_path / "train", tmp_path / "gt"
    _write(train / "a.png", photo[:260, :250])
    _write(train / "b.png", photo[200:460, 250:512])
    _write(train / "c.png", photo[380:600, :300])
    _write(gt / "g1.png", photo[100:196, 180:276])
    _write(gt / "g2.png", photo[300:396, 60:156])
    return {"train": train, "gt": gt}


def _tiny(data: dict[str, Path], **extra: object) -> list[str]:
    """A tiny budget: small network, a few steps of everything, no bars."""
    settings = {
        "device": "cpu",
        "model.width": 8, "model.depth": 3,
        "data.train_dir": data["train"], "data.patch_size": 32, "data.num_workers": 0,
        "pretrain.iterations": 5, "pretrain.batch_size": 4, "pretrain.patch_size": 32,
        "meta.iterations": 6, "meta.meta_batch": 2, "meta.task_batch": 1,
        "eval.gt_dir": data["gt"], "eval.lr_dir": "null", "eval.kernel": "gd2.0", "eval.max_steps": 10,
        "output.checkpoint_every": 2, "output.pretrain_checkpoint_every": 2, "output.log_every": 1,
        "output.progress": "false",
    }
    settings.update(extra)
    return [f"{k}={v}" for k, v in settings.items()]


def _train_cmd(out: Path, overrides: list[str], resume: bool = False) -> list[str]:
    cmd = [sys.executable, "-m", "metasr_adapter.cli.main", "train", str(RECIPE), "--out", str(out), "--set", *overrides]
    return cmd + (["--resume"] if resume else [])


def _run(cmd: list[str], kill_after: str | None = None, timeout: float = 170) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", METASR_SHARED="/nonexistent")
    env.pop(KILL_ENV, None)
    if kill_after:
        env[KILL_ENV] = kill_after
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def _params(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["params"]


def test_cli_train_end_to_end_tiny_budget(data: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "run"
    res = _run(_train_cmd(out, _tiny(data)))
    assert res.returncode == 0, res.stderr[-3000:]
    for name in ("checkpoint.pt", "metrics.jsonl", "psnr_vs_steps.png", "eval.json", "recipe.yaml",
                 "start_weights.pth", "meta_trained.pth"):
        assert (out / name).is_file(), name
    png = cv2.imread(str(out / "psnr_vs_steps.png"))
    assert png is not None and png.shape[0] > 200 and png.shape[1] > 300
    ev = json.loads((out / "eval.json").read_text())
    for key in ("start", "meta_trained"):
        psnr = ev[key]["mean_psnr"]
        assert [int(k) for k in psnr if k.isdigit()] == list(range(11))
    assert "bicubic" in ev["meta_trained"]["mean_psnr"]
    # the report is what the saved weights give when evaluated on their own (weights + metadata round trip)
    from metasr_adapter import MetaSR, evaluate_folder
    from metasr_adapter.io.pretrained import load_model
    from metasr_adapter.io.weights import read_metadata

    meta = read_metadata(out / "meta_trained.pth")
    assert (meta["arch"], meta["scale"], meta["schedule"], meta["loss"]) == ("mzsr", 2.0, "mzsr_direct", "l1")
    msr = MetaSR(load_model(weights=out / "meta_trained.pth"), meta["scale"], schedule=meta["schedule"])
    again = evaluate_folder(msr, data["gt"], kernel="gd2.0", steps=[0, 10], progress=False)
    for k in (0, 10):
        assert again.mean_psnr[k] == pytest.approx(ev["meta_trained"]["mean_psnr"][str(k)], abs=1e-4)
    recs = MetricsLog(out / "metrics.jsonl").read()
    meta_steps = [r["step"] for r in recs if r["stage"] == "meta"]
    assert meta_steps == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in recs if r["stage"] == "pretrain"] == [1, 2, 3, 4, 5]
    assert all(np.isfinite(r["meta_loss"]) for r in recs if r["stage"] == "meta")
    ckpt = load_checked(out / "checkpoint.pt")
    assert ckpt["stage"] == "done"
    assert "mean PSNR" in res.stdout


def test_mlsr_recipe_end_to_end_with_idn(data: dict[str, Path], tmp_path: Path) -> None:
    """recipes/mlsr_idn_x2.yaml on a tiny budget: IDN pretrained with L2, MLSR tasks, first order."""
    from metasr_adapter.training.recipes import load_recipe

    over = _tiny(data, **{
        "model.arch_kwargs": "{num_feat: 16, diff: 4, num_blocks: 1}", "data.stride": 60,
        "data.grad_threshold": -100, "pretrain.iterations": 3, "meta.iterations": 3, "meta.meta_batch": 2,
        "meta.inner_lr": 1e-3, "eval.kernel": "bicubic", "eval.schedule": 1e-3, "eval.max_steps": 2,
        "output.checkpoint_every": 1,
    })
    over = [o for o in over if not o.startswith(("model.width", "model.depth"))]
    out = tmp_path / "mlsr"
    result = run_training(load_recipe(ROOT / "recipes" / "mlsr_idn_x2.yaml", over), out_dir=out)
    assert Path(result["final_weights"]).is_file() and result["eval"] == str(out / "eval.json")
    ev = json.loads((out / "eval.json").read_text())
    psnr = ev["meta_trained"]["mean_psnr"]
    assert [k for k in psnr if k.isdigit()] == ["0", "1", "2"]
    assert result["psnr_meta_trained"] == {k: pytest.approx(psnr[str(k)]) for k in (0, 1, 2)}
    recs = MetricsLog(out / "metrics.jsonl").read()
    assert [r["step"] for r in recs if r["stage"] == "meta"] == [1, 2, 3]
    assert all(np.isfinite(r["meta_loss"]) for r in recs if r["stage"] == "meta")
    params = _params(out / "meta_trained.pth")
    assert "reconstruct.weight" in params and params["reconstruct.weight"].shape == (16, 3, 17, 17)
    start = _params(out / "start_weights.pth")
    assert not torch.equal(start["features.0.weight"], params["features.0.weight"])  # meta-training moved it
    # the saved weights rebuild their network: metasr eval needs no architecture settings
    from metasr_adapter.cli.main import main

    rc = main(["eval", "--arch", "idn", "--weights", str(out / "meta_trained.pth"), "--gt-dir", str(data["gt"]),
               "--kernel", "bicubic", "--steps", "0,2", "--lr", "1e-3", "--loss", "l2", "--threads", "1"])
    assert rc == 0


def test_learned_inner_rates_are_saved_with_the_weights_and_used_by_adapt(data: dict[str, Path], tmp_path: Path) -> None:
    """meta.learn_inner_lr: the rates are meta-trained, probed, logged, saved in the weights' metadata,
    and MetaSR(load_model(...)) adapts with them by default."""
    from metasr_adapter import MetaSR, load_model
    from metasr_adapter.adapt.schedules import PerParameterSchedule
    from metasr_adapter.io.weights import read_metadata
    from metasr_adapter.training.recipes import load_recipe

    out = tmp_path / "lslr"
    over = _tiny(data, **{"pretrain.iterations": 2, "meta.iterations": 3, "meta.learn_inner_lr": "true",
                          "meta.inner_lr_meta_lr": 0.1, "meta.probe_every": 3, "eval.max_steps": 1,
                          "eval.probe_steps": "[0, 1]", "eval.evaluate_start": "false"})
    run_training(load_recipe(RECIPE, over), out_dir=out)
    saved = read_metadata(out / "meta_trained.pth")["schedule"]
    rates = saved["per_parameter"]
    assert sorted(rates) == sorted(_params(out / "meta_trained.pth"))  # every adapted tensor, 5 inner steps each
    assert all(len(v) == 5 for v in rates.values())
    assert max(abs(math.log(a / 0.01)) for v in rates.values() for a in v) > 0.2  # they moved (Adam at 0.1, 3 steps)
    start = read_metadata(out / "start_weights.pth")["schedule"]
    assert start == "mzsr_direct"  # the pretrained weights carry the recipe's plain schedule
    recs = MetricsLog(out / "metrics.jsonl").read()
    assert all(r["inner_lr_min"] <= r["inner_lr_max"] for r in recs if r["stage"] == "meta" and "meta_loss" in r)
    assert any(r.get("probe") for r in recs)
    msr = MetaSR(load_model("mzsr", out / "meta_trained.pth"))
    assert isinstance(msr.schedule, PerParameterSchedule) and msr.schedule.to_dict() == saved


def _strip(recs: list[dict]) -> list[tuple]:
    return [(r["stage"], r["step"], r.get("loss"), r.get("meta_loss")) for r in recs]


def _assert_same_run(a: Path, b: Path) -> None:
    for name in ("start_weights.pth", "meta_trained.pth"):
        pa, pb = _params(a / name), _params(b / name)
        assert pa.keys() == pb.keys()
        for k in pa:
            assert torch.equal(pa[k], pb[k]), (name, k)
    # the log has no duplicates and the same losses, bit for bit
    assert _strip(MetricsLog(a / "metrics.jsonl").read()) == _strip(MetricsLog(b / "metrics.jsonl").read())


@pytest.fixture
def resume_setup(data: dict[str, Path], tmp_path: Path):
    """Settings of the resume tests and an uninterrupted reference run (in this process)."""
    from metasr_adapter.training.recipes import load_recipe

    over = _tiny(data, **{"eval.gt_dir": "null", "data.num_workers": 1, "meta.iterations": 7})
    ref = tmp_path / "uninterrupted"
    run_training(load_recipe(RECIPE, over), out_dir=ref)
    return over, ref


def test_resume_after_crashes_in_both_stages_gives_identical_weights(
    resume_setup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from metasr_adapter.training.recipes import load_recipe

    over, ref = resume_setup
    run = tmp_path / "crashed"
    rec = load_recipe(RECIPE, over)
    monkeypatch.setenv(KILL_ENV, "pretrain:3:raise")  # checkpoint at 2, crash after step 3
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_training(rec, out_dir=run)
    ck = load_checked(run / "checkpoint.pt")
    assert (ck["stage"], ck["step"]) == ("pretrain", 2)
    assert [r["step"] for r in MetricsLog(run / "metrics.jsonl").read()] == [1, 2, 3]
    monkeypatch.setenv(KILL_ENV, "meta:5:raise")  # checkpoint at 4, crash after step 5
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_training(rec, out_dir=run, resume=True)
    ck = load_checked(run / "checkpoint.pt")
    assert (ck["stage"], ck["step"]) == ("meta", 4)
    monkeypatch.delenv(KILL_ENV)
    run_training(rec, out_dir=run, resume=True)
    _assert_same_run(ref, run)


def test_a_run_with_task_threads_resumes_to_the_bit(data: dict[str, Path], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """meta.task_threads=2: the meta-batch's two tasks on worker threads. A crash and a resume give the
    uninterrupted run's weights and losses, bit for bit."""
    from metasr_adapter.meta.task_threads import TaskThreadPool
    from metasr_adapter.training.recipes import load_recipe

    rec = load_recipe(RECIPE, _tiny(data, **{"eval.gt_dir": "null", "pretrain.iterations": 2, "meta.iterations": 5,
                                              "meta.task_threads": 2}))
    runs, run_jobs = [], TaskThreadPool.run
    monkeypatch.setattr(TaskThreadPool, "run", lambda pool, jobs: runs.append(len(jobs)) or run_jobs(pool, jobs))
    ref, run = tmp_path / "uninterrupted", tmp_path / "crashed"
    run_training(rec, out_dir=ref)
    assert runs == [2] * 5  # each meta-iteration's two tasks went to the two workers
    monkeypatch.setenv(KILL_ENV, "meta:3:raise")  # checkpoint at 2, crash after step 3
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_training(rec, out_dir=run)
    monkeypatch.delenv(KILL_ENV)
    run_training(rec, out_dir=run, resume=True)
    _assert_same_run(ref, run)


def _crash_a_100_iteration_run_after_step_5(over: list[str], run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run planned for 100 meta-iterations that crashes after step 5 (its last checkpoint: step 4)."""
    from metasr_adapter.training.recipes import load_recipe

    monkeypatch.setenv(KILL_ENV, "meta:5:raise")
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_training(load_recipe(RECIPE, [*over, "meta.iterations=100"]), out_dir=run)
    monkeypatch.delenv(KILL_ENV)


def test_resume_may_change_meta_iterations(resume_setup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run planned for 100 iterations, crashed after 5 and resumed with 7, equals a 7-iteration run."""
    from metasr_adapter.training.recipes import load_recipe

    over, ref = resume_setup
    run = tmp_path / "shortened"
    _crash_a_100_iteration_run_after_step_5(over, run, monkeypatch)  # checkpoint at 4
    with pytest.raises(ValueError, match="already took 4"):
        run_training(load_recipe(RECIPE, [*over, "meta.iterations=3"]), out_dir=run, resume=True)
    run_training(load_recipe(RECIPE, over), out_dir=run, resume=True)
    _assert_same_run(ref, run)
    with pytest.raises(ValueError, match="already took"):  # a finished run cannot be shortened
        run_training(load_recipe(RECIPE, [*over, "meta.iterations=5"]), out_dir=run, resume=True)


def test_a_finished_run_extended_equals_the_longer_run(resume_setup, tmp_path: Path) -> None:
    """4 iterations to the end (evaluation included), then --resume with 7: the 7-iteration run's weights
    and log; a checkpoint finished without the meta-learner's state is refused with a clear message."""
    from metasr_adapter.training.recipes import load_recipe

    over, ref = resume_setup
    run = tmp_path / "extended"
    run_training(load_recipe(RECIPE, [*over, "meta.iterations=4"]), out_dir=run)
    ck = load_checked(run / "checkpoint.pt")
    assert ck["stage"] == "done" and set(ck["meta_state"]) == {"learner", "sampler", "elapsed"}
    old = tmp_path / "old_format"
    shutil.copytree(run, old)
    run_training(load_recipe(RECIPE, over), out_dir=run, resume=True)
    assert load_checked(run / "checkpoint.pt")["stage"] == "done"
    _assert_same_run(ref, run)
    del ck["meta_state"]
    save_checked(ck, old / "checkpoint.pt")
    with pytest.raises(ValueError, match="did not keep the meta-learner's state"):
        run_training(load_recipe(RECIPE, over), out_dir=old, resume=True)


def test_resume_after_sigkill_gives_identical_weights(resume_setup, tmp_path: Path) -> None:
    """A real process killed with SIGKILL mid-meta-training, then ``metasr train --resume``."""
    over, ref = resume_setup
    run = tmp_path / "killed"
    res = _run(_train_cmd(run, over), kill_after="meta:5")  # checkpoint at 4, killed after step 5
    assert res.returncode == -signal.SIGKILL, res.stderr[-3000:]
    ck = load_checked(run / "checkpoint.pt")
    assert (ck["stage"], ck["step"]) == ("meta", 4)
    assert [r["step"] for r in MetricsLog(run / "metrics.jsonl").read() if r["stage"] == "meta"] == [1, 2, 3, 4, 5]
    from metasr_adapter.cli.main import main

    assert main(["train", str(RECIPE), "--out", str(run), "--resume", "--set", *over]) == 0
    _assert_same_run(ref, run)


def test_sigterm_saves_a_checkpoint_and_resume_checks_the_recipe(data: dict[str, Path], tmp_path: Path) -> None:
    from metasr_adapter.training.recipes import load_recipe

    out = tmp_path / "run"
    rec = load_recipe(RECIPE, _tiny(data, **{"pretrain.iterations": 0, "meta.iterations": 100000,
                                              "output.checkpoint_every": 100000, "eval.gt_dir": "null"}))

    default_handler = signal.getsignal(signal.SIGTERM)

    def stop_soon() -> None:
        # ready = the run's SIGTERM handler is installed and meta-training logged a step; a signal sent
        # before the handler is in place would kill pytest itself, so without readiness none is sent
        deadline = time.time() + 120
        log = out / "metrics.jsonl"
        while time.time() < deadline:
            installed = signal.getsignal(signal.SIGTERM) is not default_handler
            if installed and log.is_file() and '"stage": "meta"' in log.read_text():
                os.kill(os.getpid(), signal.SIGTERM)
                return
            time.sleep(0.05)

    threading.Thread(target=stop_soon, daemon=True).start()
    with pytest.raises(TrainingInterrupted) as exc:
        run_training(rec, out_dir=out)
    ck = load_checked(out / "checkpoint.pt")
    assert ck["stage"] == "meta" and ck["step"] == exc.value.step >= 1
    last = [r for r in MetricsLog(out / "metrics.jsonl").read() if r["stage"] == "meta"][-1]
    assert last["step"] == ck["step"]

    with pytest.raises(ValueError, match="--resume"):
        run_training(rec, out_dir=out)
    changed = load_recipe(RECIPE, _tiny(data, **{"pretrain.iterations": 0, "meta.iterations": 100000,
                                                  "output.checkpoint_every": 100000, "eval.gt_dir": "null",
                                                  "seed": 5, "meta.task_batch": 2}))
    with pytest.raises(ValueError, match=r"different recipe.*meta.task_batch.*seed"):
        run_training(changed, out_dir=out, resume=True)


def test_cli_rejects_unknown_recipe_keys(capsys: pytest.CaptureFixture[str]) -> None:
    from metasr_adapter.cli.main import main

    assert main(["train", str(RECIPE), "--set", "meta.iteratoins=3"]) == 2
    err = capsys.readouterr().err
    assert "meta.iteratoins" in err and "iterations" in err and "meta_batch" in err
    # the recipe may also follow --set (argparse hands it to --set)
    assert main(["train", "--set", "meta.iterations=3", str(RECIPE), "--show"]) == 0
    assert "iterations: 3" in capsys.readouterr().out


def test_metrics_log_truncate(tmp_path: Path) -> None:
    log = MetricsLog(tmp_path / "m.jsonl")
    for st, k in [("pretrain", 1), ("pretrain", 2), ("meta", 1), ("meta", 2), ("meta", 3), ("eval", 3)]:
        log.write({"stage": st, "step": k})
    with open(log.path, "a") as fh:
        fh.write('{"stage": "meta", "st')  # a line cut by a kill
    assert log.truncate("meta", 2) == 2
    assert [(r["stage"], r["step"]) for r in log.read()] == [("pretrain", 1), ("pretrain", 2), ("meta", 1), ("meta", 2)]


def test_staircase_learning_rate_spec8() -> None:
    assert staircase_lr(0) == 4e-4 and staircase_lr(99_999) == 4e-4
    assert staircase_lr(100_000) == 2e-4 and staircase_lr(199_999) == 2e-4
    assert staircase_lr(200_000) == 1e-4 and staircase_lr(499_999) == 1e-4  # floor 1e-4


def test_pretraining_pairs_and_steps(data: dict[str, Path]) -> None:
    from metasr_adapter.adapters.mzsr import MZSRNet
    from metasr_adapter.ops.degrade import imresize

    pool = PatchPool(data["train"], patch_size=96, stride=120, lr_scale=2).build()
    s = PairSampler(pool, batch_size=3, seed=1)
    b = s.sample_arrays(0)
    assert b["x"].shape == b["y"].shape == (3, 3, 96, 96)
    assert torch.equal(s.sample_arrays(0)["y"], b["y"]) and not torch.equal(s.sample_arrays(1)["y"], b["y"])
    # the network input is the bicubic x2 upsampling of the stored LR patch (SPEC §8)
    assert b["x"].dtype == torch.float32 and float((b["x"] - b["y"]).abs().mean()) < 0.1
    torch.manual_seed(0)
    net = MZSRNet(width=8, depth=3)
    tr = Pretrainer(net, lr=1e-3)
    first = tr.step(b, 0)["loss"]
    for k in range(1, 30):
        info = tr.step(b, k)
    assert info["lr"] == 1e-3 and info["loss"] < first
    lr_only = PairSampler(pool, batch_size=2, seed=1, upsample_input=False).sample_arrays(0)
    assert lr_only["x"].shape == (2, 3, 48, 48)
    torch.testing.assert_close(imresize(lr_only["x"], 2.0), PairSampler(pool, 2, seed=1).sample_arrays(0)["x"])


@pytest.mark.parametrize("stage, extra", [("pretrain", {"pretrain.iterations": 4, "meta.iterations": 0}),
                                          ("meta", {"pretrain.iterations": 0, "meta.iterations": 4})])
def test_resume_warns_when_the_training_images_changed(data, tmp_path, photo, stage, extra):
    """The saved sampler state is restored on resume (it was never read before, so this never warned)."""
    from metasr_adapter.training.recipes import load_recipe

    over = _tiny(data, **{**extra, "output.checkpoint_every": 2, "output.pretrain_checkpoint_every": 2,
                          "eval.gt_dir": "null"})
    out = tmp_path / "run"
    rec = load_recipe(RECIPE, over)
    os.environ[KILL_ENV] = f"{stage}:2:raise"
    try:
        with pytest.raises(RuntimeError, match="simulated crash"):
            run_training(rec, out_dir=out)
    finally:
        os.environ.pop(KILL_ENV, None)
    _write(data["train"] / "d.png", photo[:200, 300:500])  # a new training image
    with pytest.warns(UserWarning, match="training images changed"):
        run_training(load_recipe(RECIPE, over), out_dir=out, resume=True)


def test_missing_eval_paths_stop_the_run_before_any_training(data, tmp_path):
    from metasr_adapter.training.recipes import load_recipe

    out = tmp_path / "run"
    rec = load_recipe(RECIPE, _tiny(data, **{"eval.gt_dir": str(tmp_path / "nowhere")}))
    with pytest.raises(FileNotFoundError, match=r"eval.gt_dir = .*nowhere.*eval.gt_dir=null"):
        run_training(rec, out_dir=out)
    assert not (out / "checkpoint.pt").exists()  # before: every iteration ran, then the evaluation failed


def test_evaluation_settings_may_change_on_resume(data, tmp_path):
    from metasr_adapter.training.recipes import load_recipe

    out = tmp_path / "run"
    over = _tiny(data, **{"output.checkpoint_every": 2, "eval.gt_dir": "null"})
    os.environ[KILL_ENV] = "meta:2:raise"
    try:
        with pytest.raises(RuntimeError, match="simulated crash"):
            run_training(load_recipe(RECIPE, over), out_dir=out)
    finally:
        os.environ.pop(KILL_ENV, None)
    moved = _tiny(data, **{"output.checkpoint_every": 2, "eval.gt_dir": data["gt"], "eval.max_steps": 1})
    result = run_training(load_recipe(RECIPE, moved), out_dir=out, resume=True)  # refused as another recipe before
    assert sorted(result["psnr_meta_trained"]) == [0, 1]


# -- issue 20: training that wrecks its weights is stopped or flagged, naming the recipe key ----------------
@pytest.mark.parametrize("stage, settings, key, fix", [
    ("meta", {"meta.inner_lr": 1e30, "meta.inner_steps": 2}, "meta.inner_lr = 1e+30", "--set meta.inner_lr=1e+29"),
    ("pretrain", {"pretrain.lr": 1e30, "pretrain.iterations": 3, "output.pretrain_checkpoint_every": 1},
     "pretrain.lr = 1e+30", "--set pretrain.lr=1e+29"),
])
def test_a_diverging_stage_names_its_learning_rate_key(data, tmp_path, capsys, stage, settings, key, fix):
    """A NaN meta-loss caused by meta.inner_lr was reported by the final evaluation as "learning rate 0.02
    ... (lr=/--lr)", an option `metasr train` does not have; a diverging pretraining did not say how to fix it."""
    from metasr_adapter.cli.main import main

    out = tmp_path / "run"
    over = _tiny(data, **{"pretrain.iterations": 0, "meta.iterations": 2, "eval.max_steps": 1, **settings})
    assert main(["train", str(RECIPE), "--out", str(out), "--set", *over]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "diverged" in err and key in err and fix in err, err
    assert "--lr" not in err and "0.02" not in err
    if stage == "meta":
        assert "meta.meta_lr = 0.0001" in err  # the other rate, shown with its value
    ckpt = load_checked(out / "checkpoint.pt")  # the last checkpoint holds finite weights, not the diverged ones
    assert all(bool(torch.isfinite(v).all()) for v in ckpt["model"].values())


def test_collapsed_weights_are_flagged_and_make_train_exit_non_zero(data, tmp_path, capsys):
    """--set meta.meta_lr=1000 left the weights at ~8.5 dB (starting point ~27 dB) and `metasr train` exited 0."""
    from metasr_adapter.cli.main import main
    from metasr_adapter.training.train import COLLAPSE_EXIT

    out = tmp_path / "run"
    over = _tiny(data, **{"pretrain.iterations": 2, "pretrain.probe_every": 2, "meta.iterations": 2,
                          "meta.probe_every": 2, "meta.meta_lr": 1000, "eval.max_steps": 1,
                          "eval.probe_steps": "[0, 1]"})
    with pytest.warns(UserWarning, match="collapsed"):
        assert main(["train", str(RECIPE), "--out", str(out), "--set", *over]) == COLLAPSE_EXIT == 3
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith("metasr train: the trained weights collapsed") and "--allow-collapse" in last
    assert "below the starting weights" in last and "meta.meta_lr = 1000" in last and "--set meta.meta_lr=100" in last
    recs = MetricsLog(out / "metrics.jsonl").read()
    probes = [r for r in recs if r.get("probe")]
    assert [(r["stage"], r["step"]) for r in probes] == [("pretrain", 2), ("meta", 2)]
    assert "collapse" not in probes[0] and "meta.meta_lr = 1000" in probes[1]["collapse"]  # flagged at the probe
    assert any("collapse" in r for r in recs if r["stage"] == "eval")
    # the finished run: the same verdict on --resume, and --allow-collapse accepts it
    assert main(["train", str(RECIPE), "--out", str(out), "--resume", "--set", *over]) == 3
    assert main(["train", str(RECIPE), "--out", str(out), "--resume", "--allow-collapse", "--set", *over]) == 0


def test_a_run_exports_the_weights_of_its_last_checkpoint_with_their_learned_rates(
    data: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """`metasr train -o DIR --export-weights PATH`: mid-run, the checkpoint's tensors and learned rates; after
    the run, the same file as meta_trained.pth; the run folder is left as it was."""
    from metasr_adapter import MetaSR, load_model
    from metasr_adapter.adapt.schedules import PerParameterSchedule
    from metasr_adapter.cli.main import main
    from metasr_adapter.io.weights import read_metadata
    from metasr_adapter.training.recipes import load_recipe

    run = tmp_path / "run"
    rec = load_recipe(RECIPE, _tiny(data, **{"pretrain.iterations": 2, "meta.iterations": 4,
                                             "meta.learn_inner_lr": "true", "meta.inner_lr_meta_lr": 0.1,
                                             "eval.max_steps": 1, "eval.probe_steps": "[0, 1]",
                                             "eval.evaluate_start": "false"}))
    monkeypatch.setenv(KILL_ENV, "meta:3:raise")  # checkpoint at 2, crash after step 3
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_training(rec, out_dir=run)
    monkeypatch.delenv(KILL_ENV)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    snap = tmp_path / "snap.pth"
    assert main(["train", "-o", str(run), "--export-weights", str(snap)]) == 0
    assert "meta stage, step 2" in capsys.readouterr().out
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before
    ck = load_checked(run / "checkpoint.pt")
    got = _params(snap)
    assert got.keys() == ck["model"].keys() and all(torch.equal(got[k], ck["model"][k]) for k in got)
    rates = read_metadata(snap)["schedule"]["per_parameter"]
    want = ck["learner"]["log_inner_lr"].exp()
    assert sorted(rates) == sorted(got) and all(len(v) == 5 for v in rates.values())
    assert torch.allclose(torch.tensor([rates[n] for n in _params(snap)]), want)  # in the model's order
    assert not torch.allclose(want, torch.full_like(want, 0.01))  # learned: not the starting rate
    assert isinstance(MetaSR(load_model("mzsr", snap)).schedule, PerParameterSchedule)

    run_training(rec, out_dir=run, resume=True)  # finished: the export is the final weights
    assert main(["train", "-o", str(run), "--export-weights", str(snap)]) == 0
    final = _params(run / "meta_trained.pth")
    got = _params(snap)
    assert all(torch.equal(got[k], final[k]) for k in final)
    assert read_metadata(snap)["schedule"] == read_metadata(run / "meta_trained.pth")["schedule"]

    assert main(["train", "-o", str(tmp_path / "empty"), "--export-weights", str(snap)]) == 2
    assert "holds no run to export" in capsys.readouterr().err


def test_a_run_finished_at_its_checkpoint_keeps_the_meta_stages_time(resume_setup, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Stopped at a checkpoint and finished there (`--resume --set meta.iterations=STEP`), the run used to record
    no meta-stage seconds, so the weights' lineage lost the stage's training time."""
    from metasr_adapter.training.recipes import load_recipe

    over, _ = resume_setup
    run = tmp_path / "stopped"
    _crash_a_100_iteration_run_after_step_5(over, run, monkeypatch)  # checkpoint at 4
    took = float(load_checked(run / "checkpoint.pt")["elapsed"])
    assert took > 0
    run_training(load_recipe(RECIPE, [*over, "meta.iterations=4"]), out_dir=run, resume=True)
    done = load_checked(run / "checkpoint.pt")
    assert done["stage"] == "done" and done["stage_seconds"]["meta"] == pytest.approx(took)


def test_a_continued_lslr_run_starts_at_its_parents_rates_and_its_cosine_beta_resumes_exactly(
    data: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """meta.inner_lr_start=weights takes the learned rates saved with model.weights (they used to restart at
    meta.inner_lr), and meta.meta_lr_schedule=cosine is a function of the step: a crash and --resume give the
    uninterrupted run's weights (the restored optimiser's decayed rate must not become the new base)."""
    from metasr_adapter.io.weights import read_metadata
    from metasr_adapter.training.recipes import load_recipe
    from metasr_adapter.training.train import meta_lr_factor

    parent = tmp_path / "parent"
    run_training(load_recipe(RECIPE, _tiny(data, **{
        "pretrain.iterations": 2, "meta.iterations": 2, "meta.learn_inner_lr": "true", "meta.inner_lr_meta_lr": 0.2,
        "eval.gt_dir": "null"})), out_dir=parent)
    parent_rates = read_metadata(parent / "meta_trained.pth")["schedule"]["per_parameter"]
    assert any(abs(math.log(a / 0.01)) > 0.3 for v in parent_rates.values() for a in v)  # moved away from 0.01

    child = _tiny(data, **{
        "model.weights": parent / "meta_trained.pth", "pretrain.iterations": 0, "meta.iterations": 5,
        "meta.learn_inner_lr": "true", "meta.inner_lr_start": "weights", "meta.inner_lr_meta_lr": 1e-9,
        "meta.meta_lr": 1e-3, "meta.meta_lr_schedule": "cosine", "meta.meta_lr_min": 1e-5, "eval.gt_dir": "null"})
    ref = tmp_path / "child"
    run_training(load_recipe(RECIPE, child), out_dir=ref)
    rates = read_metadata(ref / "meta_trained.pth")["schedule"]["per_parameter"]
    assert rates.keys() == parent_rates.keys()
    assert all(rates[n] == pytest.approx(parent_rates[n], rel=1e-4) for n in rates)  # α's Adam rate ~0: kept

    run = tmp_path / "crashed"
    monkeypatch.setenv(KILL_ENV, "meta:3:raise")  # checkpoint at 2, crash after step 3
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_training(load_recipe(RECIPE, child), out_dir=run)
    monkeypatch.delenv(KILL_ENV)
    run_training(load_recipe(RECIPE, child), out_dir=run, resume=True)
    _assert_same_run(ref, run)

    constant = tmp_path / "constant"
    run_training(load_recipe(RECIPE, [*child, "meta.meta_lr_schedule=constant"]), out_dir=constant)
    a, b = _params(ref / "meta_trained.pth"), _params(constant / "meta_trained.pth")
    assert any(not torch.equal(a[k], b[k]) for k in a)  # the schedule is used

    m = load_recipe(RECIPE, child)["meta"]
    assert meta_lr_factor(m, 0, 5) == 1.0 and meta_lr_factor(m, 5, 5) == pytest.approx(1e-2)
    assert meta_lr_factor({**m, "meta_lr_schedule": "constant"}, 3, 5) == 1.0


def test_rates_from_weights_that_learned_none_are_refused_with_the_fix(data: dict[str, Path], tmp_path: Path) -> None:
    from metasr_adapter.training.recipes import load_recipe

    plain = tmp_path / "plain"
    run_training(load_recipe(RECIPE, _tiny(data, **{"pretrain.iterations": 1, "meta.iterations": 1,
                                                    "eval.gt_dir": "null"})), out_dir=plain)
    child = _tiny(data, **{"model.weights": plain / "meta_trained.pth", "pretrain.iterations": 0,
                           "meta.learn_inner_lr": "true", "meta.inner_lr_start": "weights", "eval.gt_dir": "null"})
    with pytest.raises(ValueError, match="carries no learned inner rates.*meta.inner_lr_start=recipe"):
        run_training(load_recipe(RECIPE, child), out_dir=tmp_path / "child")

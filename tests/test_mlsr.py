"""MLSR (Park et al., ECCV 2020): the paper's learning rates on [0, 1] images, Algorithm 1's first-order
meta-gradient, MLSR meta-training of RCAN and of a user-defined network through the recipe machinery, the CPU
recipes (recipes/idn_x2_cpu.yaml, recipes/mlsr_idn_x2_cpu.yaml) and benchmarks/mlsr_tables.py."""
from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from metasr_adapter.adapters.idn import IDN
from metasr_adapter.meta.learner import MAMLConfig, MetaLearner
from metasr_adapter.meta.tasks import MLSRTaskSampler, PatchPool
from metasr_adapter.training.recipes import load_recipe

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.filterwarnings("ignore:eval.gt_dir is not set"),
              pytest.mark.filterwarnings("ignore:.*smaller than the")]

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"
ALPHA_0_255, BETA_0_255 = 1e-5, 1e-6  # MLSR paper §4.1, for MSE on 0-255 pixel values


def _tiny_idn() -> IDN:
    return IDN(scale=2, num_feat=16, diff=4, num_blocks=1)


def _write(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.ascontiguousarray(img[:, :, ::-1]))


@pytest.fixture
def train_dir(tmp_path: Path, photo: np.ndarray) -> Path:
    d = tmp_path / "train"
    _write(d / "a.png", photo[:130, :120])
    _write(d / "b.png", photo[200:330, 250:380])
    return d


# ---------------------------------------------------------------------------------------------
# α and β: MSE on 0-255 values → MSE on [0, 1] images
# ---------------------------------------------------------------------------------------------
def _grads(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    names, params = zip(*net.named_parameters())
    return dict(zip(names, torch.autograd.grad(F.mse_loss(net(x), y), params)))


def test_paper_learning_rates_on_0_255_translate_to_unit_range_as_the_recipe_states() -> None:
    """IDN on 0-255 is IDN on [0, 1] with its biases x255 (convolutions, LeakyReLU and the bicubic skip are
    positively homogeneous). The 0-255 MSE gradient is then 255² x the [0, 1] one for every weight and 255 x for
    every bias: SGD's α becomes α·255² (weights) and α (biases); Adam's β stays β (weights), β/255 (biases)."""
    torch.manual_seed(0)
    net = _tiny_idn().double()
    with torch.no_grad():
        for n, p in net.named_parameters():
            if n.endswith("bias"):
                p.normal_(0.0, 0.05)  # biases that matter
    net255 = copy.deepcopy(net)
    with torch.no_grad():
        for n, p in net255.named_parameters():
            if n.endswith("bias"):
                p.mul_(255.0)
    gen = torch.Generator().manual_seed(1)
    batches = [(torch.rand(2, 3, 12, 12, generator=gen, dtype=torch.float64),
                torch.rand(2, 3, 24, 24, generator=gen, dtype=torch.float64)) for _ in range(3)]
    x, y = batches[0]
    torch.testing.assert_close(net255(255 * x), 255 * net(x))
    g1, g255 = _grads(net, x, y), _grads(net255, 255 * x, 255 * y)
    for n in g1:
        factor = 255.0 if n.endswith("bias") else 255.0**2
        torch.testing.assert_close(g255[n], factor * g1[n], rtol=1e-9, atol=0)

    def corresponds(a: nn.Module, b255: nn.Module) -> None:
        for (n, p), q in zip(a.named_parameters(), b255.parameters()):
            torch.testing.assert_close(q / (255.0 if n.endswith("bias") else 1.0), p, rtol=1e-9, atol=1e-14)

    # SGD (the inner steps and test-time adaptation): one step each way keeps the networks equivalent
    sgd1, sgd255 = copy.deepcopy(net), copy.deepcopy(net255)
    with torch.no_grad():
        for n, p in sgd1.named_parameters():
            p.sub_((ALPHA_0_255 if n.endswith("bias") else ALPHA_0_255 * 255.0**2) * g1[n])
        for n, p in sgd255.named_parameters():
            p.sub_(ALPHA_0_255 * g255[n])
    corresponds(sgd1, sgd255)
    # ... and the single α the recipe uses for every parameter is that translation of the weights' rate
    r = load_recipe(RECIPES / "mlsr_idn_x2_cpu.yaml")
    assert r["meta"]["inner_lr"] == pytest.approx(ALPHA_0_255 * 255.0**2) == r["eval"]["schedule"]

    # Adam (the outer step), several steps with different batches: β for weights, β/255 for biases (ε = 0)
    a1, a255 = copy.deepcopy(net), copy.deepcopy(net255)

    def groups(m: nn.Module, bias_lr: float) -> list[dict]:
        named = list(m.named_parameters())
        return [{"params": [p for n, p in named if not n.endswith("bias")], "lr": BETA_0_255},
                {"params": [p for n, p in named if n.endswith("bias")], "lr": bias_lr}]

    opt1 = torch.optim.Adam(groups(a1, BETA_0_255 / 255.0), eps=0.0)
    opt255 = torch.optim.Adam(groups(a255, BETA_0_255), eps=0.0)
    for bx, by in batches:
        for m, opt, s in ((a1, opt1, 1.0), (a255, opt255, 255.0)):
            opt.zero_grad()
            F.mse_loss(m(s * bx), s * by).backward()
            opt.step()
    corresponds(a1, a255)
    assert not torch.equal(a1.features[0].weight, net.features[0].weight)


# ---------------------------------------------------------------------------------------------
# Algorithm 1: the first-order meta-gradient
# ---------------------------------------------------------------------------------------------
def test_first_order_mlsr_meta_gradient_is_algorithm_1(train_dir: Path) -> None:
    """The learner's meta-gradient = mean over tasks of ∇ L2(f(LR; θ_i), HR) at θ_i, the weights after 5 SGD
    steps on L2(f(LR↓; θ), LR) (Algorithm 1 lines 6-8, first order)."""
    pool = PatchPool(train_dir, patch_size=32, stride=32, grad_threshold=-100.0).build()
    batch = MLSRTaskSampler(pool, meta_batch=2, task_batch=1, seed=3).sample(0)
    torch.manual_seed(0)
    net = _tiny_idn()
    alpha = ALPHA_0_255 * 255.0**2
    cfg = MAMLConfig(inner_steps=5, inner_lr=alpha, first_order=True, meta_lr=1e-5, loss_weighting="last")
    learner = MetaLearner(net, cfg, loss_fn="l2")
    info = learner.meta_gradient(batch)
    got = {n: p.grad.clone() for n, p in net.named_parameters()}

    theta = {n: p.detach() for n, p in net.named_parameters()}
    expected = {n: torch.zeros_like(p) for n, p in theta.items()}
    queries = []
    for t in range(2):
        son, lr, hr = batch.support_x[t], batch.support_y[t], batch.query_y[t]
        fast = dict(theta)
        for _ in range(5):
            w = {n: v.clone().requires_grad_(True) for n, v in fast.items()}
            g = torch.autograd.grad(F.mse_loss(functional_call(net, w, (son,)), lr), list(w.values()))
            fast = {n: fast[n] - alpha * gi for n, gi in zip(w, g)}
        w = {n: v.clone().requires_grad_(True) for n, v in fast.items()}
        q = F.mse_loss(functional_call(net, w, (lr,)), hr)
        for n, gi in zip(w, torch.autograd.grad(q, list(w.values()))):
            expected[n] += gi / 2
        queries.append(float(q.detach()))
    for n in got:
        torch.testing.assert_close(got[n], expected[n], rtol=2e-4, atol=1e-9)
    assert info["meta_loss"] == pytest.approx(np.mean(queries), rel=1e-5)
    # the inner steps on LR↓ → LR lowered the LR → HR loss (the point of MLSR's tasks)
    assert info["query_losses"][-1] < info["query_losses"][0]


# ---------------------------------------------------------------------------------------------
# The same algorithm on any network: RCAN and a user-defined module, through the recipe
# ---------------------------------------------------------------------------------------------
class UserSR(nn.Module):
    """A network the package does not know: two convolutions, a sub-pixel upsampler, a bicubic skip."""

    upsample_input = False

    def __init__(self, scale: int = 2, feat: int = 8) -> None:
        super().__init__()
        self.scale = scale
        self.body = nn.Sequential(nn.Conv2d(3, feat, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(feat, 3 * scale * scale, 3, padding=1), nn.PixelShuffle(scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=self.scale, mode="bicubic", align_corners=False) + self.body(x)


USER_ARCH = "test_mlsr_user_sr"


def _mlsr_tiny(train_dir: Path, **extra: object) -> list[str]:
    """recipes/mlsr_idn_x2_cpu.yaml's MLSR settings (α, β, 5 FO inner steps, L2, 'last') on a tiny budget."""
    settings = {"device": "cpu", "data.train_dir": train_dir, "data.patch_size": 32, "data.stride": 32,
                "meta.iterations": 3, "meta.meta_batch": 2, "meta.probe_every": 0, "eval.gt_dir": "null",
                "output.checkpoint_every": 2, "output.log_every": 1, "output.progress": "false"}
    settings.update(extra)
    return [f"{k}={v}" for k, v in settings.items()]


def _check_mlsr_run(out: Path, arch: str, photo: np.ndarray) -> None:
    from metasr_adapter import MetaSR
    from metasr_adapter.io.pretrained import load_model
    from metasr_adapter.io.weights import read_metadata, read_weights
    from metasr_adapter.training.run_state import MetricsLog

    recs = [r for r in MetricsLog(out / "metrics.jsonl").read() if r["stage"] == "meta"]
    assert [r["step"] for r in recs] == [1, 2, 3]
    assert all(np.isfinite(r["meta_loss"]) and np.isfinite(r["query_losses"][-1]) for r in recs)
    # the recipe skips the zero-weight query losses (log_query_losses: false): logged as null
    assert all(r["query_losses"][:-1] == [None] * 4 for r in recs)
    assert all(r["meta_loss"] == pytest.approx(r["query_losses"][-1]) for r in recs)
    start, final = read_weights(out / "start_weights.pth"), read_weights(out / "meta_trained.pth")
    assert start.keys() == final.keys()
    moved = [k for k in start if not torch.equal(start[k], final[k])]
    assert len(moved) == len(start), f"meta-training left {set(start) - set(moved)} unchanged"
    assert all(bool(torch.isfinite(v).all()) for v in final.values())
    # the meta-trained weights rebuild their network and MetaSR adapts them with the recipe's α and L2
    meta = read_metadata(out / "meta_trained.pth")
    assert (meta["arch"], meta["loss"], meta["schedule"]) == (arch, "l2", pytest.approx(0.65025))
    msr = MetaSR(load_model(weights=out / "meta_trained.pth"), meta["scale"], schedule=meta["schedule"],
                 loss=meta["loss"])
    lr = photo[100:140, 200:240]
    sr0, (sr3, info) = msr.adapt(lr, "bicubic", 0), msr.adapt(lr, "bicubic", 3, return_info=True)
    assert sr3.shape == (80, 80, 3) and sr0.shape == sr3.shape
    assert np.all(np.isfinite(info.losses)) and info.losses[-1] < info.losses[0]
    assert np.abs(sr3.astype(int) - sr0.astype(int)).max() > 0


def test_mlsr_meta_training_of_rcan_end_to_end(train_dir: Path, tmp_path: Path, photo: np.ndarray) -> None:
    """MLSR on RCAN, started from a weights file as recipes/mlsr_idn_x2_cpu.yaml starts from the pretrained IDN."""
    from metasr_adapter.adapters.rcan import RCAN
    from metasr_adapter.io.weights import save_weights
    from metasr_adapter.training.train import run_training

    kwargs = {"num_feat": 8, "num_group": 1, "num_block": 1, "squeeze_factor": 4}
    torch.manual_seed(0)
    start = tmp_path / "rcan_start.pth"
    save_weights(RCAN(scale=2, **kwargs), start, arch="rcan", arch_kwargs={"scale": 2, **kwargs})
    over = _mlsr_tiny(train_dir, **{"model.name": "rcan", "model.arch_kwargs": json.dumps(kwargs),
                                    "model.weights": start})
    out = tmp_path / "rcan"
    run_training(load_recipe(RECIPES / "mlsr_idn_x2_cpu.yaml", over), out_dir=out)
    from metasr_adapter.io.weights import read_weights

    assert all(torch.equal(a, b) for a, b in zip(read_weights(start).values(),
                                                 read_weights(out / "start_weights.pth").values()))
    _check_mlsr_run(out, "rcan", photo)


def test_mlsr_meta_training_of_a_user_defined_network_end_to_end(train_dir: Path, tmp_path: Path,
                                                                 photo: np.ndarray) -> None:
    """Any nn.Module: registered under a name, meta-trained by the MLSR recipe from random initialisation."""
    from metasr_adapter.adapters import list_models, register_model
    from metasr_adapter.training.train import run_training

    if USER_ARCH not in list_models():
        register_model(USER_ARCH, UserSR)
    over = _mlsr_tiny(train_dir, **{"model.name": USER_ARCH, "model.weights": "null"})
    out = tmp_path / "user"
    run_training(load_recipe(RECIPES / "mlsr_idn_x2_cpu.yaml", over), out_dir=out)
    _check_mlsr_run(out, USER_ARCH, photo)


# ---------------------------------------------------------------------------------------------
# benchmarks/mlsr_tables.py
# ---------------------------------------------------------------------------------------------
def _tables_module():
    spec = importlib.util.spec_from_file_location("mlsr_tables", ROOT / "benchmarks" / "mlsr_tables.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_mlsr_tables_smoke_resume_and_skip(tmp_path: Path, photo: np.ndarray, monkeypatch, capsys) -> None:
    tables = _tables_module()
    sets = {"set5": tmp_path / "s5", "urban100": tmp_path / "u100"}
    _write(sets["set5"] / "a.png", photo[100:164, 200:264])
    _write(sets["set5"] / "b.png", photo[300:364, 100:164])
    _write(sets["urban100"] / "c.png", photo[40:104, 40:120])
    torch.manual_seed(0)
    ml = tmp_path / "ml.pth"
    from metasr_adapter.io.weights import save_weights

    save_weights(IDN(scale=2), ml, arch="idn", arch_kwargs={"scale": 2}, schedule=0.5, loss="l2")
    out = tmp_path / "out"
    argv = ["--set5", str(sets["set5"]), "--urban100", str(sets["urban100"]), "--set14", str(tmp_path / "none"),
            "--bsd100", str(tmp_path / "none"), "--weights-naive", "random", "--weights-ml", str(ml),
            "--steps", "0", "2", "--curve-steps", "0", "1", "--table5-models", "idn-ml", "zssr", "--limit", "1",
            "--limits", "set5=2", "--zssr-max-iters", "2", "--out", str(out), "--quiet"]
    assert tables.main(argv) == 0
    printed = capsys.readouterr().out
    assert "skipping set14" in printed and "skipping bsd100" in printed
    cells = sorted(p.relative_to(out / "cells").as_posix() for p in (out / "cells").rglob("*.json"))
    assert cells == ["table3/set5/idn-ml/a.json", "table3/set5/idn-ml/b.json", "table3/set5/idn/a.json",
                     "table3/set5/idn/b.json", "table3/urban100/idn-ml/c.json", "table3/urban100/idn/c.json",
                     "table5/set5/idn-ml/a.json", "table5/set5/idn-ml/b.json", "table5/set5/zssr/a.json",
                     "table5/set5/zssr/b.json", "table5/urban100/idn-ml/c.json"]
    cell = json.loads((out / "cells/table3/urban100/idn/c.json").read_text())
    assert set(cell["psnr"]) == {"0", "1", "2", "bicubic"}  # the plot set also scores the curve steps
    assert cell["identity"]["alpha"] == 0.5  # the IDN-ML weights' own α, for both networks
    k5 = json.loads((out / "cells/table5/set5/idn-ml/a.json").read_text())["identity"]["kernel"]
    assert np.array(k5).shape == (5, 5) and abs(np.sum(k5) - 1) < 1e-9
    k5b = json.loads((out / "cells/table5/set5/idn-ml/b.json").read_text())["identity"]["kernel"]
    assert not np.allclose(k5, k5b)  # one kernel per image
    md = (out / "mlsr_tables.md").read_text()
    assert "## Table 3" in md and "## Table 5" in md and "| IDN-ML | 2 |" in md and "set5 (n=2)" in md
    summary = json.loads((out / "mlsr_tables.json").read_text())["results"]
    assert summary["table3/set5"]["images"] == ["a", "b"]
    assert (out / "fig3_urban100.png").is_file()
    assert (out / "table5_set5.png").is_file() and not (out / "table5_urban100.png").exists()  # ZSSR ran on Set5

    # a second run finds every cell done; changing α recomputes the IDN cells
    def boom(*a, **k):
        raise AssertionError("a finished cell was recomputed")

    monkeypatch.setattr(tables, "run_idn_cell", boom)
    assert tables.main(argv) == 0
    with pytest.raises(AssertionError, match="recomputed"):
        tables.main(argv + ["--lr", "0.1"])
    # no data at all: a message and exit 0
    none = ["--set5", str(tmp_path / "x"), "--set14", str(tmp_path / "x"), "--bsd100", str(tmp_path / "x"),
            "--urban100", str(tmp_path / "x"), "--out", str(tmp_path / "o2")]
    assert tables.main(none) == 0
    assert "nothing to do" in capsys.readouterr().out


def test_mlsr_tables_one_network_alone(tmp_path: Path, photo: np.ndarray, capsys) -> None:
    """--table3-models idn: only the naive network's cells (its partner may still be training); the report
    lists what exists."""
    tables = _tables_module()
    _write(tmp_path / "s5" / "a.png", photo[100:164, 200:264])
    out = tmp_path / "out"
    none = str(tmp_path / "none")
    argv = ["--set5", str(tmp_path / "s5"), "--urban100", none, "--set14", none, "--bsd100", none,
            "--weights-naive", "random", "--weights-ml", str(tmp_path / "not_trained_yet.pth"), "--protocols", "table3",
            "--table3-models", "idn", "--steps", "0", "1", "--out", str(out), "--quiet"]
    # a cell left by an earlier run of the other network (other weights): not this run's, so never reported
    stale = out / "cells" / "table3" / "set5" / "idn-ml" / "a.json"
    stale.parent.mkdir(parents=True)
    stale.write_text(json.dumps({"psnr": {"0": 99.0, "1": 99.0, "bicubic": 20.0}, "ssim": {"0": 1.0, "1": 1.0,
                                 "bicubic": 0.5}, "identity": {"weights": "sha256:someone-else"}}))
    assert tables.main(argv) == 0
    cells = sorted(p.relative_to(out / "cells").as_posix() for p in (out / "cells").rglob("*.json"))
    assert cells == ["table3/set5/idn-ml/a.json", "table3/set5/idn/a.json"]
    md = (out / "mlsr_tables.md").read_text()
    assert "IDN (naive)" in md and "99.00" not in md and "| IDN-ML |" not in md
    assert list(json.loads((out / "mlsr_tables.json").read_text())["results"]["table3/set5"]["models"]) == ["idn"]
    # a Table 5 run still reports the Table 3 cells of the models it names
    assert tables.main(argv[:argv.index("--protocols")] + ["--protocols", "table5", "--table5-models", "idn",
                                                            "--table3-models", "idn", "--steps", "0", "1",
                                                            "--out", str(out), "--quiet"]) == 0
    results = json.loads((out / "mlsr_tables.json").read_text())["results"]
    assert sorted(results) == ["table3/set5", "table5/set5"]


# ---------------------------------------------------------------------------------------------
# tools/package_weights.py: a pretraining-only run, and a run chained from bundled weights
# ---------------------------------------------------------------------------------------------
def _packager():
    spec = importlib.util.spec_from_file_location("package_weights", ROOT / "tools" / "package_weights.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_package_weights_chains_the_mlsr_run_to_its_bundled_parent(train_dir: Path, tmp_path: Path) -> None:
    from metasr_adapter.io.weights import read_metadata, read_weights
    from metasr_adapter.training.train import run_training

    pack = _packager()
    dest = tmp_path / "weights"
    tiny_idn = json.dumps({"num_feat": 16, "diff": 4, "num_blocks": 1})
    pre = tmp_path / "idn"
    run_training(load_recipe(RECIPES / "idn_x2_cpu.yaml", [
        "device=cpu", f"data.train_dir={train_dir}", f"model.arch_kwargs={tiny_idn}", "pretrain.iterations=2",
        "pretrain.batch_size=2", "pretrain.patch_size=32", "pretrain.stride=32", "pretrain.probe_every=0",
        "eval.gt_dir=null", "output.progress=false"]), out_dir=pre)
    assert pack.main([str(pre), "--name", "idn_tiny", "--description", "tiny IDN", "--dest", str(dest)]) == 0
    parent = json.loads((dest / "idn_tiny.json").read_text())
    assert parent["lineage"]["start"].startswith("random initialisation")
    assert list(parent["lineage"]["stages"]) == ["pretrain"]
    assert read_metadata(dest / "idn_tiny.safetensors")["arch_kwargs"]["num_feat"] == 16
    # trained on bicubic pairs: recorded as such (the bundled-weights lookup for --kernel bicubic reads it)
    assert read_metadata(pre / "meta_trained.pth")["ds_method"] == "bicubic" == parent["ds_method"]
    assert read_metadata(dest / "idn_tiny.safetensors")["ds_method"] == "bicubic"
    assert "Stage 1, supervised pretraining on bicubic-degraded pairs: 2 steps" in (dest / "idn_tiny.md").read_text()
    before = (dest / "idn_tiny.safetensors").read_bytes()
    assert pack.main([str(pre), "--name", "idn_tiny", "--description", "tiny IDN, again", "--dest", str(dest)]) == 0
    assert (dest / "idn_tiny.safetensors").read_bytes() == before  # re-packaging keeps the file and its sha256
    assert json.loads((dest / "idn_tiny.json").read_text())["sha256"] == parent["sha256"]

    child = tmp_path / "mlsr"
    over = _mlsr_tiny(train_dir, **{"model.arch_kwargs": tiny_idn, "model.weights": dest / "idn_tiny.safetensors",
                                    "meta.iterations": 2})
    run_training(load_recipe(RECIPES / "mlsr_idn_x2_cpu.yaml", over), out_dir=child)
    with pytest.raises(SystemExit, match="--parent NAME"):
        pack.main([str(child), "--name", "x", "--description", "x", "--dest", str(dest)])
    assert pack.main([str(child), "--name", "idn_tiny_ml", "--description", "tiny IDN-ML", "--parent", "idn_tiny",
                      "--dest", str(dest)]) == 0
    info = json.loads((dest / "idn_tiny_ml.json").read_text())
    lin = info["lineage"]
    assert lin["parent"]["name"] == "idn_tiny" and lin["parent"]["sha256"] == parent["sha256"]
    assert "idn_tiny" in lin["start"] and list(lin["stages"]) == ["meta"] and lin["stages"]["meta"]["tasks"] == "mlsr"
    card = (dest / "idn_tiny_ml.md").read_text()
    assert "Parent `idn_tiny`" in card and "MLSR (first-order MAML" in card and "first order throughout" in card
    assert info["schedule"] == pytest.approx(0.65025) and info["loss"] == "l2" and info["ds_method"] == "bicubic"
    # MLSR table rows enter the card only when measured with these weights (the run's file or the packaged one)
    from metasr_adapter.io.weights import tensor_fingerprint

    own = tensor_fingerprint(read_weights(child / "meta_trained.pth"))
    row = {"mean_psnr": {"0": 30.0, "5": 30.1}, "mean_ssim": {"0": 0.9, "5": 0.91}}
    tables_json = tmp_path / "mlsr_tables.json"
    tables_json.write_text(json.dumps({"results": {
        "table3/set5": {"images": ["a"], "models": {"idn-ml": {**row, "weights": own}}},
        "table3/bsd100": {"images": ["b"], "models": {"idn-ml": {**row, "weights": "tensors:other-weights"}}}}}))
    assert pack.main([str(child), "--name", "idn_tiny_ml", "--description", "tiny IDN-ML", "--parent", "idn_tiny",
                      "--dest", str(dest), "--mlsr-tables", str(tables_json), "--mlsr-model", "idn-ml"]) == 0
    assert list(json.loads((dest / "idn_tiny_ml.json").read_text())["metrics"]["mlsr_tables"]) == ["table3/set5"]
    trained, shipped = read_weights(child / "meta_trained.pth"), read_weights(dest / "idn_tiny_ml.safetensors")
    assert trained.keys() == shipped.keys() and all(torch.equal(trained[k], shipped[k]) for k in trained)
    # a recipe may name bundled weights (model.weights: NAME): the run starts from them, and the packager
    # takes the name as the parent
    from metasr_adapter.io import pretrained

    bundled = pretrained.WeightsInfo(**{**parent, "filename": str(dest / "idn_tiny.safetensors")})
    pretrained.BUNDLED_WEIGHTS["idn_tiny"] = bundled
    try:
        named = tmp_path / "named"
        run_training(load_recipe(RECIPES / "mlsr_idn_x2_cpu.yaml", _mlsr_tiny(
            train_dir, **{"model.arch_kwargs": tiny_idn, "model.weights": "idn_tiny", "meta.iterations": 1})),
            out_dir=named)
    finally:
        del pretrained.BUNDLED_WEIGHTS["idn_tiny"]
    start, bundled_tensors = read_weights(named / "start_weights.pth"), read_weights(dest / "idn_tiny.safetensors")
    assert all(torch.equal(start[k], bundled_tensors[k]) for k in bundled_tensors)
    assert pack.main([str(named), "--name", "idn_tiny_ml2", "--description", "x", "--dest", str(dest)]) == 0
    assert json.loads((dest / "idn_tiny_ml2.json").read_text())["lineage"]["parent"]["name"] == "idn_tiny"
    # a parent whose tensors are not the run's start is refused
    other = tmp_path / "other"
    run_training(load_recipe(RECIPES / "idn_x2_cpu.yaml", [
        "device=cpu", "seed=1", f"data.train_dir={train_dir}", f"model.arch_kwargs={tiny_idn}", "pretrain.iterations=1",
        "pretrain.batch_size=2", "pretrain.patch_size=32", "pretrain.stride=32", "pretrain.probe_every=0",
        "eval.gt_dir=null", "output.progress=false"]), out_dir=other)
    assert pack.main([str(other), "--name", "idn_other", "--description", "x", "--dest", str(dest)]) == 0
    with pytest.raises(SystemExit, match="must start from exactly those weights"):
        pack.main([str(child), "--name", "y", "--description", "y", "--parent", "idn_other", "--dest", str(dest)])
    # weights without the metadata metasr train records: a clear refusal, not a KeyError
    bare = tmp_path / "bare"
    bare.mkdir()
    torch.save(read_weights(child / "meta_trained.pth"), bare / "meta_trained.pth")
    with pytest.raises(SystemExit, match="metadata lacks arch"):
        pack.main([str(bare), "--name", "z", "--description", "z", "--dest", str(dest)])


def test_package_weights_checks_the_parent_of_a_fine_tuning_run(train_dir: Path, tmp_path: Path) -> None:
    """A photo fine-tuning run's start_weights.pth holds its result, so the run records what it loaded."""
    from metasr_adapter.io.weights import read_metadata, read_weights, tensor_fingerprint
    from metasr_adapter.training.train import run_training

    pack = _packager()
    dest = tmp_path / "weights"
    tiny_idn = json.dumps({"num_feat": 16, "diff": 4, "num_blocks": 1})
    base = ["device=cpu", f"data.train_dir={train_dir}", f"model.arch_kwargs={tiny_idn}", "pretrain.iterations=1",
            "pretrain.batch_size=2", "pretrain.patch_size=32", "pretrain.stride=32", "pretrain.probe_every=0",
            "eval.gt_dir=null", "output.progress=false"]
    for name, seed in (("idn_tiny", 0), ("idn_other", 1)):
        run_training(load_recipe(RECIPES / "idn_x2_cpu.yaml", [*base, f"seed={seed}"]), out_dir=tmp_path / name)
        assert pack.main([str(tmp_path / name), "--name", name, "--description", "x", "--dest", str(dest)]) == 0
    tuned = tmp_path / "tuned"
    run_training(load_recipe(RECIPES / "idn_x2_photo_cpu.yaml", [
        *base, f"model.weights={dest / 'idn_tiny.safetensors'}", "pretrain.iterations=2"]), out_dir=tuned)
    recorded = read_metadata(tuned / "start_weights.pth")["parent_fingerprint"]
    assert recorded == tensor_fingerprint(read_weights(dest / "idn_tiny.safetensors"))
    assert recorded != tensor_fingerprint(read_weights(tuned / "start_weights.pth"))  # it did fine-tune
    with pytest.raises(SystemExit, match="must start from exactly those weights"):
        pack.main([str(tuned), "--name", "t", "--description", "t", "--parent", "idn_other", "--dest", str(dest)])
    assert pack.main([str(tuned), "--name", "idn_tiny_photo", "--description", "t", "--parent", "idn_tiny",
                      "--dest", str(dest)]) == 0
    info = json.loads((dest / "idn_tiny_photo.json").read_text())
    assert info["lineage"]["parent"]["name"] == "idn_tiny" and info["lineage"]["stages"]["pretrain"]["fine_tuned"]
    assert info["degradation"]["family"] == "photo"


def test_package_weights_finds_a_parent_among_the_bundled_weights(tmp_path: Path) -> None:
    pack = _packager()
    assert pack._parent_sidecar("idn_x2_bicubic", tmp_path) == pack.WEIGHTS_DIR / "idn_x2_bicubic.json"
    (tmp_path / "idn_x2_bicubic.json").write_text("{}")
    assert pack._parent_sidecar("idn_x2_bicubic", tmp_path) == tmp_path / "idn_x2_bicubic.json"  # --dest first
    assert pack._parent_sidecar("no_such_weights", tmp_path) is None


def test_the_gradient_probe_measures_first_and_second_order_meta_gradients(train_dir: Path, tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("mlsr_gradient_probe", ROOT / "benchmarks" / "mlsr_gradient_probe.py")
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    out = tmp_path / "probe.json"
    assert probe.main(["--weights", "random", "--set", f"data.train_dir={train_dir}", "data.patch_size=32",
                       "data.stride=32", "--tasks", "2", "--alphas", "0.0", "0.1", "--json", str(out)]) == 0
    zero, small = json.loads(out.read_text())["rows"]
    # α = 0: no step, so θ' = θ and all three gradients coincide
    assert zero["rel_displacement"] == 0 and zero["query_psnr_theta"] == zero["query_psnr_adapted"]
    assert zero["cos_fo_sup"] == pytest.approx(1, abs=1e-5) and zero["cos_so_sup"] == pytest.approx(1, abs=1e-5)
    assert small["rel_displacement"] > 0 and small["cos_fo_sup"] < 1 - 1e-7
    assert out.with_suffix(".md").read_text().count("\n|") >= 3


def test_the_model_card_states_the_kernel_variances_of_the_runs_own_recipe() -> None:
    """The card said "[1, 5)" for every MZSR run, also for the sharp-kernel recipe that draws from 0.2."""
    pack = _packager()
    sharp = load_recipe(RECIPES / "mzsr_x2_cpu_sharp_lslr.yaml")
    official = load_recipe(RECIPES / "mzsr_x2_cpu.yaml")
    assert pack.kernel_range_line(sharp) == "* Trained on Gaussian kernels with variances in [0.2, 5) (x2); g^d_0.2 lies inside."
    assert pack.kernel_range_line(official).startswith("* Trained on Gaussian kernels with variances in [1, 5) (x2); "
                                                       "kernels far outside")


def test_the_model_card_names_kernels_of_the_weights_own_subsampling() -> None:
    """A g^b card said "g^d_0.2 lies inside", naming a kernel of the other subsampling."""
    pack = _packager()
    bicubic = load_recipe(RECIPES / "mzsr_x2_cpu_official_order_sharp_lslr_bicubic.yaml")
    line = pack.kernel_range_line(bicubic)
    assert line == "* Trained on Gaussian kernels with variances in [0.2, 5) (x2); sharp kernels lie inside."


def test_the_model_card_says_second_order_throughout_when_no_iteration_is_first_order() -> None:
    """The card said "first order until 0, second order after" for a run that was second order from the start."""
    pack = _packager()
    stage = {"iterations": 1500, "meta_batch": 5, "task_batch": 4, "first_order_until": 0, "seconds": 3600.0}
    (line,) = pack._stage_lines({"stages": {"meta": stage}})
    assert "second order throughout" in line and "first order until" not in line
    (mixed,) = pack._stage_lines({"stages": {"meta": dict(stage, first_order_until=100)}})
    assert "first order until 100, second order after" in mixed


def test_the_model_card_counts_cpu_hours_per_session_and_the_parent_at_its_own_threads(tmp_path: Path) -> None:
    """The card multiplied the run and its parent by the largest thread count of any session (13.1 CPU-hours for
    the LSLR run, whose sessions ran at 1 and 2 threads and whose parent ran at 1)."""
    pack = _packager()
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"stage": "meta", "run_seconds": 1800.0, "threads": 1}, {"stage": "meta", "run_seconds": 3600.0, "threads": 2}]))
    assert pack._mean_threads(run, [1, 2]) == pytest.approx(1.5)
    assert pack._mean_threads(tmp_path, [1, 2]) == 2.0  # no metrics: the largest thread count, as before
    lin = {"train_seconds": 3600.0, "threads": [1, 2], "mean_threads": 1.5,
           "parent": {"train_seconds": 1800.0, "cpu_seconds": 1800.0}}
    assert pack.cpu_seconds(lin) == pytest.approx(3600 * 1.5 + 1800)
    old_parent = pack.cpu_seconds({"train_seconds": 1800.0, "threads": [1]})  # a lineage packaged before
    assert old_parent == 1800.0

"""Meta-training over processes with torch.distributed: the same result as one process (gloo, CPU)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from metasr_adapter import distributed as ddp
from metasr_adapter.adapters.mzsr import MZSRNet
from metasr_adapter.meta.learner import MAMLConfig, MetaLearner, TaskBatch

ROOT = Path(__file__).resolve().parents[1]


def _batch(mb: int = 3) -> TaskBatch:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(mb, 2, 3, 16, 16, generator=g)
    y = (x + 0.1 * torch.rand(mb, 2, 3, 16, 16, generator=g)).clamp(0, 1)
    return TaskBatch(support_x=x[:, :1], support_y=y[:, :1], query_x=x[:, 1:], query_y=y[:, 1:])


def _train(first_order: bool, steps: int = 3) -> tuple[dict[str, torch.Tensor], list[dict]]:
    torch.manual_seed(0)
    learner = MetaLearner(MZSRNet(width=8, depth=3), MAMLConfig(first_order=first_order, meta_lr=1e-3, inner_steps=2))
    infos = [learner.meta_step(_batch(), s) for s in range(steps)]
    return {k: v.detach().clone() for k, v in learner.model.state_dict().items()}, infos


def _launch(args: list[str], timeout: float = 120, kill: str | None = None) -> subprocess.CompletedProcess:
    """``torchrun --standalone`` in its own session; on a timeout the whole group is killed. ``kill``:
    the training's kill hook (``STAGE:STEP``) for the ranks."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", *args]
    env = dict(os.environ, OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo", METASR_SHARED="/nonexistent")
    env.pop("METASR_TRAIN_KILL_AFTER", None)
    if kill:
        env["METASR_TRAIN_KILL_AFTER"] = kill
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out_text, err_text = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out_text, err_text)


def _rank_main(out: str, first_order: bool) -> None:
    """Run by each torchrun rank (``python tests/test_distributed.py OUT 0|1``)."""
    torch.set_num_threads(1)
    ddp.init_from_env("cpu")
    state, infos = _train(first_order)
    if ddp.is_main():
        torch.save({"state": state, "infos": infos}, out)
    ddp.exit_rank(0)


@pytest.mark.parametrize("first_order", [True, False])
def test_two_gloo_processes_give_the_one_process_meta_training(tmp_path, first_order):
    """Meta-batch 3 over 2 ranks (an uneven 2 + 1 split): the same losses and weights after 3 Adam steps."""
    out = tmp_path / "rank0.pt"
    res = _launch(["--nproc_per_node", "2", str(Path(__file__)), str(out), str(int(first_order))])
    assert res.returncode == 0, res.stderr[-3000:]
    got = torch.load(out, weights_only=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the ranks' thread count
    try:
        state, infos = _train(first_order)
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(got["infos"], infos):
        assert a["meta_loss"] == pytest.approx(b["meta_loss"], rel=1e-5)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
    for k in state:
        torch.testing.assert_close(got["state"][k], state[k], rtol=1e-5, atol=1e-6)


def test_shards_cover_the_batch_and_refuse_empty_ranks(monkeypatch):
    monkeypatch.setattr(ddp, "world_size", lambda: 3)
    parts = []
    for r in range(3):
        monkeypatch.setattr(ddp, "rank", lambda r=r: r)
        parts.append(ddp.shard(5))
    assert parts == [slice(0, 2), slice(2, 4), slice(4, 5)]
    with pytest.raises(ValueError, match=r"meta_batch=2 cannot be split over 3 processes.*use at most 2 processes"):
        ddp.shard(2)


def test_exit_rank_flushes_and_skips_the_interpreter_teardown():
    """exit_rank ends the process with its code, output flushed, before atexit handlers (the teardown in
    which gloo's threads can abort a finished rank)."""
    code = ("import atexit, sys; from metasr_adapter import distributed as ddp; "
            "atexit.register(lambda: print('TEARDOWN RAN', flush=True)); "
            "print('done', end=''); print('err', end='', file=sys.stderr); ddp.exit_rank(5)")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 5
    assert res.stdout == "done" and res.stderr == "err"


def _torchrun(out: Path, nproc: int, extra: list[str], resume: bool = False, kill: str | None = None):
    tiny = ["device=cpu", "model.width=8", "model.depth=3", f"data.train_dir={out.parent / 'train'}",
            "data.patch_size=32", "data.num_workers=0", "data.grad_threshold=-100", "pretrain.iterations=3",
            "pretrain.batch_size=4", "pretrain.patch_size=32", "meta.iterations=4", "meta.meta_batch=3",
            "meta.task_batch=1", "eval.gt_dir=null", "output.checkpoint_every=1", "output.log_every=1",
            "output.progress=false",
            *extra]
    args = ["--nproc_per_node", str(nproc), "-m", "metasr_adapter.cli", "train", str(ROOT / "recipes" / "mzsr_x2.yaml"),
            "--out", str(out), "--set", *tiny] + (["--resume"] if resume else [])
    return _launch(args, kill=kill)


@pytest.fixture
def train_images(tmp_path, photo):
    from metasr_adapter.ops.imageio import write_image

    for i, (t, l) in enumerate([(0, 0), (200, 250), (380, 0)]):
        write_image(tmp_path / "train" / f"{i}.png", photo[t : t + 200, l : l + 220])
    return tmp_path / "train"


def _final(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "meta_trained.pth", weights_only=True)["params"]


def test_metasr_train_under_torchrun_matches_one_process_and_resumes(tmp_path, train_images):
    one, two, killed = tmp_path / "one", tmp_path / "two", tmp_path / "killed"
    for run, n in ((one, 1), (two, 2)):
        res = _torchrun(run, n, [])
        assert res.returncode == 0, res.stderr[-3000:]
    for k, v in _final(one).items():
        torch.testing.assert_close(_final(two)[k], v, rtol=1e-5, atol=1e-6)
    # rank files: rank 0 alone wrote the log (no duplicated lines)
    lines = (two / "metrics.jsonl").read_text().splitlines()
    assert sum('"stage": "meta"' in line for line in lines) == 4
    # a rank killed after meta step 2 (torchrun then stops the other), resumed with the same world size
    res = _torchrun(killed, 2, [], kill="meta:2")
    assert res.returncode != 0
    res = _torchrun(killed, 2, [], resume=True)
    assert res.returncode == 0, res.stderr[-3000:]
    for k, v in _final(two).items():
        torch.testing.assert_close(_final(killed)[k], v, rtol=1e-5, atol=1e-6)


if __name__ == "__main__":  # a torchrun rank of test_two_gloo_processes_give_the_one_process_meta_training
    _rank_main(sys.argv[1], bool(int(sys.argv[2])))

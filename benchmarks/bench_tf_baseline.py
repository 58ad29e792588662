"""Side-by-side speed of MZSR's work in TensorFlow (official-style graph) and in metasr_adapter.

    python benchmarks/bench_tf_baseline.py --framework both --rounds 3 [--threads 2] [--json out.json]

The SPEC §0/§4 wall times of the official TF1 code were measured on some other 2-core CPU, so
they cannot be compared with a PyTorch number taken here. This script measures both on the
machine it runs on:

* ``--framework tf`` (run it with a Python that has ``tensorflow-cpu``: ``--tf-python`` or ``$METASR_TF_PYTHON``):
  a TF2 re-implementation of the same work, written from the SPEC (§1, §4, §5), compiled with
  ``tf.function`` (graph mode, no XLA, TF's default thread pools), fused resource-update ops as
  TF1's ``GradientDescentOptimizer`` / ``AdamOptimizer`` use them:
    - ``adapt_1`` / ``adapt_10``: the meta-test adaptation loop on a 256x256 LR image (Set5
      baby size): plain SGD steps on ``mean |LR - f(ILR_son)|`` with the Directx2 schedule; the
      network runs at 256x256 on the son's bicubic upsampling. Weights are re-set before each
      repetition (untimed), as the official code restores them per image.
    - ``sr_512``: the final SR forward pass at 512x512 (clipped), on the bicubic-upsampled LR image
      prepared untimed on both sides (until 2026-12-03 the torch side also timed its float64 bicubic
      resize inside ``sr_tensor()``, about 3% of the row).
    - ``meta_so`` / ``meta_fo``: one MAML meta-iteration, meta-batch 5, task-batch 4, 64x64x3
      patches, 5 inner SGD steps (alpha 0.01), the query loss after every inner step (weights
      0.2, reduce_mean), Adam 1e-4; tasks mapped with ``tf.map_fn``; second order, or first
      order with ``tf.stop_gradient`` on the inner gradients.
* ``--framework torch`` (run it with the project's venv): the same measurements with
  ``MetaSR(MZSRNet(), 2).start(lr, 'gd2.0')`` + ``.step()`` / ``.sr_tensor()`` and
  ``metasr_adapter.meta.learner.MetaLearner.meta_step`` (skipped if that module is missing).
* ``--framework both``: runs tf and torch as alternating subprocesses (tf, torch, tf, torch, ...)
  for ``--rounds`` rounds, so machine load hits both alike, and prints per-measurement medians
  over the rounds and the torch/TF time ratio (< 1: torch is faster). The 1-minute load average
  is sampled every 5 s during the run and reported.

Only network work is timed: the son and its bicubic upsampling are prepared before the timed
loop in both frameworks (the official loop also re-runs its numpy imresize every step, which
is included in SPEC §0's 0.39 s/step but is not framework work). Input content does not affect
speed, but the size does: both sides read Set5 baby (``--lr``, default
``../shared/data/mzsr_g20/Set5/baby.png``; the script stops with a one-line message when it is
missing) and the TF side uses a stand-in son upsampling.

The GFLOP/s columns divide each measurement's work, counted once by torch's FLOP counter
(``torch.utils.flop_counter``; TF does the same arithmetic), by each side's time; in brackets, the share of
a 2048x2048 fp32 matmul timed in the torch processes. The torch side keeps freed memory in the process as the ``metasr`` command does
(``metasr_adapter.allocator.retain_freed_memory``; ``--torch-malloc default`` measures glibc's own
thresholds, which page-fault on every adaptation step). ``--threads N`` sets torch's intra- and inter-op threads (``torch.set_num_threads`` /
``set_num_interop_threads``) and TF's (``tf.config.threading``) to N in both child processes, and
``OMP_NUM_THREADS=N`` in their environment; without it each framework picks its defaults. The
``--json`` file holds a ``record`` (command, commit, CPU model and flags, threads, versions; see
``benchmarks/_record.py``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import portable_argv, portable_path, result_record  # noqa: E402  (benchmarks/_record.py; no torch)
from _timing import matmul_gflops  # noqa: E402  (imports torch only when called)

HERE = Path(__file__).resolve()
SHARED = HERE.parents[2] / "shared"  # ../shared beside the repository
DEFAULT_WEIGHTS = str(SHARED / "weights" / "mzsr_official" / "mzsr_pretrained_bicubic.npz")
DEFAULT_LR = str(SHARED / "data" / "mzsr_g20" / "Set5" / "baby.png")
DEFAULT_TF_PY = os.environ.get("METASR_TF_PYTHON") or "python3"  # a Python with tensorflow-cpu
DEFAULT_TORCH_PY = str(HERE.parents[1] / ".venv" / "bin" / "python")
RESULT_TAG = "BENCH_RESULT_JSON:"

MEASUREMENTS = ["adapt_1", "adapt_10", "sr_512", "meta_so", "meta_fo"]
LABELS = {
    "adapt_1": "adaptation loop, 1 step (256x256)",
    "adapt_10": "adaptation loop, 10 steps (256x256)",
    "sr_512": "final SR forward (512x512)",
    "meta_so": "meta-iteration, 2nd order (MB5 TB4)",
    "meta_fo": "meta-iteration, 1st order (MB5 TB4)",
}
# SPEC §0 / §4: the official TF1 code on an unknown 2-core CPU (for reference only)
SPEC_OFFICIAL = {"adapt_1": "0.445", "adapt_10": "3.90", "meta_so": "16-21", "meta_fo": "~16-21"}

MB, TB, PATCH, INNER_STEPS, INNER_LR, META_LR = 5, 4, 64, 5, 0.01, 1e-4
LOSS_WEIGHT = 0.2  # SPEC §4: frozen global step -> uniform weights


def directx2_lr(step: int) -> float:
    """SPEC §5 model 0 schedule (0-based step)."""
    return 2e-2 if step == 0 else (1e-2 if step < 4 else 5e-3)


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_1min() -> float:
    return os.getloadavg()[0]


def timed(fn: Callable[[], Any], repeats: int, setup: Callable[[], Any] | None = None) -> list[float]:
    """Wall times of ``repeats`` calls of ``fn`` after one untimed warm-up call; ``setup`` runs untimed before each."""
    out = []
    for i in range(repeats + 1):
        if setup is not None:
            setup()
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        if i > 0:
            out.append(dt)
    return out


def random_tasks(seed: int = 0) -> tuple[np.ndarray, ...]:
    """Support/query inputs and labels, NHWC [MB, TB, 64, 64, 3] float32 in [0, 1]."""
    rng = np.random.default_rng(seed)
    return tuple(rng.random((MB, TB, PATCH, PATCH, 3), dtype=np.float32) for _ in range(4))


def missing_inputs(args: argparse.Namespace) -> str | None:
    """A one-line message naming the LR image or weights file that is not there, and the fix; None if both are."""
    if not Path(args.lr).is_file():
        return (f"bench_tf_baseline.py: LR image {args.lr} not found; put Set5 baby at "
                "../shared/data/mzsr_g20/Set5/baby.png (beside the repository) or pass --lr PATH")
    if not Path(args.weights).is_file():
        return (f"bench_tf_baseline.py: weights {args.weights} not found; put the official MZSR weights at "
                "../shared/weights/mzsr_official/mzsr_pretrained_bicubic.npz or pass --weights PATH")
    return None


def lr_image(path: str, read: Callable[[str], np.ndarray]) -> tuple[np.ndarray, str]:
    """The LR image as HxWx3 float32 in [0, 1] read with ``read`` (uint8 HxWx3), and its portable path."""
    return np.asarray(read(path), dtype=np.float32)[..., :3] / 255.0, portable_path(path)


# ---------------------------------------------------------------------------------------------
# TensorFlow
# ---------------------------------------------------------------------------------------------
TF_NAMES = [f"MODEL/conv{k}/{p}" for k in range(1, 9) for p in ("kernel", "bias")]


class TFMZSR:
    """MZSR in TF2 graph mode: the network (SPEC §1), the meta-test SGD step (§5), the meta-iteration (§4).

    ``init`` holds the 16 official arrays in ``TF_NAMES`` order (kernels HWIO); images are NHWC.
    """

    def __init__(self, init: list[np.ndarray]) -> None:
        import tensorflow as tf

        self.tf = tf
        self.init = [np.asarray(a, dtype=np.float32) for a in init]
        self.weights = [tf.Variable(a, name=n.replace("/", "_")) for a, n in zip(self.init, TF_NAMES)]
        self.slots_m = [tf.Variable(tf.zeros_like(a)) for a in self.init]
        self.slots_v = [tf.Variable(tf.zeros_like(a)) for a in self.init]
        self.beta1_power = tf.Variable(0.9, dtype=tf.float32)
        self.beta2_power = tf.Variable(0.999, dtype=tf.float32)
        img = tf.TensorSpec([1, None, None, 3], tf.float32)
        self.adapt_step = tf.function(self._adapt_step, input_signature=[img, img, tf.TensorSpec([], tf.float32)])
        self.super_resolve = tf.function(self._super_resolve, input_signature=[img])

    def reset(self) -> None:
        """Restore the initial weights and a fresh Adam state (untimed, like the official per-image restore)."""
        for v, a in zip(self.weights, self.init):
            v.assign(a)
        for v in self.slots_m + self.slots_v:
            v.assign(self.tf.zeros_like(v))
        self.beta1_power.assign(0.9)
        self.beta2_power.assign(0.999)

    def forward(self, x, params: list):
        tf = self.tf
        h = x
        for i in range(8):
            h = tf.nn.bias_add(tf.nn.conv2d(h, params[2 * i], strides=1, padding="SAME"), params[2 * i + 1])
            if i < 7:
                h = tf.nn.relu(h)
        return x + h

    def l1(self, a, b):
        return self.tf.reduce_mean(self.tf.abs(a - b))

    def _adapt_step(self, ilr_son, lr, alpha):
        tf = self.tf
        with tf.GradientTape() as tape:
            loss = self.l1(lr, self.forward(ilr_son, self.weights))
        grads = tape.gradient(loss, self.weights)
        for v, g in zip(self.weights, grads):
            tf.raw_ops.ResourceApplyGradientDescent(var=v.handle, alpha=alpha, delta=g)
        return loss

    def _super_resolve(self, x):
        return self.tf.clip_by_value(self.forward(x, self.weights), 0.0, 1.0)

    def make_meta_step(self, first_order: bool, inner_steps: int = INNER_STEPS):
        """A compiled ``meta_step(inputa, labela, inputb, labelb)`` ([MB,TB,H,W,3] each) that applies one Adam
        step and returns ``(total_loss1, weighted_loss, total_losses2, meta_grads)``."""
        tf = self.tf

        def task(elems):
            ia, la, ib, lb = elems
            fast = list(self.weights)
            lossa = None
            lossb = []
            for j in range(inner_steps):
                with tf.GradientTape(watch_accessed_variables=False) as inner:
                    inner.watch(fast)
                    support = self.l1(la, self.forward(ia, fast))
                grads = inner.gradient(support, fast)
                if first_order:
                    grads = [tf.stop_gradient(g) for g in grads]
                if j == 0:
                    lossa = support
                fast = [w - INNER_LR * g for w, g in zip(fast, grads)]
                lossb.append(self.l1(lb, self.forward(ib, fast)))
            return lossa, tf.stack(lossb)

        @tf.function
        def meta_step(ia, la, ib, lb):
            with tf.GradientTape() as outer:
                lossa, lossb = tf.map_fn(
                    task, (ia, la, ib, lb),
                    fn_output_signature=(tf.TensorSpec([], tf.float32), tf.TensorSpec([inner_steps], tf.float32)),
                )
                total_losses2 = tf.reduce_mean(lossb, axis=0)
                weighted = tf.reduce_mean(total_losses2 * LOSS_WEIGHT)
            grads = outer.gradient(weighted, self.weights)
            for v, m, s, g in zip(self.weights, self.slots_m, self.slots_v, grads):
                tf.raw_ops.ResourceApplyAdam(
                    var=v.handle, m=m.handle, v=s.handle, beta1_power=self.beta1_power,
                    beta2_power=self.beta2_power, lr=META_LR, beta1=0.9, beta2=0.999, epsilon=1e-8, grad=g,
                )
            self.beta1_power.assign(self.beta1_power * 0.9)
            self.beta2_power.assign(self.beta2_power * 0.999)
            return tf.reduce_mean(lossa), weighted, total_losses2, grads

        return meta_step


def bench_tf(args: argparse.Namespace, which: list[str]) -> dict[str, Any]:
    import tensorflow as tf

    if args.threads:  # before the first op starts TF's thread pools
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    arrays = np.load(args.weights)
    model = TFMZSR([arrays[n] for n in TF_NAMES])
    lr_np, lr_src = lr_image(args.lr, lambda p: tf.io.decode_png(tf.io.read_file(p), channels=3).numpy())
    lr = lr_np[None]
    son = lr[:, ::2, ::2, :]  # stand-in for the blurred, direct-subsampled son (content is irrelevant)
    ilr_son = tf.image.resize(son, (lr.shape[1], lr.shape[2]), method="bicubic").numpy().astype(np.float32)
    ilr = tf.image.resize(lr, (2 * lr.shape[1], 2 * lr.shape[2]), method="bicubic").numpy().astype(np.float32)
    alphas = [np.float32(directx2_lr(i)) for i in range(10)]

    results: dict[str, list[float]] = {}
    for name in which:
        if name.startswith("adapt_"):
            n = int(name.split("_")[1])

            def loop(n: int = n) -> None:
                for i in range(n):
                    float(model.adapt_step(ilr_son, lr, alphas[i]))  # fetch the loss, like sess.run

            results[name] = timed(loop, args.repeats, setup=model.reset)
        elif name == "sr_512":
            model.reset()
            results[name] = timed(lambda: model.super_resolve(ilr).numpy(), args.repeats)

    meta = [m for m in which if m.startswith("meta_")]
    if meta:
        tasks = [tf.constant(a) for a in random_tasks()]
        for name in meta:
            model.reset()
            step = model.make_meta_step(first_order=(name == "meta_fo"))
            results[name] = timed(lambda: float(step(*tasks)[1]), args.meta_repeats)

    info = {
        "framework": "tf",
        "version": tf.__version__,
        "threads": f"intra {tf.config.threading.get_intra_op_parallelism_threads() or 'default'}, "
                   f"inter {tf.config.threading.get_inter_op_parallelism_threads() or 'default'}",
        "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default"),
        "lr_image": lr_src,
    }
    return {"info": info, "times": results}


# ---------------------------------------------------------------------------------------------
# PyTorch (metasr_adapter)
# ---------------------------------------------------------------------------------------------
def bench_torch(args: argparse.Namespace, which: list[str]) -> dict[str, Any]:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
        try:
            torch.set_num_interop_threads(args.threads)
        except RuntimeError:  # already fixed in this process (inter-op work has run)
            pass
    from metasr_adapter import MetaSR, MZSRNet
    from metasr_adapter.adapters.mzsr import mzsr_state_dict_from_tf
    from metasr_adapter.allocator import allocator_settings, retain_freed_memory

    if args.torch_malloc == "retain":  # as the command line does (metasr_adapter/allocator.py)
        retain_freed_memory()

    state = mzsr_state_dict_from_tf(dict(np.load(args.weights)))

    def net() -> MZSRNet:
        m = MZSRNet()
        m.load_state_dict(state)
        return m

    from metasr_adapter.ops.imageio import read_image

    lr_np, lr_src = lr_image(args.lr, read_image)
    adapt_algorithm = getattr(args, "adapt_conv_algorithm", "direct")
    msr = MetaSR(net(), 2, precision=args.torch_precision, conv_algorithm=adapt_algorithm)
    results: dict[str, list[float]] = {}
    notes: dict[str, str] = {}
    holder: dict[str, Any] = {}

    def start() -> None:
        holder["s"] = msr.start(lr_np, "gd2.0")

    def sr_network() -> torch.Tensor:
        """The network on the bicubic-upsampled LR image, clipped: the work TF's ``super_resolve`` times. The
        upsampling is prepared untimed on both sides (``sr_tensor()`` adds a float64 bicubic resize of the
        LR image, outside the network)."""
        s = holder["s"]
        if "ilr" not in holder:
            with torch.no_grad():
                holder["ilr"] = msr._network_input(s.lr_image.double(), (2 * s.lr_image.shape[-2],
                                                                         2 * s.lr_image.shape[-1])).float()
        with torch.no_grad():
            return msr._run(s.params, holder["ilr"], None).clamp_(0, 1)

    for name in which:
        if name.startswith("adapt_"):
            n = int(name.split("_")[1])

            def loop(n: int = n) -> None:
                for _ in range(n):
                    holder["s"].step()  # returns the loss as a float (synchronises)

            results[name] = timed(loop, args.repeats, setup=start)
        elif name == "sr_512":
            start()
            results[name] = timed(sr_network, args.repeats)

    conv_derivatives = getattr(args, "meta_conv_derivatives", "auto")
    conv_algorithm = getattr(args, "meta_conv_algorithm", "auto")
    algorithms_in_use: dict[str, str] = {}
    task_threads = getattr(args, "meta_task_threads", 1)
    meta_layout = True if getattr(args, "meta_channels_last", False) else None  # None: the library's choice
    meta = [m for m in which if m.startswith("meta_")]
    if meta:
        try:
            from metasr_adapter.meta.learner import MAMLConfig, MetaLearner, TaskBatch
        except ImportError as e:
            for name in meta:
                notes[name] = f"metasr_adapter.meta.learner unavailable ({e})"
        else:
            ia, la, ib, lb = (torch.from_numpy(a).permute(0, 1, 4, 2, 3).contiguous() for a in random_tasks())
            batch = TaskBatch(support_x=ia, support_y=la, query_x=ib, query_y=lb)
            for name in meta:
                cfg = MAMLConfig(inner_steps=INNER_STEPS, inner_lr=INNER_LR, first_order=(name == "meta_fo"),
                                 meta_lr=META_LR, channels_last=meta_layout, conv_derivatives=conv_derivatives,
                                 conv_algorithm=conv_algorithm, task_threads=task_threads,
                                 precision=args.torch_precision)
                learner = MetaLearner(net(), cfg)
                algorithms_in_use[name] = learner.conv_algorithm_in_use()
                counter = iter(range(10_000))
                results[name] = timed(lambda: learner.meta_step(batch, next(counter)), args.meta_repeats)

    # the work of each measurement in FLOPs (torch's FLOP counter, one untimed run; TF does the same arithmetic),
    # and a 2048x2048 fp32 matmul in this process: the GFLOP/s columns and their share of the matmul's
    from torch.utils.flop_counter import FlopCounterMode

    flops: dict[str, int] = {}
    in_use = msr.conv_algorithm
    msr.conv_algorithm = "direct"  # the nominal work (Winograd's native calls are out of the counter's sight)
    for name in results:
        with FlopCounterMode(display=False) as counter:
            if name.startswith("adapt_"):
                start()
                for _ in range(int(name.split("_")[1])):
                    holder["s"].step()
            elif name == "sr_512":
                sr_network()
            else:  # tasks one after another (task_threads left at 1): the counter sees this thread's operators
                # only; direct convolutions: the nominal work, as TF does it (Winograd's native kernels do fewer
                # multiplications, out of the counter's sight, so their GFLOP/s is an effective rate)
                learner = MetaLearner(net(), MAMLConfig(inner_steps=INNER_STEPS, inner_lr=INNER_LR, meta_lr=META_LR,
                                                        first_order=(name == "meta_fo"),
                                                        channels_last=meta_layout, conv_derivatives=conv_derivatives,
                                                        conv_algorithm="direct",
                                                        precision=args.torch_precision))
                learner.meta_step(batch, 0)
        flops[name] = int(counter.get_total_flops())
    msr.conv_algorithm = in_use

    info = {
        "framework": "torch",
        "version": torch.__version__,
        "threads": f"intra {torch.get_num_threads()}, inter {torch.get_num_interop_threads()}",
        "adapt_channels_last": msr.channels_last,
        "adapt_conv_algorithm": {"asked": adapt_algorithm, "in_use": msr.conv_algorithm},
        "meta_channels_last": "NHWC (forced)" if meta_layout else "library default (MAMLConfig.channels_last=None)",
        "meta_conv_derivatives": conv_derivatives,
        "meta_conv_algorithm": {"asked": conv_algorithm, "in_use": algorithms_in_use},
        "meta_task_threads": task_threads,
        "precision": args.torch_precision,
        "malloc": allocator_settings(),
        "lr_image": lr_src,
    }
    return {"info": info, "times": results, "notes": notes, "flops": flops,
            "matmul_gflops": matmul_gflops()}


# ---------------------------------------------------------------------------------------------
# Orchestration
# ---------------------------------------------------------------------------------------------
class LoadSampler:
    """Samples the 1-minute load average every ``period`` seconds in a daemon thread."""

    def __init__(self, period: float = 5.0) -> None:
        self.period = period
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(load_1min())
            self._stop.wait(self.period)

    def __enter__(self) -> "LoadSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict[str, float]:
        s = self.samples or [load_1min()]
        return {"min": min(s), "median": statistics.median(s), "max": max(s), "n": len(s)}


def child_args(args: argparse.Namespace, framework: str) -> list[str]:
    py = args.tf_python if framework == "tf" else args.torch_python
    cmd = [py, str(HERE), "--framework", framework, "--emit", "--repeats", str(args.repeats),
           "--meta-repeats", str(args.meta_repeats), "--only", ",".join(args.only), "--weights", args.weights,
           "--lr", args.lr]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if getattr(args, "meta_channels_last", False):
        cmd += ["--meta-channels-last"]
    if framework == "torch":
        cmd += ["--torch-malloc", getattr(args, "torch_malloc", "retain"),
                "--torch-precision", getattr(args, "torch_precision", "fp32"),
                "--meta-conv-derivatives", getattr(args, "meta_conv_derivatives", "auto"),
                "--meta-conv-algorithm", getattr(args, "meta_conv_algorithm", "auto"),
                "--adapt-conv-algorithm", getattr(args, "adapt_conv_algorithm", "direct"),
                "--meta-task-threads", str(getattr(args, "meta_task_threads", 1))]
    return cmd


def run_child(args: argparse.Namespace, framework: str) -> dict[str, Any]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    proc = subprocess.run(child_args(args, framework), capture_output=True, text=True, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG):])
    raise RuntimeError(f"{framework} run failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")


def fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def report(rounds: dict[str, list[dict[str, Any]]], load: dict[str, float] | None) -> dict[str, Any]:
    """Median over rounds of each round's median, per framework and measurement; torch/TF ratio."""
    rows = []
    for name in MEASUREMENTS:
        med: dict[str, float | None] = {}
        per_round: dict[str, list[float]] = {}
        for fw, runs in rounds.items():
            vals = [statistics.median(r["times"][name]) for r in runs if r["times"].get(name)]
            per_round[fw] = vals
            med[fw] = statistics.median(vals) if vals else None
        if all(v is None for v in med.values()):
            continue
        tf_s, pt_s = med.get("tf"), med.get("torch")
        ratio = pt_s / tf_s if tf_s and pt_s else None
        torch_runs = rounds.get("torch") or []
        work = next((r["flops"][name] for r in torch_runs if (r.get("flops") or {}).get(name)), None)
        peak = statistics.median(r["matmul_gflops"] for r in torch_runs if r.get("matmul_gflops")) \
            if any(r.get("matmul_gflops") for r in torch_runs) else None
        gf = {fw: (work / t / 1e9 if work and t else None) for fw, t in (("tf", tf_s), ("torch", pt_s))}
        rows.append({"measurement": name, "label": LABELS[name], "tf_s": tf_s, "torch_s": pt_s,
                     "torch_over_tf": ratio, "per_round": per_round, "spec_official_s": SPEC_OFFICIAL.get(name),
                     "gflop": work / 1e9 if work else None, "tf_gflops_per_s": gf["tf"],
                     "torch_gflops_per_s": gf["torch"], "matmul_gflops_per_s": peak})
    head = (f"{'measurement':38s} {'TF (s)':>8s} {'torch (s)':>9s} {'torch/TF':>8s}  {'GFLOP':>6s} "
            f"{'TF GFLOP/s':>10s} {'torch GFLOP/s':>13s}  {'SPEC TF (other CPU)':>19s}")
    print(head)
    print("-" * len(head))

    def rate(r: dict[str, Any], fw: str) -> str:
        g, peak = r[f"{fw}_gflops_per_s"], r["matmul_gflops_per_s"]
        return "n/a" if g is None else f"{g:.0f}" + (f" ({g / peak:.2f})" if peak else "")

    for r in rows:
        ratio = f"{r['torch_over_tf']:.2f}" if r["torch_over_tf"] else "n/a"
        gflop = f"{r['gflop']:.0f}" if r["gflop"] else "n/a"
        print(f"{r['label']:38s} {fmt(r['tf_s']):>8s} {fmt(r['torch_s']):>9s} "
              f"{ratio:>8s}  {gflop:>6s} {rate(r, 'tf'):>10s} {rate(r, 'torch'):>13s}  "
              f"{(r['spec_official_s'] or '-'):>19s}")
    peaks = [r["matmul_gflops_per_s"] for r in rows if r["matmul_gflops_per_s"]]
    if peaks:
        print(f"(in brackets: the share of a 2048x2048 fp32 matmul measured in the torch processes, "
              f"{peaks[0]:.0f} GFLOP/s)")
    for fw, runs in rounds.items():
        for name, note in (runs[0].get("notes") or {}).items():
            print(f"note ({fw}, {name}): {note}")
    if load:
        print(f"1-min load average during the run: min {load['min']:.2f}, median {load['median']:.2f}, "
              f"max {load['max']:.2f} ({load['n']} samples)")
    return {"rows": rows, "load_1min": load}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--framework", choices=["tf", "torch", "both"], default="both")
    ap.add_argument("--rounds", type=int, default=3, help="alternating tf/torch rounds (both)")
    ap.add_argument("--repeats", type=int, default=3, help="timed repetitions of adapt/SR (after 1 warm-up)")
    ap.add_argument("--meta-repeats", type=int, default=2, help="timed meta-iterations (after 1 warm-up)")
    ap.add_argument("--only", default=",".join(MEASUREMENTS), help=f"comma list from {MEASUREMENTS}")
    ap.add_argument("--weights", default=DEFAULT_WEIGHTS, help="official MZSR .npz (MODEL/convK/{kernel,bias})")
    ap.add_argument("--lr", default=DEFAULT_LR,
                    help="256x256 LR image (default: ../shared/data/mzsr_g20/Set5/baby.png beside the repository)")
    ap.add_argument("--threads", type=int, default=None,
                    help="intra- and inter-op threads of torch and TF in both child processes (default: theirs)")
    ap.add_argument("--torch-malloc", choices=["retain", "default"], default="retain",
                    help="retain: keep freed memory as `metasr` does (metasr_adapter.allocator.retain_freed_memory); "
                         "default: glibc's own thresholds (page faults on every adaptation step)")
    ap.add_argument("--torch-precision", choices=["fp32", "bf16"], default="fp32",
                    help="the torch side's precision (MetaSR / MAMLConfig precision=; bf16 is autocast, fast on CPUs "
                         "with AVX512-BF16 or AMX); TF stays fp32, as the official code")
    ap.add_argument("--meta-channels-last", action="store_true",
                    help="torch meta-iterations in NHWC (MAMLConfig.channels_last=True); without it they take the "
                         "library's default, as adaptation does (NHWC on CPUs with AVX-512)")
    ap.add_argument("--meta-conv-derivatives", choices=["auto", "primitive", "torch"], default="auto",
                    help="MAMLConfig.conv_derivatives of the torch meta-iterations (auto: the library's default, "
                         "convolution primitives for second order on CPU)")
    ap.add_argument("--meta-conv-algorithm", choices=["auto", "direct", "winograd"], default="auto",
                    help="MAMLConfig.conv_algorithm of the torch meta-iterations (auto: the library's default, "
                         "Winograd's native kernels for fp32 second order where they build; their build time falls "
                         "in the untimed warm-up call)")
    ap.add_argument("--adapt-conv-algorithm", choices=["auto", "direct", "winograd"], default="direct",
                    help="MetaSR.conv_algorithm of the torch adaptation and SR rows (direct: the library's default; "
                         "winograd: the native Winograd kernels)")
    ap.add_argument("--meta-task-threads", type=int, default=1,
                    help="MAMLConfig.task_threads of the torch meta-iterations (2: two tasks at once on worker "
                         "threads with one oneDNN thread each, as TF's executor runs graph nodes concurrently)")
    ap.add_argument("--tf-python", default=DEFAULT_TF_PY,
                    help="a Python with tensorflow-cpu (default: $METASR_TF_PYTHON, else python3)")
    ap.add_argument("--torch-python", default=DEFAULT_TORCH_PY)
    ap.add_argument("--json", default=None, help="write all results here")
    ap.add_argument("--emit", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.only = [m.strip() for m in args.only.split(",") if m.strip()]
    bad = [m for m in args.only if m not in MEASUREMENTS]
    if bad:
        ap.error(f"--only {bad}: choose from {MEASUREMENTS}")
    if args.threads is not None and args.threads < 1:
        ap.error(f"--threads {args.threads}: give at least 1")
    if args.meta_task_threads < 1:
        ap.error(f"--meta-task-threads {args.meta_task_threads}: give at least 1")
    missing = missing_inputs(args)
    if missing:
        raise SystemExit(missing)

    started = time.strftime("%Y-%m-%d %H:%M:%S")
    record = None if args.emit else result_record(threads=args.threads or "default (each framework's own)",
                                                  script=__file__)
    if args.framework != "both":
        fn = bench_tf if args.framework == "tf" else bench_torch
        with LoadSampler() as sampler:
            res = fn(args, args.only)
        res["load_1min"] = sampler.summary()
        if args.emit:
            print(RESULT_TAG + json.dumps(res))
            return
        print(f"CPU: {cpu_name()} ({os.cpu_count()} cores); {res['info']}")
        out = report({args.framework: [res]}, res["load_1min"])
    else:
        rounds: dict[str, list[dict[str, Any]]] = {"tf": [], "torch": []}
        with LoadSampler() as sampler:
            for i in range(args.rounds):
                for fw in ("tf", "torch"):
                    t0 = time.perf_counter()
                    rounds[fw].append(run_child(args, fw))
                    print(f"round {i + 1}/{args.rounds} {fw}: {time.perf_counter() - t0:.0f} s, "
                          f"load {load_1min():.2f}", file=sys.stderr, flush=True)
        print(f"CPU: {cpu_name()} ({os.cpu_count()} cores)")
        for fw in rounds:
            print(f"{fw}: {rounds[fw][0]['info']}")
        out = report(rounds, sampler.summary())
        out["raw"] = rounds
    if args.json:
        out.update(cpu=cpu_name(), started=started, argv=portable_argv(sys.argv), rounds=args.rounds, record=record)
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

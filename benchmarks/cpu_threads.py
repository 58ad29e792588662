"""Where each CPU thread's time goes during warm MZSR meta-gradients: Linux ``perf`` samples per thread and library.

    python benchmarks/cpu_threads.py --work meta_so --threads 2 --seconds 30 \
        --json benchmarks/results/cpu_threads_meta_so.json

A child process builds the learner of ``bench_meta_ab.py`` (MZSRNet, meta-batch 5, task-batch 4, 64x64 patches, 5
inner steps, NHWC), runs one warm-up meta-gradient and then meta-gradients until it is stopped. After the warm-up,
``perf record`` samples it for ``--seconds`` at ``--frequency`` Hz; ``perf report`` then gives each thread's
samples by library, grouped as:

* ``kernels``: code that oneDNN generated at run time (perf's ``[JIT]``): the convolutions themselves;
* ``openmp``: libgomp, i.e. a thread of the OpenMP team waiting (spinning) for work or at a barrier;
* ``libtorch``: compiled torch code: elementwise operators, oneDNN's non-generated parts, dispatch, autograd;
* ``python``, ``libc`` (mostly malloc), ``os`` (the kernel), ``other``.

With 2 threads this separates what the issue #21 tables cannot: the worker thread's ``openmp`` share is the part of
the wall time in which only the main thread works and the second core waits. ``while_workers_wait`` in the result
says what the main thread runs at those moments (``perf script``: for each waiting sample, the main thread's sample
nearest in time; meant for ``--task-threads 1``): oneDNN's kernels (the main thread finishing its share of a
convolution after the worker finished its own), torch's elementwise loops, oneDNN's C++ (reductions, set-up), the
framework (dispatch, autograd, allocation), Python, malloc. oneDNN names its kernels for perf
(``ONEDNN_JIT_PROFILE=2``, set for the child). TensorFlow hides the waiting by running independent graph nodes
concurrently (``onednn_primitives.py``); ``--task-threads 2`` samples ``MAMLConfig(task_threads=2)``, which runs
two tasks at once on worker threads. Needs ``perf`` (Debian: ``apt install linux-perf``) and permission to attach to
the child (``/proc/sys/kernel/perf_event_paranoid`` <= 2 for one's own processes). Issue #21.
"""
from __future__ import annotations

import argparse
import bisect
import collections
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import result_record  # noqa: E402

WORKS = {"meta_so": False, "meta_fo": True}  # name -> first_order
READY = "cpu_threads: ready"
ITERATION = "cpu_threads: iteration "
CATEGORIES = ("kernels", "openmp", "libtorch", "python", "libc", "os", "other")
#: ``perf report --sort pid,dso`` rows: ``  42.79%    27164:python   [JIT] tid 27164``
_ROW = re.compile(r"^\s*([\d.]+)%\s+(\d+):\S*\s+(.+?)\s*$")


def category(dso: str) -> str:
    """The group (module docstring) of one of perf's shared-object names."""
    if dso.startswith("[JIT]"):
        return "kernels"
    if dso.startswith("[kernel") or dso.startswith("[vdso"):
        return "os"
    for prefix, name in (("libgomp", "openmp"), ("libiomp", "openmp"), ("libtorch_cpu", "libtorch"),
                         ("libpython", "python"), ("libc.so", "libc"), ("libc-", "libc")):
        if dso.startswith(prefix):
            return name
    return "other"


def parse_report(lines: Iterable[str]) -> dict[int, dict[str, float]]:
    """``{thread id: {category: percent of all samples}}`` from ``perf report --sort pid,dso --stdio -g none``
    (comment and blank lines are skipped)."""
    out: dict[int, dict[str, float]] = collections.defaultdict(lambda: dict.fromkeys(CATEGORIES, 0.0))
    for line in lines:
        if line.startswith("#"):
            continue
        m = _ROW.match(line)
        if m:
            out[int(m.group(2))][category(m.group(3))] += float(m.group(1))
    return dict(out)


def summarise(per_thread: dict[int, dict[str, float]], main_tid: int, min_share: float = 1.0) -> dict[str, Any]:
    """Each thread with at least ``min_share`` percent of the samples: its share and how its own samples split over
    the categories (percent), the main thread first; plus the workers' mean ``openmp`` share (the second core's
    waiting) and the main thread's share outside ``kernels``."""
    rows = []
    for tid, cats in sorted(per_thread.items(), key=lambda kv: (kv[0] != main_tid, -sum(kv[1].values()))):
        total = sum(cats.values())
        if total < min_share:
            continue
        rows.append({"tid": tid, "role": "main" if tid == main_tid else "worker", "share_of_samples": round(total, 2),
                     "percent": {c: round(100 * v / total, 2) for c, v in cats.items()}})
    main = next((r for r in rows if r["role"] == "main"), None)
    workers = [r for r in rows if r["role"] == "worker"]
    return {
        "threads": rows,
        "main_outside_kernels_percent": None if main is None else round(100 - main["percent"]["kernels"], 2),
        "workers_waiting_percent": (round(statistics.mean(r["percent"]["openmp"] for r in workers), 2)
                                    if workers else None),
    }


#: ``perf script -F tid,time,ip,sym,dso`` rows, e.g.
#: ``  8722 23318.256315:  7f45feac2f3b jit_brgemm_kernel_t.12 (/tmp/perf-8722.map)``
_SCRIPT_ROW = re.compile(r"^\s*(\d+)\s+([\d.]+):\s+[0-9a-f]+\s+(.*?)\s+\(([^()]*)\)\s*$")
#: what the main thread can be doing while a worker waits (:func:`main_activity`)
ACTIVITIES = ("onednn_kernels", "elementwise", "onednn_cpp", "framework", "python", "libc", "openmp", "os", "other")


def parse_script(lines: Iterable[str]) -> list[tuple[int, float, str, str]]:
    """``(thread id, seconds, symbol, dso file name)`` per sample of ``perf script -F tid,time,ip,sym,dso``."""
    rows = []
    for line in lines:
        m = _SCRIPT_ROW.match(line)
        if m:
            rows.append((int(m.group(1)), float(m.group(2)), m.group(3), m.group(4).rsplit("/", 1)[-1]))
    return rows


def main_activity(symbol: str, dso: str) -> str:
    """The group of one main-thread sample: oneDNN's generated kernels (JIT code, named in ``perf-PID.map`` when
    ``ONEDNN_JIT_PROFILE=2``), torch's elementwise and reduction loops (``at::native``), oneDNN's and ideep's C++
    (partitioning, reductions, primitive set-up), the rest of torch (dispatch, autograd, allocation), Python, libc
    (malloc), OpenMP, the OS."""
    if dso.startswith("perf-") or dso.startswith("[JIT]"):
        return "onednn_kernels"
    group = category(dso)
    if group == "libtorch":
        if symbol.startswith(("dnnl::", "ideep::", "dnnl_")):
            return "onednn_cpp"
        return "elementwise" if "at::native::" in symbol else "framework"
    if group == "other" and dso.startswith(("libc10", "libtorch", "libstdc++")):
        return "framework"
    return group if group in ACTIVITIES else "other"


def kernel_name(symbol: str) -> str:
    """A JIT kernel's name without oneDNN's serial number (``jit_brgemm_kernel_t.12`` -> ``jit_brgemm_kernel_t``)."""
    return "unnamed JIT code" if symbol in ("", "[unknown]") else re.sub(r"\.\d+$", "", symbol)


def while_waiting(samples: list[tuple[int, float, str, str]], main_tid: int, window_s: float,
                  top: int = 8) -> dict[str, Any]:
    """What the main thread runs while the other threads wait in OpenMP: for every non-main sample in OpenMP, the
    main thread's sample nearest in time (within ``window_s``, one sampling period), grouped by
    :func:`main_activity` (percent of the paired samples), with the most frequent oneDNN kernels and symbols."""
    main = sorted((t, sym, dso) for tid, t, sym, dso in samples if tid == main_tid)
    times = [m[0] for m in main]
    groups: collections.Counter[str] = collections.Counter()
    kernels: collections.Counter[str] = collections.Counter()
    symbols: collections.Counter[str] = collections.Counter()
    waiting = 0
    for tid, t, _, dso in samples:
        if tid == main_tid or category(dso) != "openmp":
            continue
        waiting += 1
        i = bisect.bisect_left(times, t)
        near = [j for j in (i - 1, i) if 0 <= j < len(times) and abs(times[j] - t) <= window_s]
        if not near:
            continue
        _, sym, mdso = main[min(near, key=lambda j: abs(times[j] - t))]
        group = main_activity(sym, mdso)
        groups[group] += 1
        if group == "onednn_kernels":
            kernels[kernel_name(sym)] += 1
        else:
            symbols[f"{mdso}: {sym[:160]}"] += 1
    paired = sum(groups.values())

    def pct(counter: collections.Counter[str]) -> dict[str, float]:
        return {k: round(100 * v / paired, 2) for k, v in counter.most_common(top)} if paired else {}

    return {"waiting_samples": waiting, "paired_samples": paired,
            "main_thread_percent": {g: round(100 * groups[g] / paired, 2) if paired else 0.0 for g in ACTIVITIES},
            "top_kernels_percent": pct(kernels), "top_symbols_percent": pct(symbols)}


def child(work: str, precision: str, threads: int, task_threads: int = 1) -> None:
    """The sampled process: warm-up, then meta-gradients until stopped, each one's seconds on stdout."""
    import torch

    torch.set_num_threads(threads)
    from bench_meta_ab import official_size_learner
    from metasr_adapter.allocator import retain_freed_memory

    retain_freed_memory()  # as `metasr` does
    learner, batch = official_size_learner(first_order=WORKS[work], precision=precision, task_threads=task_threads)
    learner.meta_gradient(batch, 0)
    print(READY, flush=True)
    while True:
        t0 = time.perf_counter()
        learner.meta_gradient(batch, 0)
        print(f"{ITERATION}{time.perf_counter() - t0:.4f}", flush=True)


def _perf() -> str:
    perf = shutil.which("perf")
    if perf is None:
        raise SystemExit("cpu_threads.py: `perf` not found on PATH; install it (Debian: apt install linux-perf)")
    return perf


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Start the child, sample it after its warm-up, stop it, and summarise perf's report."""
    perf = _perf()
    # ONEDNN_JIT_PROFILE=2: oneDNN names its generated kernels in /tmp/perf-PID.map (written as they are made)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), ONEDNN_JIT_PROFILE="2")
    cmd = [sys.executable, __file__, "--child", "--work", args.work, "--precision", args.precision,
           "--threads", str(args.threads), "--task-threads", str(args.task_threads)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        for line in proc.stdout:
            if line.startswith(READY):
                break
        else:
            raise SystemExit(f"cpu_threads.py: the child ended before its warm-up finished (exit {proc.wait()}):\n"
                             f"{proc.stderr.read()[-2000:]}")
        with tempfile.TemporaryDirectory() as tmp:
            data = str(Path(tmp) / "perf.data")
            rec = subprocess.run([perf, "record", "-F", str(args.frequency), "-p", str(proc.pid), "-o", data,
                                  "--", "sleep", str(args.seconds)], capture_output=True, text=True)
            if rec.returncode != 0 or not Path(data).exists():
                raise SystemExit(f"cpu_threads.py: perf record failed (exit {rec.returncode}); "
                                 f"/proc/sys/kernel/perf_event_paranoid may forbid it:\n{rec.stderr[-2000:]}")
            proc.terminate()
            out, _ = proc.communicate(timeout=60)
            rep = subprocess.run([perf, "report", "-i", data, "--sort", "pid,dso", "--stdio", "-g", "none"],
                                 capture_output=True, text=True)
            script = subprocess.run([perf, "script", "-i", data, "-F", "tid,time,ip,sym,dso"],
                                    capture_output=True, text=True)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        Path(f"/tmp/perf-{proc.pid}.map").unlink(missing_ok=True)  # oneDNN's kernel names, read by perf script
    per_thread = parse_report(rep.stdout.splitlines())
    if not per_thread:
        raise SystemExit(f"cpu_threads.py: perf report gave no samples:\n{rep.stderr[-2000:]}")
    iterations = [float(line[len(ITERATION):]) for line in out.splitlines() if line.startswith(ITERATION)]
    summary = summarise(per_thread, proc.pid)
    summary.update(iterations_s=iterations, median_iteration_s=statistics.median(iterations) if iterations else None,
                   while_workers_wait=while_waiting(parse_script(script.stdout.splitlines()), proc.pid,
                                                    1.0 / args.frequency))
    return summary


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", choices=sorted(WORKS), default="meta_so",
                    help="second- or first-order meta-gradients (MZSR's official sizes)")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--task-threads", type=int, default=1,
                    help="MAMLConfig.task_threads (2: two tasks at once on worker threads, one oneDNN thread each)")
    ap.add_argument("--seconds", type=float, default=30.0, help="how long perf samples the warm child")
    ap.add_argument("--frequency", type=int, default=999, help="perf's samples per second per thread")
    ap.add_argument("--json", default=None, help="write the result here")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    for name in ("threads", "task_threads", "seconds", "frequency"):
        if getattr(args, name) <= 0:
            ap.error(f"--{name.replace('_', '-')} {getattr(args, name)}: give a positive number")
    if args.child:
        child(args.work, args.precision, args.threads, args.task_threads)
        return
    res = measure(args)
    n, med = len(res["iterations_s"]), res["median_iteration_s"]
    print(f"{args.work} ({args.precision}, {args.threads} threads, task_threads {args.task_threads}): {n} "
          "meta-gradients sampled"
          + (f", median {med:.2f} s" if med is not None else ""))
    print(f"    {'thread':>14s} {'samples %':>9s}  " + " ".join(f"{c:>8s}" for c in CATEGORIES))
    for r in res["threads"]:
        print(f"    {r['role']:>6s} {r['tid']:>7d} {r['share_of_samples']:9.2f}  "
              + " ".join(f"{r['percent'][c]:8.2f}" for c in CATEGORIES))
    print(f"main thread outside the kernels: {res['main_outside_kernels_percent']}% of its samples; "
          f"workers waiting in OpenMP: {res['workers_waiting_percent']}% of theirs")
    wait = res["while_workers_wait"]
    if wait["paired_samples"]:
        print(f"while the workers wait ({wait['paired_samples']} samples), the main thread runs (% of them): "
              + ", ".join(f"{g} {v}" for g, v in wait["main_thread_percent"].items() if v))
        print("    oneDNN kernels: " + ", ".join(f"{k} {v}" for k, v in wait["top_kernels_percent"].items()))
    if args.json:
        # the OpenMP thread count goes under its own key: "threads" holds the per-thread rows
        res.update(work=args.work, precision=args.precision, omp_threads=args.threads, task_threads=args.task_threads,
                   seconds=args.seconds,
                   record=result_record(argv, threads=args.threads, script=__file__))
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()

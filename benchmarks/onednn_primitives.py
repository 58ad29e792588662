"""Which oneDNN primitives one measurement of ``bench_tf_baseline.py`` runs, in TF and in torch, and how much of
its wall time they fill.

    python benchmarks/onednn_primitives.py --only meta_so --threads 2 \
        --json benchmarks/results/onednn_primitives_meta_so.json

Both frameworks hand their convolutions to oneDNN, which logs every primitive it executes with its
implementation, memory formats, problem size and milliseconds when ``ONEDNN_VERBOSE=1``. For each framework
this runs the harness's child process twice with that switch on, once with ``k`` and once with ``k + 1``
timed repetitions of the measurement (``--meta-repeats`` for ``meta_*``, ``--repeats`` otherwise), and
subtracts the two logs: what is left is exactly one repetition, without start-up, warm-up or torch's FLOP
count. Per framework it reports:

* the primitives of that repetition: calls, milliseconds per call and in all, grouped by kind (forward,
  backward-data, backward-weights, deconvolution, reorder) and by problem;
* ``primitive_s``: the primitives' milliseconds summed; ``wall_s``: the repetition's wall time in a third child
  with logging off (median of its ``k + 1`` timed repetitions; ``wall_logged_s``: the same with logging on);
* ``overlap``: ``primitive_s / wall_s``. Near or below 1, primitives run one after another (torch's autograd
  engine) and ``outside_primitives_s = wall_s - primitive_s`` is the time outside them (elementwise operators,
  Python, autograd); above 1, several primitives run at once (TF's executor runs independent graph nodes
  concurrently on its inter-op threads).

Logging costs time (printing thousands of lines), hence the separate unlogged child for the wall time. The
subtraction is exact for call counts; the milliseconds of a rare, cheap primitive (a reorder) can come out slightly
negative, since its times differ between the two children. Options
as ``bench_tf_baseline.py`` (``--threads``, ``--tf-python``, ``--torch-precision``, ``--meta-conv-algorithm``,
...). Issue #21, item 1: how TF avoids what torch pays.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterable

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_tf_baseline as harness  # noqa: E402
from _record import portable_argv, result_record  # noqa: E402

#: ``(kind, implementation, propagation, problem)`` of one primitive execution
Key = tuple[str, str, str, str]


def parse_verbose(lines: Iterable[str]) -> dict[Key, list[float]]:
    """``{key: [calls, milliseconds]}`` from oneDNN verbose output: the ``primitive,exec`` lines (with or without
    the ``v1`` version field); every other line is ignored."""
    out: dict[Key, list[float]] = collections.defaultdict(lambda: [0, 0.0])
    for line in lines:
        if not line.startswith("onednn_verbose,"):
            continue
        fields = line.rstrip("\n").split(",")
        try:
            at = fields.index("exec")
        except ValueError:
            continue
        if at < 1 or fields[at - 1] != "primitive" or len(fields) < at + 9:
            continue
        try:
            ms = float(fields[-1])
        except ValueError:
            continue
        kind, impl, prop = fields[at + 2], fields[at + 3], fields[at + 4]
        entry = out[(kind, impl, prop, fields[-2])]
        entry[0] += 1
        entry[1] += ms
    return dict(out)


def difference(more: dict[Key, list[float]], fewer: dict[Key, list[float]]) -> dict[Key, list[float]]:
    """What the run with one more repetition executed beyond the other (keys with calls left)."""
    out = {}
    for key, (calls, ms) in more.items():
        c0, m0 = fewer.get(key, (0, 0.0))
        if calls - c0 > 0:
            out[key] = [calls - c0, ms - m0]
    return out


def group(kind: str, prop: str) -> str:
    """A readable group name for a primitive: ``convolution forward_training`` -> ``conv forward``, ..."""
    if kind == "convolution":
        names = {"forward_training": "conv forward", "forward_inference": "conv forward",
                 "backward_data": "conv backward-data", "backward_weights": "conv backward-weights"}
        return names.get(prop, f"conv {prop}")
    if kind == "deconvolution":
        return "deconvolution (transposed conv)"
    return kind


def summarise(prims: dict[Key, list[float]], wall_s: float, top: int,
              wall_logged_s: float | None = None) -> dict[str, Any]:
    """The per-repetition table of one framework (see the module docstring)."""
    total_ms = sum(ms for _, ms in prims.values())
    groups: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0])
    for (kind, _, prop, _), (calls, ms) in prims.items():
        groups[group(kind, prop)][0] += calls
        groups[group(kind, prop)][1] += ms
    rows = sorted(prims.items(), key=lambda kv: -kv[1][1])[:top]
    return {
        "wall_s": wall_s,
        "wall_logged_s": wall_logged_s,
        "primitive_s": total_ms / 1e3,
        "overlap": total_ms / 1e3 / wall_s if wall_s > 0 else None,
        "outside_primitives_s": max(0.0, wall_s - total_ms / 1e3),
        "calls": int(sum(c for c, _ in prims.values())),
        "groups": {g: {"calls": int(c), "ms": round(ms, 1), "ms_per_call": round(ms / c, 3)}
                   for g, (c, ms) in sorted(groups.items(), key=lambda kv: -kv[1][1])},
        "top": [{"kind": k, "implementation": i, "propagation": p, "problem": s, "calls": int(c),
                 "ms": round(ms, 1), "ms_per_call": round(ms / c, 3)} for (k, i, p, s), (c, ms) in rows],
    }


def run_child(args: argparse.Namespace, framework: str, repeats: int,
              log: bool = True) -> tuple[dict[Key, list[float]], list[float]]:
    """One child of the harness, with ``ONEDNN_VERBOSE=1`` when ``log``: its primitives and the timed repetitions'
    seconds."""
    child = argparse.Namespace(**vars(args))
    if args.only[0].startswith("meta_"):
        child.meta_repeats = repeats
    else:
        child.repeats = repeats
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", ONEDNN_VERBOSE="1" if log else "0")
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    proc = subprocess.run(harness.child_args(child, framework), capture_output=True, text=True, env=env)
    result = next((json.loads(line[len(harness.RESULT_TAG):]) for line in proc.stdout.splitlines()
                   if line.startswith(harness.RESULT_TAG)), None)
    if result is None or args.only[0] not in result.get("times", {}):
        raise SystemExit(f"onednn_primitives.py: the {framework} child failed (exit {proc.returncode}):\n"
                         f"{proc.stderr[-2000:]}")
    prims = parse_verbose(proc.stdout.splitlines())
    if log and not prims:
        raise SystemExit(f"onednn_primitives.py: the {framework} child logged no oneDNN primitive; its oneDNN "
                         "may not honour ONEDNN_VERBOSE (older builds read DNNL_VERBOSE or MKLDNN_VERBOSE)")
    return prims, result["times"][args.only[0]]


def measure(args: argparse.Namespace, framework: str) -> dict[str, Any]:
    """One repetition's primitives of ``framework`` (two logged children, subtracted) and its wall time (a third
    child, not logged)."""
    fewer, _ = run_child(args, framework, args.base_repeats)
    more, logged = run_child(args, framework, args.base_repeats + 1)
    _, plain = run_child(args, framework, args.base_repeats + 1, log=False)
    return summarise(difference(more, fewer), statistics.median(plain), args.top, statistics.median(logged))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", default="meta_so", choices=harness.MEASUREMENTS, help="the measurement to dissect")
    ap.add_argument("--frameworks", default="tf,torch", help="comma list from tf, torch")
    ap.add_argument("--base-repeats", type=int, default=1,
                    help="timed repetitions of the shorter child (the longer one runs one more)")
    ap.add_argument("--top", type=int, default=12, help="primitive rows listed per framework")
    ap.add_argument("--threads", type=int, default=2, help="threads of both frameworks (as the harness's --threads)")
    ap.add_argument("--weights", default=harness.DEFAULT_WEIGHTS)
    ap.add_argument("--lr", default=harness.DEFAULT_LR)
    ap.add_argument("--torch-precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--meta-conv-algorithm", choices=["direct", "winograd"], default="direct")
    ap.add_argument("--tf-python", default=harness.DEFAULT_TF_PY)
    ap.add_argument("--torch-python", default=harness.DEFAULT_TORCH_PY)
    ap.add_argument("--json", default=None, help="write the result here")
    args = ap.parse_args(argv)
    frameworks = [f.strip() for f in args.frameworks.split(",") if f.strip()]
    if not frameworks or any(f not in ("tf", "torch") for f in frameworks):
        ap.error(f"--frameworks {args.frameworks!r}: a comma list from tf, torch")
    for name in ("base_repeats", "top", "threads"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} {getattr(args, name)}: give at least 1")
    missing = harness.missing_inputs(args)
    if missing:
        raise SystemExit(missing)
    args.only = [args.only]
    args.repeats, args.meta_repeats = 1, 1
    args.meta_channels_last, args.torch_malloc, args.meta_conv_derivatives = False, "retain", "auto"

    out: dict[str, Any] = {"measurement": args.only[0], "threads": args.threads, "cpu": harness.cpu_name()}
    for fw in frameworks:
        t0 = time.perf_counter()
        out[fw] = res = measure(args, fw)
        print(f"{fw}: one {args.only[0]} repetition: wall {res['wall_s']:.2f} s ({res['wall_logged_s']:.2f} s "
              f"logging), primitives {res['primitive_s']:.2f} s in {res['calls']} calls, overlap "
              f"{res['overlap']:.2f}, outside primitives {res['outside_primitives_s']:.2f} s  "
              f"({time.perf_counter() - t0:.0f} s to measure)")
        for g, row in res["groups"].items():
            print(f"    {g:34s} {row['calls']:6d} calls {row['ms']:9.1f} ms {row['ms_per_call']:8.3f} ms/call")
    if args.json:
        out.update(argv=portable_argv(sys.argv), record=result_record(threads=args.threads, script=__file__))
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

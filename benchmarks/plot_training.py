"""Compare training strategies: Set5 PSNR after 0/1/10 adaptation steps against training CPU-hours, one
colour per run, drawn from the runs' ``metrics.jsonl`` probe records, plus a Markdown table of each run's
probes.

    python benchmarks/plot_training.py \\
        "(b) kernel pretraining, FO->SO MAML=benchmarks/results/mzsr_x2_direct_metrics.jsonl" \\
        "(a) official order=runs/mzsr_x2_cpu_official_order/metrics.jsonl" \\
        --out benchmarks/results/strategies_psnr_vs_cpu_hours.png

The Markdown table (same name, ``.md``) lists every probe, so a number in a note can be traced to its run.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import result_record  # noqa: E402  (benchmarks/_record.py)


def table(runs: dict[str, Path], steps: tuple[int, ...], start: dict[str, float] | None = None) -> str:
    """Every probe of every run as Markdown rows, the best ``steps[-1]`` probe of each run in bold
    (``start``: label → CPU-hours before the run's first step)."""
    from metasr_adapter.training.plots import read_probes

    head = "| run | stage | step | CPU-h | " + " | ".join(f"{k} step{'s' if k != 1 else ''}" for k in steps) + " |"
    lines = [head, "|" + "---|" * (4 + len(steps))]
    for label, path in runs.items():
        probes = read_probes(path, (start or {}).get(label, 0.0))
        best = max((p["probe"].get(str(steps[-1]), float("-inf")) for p in probes), default=None)
        for p in probes:
            cells = []
            for k in steps:
                v = p["probe"].get(str(k))
                text = "" if v is None else f"{v:.2f}"
                cells.append(f"**{text}**" if k == steps[-1] and v is not None and v == best else text)
            lines.append(f"| {label} | {p['stage']} | {p.get('step', '')} | {p['cpu_hours']:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", metavar="LABEL=METRICS_JSONL[@HOURS]",
                    help="a run's probes; @HOURS: the CPU-hours its starting weights cost (a run continuing another)")
    ap.add_argument("--out", required=True, help="PNG to write (the Markdown table goes beside it)")
    ap.add_argument("--steps", default="0,1,10", help="probe step counts to draw (default 0,1,10)")
    ap.add_argument("--baseline", type=float, default=None, help="a horizontal reference line (e.g. bicubic PSNR)")
    ap.add_argument("--ylim", default=None, metavar="LO,HI", help="zoom on a PSNR range, e.g. 33.8,34.8")
    ap.add_argument("--title", default="Set5 g^d_2.0 x2: Y-PSNR against training CPU-hours")
    ap.add_argument("--legend", default="lower right",
                    help="legend position: a matplotlib loc inside the axes, e.g. 'lower left', or 'outside' (below them)")
    args = ap.parse_args(argv)
    from metasr_adapter.training.plots import psnr_vs_cpu_hours

    runs: dict[str, Path] = {}
    start: dict[str, float] = {}
    for spec in args.runs:
        label, sep, path = spec.rpartition("=")
        if not sep or not label:
            ap.error(f"{spec!r}: give LABEL=path/to/metrics.jsonl[@HOURS]")
        path, at, hours = path.partition("@")
        if at:
            try:
                start[label] = float(hours)
            except ValueError:
                ap.error(f"{spec!r}: @{hours} is not a number of CPU-hours (a run that continues another: "
                         "LABEL=metrics.jsonl@HOURS, the hours its starting weights cost)")
        if not Path(path).is_file():
            ap.error(f"{path}: no such metrics file")
        runs[label] = Path(path)
    steps = tuple(int(k) for k in args.steps.split(","))
    ylim = tuple(float(v) for v in args.ylim.split(",")) if args.ylim else None
    png = psnr_vs_cpu_hours(runs, args.out, steps=steps, title=args.title, baseline=args.baseline, ylim=ylim,
                            start_hours=start, legend_loc=args.legend)
    md = Path(args.out).with_suffix(".md")
    rec = result_record(argv, script=__file__)
    dirty = " with uncommitted changes" if rec["dirty"] else ""
    md.write_text(f"# {args.title}\n\nCommand: `{rec['command']}` (commit {rec['commit'] or 'unknown'}{dirty}, "
                  f"{rec['date']})\n\n" + table(runs, steps, start), encoding="utf-8")
    print(f"wrote {png} and {md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

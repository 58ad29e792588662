"""Training curves: probe records -> CPU-hours, the strategy plot and its Markdown table."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from metasr_adapter.training.plots import psnr_vs_cpu_hours, read_probes

ROOT = Path(__file__).resolve().parents[1]


def _metrics(path: Path, rows: list[tuple[str, int, float, int, dict]]) -> Path:
    lines = [json.dumps({"stage": st, "step": step, "run_seconds": secs, "threads": th, "probe": pr})
             for st, step, secs, th, pr in rows]
    lines.insert(1, json.dumps({"stage": "pretrain", "step": 5, "loss": 0.1}))  # a loss record: not a probe
    path.write_text("\n".join(lines) + "\n{\"cut by a k", encoding="utf-8")  # a last line cut by a kill
    return path


def test_probes_carry_cpu_hours_and_skip_other_records(tmp_path):
    m = _metrics(tmp_path / "m.jsonl", [("pretrain", 10, 1800.0, 2, {"0": 30.0, "10": 31.0}),
                                        ("meta", 4, 3600.0, 1, {"0": 30.5, "10": 31.5})])
    probes = read_probes(m)
    # each stretch at its own threads: 1800 s × 2, then 1800 s × 1 (it read 1.0, 1.0: the last record's
    # threads times the whole run)
    assert [p["cpu_hours"] for p in probes] == [1.0, 1.5]
    assert [p["stage"] for p in probes] == ["pretrain", "meta"]


def test_strategy_plot_and_table(tmp_path):
    a = _metrics(tmp_path / "a.jsonl", [("pretrain", 10, 360.0, 1, {"0": 29.0, "1": 29.1, "10": 29.2}),
                                        ("meta", 5, 720.0, 1, {"0": 33.0, "1": 33.5, "10": 34.0})])
    b = _metrics(tmp_path / "b.jsonl", [("pretrain", 10, 360.0, 1, {"0": 34.0, "1": 34.1, "10": 34.3})])
    out = tmp_path / "s.png"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "plot_training.py"), f"(a)={a}", f"(b)={b}",
                        "--out", str(out), "--ylim", "28,35", "--baseline", "28.5"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = out.with_suffix(".md").read_text(encoding="utf-8")
    assert "| (a) | meta | 5 | 0.20 | 33.00 | 33.50 | **34.00** |" in md  # the best 10-step probe of (a) in bold
    assert "| (b) | pretrain | 10 | 0.10 | 34.00 | 34.10 | **34.30** |" in md
    bad = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "plot_training.py"), "no-equals-sign",
                          "--out", str(out)], capture_output=True, text=True)
    assert bad.returncode == 2 and "LABEL=path/to/metrics.jsonl" in bad.stderr


def test_an_outside_legend_leaves_every_curve_visible(tmp_path):
    """With many runs the legend inside the axes hides curves (3 step counts x 4 runs = 12 entries):
    legend_loc='outside' puts it below the axes, where it overlaps nothing that is drawn."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from metasr_adapter.training.plots import draw_psnr_vs_cpu_hours

    runs = {f"({c}) a run with a long descriptive label": _metrics(
        tmp_path / f"{c}.jsonl", [("pretrain", 10, 360.0, 1, {"0": 29.0, "1": 29.1, "10": 29.2}),
                                  ("meta", 5, 720.0 + 60 * i, 1, {"0": 33.0 + i, "1": 33.5, "10": 34.0})])
        for i, c in enumerate("abcd")}
    for loc, overlaps in (("lower right", True), ("outside", False)):
        fig = draw_psnr_vs_cpu_hours(runs, legend_loc=loc)
        FigureCanvasAgg(fig).draw()
        legends = [*fig.legends, *filter(None, [a.get_legend() for a in fig.axes])]
        assert len(legends) == 1 and len(legends[0].get_texts()) == 12
        box, axes_box = legends[0].get_window_extent(), fig.axes[0].get_window_extent()
        assert box.overlaps(axes_box) == overlaps, (loc, box, axes_box)
        assert fig.bbox.contains(box.x0, box.y0) and fig.bbox.contains(box.x1, box.y1)  # not cut off
    out = psnr_vs_cpu_hours(runs, tmp_path / "outside.png", legend_loc="outside")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_run_without_probes_is_named(tmp_path):
    empty = tmp_path / "e.jsonl"
    empty.write_text(json.dumps({"stage": "meta", "step": 1, "loss": 0.1}) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no probe records"):
        psnr_vs_cpu_hours({"e": empty}, tmp_path / "e.png")


def test_a_far_baseline_is_named_in_the_legend_instead_of_squashing_the_curves(tmp_path):
    from metasr_adapter.training.plots import baseline_fits, psnr_vs_steps

    curves = {"IDN": {0: 29.96, 5: 30.05, 100: 30.35}, "IDN-ML": {0: 29.94, 5: 30.05, 100: 30.35}}
    assert not baseline_fits([29.94, 30.35], 27.04)  # 2.9 dB below curves that span 0.41 dB
    assert baseline_fits([33.6, 34.5], 33.0)
    out = psnr_vs_steps(curves, tmp_path / "f.png", baseline=27.04)
    assert out.is_file() and out.stat().st_size > 1000


def test_a_run_that_continues_another_starts_at_its_parents_cpu_hours(tmp_path):
    """LABEL=metrics.jsonl@HOURS: a fine-tuning run (the #19 LSLR run continues mzsr_x2_direct) is drawn from the
    hours its starting weights cost, so the curves compare equal budgets."""
    c = _metrics(tmp_path / "c.jsonl", [("meta", 50, 1800.0, 1, {"0": 34.0, "1": 34.1, "10": 34.5})])
    assert [p["cpu_hours"] for p in read_probes(c, start_hours=1.5)] == [2.0]
    out = tmp_path / "c.png"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "plot_training.py"), f"(d) continued={c}@1.5",
                        "--out", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "| (d) continued | meta | 50 | 2.00 | 34.00 | 34.10 | **34.50** |" in out.with_suffix(".md").read_text()
    bad = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "plot_training.py"), f"x={c}@soon",
                          "--out", str(out)], capture_output=True, text=True)
    assert bad.returncode == 2 and "@soon is not a number" in bad.stderr


def test_a_kernel_figure_that_fails_to_render_leaves_the_previous_file_whole(tmp_path, monkeypatch):
    """Figures are written atomically: a failure while drawing keeps the old file and leaves no temp file."""
    import numpy as np
    from matplotlib.figure import Figure

    from metasr_adapter.estimate.plot import plot_kernel

    out = tmp_path / "kernel.png"
    plot_kernel(np.eye(5) / 5, out, title="first")
    before = out.read_bytes()
    assert before.startswith(b"\x89PNG")

    def broken_savefig(self, fname, **kwargs):
        with open(fname, "wb") as fh:
            fh.write(b"\x89PNG half a file")
        raise RuntimeError("renderer failed")

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(RuntimeError, match="renderer failed"):
        plot_kernel(np.ones((5, 5)) / 25, out, title="second")
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["kernel.png"]


def test_a_figure_is_written_in_the_format_its_suffix_names(tmp_path):
    from matplotlib.figure import Figure

    from metasr_adapter.atomic import atomic_savefig

    fig = Figure(figsize=(1, 1))
    fig.subplots().plot([0, 1], [1, 0])
    assert atomic_savefig(fig, tmp_path / "a.svg").read_text().lstrip().startswith("<?xml")
    assert atomic_savefig(fig, tmp_path / "b").read_bytes().startswith(b"\x89PNG")
    assert atomic_savefig(fig, tmp_path / "sub" / "c.pdf", dpi=50).read_bytes().startswith(b"%PDF")

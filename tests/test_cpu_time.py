"""CPU-hours of a run across sessions with different thread counts and resumes."""
from __future__ import annotations

import json

import pytest

from metasr_adapter.training.cpu_time import cpu_seconds_of_records, mean_threads, read_metrics


def test_each_stretch_counts_at_the_threads_of_the_session_that_ran_it() -> None:
    recs = [{"run_seconds": 100.0, "threads": 1}, {"stage": "meta", "loss": 0.1},  # no run_seconds: skipped
            {"run_seconds": 300.0, "threads": 2}]
    assert [c for _, c in cpu_seconds_of_records(recs)] == [100.0, 500.0]
    assert mean_threads(recs) == pytest.approx(500 / 300)


def test_a_resume_supersedes_the_records_past_its_checkpoint() -> None:
    """Killed at 400 s after a checkpoint at 250 s: the resumed session (2 threads) re-does 250-400 s,
    which counts once, at its own threads."""
    recs = [{"run_seconds": 100.0, "threads": 1}, {"run_seconds": 400.0, "threads": 1},
            {"run_seconds": 300.0, "threads": 2}, {"run_seconds": 500.0, "threads": 2}]
    assert [c for _, c in cpu_seconds_of_records(recs)] == [100.0, 400.0, 100.0 + 200.0 * 2, 100.0 + 400.0 * 2]
    assert mean_threads(recs) == pytest.approx((100 + 400 * 2) / 500)


def test_records_without_threads_count_one_and_a_cut_line_is_skipped(tmp_path) -> None:
    m = tmp_path / "metrics.jsonl"
    m.write_text(json.dumps({"run_seconds": 60.0}) + "\n" + '{"run_sec', encoding="utf-8")
    recs = read_metrics(m)
    assert recs == [{"run_seconds": 60.0}] and mean_threads(recs) == 1.0
    assert mean_threads([]) is None

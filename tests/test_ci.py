""".ci/run and the pytest configuration: per-test timeouts, the slow stage, and a summary of what ran.

``.ci/run`` is executed for real, from a scratch copy of the repository, with stand-ins for python3, pip and
pytest on PATH: each stand-in logs its arguments and succeeds or fails as the test asks, so the script's own
logic (stage order, budgets, skips and their reasons, exit status) is what is checked, in well under a second.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# one stand-in for every tool, dispatching on its own name; `python3 -m venv DIR` makes DIR/bin with links to it
_FAKE = r"""#!/usr/bin/env bash
tool=$(basename "$0")
envdir=$(cd "$(dirname "$0")/.." && pwd)
echo "$tool $*" >> "$FAKE_LOG"
case "$tool" in
  python3)
    if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then
      mkdir -p "$3/bin"
      for t in pip pytest python cython; do ln -sf "$FAKE_TOOL" "$3/bin/$t"; done
      d=$(cd "$3" && pwd)
      printf 'export PATH="%s/bin:$PATH"\ndeactivate() { export PATH="${PATH#%s/bin:}"; unset -f deactivate; }\n' \
        "$d" "$d" > "$3/bin/activate"
      exit 0
    fi
    exit 1 ;;
  pip)
    case "$envdir" in *"${FAKE_PIP_FAIL_IN:-<none>}") exit 1 ;; esac
    exit 0 ;;
  python)
    [ "$1" = "-m" ] && [ "$2" = "pytest" ] && exit "${FAKE_OPTIONAL_RC:-0}"
    exit "${FAKE_TORCHVISION_RC:-1}" ;;  # python -c "import torch, torchvision"
  pytest)
    if [ "$#" -eq 0 ]; then exit "${FAKE_DEFAULT_RC:-0}"; fi
    if [ "$1" = "-m" ] && [ "$2" = "slow" ]; then sleep "${FAKE_SLOW_SECONDS:-0}"; exit "${FAKE_SLOW_RC:-0}"; fi
    exit 0 ;;
  *) exit 0 ;;
esac
"""


def _run_ci(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess, list[str], list[str]]:
    """Run a copy of .ci/run with stand-in tools; returns (result, summary lines, logged tool calls)."""
    repo = tmp_path / "repo"
    (repo / ".ci").mkdir(parents=True)
    shutil.copy2(ROOT / ".ci" / "run", repo / ".ci" / "run")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "fake"
    fake.write_text(_FAKE)
    fake.chmod(0o755)
    for tool in ("python3", "tar"):  # tar: stage 2 unpacks the learn2learn download
        (bin_dir / tool).symlink_to(fake)
    log = tmp_path / "calls.log"
    system_path = ":".join(p for p in ("/usr/local/bin", "/usr/bin", "/bin") if os.path.isdir(p))
    full_env = {"PATH": f"{bin_dir}:{system_path}", "HOME": str(tmp_path), "FAKE_LOG": str(log),
                "FAKE_TOOL": str(fake), "METASR_SHARED": str(tmp_path / "no_shared"), **env}
    res = subprocess.run(["bash", str(repo / ".ci" / "run")], cwd=tmp_path, env=full_env, capture_output=True,
                         text=True, timeout=60)
    out = res.stdout
    assert "== CI summary ==" in out, out + res.stderr
    summary = out.split("== CI summary ==", 1)[1].strip().splitlines()
    calls = log.read_text().splitlines() if log.is_file() else []
    return res, summary, calls


def _line(summary: list[str], stage: str) -> str:
    found = [s for s in summary if s.startswith(stage)]
    assert len(found) == 1, (stage, summary)
    return found[0]


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None, reason="needs bash and timeout")
def test_ci_runs_the_readme_command_then_the_slow_stage_and_reports_every_stage(tmp_path: Path) -> None:
    res, summary, calls = _run_ci(tmp_path, FAKE_PIP_FAIL_IN=".venv-l2l")
    assert res.returncode == 0, res.stdout + res.stderr
    pytest_calls = [c.strip() for c in calls if c.startswith("pytest")]
    assert pytest_calls[0] == "pytest"  # stage 1: the README's command, unchanged
    assert pytest_calls[1] == "pytest -m slow -p no:cacheprovider"
    assert "ran, passed" in _line(summary, "stage 1 (default suite)")
    slow = _line(summary, "stage 1b (slow tests)")
    assert "ran, passed" in slow and "budget 900 s" in slow
    assert "skipped: its environment could not be built" in _line(summary, "stage 2 (learn2learn environment)")
    assert "skipped: it needs stage 2's environment" in _line(summary, "stage 2b (basicsr, spandrel)")
    shared = _line(summary, "shared-data tests")
    assert "skipped:" in shared and "no_shared not found" in shared
    _line(summary, "CUDA tests")
    assert summary[-1] == "CI: passed"


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None, reason="needs bash and timeout")
def test_ci_slow_stage_has_its_own_budget_and_failures_are_reported(tmp_path: Path) -> None:
    # a hung slow stage is stopped at its budget; the later stages still run and the run fails at the end
    res, summary, calls = _run_ci(tmp_path / "a", FAKE_SLOW_SECONDS="30", METASR_CI_SLOW_BUDGET="1",
                                  FAKE_TORCHVISION_RC="0")
    assert res.returncode == 1
    assert "FAILED: stopped at its budget of 1 s" in _line(summary, "stage 1b (slow tests)")
    assert "ran, passed" in _line(summary, "stage 2 (learn2learn environment)")
    assert "ran, passed" in _line(summary, "stage 2b (basicsr, spandrel)")
    assert any('-m basicsr or spandrel' in c for c in calls)
    assert summary[-1] == "CI: FAILED"
    # on CI an optional environment that cannot be built fails the run, and the summary says why
    res, summary, _ = _run_ci(tmp_path / "b", CI="true", FAKE_PIP_FAIL_IN=".venv-l2l")
    assert res.returncode == 1
    assert "FAILED: its environment could not be built" in _line(summary, "stage 2 (learn2learn environment)")
    assert summary[-1] == "CI: FAILED"
    # a failing default suite stops the run at once, with the summary
    res, summary, calls = _run_ci(tmp_path / "c", FAKE_DEFAULT_RC="1")
    assert res.returncode == 1 and "FAILED (exit 1)" in _line(summary, "stage 1 (default suite)")
    assert not any("-m slow" in c for c in calls) and summary[-1] == "CI: FAILED"
    # the slow stage may be switched off, and says so
    res, summary, _ = _run_ci(tmp_path / "d", METASR_CI_SLOW="0", FAKE_PIP_FAIL_IN=".venv-l2l")
    assert res.returncode == 0 and "skipped: METASR_CI_SLOW=0" in _line(summary, "stage 1b (slow tests)")


def test_ci_stage_one_is_the_readme_command() -> None:
    readme = (ROOT / "README.md").read_text()
    command = next(line for line in readme.splitlines() if line.endswith('-e ".[test]" && pytest'))
    script = (ROOT / ".ci" / "run").read_text().replace("pip install -q ", "pip install ")
    assert command in script


def test_every_test_has_a_timeout(request: pytest.FixtureRequest) -> None:
    """pytest-timeout is a test extra and configured: a hung test fails instead of running to CI's limit."""
    assert '"pytest-timeout' in (ROOT / "pyproject.toml").read_text()
    assert request.config.pluginmanager.hasplugin("timeout")
    assert 60 <= float(request.config.getini("timeout")) <= 1800

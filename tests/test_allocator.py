"""Keeping freed memory in the process (metasr_adapter/allocator.py): fewer page faults, the CLI's default."""
from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap

import pytest

from metasr_adapter import allocator

GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"

# a few training steps of a small conv stack at 192x192 (9 MiB activations, as in an adaptation step: many
# blocks alive at once, freed together at the end of the step); prints the minor page faults of the last three
_FAULTS = textwrap.dedent("""
    import resource, sys, torch
    torch.set_num_threads(1)
    if sys.argv[1] == "retain":
        from metasr_adapter.allocator import retain_freed_memory
        assert retain_freed_memory()
    convs = [torch.nn.Conv2d(3 if i == 0 else 64, 64, 3, padding=1) for i in range(3)]
    x = torch.rand(1, 3, 192, 192)
    def step():
        h = x
        for c in convs:
            h = torch.relu(c(h))
        h.mean().backward()
    step()
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(3):
        step()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
""")


def _run(code: str, *argv: str, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip().splitlines()[-1]


@pytest.mark.skipif(not GLIBC, reason="the setting is glibc's (Linux); elsewhere retain_freed_memory returns False")
def test_retained_memory_is_reused_without_page_faults():
    plain = int(_run(_FAULTS, "default"))
    kept = int(_run(_FAULTS, "retain"))
    # each step touches ~50 MiB of fresh pages (12,000 faults of 4 KiB) unless the freed blocks are kept
    assert plain > 10_000, f"glibc's defaults faulted only {plain} times: the premise of allocator.py changed"
    assert kept < plain / 4, (plain, kept)


@pytest.mark.skipif(not GLIBC, reason="the setting is glibc's (Linux)")
def test_the_command_line_keeps_freed_memory_unless_told_not_to():
    code = textwrap.dedent("""
        from metasr_adapter.cli.main import main
        from metasr_adapter.allocator import allocator_settings
        main(["adapt", "no-such-image.png", "-o", "out.png"])  # fails fast on the missing input
        print(allocator_settings()["retain_freed_memory"])
    """)
    assert _run(code) == "True"
    assert _run(code, env={"METASR_RETAIN_FREED_MEMORY": "0"}) == "False"


def test_bad_limits_and_settings_are_refused_with_the_fix(monkeypatch):
    with pytest.raises(ValueError, match="limit_bytes=12.*1 MiB"):
        allocator.retain_freed_memory(12)
    with pytest.raises(ValueError, match="limit_bytes=.*2 GiB"):
        allocator.retain_freed_memory(1 << 40)
    monkeypatch.setenv("METASR_RETAIN_FREED_MEMORY", "lots")
    with pytest.raises(ValueError, match="METASR_RETAIN_FREED_MEMORY='lots'.*0 \\(off\\)"):
        allocator.retain_from_environment()
    monkeypatch.setenv("METASR_RETAIN_FREED_MEMORY", "off")
    assert allocator.retain_from_environment() is False

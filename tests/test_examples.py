"""The scripts in examples/ run as documented (on generated data, no ../shared needed)."""
from __future__ import annotations

import subprocess
import sys

import torch

from conftest import ROOT
from metasr_adapter import MZSRNet
from metasr_adapter.ops.imageio import write_image
from metasr_adapter.io.weights import save_weights


def test_adapt_one_image_example(tmp_path, photo):
    from metasr_adapter.pipelines.evaluate import synthesize_lr
    from metasr_adapter.ops.kernels import resolve_kernel

    gt = photo[200:264, 200:264]
    write_image(tmp_path / "gt.png", gt)
    write_image(tmp_path / "lr.png", synthesize_lr(gt, resolve_kernel("gd2.0"), 2))
    torch.manual_seed(0)
    w = save_weights(MZSRNet(width=8, depth=3), tmp_path / "w.pth", arch_kwargs={"width": 8, "depth": 3})
    out = tmp_path / "sr.png"
    res = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "adapt_one_image.py"), str(tmp_path / "lr.png"),
         str(tmp_path / "gt.png"), "--weights", str(w), "--steps", "2", "-o", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "step  2:" in res.stdout and out.is_file()

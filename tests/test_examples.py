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


def test_upscale_photos_example(tmp_path, photo):
    import io
    import json

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(photo[200:264, 200:296]).save(buf, "JPEG", quality=80)
    (tmp_path / "a.jpg").write_bytes(buf.getvalue())
    res = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "upscale_photos.py"), str(tmp_path / "a.jpg"), "-o",
         str(tmp_path / "out"), "--steps", "1"], capture_output=True, text=True, timeout=300,
        env={**__import__("os").environ, "OMP_NUM_THREADS": "1"},
    )
    assert res.returncode == 0, res.stderr[-2000:]
    info = json.loads((tmp_path / "out" / "a_x2.json").read_text())
    assert info["estimate"]["degradation"]["jpeg_quality"] == 80 and info["choice"] in ("adapted", "plain")
    assert (tmp_path / "out" / "a_x2.png").is_file() and "a.jpg: weights: idn_x2_" in res.stdout

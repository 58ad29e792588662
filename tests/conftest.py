"""Shared test fixtures: the ../shared reference material (skipped when absent) and small images."""
from __future__ import annotations

import os
from pathlib import Path

# OpenMP threads that spin while waiting slow torch 2-3x on a shared 2-core machine (measured).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("METASR_SHARED", ROOT.parent / "shared"))


def shared_path(*parts: str) -> Path:
    """Path inside ../shared, or skip the test with a reason when it is not there."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"reference material not found: {p} (../shared is only present on the project's machines)")
    return p


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def photo() -> np.ndarray:
    """A real photo bundled with matplotlib (Grace Hopper, 600x512 RGB uint8)."""
    import cv2
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img is not None, path
    return np.ascontiguousarray(img[:, :, ::-1])


@pytest.fixture
def one_torch_thread():
    """Run a test with one torch thread: tiny tensors on a shared 2-core machine are much faster so."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def lr_png(tmp_path, photo) -> Path:
    """A 40x50 crop of the photo as a PNG: the CLI's smallest real input."""
    from metasr_adapter.ops.imageio import write_image

    path = tmp_path / "lr.png"
    write_image(path, photo[:40, :50])
    return path


@pytest.fixture
def tiny_x2(tmp_path) -> Path:
    """A 3-layer, 8-channel MZSR x2 network saved with metadata, for fast CLI runs."""
    import torch

    from metasr_adapter import MZSRNet
    from metasr_adapter.io.weights import save_weights

    torch.manual_seed(0)
    return save_weights(MZSRNet(width=8, depth=3), tmp_path / "x2.pth", arch="mzsr",
                        arch_kwargs={"width": 8, "depth": 3}, scale=2.0, schedule="mzsr_direct", loss="l1")

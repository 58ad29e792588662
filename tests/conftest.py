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

"""One rule for ``device=None`` (issue #20, structure 3; see ``metasr_adapter/devices.py``): work on a model
the caller gives runs where that model is; a function that builds or loads its own network asks for the
automatic device (CUDA when available, else the CPU), as ``--device``'s default does."""
from __future__ import annotations

import pytest
import torch

import metasr_adapter.devices as devices
from metasr_adapter.adapt import metasr as metasr_module
from metasr_adapter.zssr import core as zssr_core


@pytest.fixture
def asked(monkeypatch: pytest.MonkeyPatch) -> list:
    """Every spec resolve_device is asked to resolve; 'auto' answers the CPU (this machine may have no GPU)."""
    calls: list = []
    real = devices.resolve_device

    def spy(spec=None):
        calls.append(spec)
        return real("cpu" if spec in (None, "auto") else spec)

    for module in (devices, metasr_module, zssr_core):
        monkeypatch.setattr(module, "resolve_device", spy)
    return calls


def test_functions_that_load_their_own_network_ask_for_the_automatic_device(asked: list) -> None:
    from metasr_adapter.pipelines.photo import photo_precision

    msr = metasr_module.load_pretrained("mzsr_x2_direct")
    assert None in asked and msr.device == torch.device("cpu")
    asked.clear()
    photo_precision()
    assert asked == [None]  # the photo path's precision is decided for the device its model will go to
    asked.clear()
    assert zssr_core.ZSSR(zssr_core.ZSSRConfig())._device() == torch.device("cpu")
    assert asked == [None]  # ZSSR's own network: the automatic device, as the CLI's default


def test_work_on_a_given_model_stays_where_the_model_is(asked: list) -> None:
    from metasr_adapter import MetaSR, MZSRNet

    net = MZSRNet(width=8, depth=3)
    assert MetaSR(net, 2).device == torch.device("cpu") and asked == []
    assert zssr_core.ZSSR(zssr_core.ZSSRConfig(), model=net)._device() == torch.device("cpu") and asked == []
    net.to("meta")  # a model somewhere else: its own device, not the automatic one
    assert zssr_core.ZSSR(zssr_core.ZSSRConfig(), model=net)._device() == torch.device("meta") and asked == []

"""The optional BasicSR integration. The `basicsr` tests run in CI's second environment
(torch 2.14.1 + torchvision 0.29.1 + basicsr 1.4.2) and skip where basicsr is not installed."""
from __future__ import annotations

import importlib.util

import pytest
import torch
import yaml

from metasr_adapter import MetaSR
from metasr_adapter.adapters import get_model
from metasr_adapter.adapters.rcan import RCAN
from metasr_adapter.integrations import basicsr as integ
from metasr_adapter.io.pretrained import load_basicsr_model
from metasr_adapter.io.weights import load_weights

HAVE_BASICSR = importlib.util.find_spec("basicsr") is not None and importlib.util.find_spec("torchvision") is not None
needs_basicsr = pytest.mark.skipif(not HAVE_BASICSR, reason="basicsr/torchvision not installed (CI stage 2 has them)")

RCAN_OPTS = {"type": "RCAN", "num_in_ch": 3, "num_out_ch": 3, "num_feat": 16, "num_group": 2, "num_block": 2,
             "squeeze_factor": 4, "upscale": 2}


def test_missing_basicsr_is_a_clear_import_error(monkeypatch):
    import importlib

    real = importlib.import_module

    def fake(name, *a, **k):
        if name.startswith("basicsr"):
            raise ModuleNotFoundError(f"No module named {name!r}", name="basicsr")
        if name == "torchvision.transforms.functional_tensor":
            return object()
        return real(name, *a, **k)

    monkeypatch.setattr(importlib, "import_module", fake)
    with pytest.raises(ImportError, match="pip install basicsr"):
        integ.import_basicsr()


def test_options_need_a_type(tmp_path):
    with pytest.raises(ValueError, match="need a 'type'"):
        integ._network_options({"network_g": {"num_feat": 4}})
    with pytest.raises(ValueError, match="not found"):
        integ._network_options(tmp_path / "missing.yml")
    (tmp_path / "o.yml").write_text(yaml.safe_dump({"name": "x", "network_g": RCAN_OPTS}))
    assert integ._network_options(tmp_path / "o.yml") == RCAN_OPTS


@pytest.mark.basicsr
@needs_basicsr
@pytest.mark.parametrize("scale", [2, 4])
def test_builtin_rcan_equals_basicsr_rcan(scale):
    torch.manual_seed(0)
    theirs = integ.build_basicsr_network(**{**RCAN_OPTS, "upscale": scale})
    assert theirs.upsample_input is False
    ours = load_weights(RCAN(scale=scale, num_feat=16, num_group=2, num_block=2, squeeze_factor=4),
                        theirs.state_dict())  # same names, same shapes: strict load
    x = torch.rand(2, 3, 12, 10)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-6)


@pytest.mark.basicsr
@needs_basicsr
def test_basicsr_checkpoint_from_options_file_adapts(tmp_path, photo):
    torch.manual_seed(1)
    net = integ.build_basicsr_network(RCAN_OPTS)
    ckpt = tmp_path / "net_g_latest.pth"
    torch.save({"params": net.state_dict(), "params_ema": net.state_dict()}, ckpt)
    opts = tmp_path / "test_RCAN.yml"
    opts.write_text(yaml.safe_dump({"name": "RCAN_x2", "scale": 2, "network_g": RCAN_OPTS,
                                    "path": {"pretrain_network_g": str(ckpt), "param_key_g": "params_ema"}}))
    model = load_basicsr_model(opts, ckpt)
    # also through the registry, as the command line does with --arch basicsr --arch-kwargs
    same = load_weights(get_model("basicsr", options=str(opts)), ckpt, param_key="params_ema")
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(model(x), same(x))
    sr, info = MetaSR(model, 2).adapt(photo[:24, :28], "bicubic", steps=1, return_info=True)
    assert sr.shape == (48, 56, 3) and len(info.losses) == 1

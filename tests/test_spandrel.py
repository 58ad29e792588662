"""Community checkpoints through spandrel (needs spandrel + torchvision: CI stage 2b)."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

HAVE = importlib.util.find_spec("spandrel") is not None and importlib.util.find_spec("torchvision") is not None
pytestmark = [pytest.mark.spandrel,
              pytest.mark.skipif(not HAVE, reason="spandrel/torchvision not installed (CI stage 2b has them)")]


def _checkpoint(tmp_path, name: str):
    """A small network of spandrel's own architecture classes, saved as a plain state dict."""
    torch.manual_seed(0)
    if name == "swinir":
        from spandrel.architectures.SwinIR import SwinIR

        net = SwinIR(img_size=16, embed_dim=12, depths=[1], num_heads=[2], window_size=4, upscale=2,
                     upsampler="pixelshuffle", mlp_ratio=2.0)
    else:
        from spandrel.architectures.RCAN import RCAN

        net = RCAN(scale=2, n_resgroups=1, n_resblocks=1, n_feats=16, reduction=4)
    path = tmp_path / f"{name}.pth"
    torch.save(net.state_dict(), path)
    return path


# spandrel's tiling flag: SwinIR pads to its window internally (tiling discouraged), RCAN tiles acceptably
@pytest.mark.parametrize("name, arch, spandrel_tiles", [("swinir", "SwinIR", False), ("rcan", "RCAN", True)])
def test_detected_networks_adapt_through_metasr(tmp_path, name, arch, spandrel_tiles):
    from metasr_adapter import MetaSR
    from metasr_adapter.io.pretrained import load_model

    net = load_model("spandrel", _checkpoint(tmp_path, name))
    assert net.architecture == arch and net.scale == 2 and not net.upsample_input
    before = {k: v.clone() for k, v in net.state_dict().items()}
    img = (np.random.default_rng(0).random((27, 31, 3)) * 255).astype(np.uint8)  # not a multiple of the window
    sr, info = MetaSR(net, 2).adapt(img, "gd2.0", steps=2, return_info=True)
    assert sr.shape == (54, 62, 3) and len(info.losses) == 2 and all(np.isfinite(info.losses))
    assert all(torch.equal(net.state_dict()[k], v) for k, v in before.items())  # the wrapped model is untouched
    assert net.global_context is (not spandrel_tiles)
    assert getattr(net, "receptive_radius", None) is None  # exactness is never claimed: tiling needs tile_overlap=


def test_cli_arch_spandrel_takes_the_scale_from_the_checkpoint(tmp_path):
    from metasr_adapter.cli.main import main
    from metasr_adapter.ops.imageio import read_image, write_image

    lr = tmp_path / "lr.png"
    write_image(lr, (np.random.default_rng(1).random((24, 28, 3)) * 255).astype(np.uint8))
    out = tmp_path / "sr.png"
    ckpt = _checkpoint(tmp_path, "swinir")
    assert main(["adapt", str(lr), "--arch", "spandrel", "--weights", str(ckpt), "--steps", "1", "-o", str(out)]) == 0
    assert read_image(out).shape == (48, 56, 3)
    assert main(["adapt", str(lr), "--arch", "spandrel", "--weights", str(ckpt), "--scale", "4", "-o", str(out)]) == 2

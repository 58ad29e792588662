"""Network adapters: the registry, RCAN (BasicSR / official key layouts) and IDN."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from metasr_adapter import MetaSR
from metasr_adapter.adapters import get_model, list_models
from metasr_adapter.adapters.idn import IDN
from metasr_adapter.adapters.rcan import RCAN, rcan_state_dict_from_official
from metasr_adapter.io.pretrained import load_model
from metasr_adapter.io.weights import WeightsMismatchError, load_weights, save_weights


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def conv(cin: int, cout: int, k: int = 3, groups: int = 1) -> int:
    return cout * (cin // groups) * k * k + cout


def test_registry_names_and_errors():
    assert {"mzsr", "rcan", "idn"} <= set(list_models())
    assert isinstance(get_model("RCAN", scale=2, num_group=1, num_block=1), RCAN)
    with pytest.raises(KeyError, match="known models"):
        get_model("edsrr")


# ------------------------------------------------------------------------------------------
# RCAN
# ------------------------------------------------------------------------------------------
def rcan_count(feat: int, groups: int, blocks: int, red: int, scale: int) -> int:
    rcab = 2 * conv(feat, feat) + conv(feat, feat // red, 1) + conv(feat // red, feat, 1)
    up = {2: conv(feat, 4 * feat), 3: conv(feat, 9 * feat), 4: 2 * conv(feat, 4 * feat)}[scale]
    return conv(3, feat) + groups * (blocks * rcab + conv(feat, feat)) + conv(feat, feat) + up + conv(feat, 3)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_rcan_shapes_and_parameter_count(scale):
    m = RCAN(scale=scale, num_feat=32, num_group=2, num_block=3, squeeze_factor=8)
    assert n_params(m) == rcan_count(32, 2, 3, 8, scale)
    assert m(torch.rand(2, 3, 9, 14)).shape == (2, 3, 9 * scale, 14 * scale)
    assert RCAN.upsample_input is False


def test_rcan_paper_size():
    # the paper's model: 10 groups x 20 blocks, 64 channels, reduction 16 (x2: ~15.4 M parameters)
    assert rcan_count(64, 10, 20, 16, 2) == n_params(RCAN(scale=2)) == 15_444_643


def test_rcan_keys_follow_basicsr():
    keys = set(RCAN(scale=4, num_group=1, num_block=1).state_dict())
    expected = {f"{k}.{p}" for p in ("weight", "bias") for k in (
        "conv_first", "body.0.residual_group.0.rcab.0", "body.0.residual_group.0.rcab.2",
        "body.0.residual_group.0.rcab.3.attention.1", "body.0.residual_group.0.rcab.3.attention.3",
        "body.0.conv", "conv_after_body", "upsample.0", "upsample.2", "conv_last")}
    assert keys == expected  # the mean is a non-persistent buffer, as in BasicSR (not saved)


def test_rcan_basicsr_checkpoint_loads(tmp_path):
    torch.manual_seed(0)
    src = RCAN(scale=2, num_group=2, num_block=2)
    path = tmp_path / "rcan_basicsr.pth"
    torch.save({"params_ema": src.state_dict(), "params": {k: v * 0 for k, v in src.state_dict().items()}}, path)
    dst = load_weights(RCAN(scale=2, num_group=2, num_block=2), path, param_key="params_ema")
    x = torch.rand(1, 3, 12, 12)
    assert torch.equal(dst(x), src(x))
    with pytest.raises(WeightsMismatchError, match="shape mismatches|missing keys"):
        load_weights(RCAN(scale=2, num_group=3, num_block=2), path, param_key="params_ema")


def official_layout(state: dict[str, torch.Tensor], groups: int, blocks: int) -> dict[str, torch.Tensor]:
    """Rename by hand to the RCAN authors' (EDSR-PyTorch) key layout, with its mean-shift layers."""
    out = {}
    for k, v in state.items():
        name, p = k.rsplit(".", 1)
        parts = name.split(".")
        if name == "conv_first":
            new = "head.0"
        elif name == "conv_after_body":
            new = f"body.{groups}"
        elif name == "conv_last":
            new = "tail.1"
        elif parts[0] == "upsample":
            new = f"tail.0.{parts[1]}"
        elif parts[2] == "conv":
            new = f"body.{parts[1]}.body.{blocks}"
        else:  # body.G.residual_group.B.rcab.I[.attention.J]
            g, b, i = parts[1], parts[3], parts[5]
            new = f"body.{g}.body.{b}.body.{i}"
            if len(parts) > 6:
                new += ".conv_du." + {"1": "0", "3": "2"}[parts[7]]
        out[f"module.{new}.{p}"] = v.clone()
    eye = torch.eye(3).view(3, 3, 1, 1)
    out["module.sub_mean.weight"], out["module.sub_mean.bias"] = eye, -255 * torch.tensor([0.4488, 0.4371, 0.4040])
    out["module.add_mean.weight"], out["module.add_mean.bias"] = eye, 255 * torch.tensor([0.4488, 0.4371, 0.4040])
    return out


def test_rcan_official_checkpoint_is_converted(tmp_path):
    torch.manual_seed(1)
    src = RCAN(scale=2, num_group=2, num_block=3)
    official = official_layout(src.state_dict(), groups=2, blocks=3)
    assert "module.body.0.body.3.weight" in official and "module.body.2.weight" in official
    converted = rcan_state_dict_from_official(official)
    assert set(converted) == set(src.state_dict())
    path = tmp_path / "RCAN_BIX2.pt"
    torch.save(official, path)
    dst = load_weights(RCAN(scale=2, num_group=2, num_block=3), path)  # converted on its own
    x = torch.rand(1, 3, 10, 10)
    assert torch.equal(dst(x), src(x))
    with pytest.raises(KeyError, match="tail.7"):
        rcan_state_dict_from_official({**official, "tail.7.weight": torch.zeros(1)})


# ------------------------------------------------------------------------------------------
# IDN
# ------------------------------------------------------------------------------------------
def idn_count(feat: int = 64, d: int = 16, s: int = 4, blocks: int = 4, g: int = 4) -> int:
    keep = feat // s
    block = (conv(feat, feat - d) + conv(feat - d, feat - 2 * d, groups=g) + conv(feat - 2 * d, feat)
             + conv(feat - keep, feat) + conv(feat, feat - d, groups=g) + conv(feat - d, feat + keep)
             + conv(feat + keep, feat, 1))
    return conv(3, feat) + conv(feat, feat) + blocks * block + (feat * 3 * 17 * 17 + 3)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_idn_shapes_and_parameter_count(scale):
    m = IDN(scale=scale)
    assert n_params(m) == idn_count() == 590_915
    assert m(torch.rand(1, 3, 10, 13)).shape == (1, 3, 10 * scale, 13 * scale)


def test_idn_skip_path_is_bicubic():
    # with the reconstruction deconvolution zeroed, IDN is exactly its bicubic skip path
    m = IDN(scale=2, num_feat=16, diff=4, num_blocks=1)
    with torch.no_grad():
        m.reconstruct.weight.zero_()
        m.reconstruct.bias.zero_()
    x = torch.rand(1, 3, 9, 11)
    torch.testing.assert_close(m(x), F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False))
    from metasr_adapter.ops.degrade import imresize

    m.bicubic = "matlab"
    torch.testing.assert_close(m(x), imresize(x, 2.0))


def test_idn_bad_settings_name_the_value():
    with pytest.raises(ValueError, match="groups=5"):
        IDN(groups=5)
    with pytest.raises(ValueError, match="scale=1.5"):
        IDN(scale=1.5)
    with pytest.raises(ValueError, match="bicubic='lanczos'"):
        IDN(bicubic="lanczos")


# ------------------------------------------------------------------------------------------
# wrapping them
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch,kwargs", [("rcan", {"num_feat": 16, "num_group": 1, "num_block": 2,
                                                   "squeeze_factor": 4}),
                                         ("idn", {"num_feat": 16, "diff": 4, "num_blocks": 1})])
def test_lr_input_networks_adapt_and_load(tmp_path, photo, arch, kwargs):
    torch.manual_seed(0)
    path = save_weights(get_model(arch, scale=2, **kwargs), tmp_path / f"{arch}.pth",
                        arch_kwargs={"scale": 2, **kwargs})
    model = load_model(arch, path)  # rebuilt from the saved arch_kwargs
    before = {k: v.clone() for k, v in model.state_dict().items()}
    msr = MetaSR(model, scale=2)
    lr = photo[:24, :30]
    sr0 = msr.adapt(lr, "bicubic", steps=0)
    sr2, info = msr.adapt(lr, "bicubic", steps=2, return_info=True)
    assert sr0.shape == sr2.shape == (48, 60, 3)
    assert len(info.losses) == 2 and np.isfinite(info.losses).all()
    assert not np.array_equal(sr0, sr2)  # the steps changed the output
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the model itself is not


def test_adaptation_loss_can_be_l2(photo):
    # a zeroed last layer makes MZSRNet the bicubic upsampling of its input, so the first loss is
    # known by hand: the mean (absolute | squared) error between bicubic(son) and the LR image
    from metasr_adapter import MZSRNet
    from metasr_adapter.ops.degrade import imresize

    net = MZSRNet(width=8, depth=3)
    with torch.no_grad():
        net.conv3.weight.zero_()
        net.conv3.bias.zero_()
    lr = photo[40:72, 60:100]
    x = torch.from_numpy(lr.transpose(2, 0, 1)[None].astype(np.float64) / 255.0)
    up = imresize(imresize(x, 0.5), 2.0, output_shape=x.shape[-2:]).float()
    err = up - x.float()
    for loss, expected in (("l1", err.abs().mean()), ("l2", (err ** 2).mean())):
        _, info = MetaSR(net, 2, loss=loss).adapt(lr, "bicubic", steps=1, return_info=True)
        assert info.losses[0] == pytest.approx(float(expected), rel=1e-4), loss
    with pytest.raises(ValueError, match="loss='huber'"):
        MetaSR(net, 2, loss="huber")

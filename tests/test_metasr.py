"""MetaSR.adapt: the MZSR meta-test procedure, its formats, its errors, and model safety."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metasr_adapter import MetaSR, MZSRNet
from metasr_adapter.ops.degrade import degrade, imresize


def tiny_net(seed: int = 0) -> MZSRNet:
    torch.manual_seed(seed)
    return MZSRNet(width=8, depth=3)


class PixelShuffleNet(nn.Module):
    """A post-upsampling toy network (takes the LR image, outputs x2)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Conv2d(3, 12, 3, padding=1)
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x):
        return self.shuffle(self.body(x)) + F.interpolate(x, scale_factor=2, mode="nearest")


@pytest.fixture
def small_lr(photo):
    return photo[200:248, 180:236]  # 48x56 RGB uint8


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_unchanged(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_zero_steps_is_the_network_on_the_bicubic_input(small_lr):
    net = tiny_net()
    sr = MetaSR(net, 2).adapt(small_lr, "gd2.0", steps=0)
    x = torch.from_numpy(small_lr).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        ref = net(imresize(x, 2, output_shape=(96, 112))).clamp(0, 1)
    assert sr.shape == (96, 112, 3) and sr.dtype == np.uint8
    assert np.array_equal(sr, np.round(ref[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8))


def test_steps_are_plain_sgd_on_the_son_with_the_schedule(small_lr):
    """Re-derive MZSR's meta-test (SPEC §5) by hand with autograd and compare."""
    net = tiny_net()
    msr = MetaSR(net, 2, schedule="mzsr_direct")
    steps = 5
    sr, info = msr.adapt(small_lr, "gd2.0", steps=steps, return_info=True)
    assert info.lrs == [2e-2, 1e-2, 1e-2, 1e-2, 5e-3]

    ref = tiny_net()
    x = torch.from_numpy(small_lr).permute(2, 0, 1)[None].float() / 255
    from metasr_adapter.ops.kernels import named_kernel

    k = named_kernel("gd2.0")
    son = degrade(x, k.kernel, 2, ds_method="direct").clamp(0, 1)
    son_up = imresize(son, 2, output_shape=x.shape[-2:])
    opt = torch.optim.SGD(ref.parameters(), lr=1.0)
    losses = []
    for lr in info.lrs:
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad()
        loss = (ref(son_up) - x).abs().mean()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    np.testing.assert_allclose(info.losses, losses, rtol=1e-5)
    with torch.no_grad():
        out = ref(imresize(x, 2, output_shape=(96, 112))).clamp(0, 1)
    expect = np.round(out[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    assert np.abs(sr.astype(int) - expect.astype(int)).max() <= 1
    assert info.losses[-1] < info.losses[0]


def test_adapt_never_changes_the_wrapped_model(small_lr):
    net = tiny_net()
    before = snapshot(net)
    net.train()
    MetaSR(net, 2).adapt(small_lr, "gd2.0", steps=3)
    assert_unchanged(net, before)
    assert net.training, "the module's train/eval flag is restored"

    def boom(rec):
        if rec.step == 1:
            raise RuntimeError("callback failed half-way")

    with pytest.raises(RuntimeError, match="half-way"):
        MetaSR(net, 2).adapt(small_lr, "gd2.0", steps=5, callback=boom)
    assert_unchanged(net, before)
    assert all(p.grad is None for p in net.parameters())


def test_output_formats(small_lr):
    msr = MetaSR(tiny_net(), 2)
    f = small_lr.astype(np.float32) / 255
    out = msr.adapt(f, "gd2.0", steps=1)
    assert out.dtype == np.float32 and out.shape == (96, 112, 3) and out.min() >= 0 and out.max() <= 1
    t = torch.from_numpy(f).permute(2, 0, 1)[None]
    out_t = msr.adapt(t, "gd2.0", steps=1)
    assert isinstance(out_t, torch.Tensor) and out_t.shape == (1, 3, 96, 112)
    np.testing.assert_allclose(out_t[0].permute(1, 2, 0).numpy(), out, atol=1e-5)
    assert msr.adapt(t[0], "gd2.0", steps=0).shape == (3, 96, 112)
    gray = small_lr[:, :, 1]
    g = msr.adapt(gray, "gd2.0", steps=1)
    assert g.shape == (96, 112) and g.dtype == np.uint8
    rgba = np.dstack([small_lr, np.full(small_lr.shape[:2], 200, np.uint8)])
    o4 = msr.adapt(rgba, "gd2.0", steps=1)
    assert o4.shape == (96, 112, 4)
    assert np.all(o4[:, :, 3] == 200), "a constant alpha stays constant under bicubic resizing"
    assert np.array_equal(o4[:, :, :3], msr.adapt(small_lr, "gd2.0", steps=1))


def test_odd_sizes_and_post_upsampling_networks(photo):
    lr = photo[100:133, 100:145]  # 33x45
    assert MetaSR(tiny_net(), 2).adapt(lr, "gd2.0", steps=1).shape == (66, 90, 3)
    torch.manual_seed(0)
    net = PixelShuffleNet()
    before = snapshot(net)
    msr = MetaSR(net, 2, upsample_input=False, schedule=0.01)
    sr, info = msr.adapt(lr, "gb1.3", steps=3, return_info=True)
    assert sr.shape == (66, 90, 3) and len(info.losses) == 3
    assert_unchanged(net, before)


def test_bicubic_kernel_and_custom_arrays(small_lr):
    msr = MetaSR(tiny_net(), 2)
    a = msr.adapt(small_lr, None, steps=1)
    b = msr.adapt(small_lr, "bicubic", steps=1)
    assert np.array_equal(a, b)
    from metasr_adapter.ops.kernels import named_kernel

    k = named_kernel("gd2.0").kernel
    assert np.array_equal(msr.adapt(small_lr, k, steps=1), msr.adapt(small_lr, "gd2.0", steps=1))


def test_bad_input_is_explained(small_lr):
    msr = MetaSR(tiny_net(), 2)
    with pytest.raises(ValueError, match="too small"):
        msr.adapt(small_lr[:6, :6], "gd2.0", steps=1)
    with pytest.raises(ValueError, match="larger than"):
        msr.adapt(small_lr[:12, :12], "gd2.0", steps=1)  # 21x21 kernel
    with pytest.raises(ValueError, match="steps"):
        msr.adapt(small_lr, "gd2.0", steps=-1)
    with pytest.raises(ValueError, match="precision"):
        MetaSR(tiny_net(), 2, precision="fp8")
    with pytest.raises(ValueError, match="scale"):
        MetaSR(tiny_net(), 1)
    with pytest.raises(TypeError, match="nn.Module"):
        MetaSR(lambda x: x, 2)
    with pytest.raises(ValueError, match="either"):
        msr.adapt(small_lr, "gd2.0", steps=1, lr=0.1, schedule="mzsr_direct")


def test_callback_and_back_projection(small_lr):
    msr = MetaSR(tiny_net(), 2)
    seen = []
    msr.adapt(small_lr, "gd2.0", steps=3, callback=seen.append)
    assert [r.step for r in seen] == [0, 1, 2]
    plain = msr.adapt(small_lr, "gd2.0", steps=1)
    bp = msr.adapt(small_lr, "gd2.0", steps=1, back_projection=True)
    assert bp.shape == plain.shape and not np.array_equal(bp, plain)


def test_bf16_runs_close_to_fp32(small_lr):
    net = tiny_net()
    with pytest.warns(RuntimeWarning, match="bf16") if not _fast_bf16() else _nullctx():
        fast = MetaSR(net, 2, precision="bf16")
    a = MetaSR(net, 2).adapt(small_lr, "gd2.0", steps=2)
    b = fast.adapt(small_lr, "gd2.0", steps=2)
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 2.0


def _fast_bf16() -> bool:
    from metasr_adapter.precision import bf16_supported

    return bf16_supported(torch.device("cpu"))


class _nullctx:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


@pytest.mark.shared
def test_official_meta_test_intermediates_on_butterfly():
    """SPEC §0 fixture: the official TF graph's intermediates with θ_T on Set5 butterfly."""
    from conftest import shared_path

    from metasr_adapter.io.weights import load_weights

    ref = np.load(shared_path("fixtures", "reference_arrays_butterfly.npz"))
    net = load_weights(MZSRNet(), shared_path("weights", "mzsr_official", "mzsr_pretrained_bicubic.npz"))
    hwc = lambda t: t[0].permute(1, 2, 0).detach().numpy()
    session = MetaSR(net, 2, schedule="mzsr_direct").start(ref["lr_input"], ref["kernel"])
    np.testing.assert_allclose(hwc(session.son), ref["lr_son"], atol=2e-6)
    np.testing.assert_allclose(hwc(session.son_input), ref["ilr_son"], atol=2e-6)
    np.testing.assert_allclose(hwc(session.lr_input), ref["ilr"], atol=2e-6)
    np.testing.assert_allclose(hwc(session.sr_tensor()), np.clip(ref["sr_init"], 0, 1), atol=2e-6)
    loss, grads = session.gradients()
    assert loss == pytest.approx(float(ref["losses10"][0]), rel=1e-6)
    # The L1 gradient is sign(f(son) - LR): float32 round-off flips the sign at a few pixels
    # whose residual is ~0, in TF as here. Both implementations sit ~2e-4 (relative) from a
    # float64 computation in the first layers and ~1e-6 in the last; 5e-4 bounds their gap.
    for k in range(1, 9):
        g = grads[f"conv{k}.weight"].permute(2, 3, 1, 0).numpy()  # OIHW -> HWIO
        r = ref[f"grad0/MODEL/conv{k}/kernel"]
        assert np.linalg.norm(g - r) / np.linalg.norm(r) < 5e-4, k
        rb = ref[f"grad0/MODEL/conv{k}/bias"]
        assert np.linalg.norm(grads[f"conv{k}.bias"].numpy() - rb) / np.linalg.norm(rb) < 5e-4, k
    losses = [session.step().loss]
    np.testing.assert_allclose(hwc(session.sr_tensor()), np.clip(ref["sr_after1"], 0, 1), atol=1e-5)
    losses += [session.step().loss for _ in range(9)]
    np.testing.assert_allclose(losses, ref["losses10"], rtol=1e-5)
    np.testing.assert_allclose(hwc(session.sr_tensor()), np.clip(ref["sr_after10"], 0, 1), atol=1e-5)


@pytest.mark.parametrize("kernel, modes", [("gb1.3", range(8)), ("gd2.0", (0, 3))])
def test_self_ensemble_is_the_median_of_the_transforms_that_keep_the_grid(small_lr, kernel, modes):
    """All 8 transforms on the bicubic grid; on the direct grid only identity and transpose, since a flip
    would move the output by s-1 pixels (issue #20)."""
    from metasr_adapter.ops.augment import dihedral, inverse_dihedral

    net = tiny_net()
    msr = MetaSR(net, 2)
    out = msr.adapt(small_lr, kernel, steps=0, self_ensemble=True)
    x = torch.from_numpy(small_lr).permute(2, 0, 1)[None].float() / 255
    up = imresize(x.double(), 2, output_shape=(96, 112)).float()
    with torch.no_grad():
        outs = torch.stack([inverse_dihedral(net(dihedral(up, m)), m).clamp(0, 1) for m in modes])
    mid = len(outs) // 2
    med = outs.sort(dim=0).values[mid - 1 : mid + 1].mean(dim=0)  # np.median of an even count
    expect = np.round(med[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    assert np.abs(out.astype(int) - expect.astype(int)).max() <= 1
    assert not np.array_equal(out, msr.adapt(small_lr, kernel, steps=0))


def test_augmented_pairs_are_degraded_after_the_transform(small_lr, monkeypatch):
    """augment=True under direct subsampling: every (son, LR) pair is the transformed LR and its own son
    (kernel turned with it), not a flipped son, which would sit s-1 pixels off its target (issue #20)."""
    from metasr_adapter.ops.augment import dihedral
    from metasr_adapter.ops.kernels import named_kernel

    msr = MetaSR(tiny_net(), 2)
    pairs = []
    run = msr._run
    monkeypatch.setattr(msr, "_run", lambda params, inp, shape: (pairs.append((inp, shape)), run(params, inp, shape))[1])
    session = msr.start(small_lr, "gd2.0", augment=True, seed=3)
    for _ in range(12):
        session.step()
    k = named_kernel("gd2.0").kernel
    seen = set()
    for inp, shape in pairs:
        for mode in range(8):
            target = dihedral(session.lr_image, mode)
            if tuple(target.shape[-2:]) != tuple(shape):
                continue
            son = degrade(target.double(), np.ascontiguousarray(dihedral(k, mode, dims=(0, 1))), 2,
                          ds_method="direct").clamp(0, 1).float()
            if torch.allclose(inp, msr._network_input(son.double(), shape).float(), atol=1e-6):
                seen.add(mode)
                break
        else:
            raise AssertionError("a training pair is not the transformed LR image with its own son")
    assert len(seen) >= 4  # several modes were drawn


def test_augment_and_noise_are_seeded(small_lr):
    msr = MetaSR(tiny_net(), 2)
    a = msr.adapt(small_lr, "gd2.0", steps=3, augment=True, noise_std=0.01, seed=1)
    b = msr.adapt(small_lr, "gd2.0", steps=3, augment=True, noise_std=0.01, seed=1)
    c = msr.adapt(small_lr, "gd2.0", steps=3, augment=True, noise_std=0.01, seed=2)
    plain = msr.adapt(small_lr, "gd2.0", steps=3)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c) and not np.array_equal(a, plain)


@pytest.mark.parametrize("faster", [True, False])
def test_adaptation_steps_run_channels_last_where_that_layout_is_faster(small_lr, monkeypatch, faster):
    """fp32 adaptation steps run NHWC where `channels_last_trains_faster` says so (CPUs with AVX-512: 0.88x the
    NCHW step time, benchmarks/bench_adapt.py), NCHW elsewhere; channels_last= overrides; the result is the same
    arithmetic (float round-off only)."""
    from metasr_adapter import precision as precision_module

    monkeypatch.setattr(precision_module, "channels_last_trains_faster", lambda device: faster)
    net = tiny_net()
    seen: list[bool] = []
    hook = net.conv1.register_forward_hook(
        lambda mod, inp, out: seen.append(inp[0].is_contiguous(memory_format=torch.channels_last)
                                          and not inp[0].is_contiguous()))
    auto = MetaSR(net, 2)
    assert auto.channels_last is faster
    session = auto.start(small_lr, "gd2.0")
    seen.clear()
    session.step()
    assert seen and all(s is faster for s in seen)  # the step's forward passes, in the chosen layout
    other = MetaSR(net, 2, channels_last=not faster)
    assert other.channels_last is (not faster)
    hook.remove()
    a = auto.adapt(small_lr, "gd2.0", steps=3, return_info=True)
    b = other.adapt(small_lr, "gd2.0", steps=3, return_info=True)
    assert np.abs(a[0].astype(int) - b[0].astype(int)).max() <= 1
    assert np.allclose(a[1].losses, b[1].losses, rtol=1e-4)

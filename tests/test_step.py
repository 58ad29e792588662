"""The adaptation step written once (issue #20, structure 2): ``metasr_adapter.adapt.step`` moves the weights for
test-time adaptation, meta-training's inner loop and the kernel search, in any grad mode and precision; and
``kernel="estimate"`` resolved above the adaptation layer (structure 1)."""
from __future__ import annotations

import subprocess
import sys
import warnings

import pytest
import torch
from torch import nn

from metasr_adapter import MetaSR, MZSRNet
from metasr_adapter.adapt.step import clone_weights, functional_loss, sgd_step
from metasr_adapter.estimate.gaussian_search import GaussianSearchConfig, gaussian_search
from metasr_adapter.meta.learner import inner_adapt
from metasr_adapter.ops.kernels import named_kernel
from metasr_adapter.ops.losses import l1_loss

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _net(seed: int = 0) -> MZSRNet:
    torch.manual_seed(seed)
    return MZSRNet(width=8, depth=3)


def _pair(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(2, 3, 12, 12, generator=gen), torch.rand(2, 3, 12, 12, generator=gen)


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
def test_inner_adapt_works_under_no_grad_and_inference_mode(mode):
    """Meta-test style use of meta-training's inner loop inside a pipeline's inference block. Under
    ``torch.inference_mode()`` it used to fail: autograd cannot save inference tensors for backward."""
    net = _net()
    x, y = _pair()
    ref = inner_adapt(net, dict(net.named_parameters()), x, y, 2, [0.1, 0.05], create_graph=False)
    ctx = torch.no_grad() if mode == "no_grad" else torch.inference_mode()
    with ctx:
        xi, yi = x.clone(), y.clone()  # inference tensors in that mode
        got = inner_adapt(net, {n: p.detach() for n, p in net.named_parameters()}, xi, yi, 2, [0.1, 0.05],
                          create_graph=False)
    for name, value in ref[-1].items():
        torch.testing.assert_close(got[-1][name], value, rtol=0, atol=0)
        assert not got[-1][name].is_inference()


def test_test_time_steps_are_meta_trainings_inner_steps():
    """``MetaSR``'s adaptation and ``inner_adapt`` on the same (son, LR) pair land on the same weights, to the
    bit: one step function (before, one rounded α·g separately and the other did not)."""
    net = _net(3)
    lr_img = torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(3))
    msr = MetaSR(net, 2)
    session = msr.start(lr_img, named_kernel("gd2.0"), lr=0.05)
    for _ in range(3):
        session.step()
    traj = inner_adapt(net, dict(net.named_parameters()), session.son_input, session.lr_image, 3, 0.05,
                       create_graph=False, loss_fn=l1_loss)
    for name in msr.adapt_names:
        torch.testing.assert_close(session.params[name], traj[-1][name], rtol=0, atol=0)


class _AutocastProbe(nn.Module):
    """A tiny network (bicubic-upsampled input) that records whether autocast was on at each call."""

    upsample_input = True
    receptive_radius = 1

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.autocast_seen: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.autocast_seen.append(torch.is_autocast_enabled(x.device.type))
        return x + self.conv(x)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_kernel_search_adapts_in_the_wrappers_precision(precision):
    """The scorer's adaptation steps and its final score run the network under the wrapper's precision
    (it used to ignore bf16)."""
    torch.manual_seed(0)
    net = _AutocastProbe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # bf16 without fast kernels on this CPU
        msr = MetaSR(net, 2, precision=precision)
    lr = torch.rand(1, 3, 48, 48, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    res = gaussian_search(msr, lr, GaussianSearchConfig(max_evals=1, steps=2, crops=1, crop=32))
    assert len(res.history) == 1
    assert len(net.autocast_seen) == 3  # two steps and the score
    assert net.autocast_seen == [precision == "bf16"] * 3


@pytest.mark.parametrize("mode", ["grad", "no_grad", "inference_mode"])
def test_sgd_step_is_functional_in_any_grad_mode(mode):
    net = _net(5)
    x, y = _pair(5)
    names = ["conv1.weight", "conv3.bias"]
    start = clone_weights(net.named_parameters(), names)
    before = {n: p.clone() for n, p in start.items()}

    def loss(weights):
        return functional_loss(net, weights, x, y)

    ctx = {"grad": torch.enable_grad(), "no_grad": torch.no_grad(), "inference_mode": torch.inference_mode()}[mode]
    with ctx:
        new, value = sgd_step(start, names, loss, lambda n: 0.1 if n == names[0] else 0.01)
    assert all(torch.equal(start[n], before[n]) for n in start)  # the given weights are left alone
    for n in names:
        assert new[n].is_leaf and new[n].requires_grad and not new[n].is_inference()
        assert not torch.equal(new[n], start[n])
    others = [n for n in start if n not in names]
    assert all(new[n] is start[n] for n in others)
    # the same step by hand
    w = {n: p.detach().requires_grad_(n in names) for n, p in before.items()}
    g = torch.autograd.grad(functional_loss(net, w, x, y), [w[n] for n in names])
    for n, gn, a in zip(names, g, (0.1, 0.01)):
        torch.testing.assert_close(new[n], before[n] - a * gn)
    assert float(value.detach()) == pytest.approx(float(functional_loss(net, before, x, y).detach()))


def test_second_order_needs_a_differentiable_update():
    net = _net()
    x, y = _pair()
    weights = dict(net.named_parameters())
    with pytest.raises(ValueError, match="create_graph=True .* needs differentiable=True"):
        sgd_step(weights, ["conv3.weight"], lambda w: functional_loss(net, w, x, y), 0.1, create_graph=True,
                 differentiable=False)


# -- kernel="estimate": resolved above the adaptation layer --------------------------------------------
def test_kernel_estimate_is_wired_by_the_package_without_an_upward_import():
    """Importing the adaptation layer alone loads no estimator; ``kernel="estimate"`` finds them through the
    registry that the package's ``__init__`` fills, whatever the import path; ``import metasr_adapter``
    itself still loads no torch."""
    code = (
        "import sys\n"
        "import metasr_adapter\n"
        "assert 'torch' not in sys.modules, 'import metasr_adapter loaded torch'\n"
        "from metasr_adapter.adapt.metasr import MetaSR\n"
        "assert not any(m.startswith('metasr_adapter.estimate') for m in sys.modules), 'adapt imported estimate'\n"
        "from metasr_adapter.resolvers import kernel_resolver\n"
        "f = kernel_resolver(' Estimate ')\n"
        "print(f.__module__, f.__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["metasr_adapter.estimate.api", "estimate_for_metasr"]


def test_an_unregistered_estimate_names_the_fix(monkeypatch):
    from metasr_adapter import resolvers

    monkeypatch.setattr(resolvers, "_RESOLVERS", {})
    msr = MetaSR(_net(), 2)
    with pytest.raises(ValueError, match=r"kernel='estimate' has no resolver.*register_kernel_resolver"):
        msr.start(torch.rand(1, 3, 16, 16), "estimate")


def test_a_registered_kernel_resolver_is_used(monkeypatch):
    from metasr_adapter import resolvers

    monkeypatch.setattr(resolvers, "_RESOLVERS", dict(resolvers._RESOLVERS))
    calls = []

    def mine(msr, lr_img, ds_method, *, seed=None):
        calls.append((ds_method, seed))
        return named_kernel("gd0.2"), "my info"

    resolvers.register_kernel_resolver("Mine", mine)
    with pytest.raises(ValueError, match="already has a resolver"):
        resolvers.register_kernel_resolver("mine", mine)
    session = MetaSR(_net(), 2).start(torch.rand(1, 3, 24, 24), "MINE", seed=4)
    assert calls == [(None, 4)] and session.info.kernel_estimate == "my info"
    assert session.kernel.name == named_kernel("gd0.2").name

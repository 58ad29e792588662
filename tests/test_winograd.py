"""metasr_adapter.ops.winograd: Winograd convolutions and gradients, and their use by ops.conv and MAML."""
from __future__ import annotations

from fractions import Fraction

import pytest
import torch
from torch.nn import functional as F

from metasr_adapter.ops import conv as conv_ops
from metasr_adapter.ops import winograd
from metasr_adapter.ops.conv import conv2d, conv_algorithm, primitive_derivatives, set_conv_algorithm


@pytest.fixture(autouse=True)
def eager(monkeypatch):
    """The same code uncompiled: compiling every shape and layout here would take minutes
    (test_eager_and_compiled_agree checks the compiled path)."""
    monkeypatch.setattr(winograd, "COMPILE", False)


def _direct_weight_grad(gy: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    shape = [gy.shape[1], x.shape[1], 3, 3]
    return torch.ops.aten.convolution_backward(gy, x, torch.empty(shape), None, [1, 1], [1, 1], [1, 1], False,
                                               [0, 0], 1, [False, True, False])[1]


def _rel_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.fixture
def calls(monkeypatch):
    """Counts the Winograd calls that ops.conv makes, per function."""
    count = {"conv3x3": 0, "conv3x3_input_grad": 0, "conv3x3_weight_grad": 0}

    def counting(name):
        real = getattr(winograd, name)

        def wrapper(*args, **kwargs):
            count[name] += 1
            return real(*args, **kwargs)
        return wrapper

    for name in count:
        monkeypatch.setattr(winograd, name, counting(name))
    return count


def test_toom_cook_gives_lavin_and_grays_f4x3_matrices():
    """The derived matrices of F(4, 3) are the published ones (Lavin & Gray 2016, points 0, +-1, +-2, inf)."""
    at, g, bt = winograd.toom_cook(4, 3)
    assert bt == [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                  [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]]
    f = Fraction
    assert g == [[f(1, 4), 0, 0], [f(-1, 6), f(-1, 6), f(-1, 6)], [f(-1, 6), f(1, 6), f(-1, 6)],
                 [f(1, 24), f(1, 12), f(1, 6)], [f(1, 24), f(-1, 12), f(1, 6)], [0, 0, 1]]
    assert at == [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]]


@pytest.mark.parametrize("m,r", [(2, 3), (3, 4), (4, 3)])
def test_toom_cook_correlates_exactly(m, r):
    at, g, bt = (torch.tensor([[float(v) for v in row] for row in mat], dtype=torch.float64)
                 for mat in winograd.toom_cook(m, r))
    gen = torch.Generator().manual_seed(m * 10 + r)
    filt, data = torch.randn(r, generator=gen, dtype=torch.float64), torch.randn(m + r - 1, generator=gen,
                                                                                  dtype=torch.float64)
    expected = torch.stack([(filt * data[i:i + r]).sum() for i in range(m)])
    torch.testing.assert_close(at @ ((g @ filt) * (bt @ data)), expected, rtol=1e-12, atol=1e-12)


def test_toom_cook_names_repeated_points():
    with pytest.raises(ValueError, match=r"F\(4, 3\) needs 5 distinct points"):
        winograd.toom_cook(4, 3, points=(0, 1, 1, 2, -2))


@pytest.mark.parametrize("shape", [(2, 16, 16, 12, 12), (1, 24, 16, 9, 14)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_convolution_and_gradients_match_the_direct_ones(shape, channels_last):
    """Any size (tiles padded at the bottom and right, the padding cut off again), either layout, with a bias."""
    n, c_in, c_out, h, w = shape
    gen = torch.Generator().manual_seed(sum(shape))
    x, gy = torch.randn(n, c_in, h, w, generator=gen), torch.randn(n, c_out, h, w, generator=gen)
    weight, bias = torch.randn(c_out, c_in, 3, 3, generator=gen) * 0.1, torch.randn(c_out, generator=gen)
    if channels_last:
        x, gy = (t.contiguous(memory_format=torch.channels_last) for t in (x, gy))
    y = winograd.conv3x3(x, weight, bias)
    assert y.shape == (n, c_out, h, w)
    assert y.is_contiguous(memory_format=torch.channels_last) if channels_last else y.is_contiguous()  # x's layout
    assert _rel_error(y, F.conv2d(x, weight, bias, padding=1)) < 1e-5
    gx = winograd.conv3x3_input_grad(gy, weight)
    assert gx.shape == x.shape and _rel_error(gx, F.conv_transpose2d(gy, weight, padding=1)) < 1e-5
    gw = winograd.conv3x3_weight_grad(gy, x)
    assert gw.shape == (c_out, c_in, 3, 3) and gw.dtype == torch.float32
    assert _rel_error(gw, _direct_weight_grad(gy, x)) < 1e-5


def test_eager_and_compiled_agree():
    gen = torch.Generator().manual_seed(5)
    x, gy = torch.randn(2, 16, 12, 12, generator=gen), torch.randn(2, 16, 12, 12, generator=gen)
    weight = torch.randn(16, 16, 3, 3, generator=gen)
    torch.testing.assert_close(winograd.conv3x3(x, weight, compiled=True), winograd.conv3x3(x, weight),
                               rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(winograd.conv3x3_weight_grad(gy, x, compiled=True),
                               winograd.conv3x3_weight_grad(gy, x), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("case,match", [
    ("bf16", "bfloat16"), ("rgb", r"\(2, 3, 8, 8\)"), ("size", r"grad_out \(2, 16, 8, 6\).*shape \(2, 16, 8, 8\)")])
def test_weight_grad_names_what_it_cannot_take(case, match):
    x, gy = torch.randn(2, 16, 8, 8), torch.randn(2, 16, 8, 8)
    if case == "bf16":
        x, gy = x.bfloat16(), gy.bfloat16()
    elif case == "rgb":
        x = torch.randn(2, 3, 8, 8)
    else:
        gy = torch.randn(2, 16, 8, 6)
    with pytest.raises(ValueError, match=match):
        winograd.conv3x3_weight_grad(gy, x)


def test_convolution_names_a_kernel_or_bias_it_cannot_take():
    x = torch.randn(1, 16, 8, 8)
    with pytest.raises(ValueError, match=r"kernel \(16, 16, 5, 5\).*use torch's convolution"):
        winograd.conv3x3(x, torch.randn(16, 16, 5, 5))
    with pytest.raises(ValueError, match=r"bias \(8,\).*shape \(16,\)"):
        winograd.conv3x3(x, torch.randn(16, 16, 3, 3), torch.randn(8))
    with pytest.raises(ValueError, match=r"weight \(16, 16, 3, 3\) torch.float64"):
        winograd.conv3x3_input_grad(x, torch.randn(16, 16, 3, 3, dtype=torch.float64))


def test_supports_only_wide_fp32_3x3_padding_1():
    x = torch.randn(1, 16, 8, 8)
    assert winograd.supports(x, (16, 16, 3, 3), 1)
    assert not winograd.supports(x, (16, 16, 3, 3), 0)
    assert not winograd.supports(x, (3, 16, 3, 3), 1)
    assert not winograd.supports(x, (16, 16, 5, 5), 1)
    assert not winograd.supports(x.double(), (16, 16, 3, 3), 1)


def test_set_conv_algorithm_names_an_unknown_one_and_the_block_restores():
    with pytest.raises(ValueError, match="'fft'.*direct, winograd"):
        set_conv_algorithm("fft")
    with pytest.raises(RuntimeError):
        with conv_algorithm("winograd"):
            assert conv_ops._algorithm == "winograd"
            raise RuntimeError
    assert conv_ops._algorithm == "direct"


def test_conv2d_runs_the_wide_layer_by_winograd_in_gradients_of_every_order(calls):
    """The wide layer's convolutions, input and weight gradients go to Winograd in a graph built for second order
    (MAML's double backward), with the direct values; the RGB layers and the last, graph-free backward stay direct."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 12, 12, generator=gen).contiguous(memory_format=torch.channels_last)
    w1, w2, w3 = (torch.randn(*s, generator=gen).mul_(0.2).requires_grad_()
                  for s in [(16, 3, 3, 3), (16, 16, 3, 3), (3, 16, 3, 3)])

    def loss():
        h = F.relu(conv2d(x, w1, None, padding=1))
        return conv2d(F.relu(conv2d(h, w2, None, padding=1)), w3, None, padding=1).square().mean()

    def gradients():
        first = torch.autograd.grad(loss(), [w1, w2, w3], create_graph=True)
        second = torch.autograd.grad(sum(g.square().sum() for g in first), [w1, w2, w3])
        plain = torch.autograd.grad(loss(), [w1, w2, w3])  # graph-free: one combined backward
        return [*first, *second, *plain]

    with primitive_derivatives():
        direct = gradients()
        assert sum(calls.values()) == 0
        with conv_algorithm("winograd"):
            ours = gradients()
    # w2's layer: forwards (3 graphs), its input gradient (2 graph-building backwards), its weight gradient (first
    # order, and in the double backward)
    assert calls["conv3x3"] >= 3 and calls["conv3x3_input_grad"] >= 1 and calls["conv3x3_weight_grad"] >= 2
    for a, b in zip(ours, direct):
        assert _rel_error(a.detach(), b.detach()) < 1e-4


def test_maml_winograd_meta_gradient_matches_direct(calls):
    from metasr_adapter import MZSRNet
    from metasr_adapter.meta.learner import MAMLConfig, MetaLearner, TaskBatch

    gen = torch.Generator().manual_seed(0)
    batch = TaskBatch(*(torch.rand(2, 2, 3, 16, 16, generator=gen) for _ in range(4)))
    grads = {}
    for algorithm in ("direct", "winograd"):
        torch.manual_seed(0)
        learner = MetaLearner(MZSRNet(), MAMLConfig(inner_steps=2, conv_algorithm=algorithm))
        before = sum(calls.values())
        learner.meta_gradient(batch, 0)
        assert (sum(calls.values()) > before) == (algorithm == "winograd")
        grads[algorithm] = torch.cat([p.grad.flatten() for p in learner.params])
    assert conv_ops._algorithm == "direct"  # switched on only while the meta-gradient was built
    assert float((grads["winograd"] - grads["direct"]).norm() / grads["direct"].norm()) < 1e-4


@pytest.mark.parametrize("kwargs,match", [
    ({"conv_algorithm": "fft"}, "conv_algorithm.*'fft'"),
    ({"conv_algorithm": "winograd", "conv_derivatives": "torch"}, "conv_derivatives='torch' switches off"),
    ({"conv_algorithm": "winograd", "precision": "bf16"}, "computes in fp32"),
])
def test_maml_config_names_a_bad_conv_algorithm(kwargs, match):
    from metasr_adapter.meta.learner import MAMLConfig

    with pytest.raises(ValueError, match=match):
        MAMLConfig(**kwargs)

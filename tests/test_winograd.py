"""metasr_adapter.ops.winograd: Winograd convolutions and gradients, and their use by ops.conv and MAML."""
from __future__ import annotations

import warnings
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


def _needs_native():
    if winograd.native.load("winograd") is None:
        pytest.skip(f"native kernels unavailable: {winograd.native.why_unavailable('winograd')}")


@pytest.mark.parametrize("backend", ["native", "eager"])
@pytest.mark.parametrize("shape", [(2, 16, 16, 12, 12), (1, 24, 16, 9, 14), (1, 48, 80, 9, 14), (3, 32, 16, 21, 5)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_convolution_and_gradients_match_the_direct_ones(shape, channels_last, backend, monkeypatch):
    """Any size (tiles padded at the bottom and right, the padding cut off again), either layout, with a bias; the
    native kernels with channel counts that fill one to four vectors and blocks that end mid-row (24 channels go
    to the torch code)."""
    if backend == "native":
        _needs_native()
    else:
        monkeypatch.setenv("METASR_NATIVE", "0")
        monkeypatch.setattr(winograd.native, "_loaded", {})
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
    torch.testing.assert_close(winograd.conv3x3(x, weight, backend="compiled"),
                               winograd.conv3x3(x, weight, backend="eager"), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(winograd.conv3x3_weight_grad(gy, x, backend="compiled"),
                               winograd.conv3x3_weight_grad(gy, x, backend="eager"), rtol=1e-5, atol=1e-4)


def test_native_kernels_are_the_default_where_they_build_and_repeat_to_the_bit():
    _needs_native()
    assert winograd.default_backend() == "native"
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(4, 64, 20, 20, generator=gen).contiguous(memory_format=torch.channels_last)
    gy = torch.randn(4, 64, 20, 20, generator=gen).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(64, 64, 3, 3, generator=gen)
    for run in (lambda: winograd.conv3x3(x, weight), lambda: winograd.conv3x3_input_grad(gy, weight),
                lambda: winograd.conv3x3_weight_grad(gy, x)):
        assert torch.equal(run(), run())


def test_native_backend_says_why_it_is_unavailable_and_the_default_falls_back(monkeypatch):
    monkeypatch.setenv("METASR_NATIVE", "0")
    monkeypatch.setattr(winograd.native, "_loaded", {})
    monkeypatch.setattr(winograd.native, "_reasons", {})
    x, weight = torch.randn(1, 16, 8, 8), torch.randn(16, 16, 3, 3)
    with pytest.raises(RuntimeError, match="unavailable: METASR_NATIVE=0"):
        winograd.conv3x3(x, weight, backend="native")
    assert winograd.default_backend() == "eager"  # COMPILE is off in these tests
    assert _rel_error(winograd.conv3x3(x, weight), F.conv2d(x, weight, padding=1)) < 1e-5
    with pytest.raises(ValueError, match="backend 'fft'.*native, compiled, eager"):
        winograd.conv3x3(x, weight, backend="fft")


def test_native_build_is_cached_per_source_and_a_failed_build_is_named(monkeypatch, tmp_path):
    from metasr_adapter.ops import native

    if native._compiler() is None:
        pytest.skip("no C++ compiler")
    monkeypatch.setenv("METASR_NATIVE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(native, "_loaded", {})
    assert native.load("winograd") is not None
    built = list((tmp_path / "cache").iterdir())
    assert len(built) == 1 and built[0].name.startswith("winograd-") and built[0].suffix == ".so"  # no temp file
    stamp = built[0].stat().st_mtime_ns
    monkeypatch.setattr(native, "_loaded", {})
    assert native.load("winograd") is not None and built[0].stat().st_mtime_ns == stamp  # taken from the cache
    # a changed source builds anew; a compiler that fails leaves no file and says so
    source = tmp_path / "src"
    source.mkdir()
    (source / "winograd.cpp").write_text((native.SOURCES / "winograd.cpp").read_text() + "\n#error broken\n")
    monkeypatch.setattr(native, "SOURCES", source)
    monkeypatch.setattr(native, "_loaded", {})
    monkeypatch.setattr(native, "_reasons", {})
    assert native.load("winograd") is None
    assert "failed on winograd.cpp" in native.why_unavailable("winograd")
    assert "broken" in native.why_unavailable("winograd")
    assert list((tmp_path / "cache").iterdir()) == built


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
    (MAML's double backward), with the direct values; the RGB layers stay direct."""
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


def test_a_graph_built_under_winograd_differentiates_by_winograd_after_the_block(calls):
    """The algorithm is the graph's: a backward run after the ``with`` block (MetaLearner.meta_gradient builds its
    graphs inside and calls backward outside) still computes by Winograd, and a graph built outside stays direct."""
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2, 16, 12, 12, generator=gen).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(16, 16, 3, 3, generator=gen).requires_grad_()
    with primitive_derivatives():
        with conv_algorithm("winograd"):
            (g,) = torch.autograd.grad(conv2d(x, weight, None, padding=1).square().sum(), weight, create_graph=True)
        before = dict(calls)
        g.square().sum().backward()
        assert calls["conv3x3"] > before["conv3x3"] or calls["conv3x3_input_grad"] > before["conv3x3_input_grad"]
        before = sum(calls.values())
        conv2d(x, weight, None, padding=1).square().sum().backward()
        assert sum(calls.values()) == before


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
    # MZSR's meta-gradient jumps at ReLU and L1 kinks: on this small problem, weights perturbed by 1e-6 of their
    # size move the direct fp32 meta-gradient by 8e-4 (relative, against float64), Winograd's 1e-5 per convolution
    # by 1.8e-3; a wrong gradient is off by O(1)
    assert float((grads["winograd"] - grads["direct"]).norm() / grads["direct"].norm()) < 5e-3


@pytest.mark.parametrize("kwargs,match", [
    ({"conv_algorithm": "fft"}, "conv_algorithm.*'fft'"),
    ({"conv_algorithm": "winograd", "conv_derivatives": "torch"}, "conv_derivatives='torch' switches off"),
    ({"conv_algorithm": "winograd", "precision": "bf16"}, "computes in fp32"),
])
def test_maml_config_names_a_bad_conv_algorithm(kwargs, match):
    from metasr_adapter.meta.learner import MAMLConfig

    with pytest.raises(ValueError, match=match):
        MAMLConfig(**kwargs)


def test_auto_picks_winograd_for_fp32_second_order_on_cpu_where_the_kernels_build(monkeypatch, calls):
    from metasr_adapter import MZSRNet
    from metasr_adapter.meta.learner import MAMLConfig, MetaLearner, TaskBatch

    _needs_native()
    assert MAMLConfig().conv_algorithm == "auto"

    def in_use(**config):
        return MetaLearner(MZSRNet(), MAMLConfig(inner_steps=1, **config)).conv_algorithm_in_use()

    assert in_use() == "winograd"
    assert in_use(conv_algorithm="direct") == "direct"
    for other in (dict(first_order=True), dict(precision="bf16"), dict(task_threads=2),
                  dict(conv_derivatives="torch")):
        assert in_use(**other) == "direct", other
    learner = MetaLearner(MZSRNet(), MAMLConfig(inner_steps=1))
    gen = torch.Generator().manual_seed(1)
    learner.meta_gradient(TaskBatch(*(torch.rand(2, 1, 3, 12, 12, generator=gen) for _ in range(4))), 0)
    assert calls["conv3x3_weight_grad"] > 0
    monkeypatch.setattr(torch.cpu, "_is_avx512_supported", lambda: False)
    assert in_use() == "direct"  # AVX2 only: not measured there, not chosen
    assert in_use(conv_algorithm="winograd") == "winograd"  # asked for
    monkeypatch.undo()
    monkeypatch.setenv("METASR_NATIVE", "0")
    monkeypatch.setattr(winograd.native, "_loaded", {})
    assert in_use() == "direct"  # the torch-compiled transforms gain too little to be chosen by themselves


class _Counting:
    """Counts the native kernels' calls (the functions ops.winograd's public ones end in)."""

    def __init__(self, monkeypatch):
        self.count = {"conv": 0, "weight_grad": 0}
        real_conv, real_wgrad = winograd._native_conv, winograd._native_weight_grad

        def conv(*args, **kwargs):
            self.count["conv"] += 1
            return real_conv(*args, **kwargs)

        def wgrad(*args, **kwargs):
            self.count["weight_grad"] += 1
            return real_wgrad(*args, **kwargs)
        monkeypatch.setattr(winograd, "_native_conv", conv)
        monkeypatch.setattr(winograd, "_native_weight_grad", wgrad)


def test_winograd_convolutions_route_any_networks_eligible_layers(monkeypatch):
    """A user's network of nn.Conv2d layers: the 3x3 stride-1 layers with channel counts of multiples of 16 run on
    the native kernels (padding 1 or 'same'), with the direct values and gradients of first and second order; the
    RGB layers, a strided and a 24-channel layer stay direct; under no_grad only the forward runs."""
    from torch import nn
    from metasr_adapter.ops.conv import winograd_convolutions

    _needs_native()
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
                        nn.Conv2d(32, 16, 3, padding="same"), nn.ReLU(), nn.Conv2d(16, 24, 3, padding=1),
                        nn.Conv2d(24, 16, 3, stride=2, padding=1), nn.Conv2d(16, 3, 3, padding=1))
    x = torch.rand(2, 3, 18, 14)
    params = list(net.parameters())

    def grads():
        loss = net(x).square().mean()
        first = torch.autograd.grad(loss, params, create_graph=True)
        second = torch.autograd.grad(sum(g.square().sum() for g in first), params)
        return [loss, *first, *second]

    direct = grads()
    counter = _Counting(monkeypatch)
    with winograd_convolutions():
        ours = grads()
    assert counter.count["conv"] >= 2 and counter.count["weight_grad"] >= 2  # the 16->32 and 32->16 layers
    for a, b in zip(ours, direct):
        assert _rel_error(a.detach(), b.detach()) < 1e-4
    counter.count.update(conv=0, weight_grad=0)
    with torch.no_grad(), winograd_convolutions():
        y = net(x)
    assert counter.count == {"conv": 2, "weight_grad": 0}
    assert _rel_error(y, net(x).detach()) < 1e-5


def test_metasr_adapts_with_winograd_when_asked_and_auto_picks_it_in_fp32_on_cpu(monkeypatch):
    from metasr_adapter import MetaSR, MZSRNet

    _needs_native()
    torch.manual_seed(0)
    model = MZSRNet()
    lr = torch.rand(1, 3, 40, 36)
    direct = MetaSR(model, scale=2, schedule=0.01).adapt(lr, "gd2.0", steps=2)
    counter = _Counting(monkeypatch)
    msr = MetaSR(model, scale=2, schedule=0.01, conv_algorithm="winograd")
    assert "conv_algorithm='winograd'" in repr(msr)
    ours = msr.adapt(lr, "gd2.0", steps=2)
    assert counter.count["conv"] > 0 and counter.count["weight_grad"] > 0
    assert float((ours - direct).abs().max()) < 1e-3
    assert MetaSR(model, scale=2, conv_algorithm="auto").conv_algorithm == "winograd"
    assert MetaSR(model, scale=2).conv_algorithm == "direct"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # bf16 on a CPU without fast bf16 kernels
        assert MetaSR(model, scale=2, precision="bf16", conv_algorithm="auto").conv_algorithm == "direct"
        with pytest.raises(ValueError, match="precision='bf16'.*conv_algorithm='direct'"):
            MetaSR(model, scale=2, precision="bf16", conv_algorithm="winograd")
    with pytest.raises(ValueError, match="conv_algorithm='fft'"):
        MetaSR(model, scale=2, conv_algorithm="fft")
    with pytest.raises(ValueError, match="compile=True"):
        MetaSR(model, scale=2, conv_algorithm="winograd", compile=True)
    assert MetaSR(model, scale=2, conv_algorithm="auto", compile=True).conv_algorithm == "direct"

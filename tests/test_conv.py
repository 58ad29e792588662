"""metasr_adapter.ops.conv.conv2d: F.conv2d's values and derivatives of every order, on convolution primitives."""
from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from metasr_adapter.ops.conv import conv2d, set_primitive_derivatives


@pytest.fixture(autouse=True)
def primitive_derivatives():
    """The path is opt-in (it measured no faster); these tests switch it on and restore the setting."""
    previous = set_primitive_derivatives(True)
    yield
    set_primitive_derivatives(previous)


def _two_layers(conv, x, w1, b1, w2):
    return conv(torch.tanh(conv(x, w1, b1, padding=1)), w2, None, padding=1)


@pytest.mark.parametrize("channels_last", [False, True])
def test_first_and_second_order_gradients_equal_torchs(channels_last):
    gen = torch.Generator().manual_seed(0)
    x, w1, b1, w2 = (torch.randn(*s, generator=gen, dtype=torch.float64, requires_grad=True)
                     for s in [(2, 5, 9, 8), (4, 5, 3, 3), (4,), (3, 4, 3, 3)])
    xx = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    results = []
    for conv in (F.conv2d, conv2d):
        y = _two_layers(conv, xx, w1, b1, w2)
        gw1, gw2, gx = torch.autograd.grad((y ** 2).mean(), [w1, w2, x], create_graph=True)
        # a MAML-like second-order term: differentiate a function of the first gradients
        outer = (gw1 ** 2).sum() + (gw2 * gw2.sin()).sum() + (gx ** 3).sum()
        results.append([y, gw1, gw2, gx, *torch.autograd.grad(outer, [w1, w2, b1, x])])
    for ours, torchs in zip(results[1], results[0]):
        torch.testing.assert_close(ours, torchs, rtol=1e-12, atol=1e-12)


def test_gradients_of_every_order_pass_gradcheck():
    gen = torch.Generator().manual_seed(1)
    inputs = tuple(torch.randn(*s, generator=gen, dtype=torch.float64, requires_grad=True)
                   for s in [(1, 2, 5, 5), (3, 2, 3, 3), (3,)])
    fn = lambda x, w, b: conv2d(x, w, b, padding=1)  # noqa: E731
    assert torch.autograd.gradcheck(fn, inputs)
    assert torch.autograd.gradgradcheck(fn, inputs)


def test_the_double_backward_runs_no_large_kernel_convolution():
    """torch's own double backward convolves the transposed input with the output gradient as a kernel;
    here every convolution in the graph has the layer's own 3x3 kernel (or is a backward-weights call)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    kernels = []

    class Spy(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten.convolution.default:
                kernels.append(tuple(args[1].shape[-2:]))
            return func(*args, **(kwargs or {}))

    x = torch.rand(2, 4, 16, 16)
    w = torch.rand(4, 4, 3, 3, requires_grad=True)
    for conv in (F.conv2d, conv2d):
        kernels.clear()
        with Spy():
            (g,) = torch.autograd.grad(conv(torch.relu(conv(x, w, None, padding=1)), w, None, padding=1).square().mean(),
                                       [w], create_graph=True)
            g.square().sum().backward()
        largest = max(k[0] for k in kernels)
        assert largest == (3 if conv is conv2d else 16), (conv, kernels)


def test_bf16_autocast_computes_in_bf16_and_returns_grads_in_the_inputs_dtype():
    x = torch.rand(1, 3, 12, 12)
    w = torch.rand(4, 3, 3, 3, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = conv2d(x, w, None, padding=1)
        ref = F.conv2d(x, w, None, padding=1)
    assert y.dtype == ref.dtype == torch.bfloat16
    torch.testing.assert_close(y, ref)
    (g,) = torch.autograd.grad(y.float().sum(), [w])
    assert g.dtype == torch.float32


def test_no_grad_inside_transforms_and_other_devices_take_plain_conv2d():
    x, w = torch.rand(1, 2, 6, 6), torch.rand(2, 2, 3, 3, requires_grad=True)
    with torch.no_grad():
        assert conv2d(x, w, None, padding=1).grad_fn is None
    y = conv2d(x, w, None, padding=1)
    assert type(y.grad_fn).__name__ == "_ConvBackward"
    # inside torch.func transforms the plain convolution runs (custom Functions need a vmap rule there)
    per_sample = torch.func.vmap(lambda xi: conv2d(xi[None], w, None, padding=1))(x)
    torch.testing.assert_close(per_sample[:, 0], F.conv2d(x, w, None, padding=1))


def test_the_switch_restores_torchs_own_derivatives_and_off_is_the_default():
    import importlib

    import metasr_adapter.ops.conv as conv_module

    x, w = torch.rand(1, 2, 6, 6), torch.rand(2, 2, 3, 3, requires_grad=True)
    assert set_primitive_derivatives(False) is True
    assert type(conv2d(x, w, None, padding=1).grad_fn).__name__ == "ConvolutionBackward0"
    assert set_primitive_derivatives(True) is False
    assert type(conv2d(x, w, None, padding=1).grad_fn).__name__ == "_ConvBackward"
    with pytest.raises(TypeError, match="enabled='no'"):
        set_primitive_derivatives("no")
    assert importlib.reload(conv_module)._enabled is False  # a fresh import: off


@pytest.mark.parametrize("channels_last", [False, True])
def test_a_first_order_backward_is_torchs_to_the_bit(channels_last):
    """Adaptation steps differentiate once: the same single backward call as torch's, so the same numbers."""
    gen = torch.Generator().manual_seed(2)
    x, w1, b1, w2 = (torch.randn(*s, generator=gen, requires_grad=True)
                     for s in [(2, 5, 9, 8), (4, 5, 3, 3), (4,), (3, 4, 3, 3)])
    xx = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    grads = [torch.autograd.grad(_two_layers(conv, xx, w1, b1, w2).square().mean(), [x, w1, b1, w2])
             for conv in (F.conv2d, conv2d)]
    for ours, torchs in zip(grads[1], grads[0]):
        assert torch.equal(ours, torchs)


def test_mzsrnet_takes_the_path_when_switched_on_unless_a_layer_has_hooks():
    from metasr_adapter import MZSRNet

    net, x = MZSRNet(width=4, depth=2), torch.rand(1, 3, 8, 8)

    def conv_nodes(y):
        return {type(f[0]).__name__ for f in y.grad_fn.next_functions if f[0]}

    assert "_ConvBackward" in conv_nodes(net(x))  # switched on by the fixture: the functional path
    calls = []
    handle = net.conv2.register_forward_hook(lambda *a: calls.append(1))
    y = net(x)  # a hooked layer is called as a module: its hook runs, torch's derivatives
    assert calls == [1] and "ConvolutionBackward0" in conv_nodes(y)
    handle.remove()
    set_primitive_derivatives(False)
    assert "ConvolutionBackward0" in conv_nodes(net(x))


def test_the_context_manager_restores_the_previous_setting_also_after_an_error():
    from metasr_adapter.ops.conv import primitive_derivatives, primitive_derivatives_enabled

    set_primitive_derivatives(False)
    with pytest.raises(RuntimeError, match="boom"):
        with primitive_derivatives(True):
            assert primitive_derivatives_enabled()
            raise RuntimeError("boom")
    assert not primitive_derivatives_enabled()

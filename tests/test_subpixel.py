"""ops.subpixel: strided transposed convolutions as a convolution and a pixel shuffle, and IDN's use of it."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metasr_adapter.adapters.idn import IDN
from metasr_adapter import use_subpixel_transposed_convs
from metasr_adapter.ops.subpixel import SubpixelConvTranspose2d, conv_transpose2d_subpixel, subpixel_applies

# (C_in, C_out, kernel (h, w), stride, padding (h, w)); output_padding = kernel + ... so that the output is s x input
CASES = [
    (8, 3, (17, 17), 2, (8, 8)),   # IDN x2
    (8, 3, (17, 17), 3, (8, 8)),   # IDN x3: an uneven reach around each pixel
    (8, 3, (17, 17), 4, (8, 8)),   # IDN x4
    (5, 4, (4, 4), 2, (1, 1)),     # the common 4x4 / stride 2 / padding 1 upsampler (no output padding)
    (4, 6, (5, 3), 2, (2, 1)),     # a non-square kernel
    (3, 2, (3, 3), 1, (1, 1)),     # stride 1: a plain convolution with a flipped kernel
]


def _output_padding(kernel: tuple[int, int], stride: int, padding: tuple[int, int]) -> tuple[int, int]:
    return tuple(stride + 2 * p - k for k, p in zip(kernel, padding))


@pytest.mark.parametrize("c_in,c_out,kernel,stride,padding", CASES)
def test_subpixel_form_is_the_transposed_convolution_with_its_gradients(c_in, c_out, kernel, stride, padding):
    gen = torch.Generator().manual_seed(0)
    opad = _output_padding(kernel, stride, padding)
    x = torch.randn(2, c_in, 7, 9, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(c_in, c_out, *kernel, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(c_out, generator=gen, dtype=torch.float64, requires_grad=True)
    ref = F.conv_transpose2d(x, w, b, stride=stride, padding=padding, output_padding=opad)
    got = conv_transpose2d_subpixel(x, w, b, stride, padding, opad)
    assert got.shape == ref.shape == (2, c_out, 7 * stride, 9 * stride)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    g = torch.randn(ref.shape, generator=gen, dtype=torch.float64)
    want = torch.autograd.grad(ref, (x, w, b), g)
    have = torch.autograd.grad(got, (x, w, b), g)
    for a, e in zip(have, want):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12)


def test_subpixel_form_without_bias_and_in_bf16_autocast():
    gen = torch.Generator().manual_seed(1)
    x, w = torch.randn(1, 8, 12, 10, generator=gen), torch.randn(8, 3, 17, 17, generator=gen) * 0.05
    ref = F.conv_transpose2d(x, w, None, stride=2, padding=8, output_padding=1)
    torch.testing.assert_close(conv_transpose2d_subpixel(x, w, None, 2, 8, 1), ref, rtol=1e-5, atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = conv_transpose2d_subpixel(x, w, None, 2, 8, 1)
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), ref, rtol=0.05, atol=0.05)


def test_subpixel_form_refuses_what_it_does_not_compute_naming_it():
    assert not subpixel_applies((1, 4, 8, 8), (4, 3, 3, 3), (2, 1), (1, 1), (1, 0))  # unequal strides
    assert not subpixel_applies((1, 4, 8, 8), (4, 3, 3, 3), (2, 2), (1, 1), (0, 0))  # output 2H - 1, not 2H
    assert not subpixel_applies((1, 4, 8, 8), (2, 3, 4, 4), (2, 2), (1, 1), (0, 0), groups=2)
    assert not subpixel_applies((1, 4, 8, 8), (4, 3, 4, 4), (2, 2), (1, 1), (0, 0), dilation=(2, 2))
    with pytest.raises(ValueError, match=r"stride times the input.*stride \(2, 2\), padding \(1, 1\), "
                                         r"output_padding \(0, 0\).*F.conv_transpose2d"):
        conv_transpose2d_subpixel(torch.rand(1, 4, 8, 8), torch.rand(4, 3, 3, 3), None, 2, 1, 0)


def test_module_keeps_the_parameters_and_falls_back_where_the_form_does_not_apply():
    torch.manual_seed(0)
    plain = nn.ConvTranspose2d(6, 3, 17, stride=2, padding=8, output_padding=1).double()
    sub = SubpixelConvTranspose2d(6, 3, 17, stride=2, padding=8, output_padding=1).double()
    sub.load_state_dict(plain.state_dict())  # the same keys and shapes
    assert isinstance(sub, nn.ConvTranspose2d) and sub.state_dict().keys() == plain.state_dict().keys()
    x = torch.randn(1, 6, 5, 6, dtype=torch.float64)
    torch.testing.assert_close(sub(x), plain(x), rtol=1e-12, atol=1e-12)
    # an explicit output_size and an odd-sized output go to the transposed primitive, unchanged
    torch.testing.assert_close(sub(x, output_size=[10, 12]), plain(x, output_size=[10, 12]), rtol=0, atol=0)
    odd_plain = nn.ConvTranspose2d(6, 3, 3, stride=2, padding=1).double()
    odd = SubpixelConvTranspose2d(6, 3, 3, stride=2, padding=1).double()
    odd.load_state_dict(odd_plain.state_dict())
    assert odd(x).shape == (1, 3, 9, 11)
    torch.testing.assert_close(odd(x), odd_plain(x), rtol=0, atol=0)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_idn_reconstructs_with_the_subpixel_form_and_gives_the_transposed_convolutions_output(scale):
    torch.manual_seed(0)
    m = IDN(scale=scale, num_feat=16, diff=4, num_blocks=1).double()
    assert isinstance(m.reconstruct, SubpixelConvTranspose2d)
    x = torch.rand(1, 3, 10, 13, dtype=torch.float64)
    feats = m.blocks(m.features(x))
    r = m.reconstruct
    want = m._upsample(x) + F.conv_transpose2d(feats, r.weight, r.bias, stride=r.stride, padding=r.padding,
                                               output_padding=r.output_padding)
    torch.testing.assert_close(m(x), want, rtol=1e-12, atol=1e-12)


def test_any_network_can_switch_its_transposed_convolutions_keeping_its_output():
    torch.manual_seed(0)
    fsrcnn_like = nn.Sequential(nn.Conv2d(1, 8, 5, padding=2), nn.PReLU(8),
                                nn.ConvTranspose2d(8, 1, 9, stride=2, padding=4, output_padding=1),
                                nn.ConvTranspose2d(1, 1, 3, stride=2, padding=1)).double()  # odd size: falls back
    x = torch.rand(1, 1, 11, 12, dtype=torch.float64)
    before, state = fsrcnn_like(x), fsrcnn_like.state_dict()
    assert use_subpixel_transposed_convs(fsrcnn_like) == 2
    assert all(type(m) is SubpixelConvTranspose2d for m in fsrcnn_like if isinstance(m, nn.ConvTranspose2d))
    torch.testing.assert_close(fsrcnn_like(x), before, rtol=1e-12, atol=1e-12)
    assert fsrcnn_like.state_dict().keys() == state.keys()
    assert use_subpixel_transposed_convs(fsrcnn_like) == 0  # already switched

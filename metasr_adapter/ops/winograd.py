"""3x3 convolutions by Winograd's minimal filtering in fp32 on CPU: forward, input and weight gradients.

A 3x3, stride-1, padding-1 convolution on 6x6 input tiles (stride 4): each tile and each filter is transformed,
the products for all channels at once are 36 batched matrix products, and a transform back gives a 4x4 output
tile, F(4x4, 3x3): 36 multiplications per 16 outputs instead of 144. The input gradient is the same convolution
with the filters transposed and turned. The weight gradient is a correlation too: the output gradient's 4x4 tiles
are the filters and the 6x6 input tiles under them the data, F(3x3, 4x4), summed over all tiles and images inside
the matrix products and transformed back to 3x3 once.

Three backends compute the same sums (``backend=`` on each function; :func:`default_backend`):

* ``'native'`` (the default where it builds): ``ops/native/winograd.cpp``, compiled on first use by
  :mod:`metasr_adapter.ops.native` (needs a C++ compiler). Each thread takes a block of tiles through the transform,
  the 36 products (its own register-blocked kernel) and the transform back while the block stays in its core's
  cache. Channel counts must be multiples of 16.
* ``'compiled'``: the transforms written here as sums of tile slices, fused by ``torch.compile`` into one loop each
  (compiled per input shape on first use), the products as ``torch.bmm``. Every step passes through memory.
* ``'eager'``: the same code uncompiled, slower than oneDNN (for tests, and machines without a compiler).

The transform matrices are derived, not typed: :func:`toom_cook` builds them from the interpolation points
0, 1, -1, 2, -2 and infinity (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016) in exact
rational arithmetic and checks the identity they must satisfy.

Round-off differs from a direct convolution: about 1e-5 of the result's magnitude in fp32
(``tests/test_winograd.py``). :mod:`metasr_adapter.ops.conv` uses these for graphs built while
``conv_algorithm('winograd')`` is on (``MAMLConfig(conv_algorithm='winograd')``, or ``'auto'``, the default, where
the native kernels build), for layers with at least :data:`MIN_CHANNELS` input and output channels: an SR network's
RGB layers stay direct. Speed against oneDNN: ``benchmarks/bench_winograd.py`` (single calls) and
``benchmarks/bench_meta_ab.py --compare conv_algorithm`` (meta-gradients); README, speed section.
"""
from __future__ import annotations

import ctypes
from fractions import Fraction
from typing import Callable, Sequence

import torch
from torch.nn import functional as F

from . import native

__all__ = ["toom_cook", "supports", "transposed_shape", "conv3x3", "conv3x3_input_grad", "conv3x3_weight_grad",
           "MIN_CHANNELS", "BACKENDS", "default_backend", "chosen_by_auto", "native_fits"]

MIN_CHANNELS = 16  # thinner layers (RGB in or out) run faster direct
BACKENDS = ("native", "compiled", "eager")
#: without the native kernels: compile the transforms with torch.compile (default); False runs the same code
#: eagerly: the same values, slower than oneDNN, to skip the compile time in tests
COMPILE = True
#: the native kernels' blocks: tiles per thread and step (forward / input gradient; weight gradient). 30 (five
#: times the product kernel's 6 rows) and 64 keep a block's transformed data (2 x 36 x tiles x 64 floats) within a
#: 1 MB L2 at 64 channels; 24-48 and 48-128 measured within a few percent of each other
NATIVE_BLOCK = 30
NATIVE_WGRAD_BLOCK = 64
POINTS = (0, 1, -1, 2, -2)
TILE = 4  # F(4x4, 3x3) output tiles; F(3x3, 4x4) output-gradient tiles
N_TILE = TILE + 2  # input tiles are 6x6 in both


def toom_cook(m: int, r: int, points: Sequence[int] = POINTS) -> tuple[list[list[Fraction]], ...]:
    """Exact (rational) matrices ``(AT, G, BT)`` of Winograd's F(m, r): for a filter ``g`` of length ``r`` and
    data ``d`` of length ``m + r - 1``, ``AT @ ((G @ g) * (BT @ d))`` is the correlation
    ``y[i] = sum_k g[k] d[i + k]``, i < m. Built on ``m + r - 2`` finite points and infinity; ``BT`` is solved for
    exactly and the identity is checked, so a bad choice of points raises ``ValueError``."""
    n = m + r - 1
    if len(points) < n - 1 or len(set(points[: n - 1])) != n - 1:
        raise ValueError(f"F({m}, {r}) needs {n - 1} distinct points, got {list(points)}")
    p = [Fraction(v) for v in points[: n - 1]]
    at = [[p[j] ** i for j in range(n - 1)] + [Fraction(int(i == m - 1))] for i in range(m)]
    g = []
    for j in range(n - 1):
        f = Fraction(1)
        for k in range(n - 1):
            if k != j:
                f *= p[j] - p[k]
        g.append([p[j] ** k / f for k in range(r)])
    g.append([Fraction(int(k == r - 1)) for k in range(r)])
    bt = _solve_data_transform(at, g, m, r)
    for i in range(m):  # the bilinear identity, exactly
        for k in range(r):
            for col in range(n):
                value = sum(at[i][j] * g[j][k] * bt[j][col] for j in range(n))
                if value != int(col == i + k):
                    raise ValueError(f"points {list(points)} do not give an exact F({m}, {r})")
    return at, g, bt


def _solve_data_transform(at: list[list[Fraction]], g: list[list[Fraction]], m: int, r: int) -> list[list[Fraction]]:
    """``BT`` with ``sum_j AT[i][j] G[j][k] BT[j][l] = [l == i + k]``: one linear system per column ``l`` of ``BT``
    in the ``n`` unknowns ``BT[:, l]`` (``m * r`` equations of rank ``n``), solved by exact Gauss-Jordan."""
    n = m + r - 1
    rows = [[at[i][j] * g[j][k] for j in range(n)] for i in range(m) for k in range(r)]
    rhs_index = [i + k for i in range(m) for k in range(r)]
    bt = [[Fraction(0)] * n for _ in range(n)]
    for col in range(n):
        system = [row[:] + [Fraction(int(t == col))] for row, t in zip(rows, rhs_index)]
        pivots = []
        top = 0
        for c in range(n):
            pivot = next((i for i in range(top, len(system)) if system[i][c] != 0), None)
            if pivot is None:
                continue
            system[top], system[pivot] = system[pivot], system[top]
            lead = system[top][c]
            system[top] = [v / lead for v in system[top]]
            for i in range(len(system)):
                if i != top and system[i][c] != 0:
                    factor = system[i][c]
                    system[i] = [a - factor * b for a, b in zip(system[i], system[top])]
            pivots.append(c)
            top += 1
        for row_i, c in enumerate(pivots):
            bt[c][col] = system[row_i][n]
    return bt


def _floats(matrix: list[list[Fraction]]) -> list[list[float]]:
    return [[float(v) for v in row] for row in matrix]


_FWD_AT, _FWD_G, _FWD_BT = (_floats(m) for m in toom_cook(TILE, 3))
_WGRAD_AT, _WGRAD_G, _WGRAD_BT = (_floats(m) for m in toom_cook(3, TILE))


def supports(x: torch.Tensor, weight_shape: Sequence[int], padding: int) -> bool:
    """Whether this module computes ``F.conv2d(x, weight, padding=padding)`` and its gradients for a weight of
    ``weight_shape`` (OIHW): an fp32 CPU input, a 3x3 kernel, padding 1, no groups, at least :data:`MIN_CHANNELS`
    input and output channels."""
    return (x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 4 and len(weight_shape) == 4
            and tuple(weight_shape[2:]) == (3, 3) and padding == 1 and x.shape[1] == weight_shape[1]
            and min(weight_shape[0], weight_shape[1]) >= MIN_CHANNELS)


def transposed_shape(weight_shape: Sequence[int]) -> tuple[int, ...]:
    """The OIHW shape of the convolution an input gradient runs: a weight's output and input channels swapped."""
    shape = tuple(weight_shape)
    return (shape[1], shape[0], *shape[2:]) if len(shape) == 4 else shape


def _combine(coefficients: Sequence[float], terms: Sequence[torch.Tensor]) -> torch.Tensor:
    """``sum(c * t)`` over the non-zero coefficients, without multiplying by +-1."""
    out = None
    for c, t in zip(coefficients, terms):
        if c == 0:
            continue
        term = t if c == 1 else (-t if c == -1 else t * c)
        out = term if out is None else out + term
    assert out is not None
    return out


def _transform_2d(tiles: Callable[[int, int], torch.Tensor], left: list[list[float]], size: int) -> list[torch.Tensor]:
    """``L @ T @ L^T`` for every tile ``T`` at once (``tiles(i, j)`` is element (i, j) of all tiles): rows, then
    columns, as a flat list over (a, b)."""
    out_rows, k = len(left), size
    half = [[_combine(left[b], [tiles(i, j) for j in range(k)]) for b in range(out_rows)] for i in range(k)]
    return [_combine(left[a], [half[i][b] for i in range(k)]) for a in range(out_rows) for b in range(out_rows)]


def _tiles(x: torch.Tensor, tiles_h: int, tiles_w: int, bt: list[list[float]]) -> torch.Tensor:
    """(36, N * tiles, C): ``BT @ d @ BT^T`` of every 6x6 tile (stride 4) of ``x`` zero-padded by 1 (and up to whole
    tiles at the bottom and right)."""
    h, w = x.shape[2], x.shape[3]
    xp = F.pad(x.permute(0, 2, 3, 1), (0, 0, 1, TILE * tiles_w - w + 1, 1, TILE * tiles_h - h + 1))
    n, _, _, c = xp.shape
    s_n, s_h, s_w, _ = xp.stride()
    d = xp.as_strided((n, tiles_h, tiles_w, N_TILE, N_TILE, c), (s_n, TILE * s_h, TILE * s_w, s_h, s_w, 1))
    return torch.stack(_transform_2d(lambda i, j: d[:, :, :, i, j], bt, N_TILE)).reshape(N_TILE ** 2, -1, c)


def _conv3x3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    n, _, h, w = x.shape
    th, tw = -(-h // TILE), -(-w // TILE)
    filters = torch.stack(_transform_2d(lambda i, j: weight[:, :, i, j], _FWD_G, 3)).transpose(1, 2)  # (36, C, K)
    products = torch.bmm(_tiles(x, th, tw, _FWD_BT), filters).reshape(N_TILE, N_TILE, n, th, tw, -1)
    parts = _transform_2d(lambda i, j: products[i, j], _FWD_AT, N_TILE)  # 16 x (N, th, tw, K)
    rows = [torch.stack(parts[p * TILE:(p + 1) * TILE], dim=3) for p in range(TILE)]
    y = torch.stack(rows, dim=2).reshape(n, TILE * th, TILE * tw, -1)[:, :h, :w]
    if bias is not None:
        y = y + bias
    nchw_in = x.is_contiguous() and not x.is_contiguous(memory_format=torch.channels_last)
    return y.permute(0, 3, 1, 2).contiguous(memory_format=torch.contiguous_format if nchw_in else torch.channels_last)


def _conv3x3_input_grad(grad_out: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return _conv3x3(grad_out, weight.transpose(0, 1).flip(2, 3), None)


def _conv3x3_weight_grad(grad_out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    n, _, h, w = x.shape
    th, tw = -(-h // TILE), -(-w // TILE)
    data = _tiles(x, th, tw, _WGRAD_BT)  # (36, T, C)
    gy = F.pad(grad_out.permute(0, 2, 3, 1), (0, 0, 0, TILE * tw - w, 0, TILE * th - h))
    gy = gy.reshape(n, th, TILE, tw, TILE, gy.shape[-1])
    filters = torch.stack(_transform_2d(lambda i, j: gy[:, :, i, :, j], _WGRAD_G, TILE)).reshape(N_TILE ** 2, -1,
                                                                                                   gy.shape[-1])
    sums = torch.bmm(filters.transpose(1, 2), data).reshape(N_TILE, N_TILE, filters.shape[-1], data.shape[-1])
    out = _transform_2d(lambda i, j: sums[i, j], _WGRAD_AT, N_TILE)  # 9 x (K, C)
    return torch.stack(out, dim=-1).reshape(filters.shape[-1], data.shape[-1], 3, 3)


_EAGER = {"conv": _conv3x3, "input_grad": _conv3x3_input_grad, "weight_grad": _conv3x3_weight_grad}
_COMPILED: dict[str, Callable[..., torch.Tensor]] = {}


_NATIVE_CHECKED: dict[int, bool] = {}  # id of a loaded library -> whether its transforms equal the derived ones


def _native_lib() -> ctypes.CDLL | None:
    """The native kernels, typed and checked once: their compiled-in transforms must equal :func:`toom_cook`'s
    (else they are treated as unavailable, with the reason)."""
    lib = native.load("winograd")
    if lib is None:
        return None
    if id(lib) not in _NATIVE_CHECKED:
        p, i = ctypes.c_void_p, ctypes.c_int
        lib.metasr_winograd_filters.argtypes = [p, i, i, i, p, p, i]
        lib.metasr_winograd_conv.argtypes = [p, i, i, i, i, p, i, p, p, i, i]
        lib.metasr_winograd_weight_grad.argtypes = [p, p, i, i, i, i, i, p, p, i, i]
        for f in (lib.metasr_winograd_filters, lib.metasr_winograd_conv, lib.metasr_winograd_weight_grad):
            f.restype = None
        lib.metasr_winograd_check_matrices.argtypes = [p] * 5
        lib.metasr_winograd_check_matrices.restype = i
        mats = [_matrix(k) for k in ("fwd_bt", "fwd_at", "wgrad_bt", "wgrad_g", "wgrad_at")]
        _NATIVE_CHECKED[id(lib)] = bool(lib.metasr_winograd_check_matrices(*(m.data_ptr() for m in mats)))
        if not _NATIVE_CHECKED[id(lib)]:
            native.mark_unavailable("winograd", "its compiled-in transforms differ from toom_cook's")
    return lib if _NATIVE_CHECKED[id(lib)] else None


def default_backend() -> str:
    """``'native'`` if the C++ kernels build here (:mod:`metasr_adapter.ops.native`; ``METASR_NATIVE=0`` turns them
    off), else ``'compiled'`` (or ``'eager'`` when :data:`COMPILE` is False)."""
    if _native_lib() is not None:
        return "native"
    return "compiled" if COMPILE else "eager"


def chosen_by_auto() -> bool:
    """Whether ``conv_algorithm='auto'`` (MAMLConfig, MetaSR) picks Winograd here: the native kernels build and the
    CPU has AVX-512, where they were measured (about 0.4x oneDNN's time per convolution on a Zen 4 EPYC). On
    AVX2-only CPUs their 512-bit vectors run as pairs of 256-bit ones and the product kernel's 24 accumulators
    exceed the 16 registers; unmeasured there, so not chosen (``'winograd'`` still asks for them)."""
    check = getattr(getattr(torch, "cpu", None), "_is_avx512_supported", None)
    return bool(check is not None and check()) and default_backend() == "native"


_MATRICES: dict[str, torch.Tensor] = {}


def _matrix(name: str) -> torch.Tensor:
    if not _MATRICES:
        for key, value in (("fwd_bt", _FWD_BT), ("fwd_g", _FWD_G), ("fwd_at", _FWD_AT), ("wgrad_bt", _WGRAD_BT),
                           ("wgrad_g", _WGRAD_G), ("wgrad_at", _WGRAD_AT)):
            _MATRICES[key] = torch.tensor(value, dtype=torch.float32)
    return _MATRICES[name]


def _nhwc(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous(memory_format=torch.channels_last)


def _like_input(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``y`` (NHWC) NCHW-contiguous when ``x`` is, as the torch backends return it."""
    nchw_in = x.is_contiguous() and not x.is_contiguous(memory_format=torch.channels_last)
    return y.contiguous() if nchw_in else y


def _native_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, transposed: bool) -> torch.Tensor:
    lib, threads = _native_lib(), torch.get_num_threads()
    assert lib is not None
    weight = weight.contiguous()
    w_out, w_in = weight.shape[:2]
    cin, cout = (w_out, w_in) if transposed else (w_in, w_out)
    filters = torch.empty(N_TILE ** 2, cin, cout)
    lib.metasr_winograd_filters(weight.data_ptr(), w_out, w_in, int(transposed), _matrix("fwd_g").data_ptr(),
                                filters.data_ptr(), threads)
    xn = _nhwc(x)
    n, _, h, w = x.shape
    y = torch.empty((n, cout, h, w), memory_format=torch.channels_last)
    bias_ptr = None if bias is None else bias.contiguous().data_ptr()
    lib.metasr_winograd_conv(xn.data_ptr(), n, h, w, cin, filters.data_ptr(), cout, bias_ptr, y.data_ptr(),
                             NATIVE_BLOCK, threads)
    return _like_input(y, x)


def _native_weight_grad(grad_out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    lib, threads = _native_lib(), torch.get_num_threads()
    assert lib is not None
    n, cin, h, w = x.shape
    cout = grad_out.shape[1]
    xn, gn = _nhwc(x), _nhwc(grad_out)
    scratch = torch.empty(threads, N_TILE ** 2, cout, cin)
    gw = torch.empty(cout, cin, 3, 3)
    lib.metasr_winograd_weight_grad(gn.data_ptr(), xn.data_ptr(), n, h, w, cin, cout, gw.data_ptr(),
                                    scratch.data_ptr(), NATIVE_WGRAD_BLOCK, threads)
    return gw


def native_fits(*channels: int) -> bool:
    """Whether the native kernels take these channel counts (multiples of one 16-float vector)."""
    return all(c % 16 == 0 for c in channels)


def _run(name: str, backend: str | None, *args: torch.Tensor | None) -> torch.Tensor:
    """One of the three on ``backend`` (default: :func:`default_backend`; the native kernels only for channel counts
    that are multiples of 16, the torch code otherwise). The compiled backend compiles each shape once, a few
    seconds; past torch.compile's recompile limit, 8 shapes by default, further shapes run the same code eagerly:
    correct, slower."""
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"Winograd backend {backend!r}: use one of {', '.join(BACKENDS)}")
    chosen = default_backend() if backend is None else backend
    if chosen == "native":
        if _native_lib() is None:
            raise RuntimeError(f"the native Winograd kernels are unavailable: {native.why_unavailable('winograd')}")
        x, other = args[0], args[1]
        assert x is not None and other is not None
        if name == "weight_grad" and native_fits(x.shape[1], other.shape[1]):
            return _native_weight_grad(x, other)
        if name != "weight_grad" and native_fits(other.shape[0], other.shape[1]):
            return _native_conv(x, other, args[2] if name == "conv" else None, transposed=name == "input_grad")
        chosen = "compiled" if COMPILE else "eager"  # channel counts the kernels do not take
    if chosen == "compiled" and name not in _COMPILED:
        _COMPILED[name] = torch.compile(_EAGER[name], dynamic=False, fullgraph=True)
    with torch.no_grad():
        return (_COMPILED if chosen == "compiled" else _EAGER)[name](*args)


def _check(x: torch.Tensor, weight_shape: Sequence[int], what: str) -> None:
    if not supports(x, weight_shape, 1):
        raise ValueError(f"Winograd {what} takes an fp32 CPU (N, C, H, W) tensor and a 3x3 kernel with >= "
                         f"{MIN_CHANNELS} input and output channels; got {tuple(x.shape)} {x.dtype} on {x.device} "
                         f"with a kernel {tuple(weight_shape)}: use torch's convolution for these")


def _check_partner(name: str, t: torch.Tensor, x: torch.Tensor, shape: Sequence[int] | None = None) -> None:
    """``t`` (the weight, bias or output gradient beside ``x``) is fp32 on ``x``'s device, of ``shape`` if given."""
    if t.dtype != torch.float32 or t.device != x.device or (shape is not None and tuple(t.shape) != tuple(shape)):
        want = f"shape {tuple(shape)}, " if shape is not None else ""
        raise ValueError(f"{name} {tuple(t.shape)} {t.dtype} on {t.device}: Winograd needs {want}fp32 on the device "
                         f"of the input ({x.device}); use torch's convolution otherwise")


def conv3x3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *,
            backend: str | None = None) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, padding=1)`` by F(4x4, 3x3); the output is NCHW-contiguous for an NCHW-contiguous
    ``x``, else NHWC (channels_last). Not differentiable itself: :mod:`metasr_adapter.ops.conv` builds derivatives
    from these three functions."""
    _check(x, tuple(weight.shape), "F(4x4, 3x3)")
    _check_partner("weight", weight, x)
    if bias is not None:
        _check_partner("bias", bias, x, (weight.shape[0],))
    return _run("conv", backend, x, weight, bias)


def conv3x3_input_grad(grad_out: torch.Tensor, weight: torch.Tensor, *, backend: str | None = None) -> torch.Tensor:
    """``F.conv_transpose2d(grad_out, weight, padding=1)``, the input gradient of :func:`conv3x3`, by F(4x4, 3x3)."""
    _check(grad_out, transposed_shape(weight.shape), "F(4x4, 3x3)")
    _check_partner("weight", weight, grad_out)
    return _run("input_grad", backend, grad_out, weight)


def conv3x3_weight_grad(grad_out: torch.Tensor, x: torch.Tensor, *, backend: str | None = None) -> torch.Tensor:
    """The weight gradient (OIHW, 3x3) of ``F.conv2d(x, weight, padding=1)`` for output gradient ``grad_out``, as
    ``torch.ops.aten.convolution_backward`` computes it, by F(3x3, 4x4)."""
    _check(x, (grad_out.shape[1] if grad_out.dim() == 4 else 0, x.shape[1] if x.dim() == 4 else 0, 3, 3),
           "F(3x3, 4x4)")
    _check_partner("grad_out", grad_out, x, (x.shape[0], grad_out.shape[1], *x.shape[2:]))
    return _run("weight_grad", backend, grad_out, x)

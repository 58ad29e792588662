// Fused, cache-blocked Winograd 3x3 convolutions (stride 1, padding 1) in fp32 on NHWC tensors.
//
// metasr_adapter/ops/native.py compiles this file on first use (g++ -O3 -march=native -fopenmp) and
// metasr_adapter/ops/winograd.py calls it through ctypes. That module holds the algorithm's description and derives
// the transform matrices exactly: it passes the filter transform in and checks the data and output transforms
// compiled in here (metasr_winograd_check_matrices) before any use. Compared with the unfused form (every tile's
// transform written out for the whole tensor, then 36 batched products, then the transform back), each thread here
// takes a block of tiles through all three steps while the block's data stays in its core's L2 cache.
//
//   forward:        y = conv(x, w) [+ b]        F(4x4, 3x3): 6x6 input tiles (stride 4), 4x4 output tiles
//   input gradient: the forward with w's channels swapped and its taps turned (flag `transposed`)
//   weight gradient: F(3x3, 4x4) over 6x6 input tiles and the 4x4 output-gradient tiles under them, summed
//                    over all tiles in the transformed domain (one accumulator per thread) and turned back once
//
// Channel counts must be multiples of 16 (one 512-bit vector); the Python side checks.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>
#include <omp.h>

namespace {

typedef float v16 __attribute__((vector_size(64)));

constexpr int kTile = 4;          // output tile (forward), output-gradient tile (weight gradient)
constexpr int kIn = kTile + 2;    // 6x6 input tiles
constexpr int kPos = kIn * kIn;   // 36 positions in the transformed domain
constexpr int kRows = 6;          // rows of a micro-kernel (tiles in the forward, output channels in wgrad)

inline v16 load(const float* p) {
    v16 v;
    std::memcpy(&v, p, sizeof v);
    return v;
}

inline void store(float* p, v16 v) { std::memcpy(p, &v, sizeof v); }

struct Buffer {  // 64-byte aligned scratch, freed on scope exit
    float* data = nullptr;
    explicit Buffer(size_t n) {
        size_t bytes = ((n * sizeof(float) + 63) / 64) * 64;
        data = static_cast<float*>(std::aligned_alloc(64, bytes ? bytes : 64));
    }
    ~Buffer() { std::free(data); }
    Buffer(const Buffer&) = delete;
    Buffer& operator=(const Buffer&) = delete;
};

// The data and output transforms of F(4x4, 3x3) and F(3x3, 4x4) (Lavin & Gray's points 0, +-1, +-2, infinity).
// metasr_adapter/ops/winograd.py derives them in exact rational arithmetic; here they are constants, so that the
// compiler drops the zero and unit coefficients from the unrolled transforms. metasr_winograd_check_matrices()
// compares them with the derived ones (rounded to float the same way) before the kernels are used.
#define W_F(x) static_cast<float>(x)
constexpr float kFwdBT[6][6] = {{W_F(4.0), W_F(0.0), W_F(-5.0), W_F(0.0), W_F(1.0), W_F(0.0)},
                                {W_F(0.0), W_F(-4.0), W_F(-4.0), W_F(1.0), W_F(1.0), W_F(0.0)},
                                {W_F(0.0), W_F(4.0), W_F(-4.0), W_F(-1.0), W_F(1.0), W_F(0.0)},
                                {W_F(0.0), W_F(-2.0), W_F(-1.0), W_F(2.0), W_F(1.0), W_F(0.0)},
                                {W_F(0.0), W_F(2.0), W_F(-1.0), W_F(-2.0), W_F(1.0), W_F(0.0)},
                                {W_F(0.0), W_F(4.0), W_F(0.0), W_F(-5.0), W_F(0.0), W_F(1.0)}};
constexpr float kFwdAT[4][6] = {{W_F(1.0), W_F(1.0), W_F(1.0), W_F(1.0), W_F(1.0), W_F(0.0)},
                                {W_F(0.0), W_F(1.0), W_F(-1.0), W_F(2.0), W_F(-2.0), W_F(0.0)},
                                {W_F(0.0), W_F(1.0), W_F(1.0), W_F(4.0), W_F(4.0), W_F(0.0)},
                                {W_F(0.0), W_F(1.0), W_F(-1.0), W_F(8.0), W_F(-8.0), W_F(1.0)}};
constexpr float kWgradG[6][4] = {
    {W_F(0.25), W_F(0.0), W_F(0.0), W_F(0.0)},
    {W_F(-0.16666666666666666), W_F(-0.16666666666666666), W_F(-0.16666666666666666), W_F(-0.16666666666666666)},
    {W_F(-0.16666666666666666), W_F(0.16666666666666666), W_F(-0.16666666666666666), W_F(0.16666666666666666)},
    {W_F(0.041666666666666664), W_F(0.08333333333333333), W_F(0.16666666666666666), W_F(0.3333333333333333)},
    {W_F(0.041666666666666664), W_F(-0.08333333333333333), W_F(0.16666666666666666), W_F(-0.3333333333333333)},
    {W_F(0.0), W_F(0.0), W_F(0.0), W_F(1.0)}};
constexpr float kWgradAT[3][6] = {{W_F(1.0), W_F(1.0), W_F(1.0), W_F(1.0), W_F(1.0), W_F(0.0)},
                                  {W_F(0.0), W_F(1.0), W_F(-1.0), W_F(2.0), W_F(-2.0), W_F(0.0)},
                                  {W_F(0.0), W_F(1.0), W_F(1.0), W_F(4.0), W_F(4.0), W_F(1.0)}};
#undef W_F
// F(3x3, 4x4)'s data transform is F(4x4, 3x3)'s (the same points)
constexpr const float (&kWgradBT)[6][6] = kFwdBT;

// For every run of 16 channels, the transform LR * T * LC^T of a tile whose element (i, j) is the channel vector at
// src(i, j) (IN_R x IN_C elements), written to dst(a, b) (OUT_R x OUT_C), each element a run of n floats (n a
// multiple of 16). Rows first, then columns, in registers; `init` (n floats, or null for zero) starts every output,
// e.g. a bias. The loops unroll fully, so zero coefficients cost nothing.
template <int OUT_R, int IN_R, int OUT_C, int IN_C, const float (&LR)[OUT_R][IN_R], const float (&LC)[OUT_C][IN_C],
          typename Src, typename Dst>
inline void transform_tile(int n, Src src, Dst dst, const float* init) {
    for (int c = 0; c < n; c += 16) {
        v16 half[OUT_R][IN_C];
#pragma GCC unroll 8
        for (int j = 0; j < IN_C; ++j) {
            v16 col[IN_R];
#pragma GCC unroll 8
            for (int i = 0; i < IN_R; ++i) col[i] = load(src(i, j) + c);
#pragma GCC unroll 8
            for (int a = 0; a < OUT_R; ++a) {
                v16 acc{};
                bool first = true;  // known at compile time once unrolled: no add of a zero start
#pragma GCC unroll 8
                for (int i = 0; i < IN_R; ++i)
                    if (LR[a][i] != 0.0f) {
                        acc = first ? LR[a][i] * col[i] : acc + LR[a][i] * col[i];
                        first = false;
                    }
                half[a][j] = acc;
            }
        }
        const v16 start = init ? load(init + c) : v16{};
#pragma GCC unroll 8
        for (int a = 0; a < OUT_R; ++a) {
#pragma GCC unroll 8
            for (int b = 0; b < OUT_C; ++b) {
                v16 acc = start;
#pragma GCC unroll 8
                for (int j = 0; j < IN_C; ++j)
                    if (LC[b][j] != 0.0f) acc += LC[b][j] * half[a][j];
                store(dst(a, b) + c, acc);  // (the start is a bias or zero: one add per output)
            }
        }
    }
}

// acc[R][NV] (+)= sum_l A(r, l) * B[l][0:16*NV]: A's element (r, l) at a[r * a_r + l * a_l], B's rows `ldb` apart.
template <int R, int NV>
__attribute__((noinline)) void micro(const float* a, std::ptrdiff_t a_r, std::ptrdiff_t a_l, const float* b,
                                     std::ptrdiff_t ldb, int len, float* c, std::ptrdiff_t ldc, bool accumulate) {
    // kept out of line: inlined into the weight gradient's loop, its accumulators were spilled to the stack
    v16 acc[R][NV];
    for (int r = 0; r < R; ++r)
        for (int j = 0; j < NV; ++j) acc[r][j] = accumulate ? load(c + r * ldc + 16 * j) : v16{};
    for (int l = 0; l < len; ++l) {
        v16 bv[NV];
        for (int j = 0; j < NV; ++j) bv[j] = load(b + l * ldb + 16 * j);
        for (int r = 0; r < R; ++r) {
            float s = a[r * a_r + l * a_l];
            for (int j = 0; j < NV; ++j) acc[r][j] += s * bv[j];
        }
    }
    for (int r = 0; r < R; ++r)
        for (int j = 0; j < NV; ++j) store(c + r * ldc + 16 * j, acc[r][j]);
}

template <int R>
inline void micro_cols(int nv, const float* a, std::ptrdiff_t a_r, std::ptrdiff_t a_l, const float* b,
                       std::ptrdiff_t ldb, int len, float* c, std::ptrdiff_t ldc, bool accumulate) {
    switch (nv) {
        case 4: micro<R, 4>(a, a_r, a_l, b, ldb, len, c, ldc, accumulate); break;
        case 3: micro<R, 3>(a, a_r, a_l, b, ldb, len, c, ldc, accumulate); break;
        case 2: micro<R, 2>(a, a_r, a_l, b, ldb, len, c, ldc, accumulate); break;
        default: micro<R, 1>(a, a_r, a_l, b, ldb, len, c, ldc, accumulate); break;
    }
}

// C[rows x cols] (+)= A[rows x len] * B[len x cols], A strided (a_r, a_l), B and C row-major; cols % 16 == 0.
void gemm(int rows, int cols, int len, const float* a, std::ptrdiff_t a_r, std::ptrdiff_t a_l, const float* b,
          std::ptrdiff_t ldb, float* c, std::ptrdiff_t ldc, bool accumulate) {
    for (int col = 0; col < cols; col += 64) {
        int nv = std::min(4, (cols - col) / 16);
        int r = 0;
        for (; r + kRows <= rows; r += kRows)
            micro_cols<kRows>(nv, a + r * a_r, a_r, a_l, b + col, ldb, len, c + r * ldc + col, ldc, accumulate);
        const float* ar = a + r * a_r;
        float* cr = c + r * ldc + col;
        switch (rows - r) {
            case 5: micro_cols<5>(nv, ar, a_r, a_l, b + col, ldb, len, cr, ldc, accumulate); break;
            case 4: micro_cols<4>(nv, ar, a_r, a_l, b + col, ldb, len, cr, ldc, accumulate); break;
            case 3: micro_cols<3>(nv, ar, a_r, a_l, b + col, ldb, len, cr, ldc, accumulate); break;
            case 2: micro_cols<2>(nv, ar, a_r, a_l, b + col, ldb, len, cr, ldc, accumulate); break;
            case 1: micro_cols<1>(nv, ar, a_r, a_l, b + col, ldb, len, cr, ldc, accumulate); break;
            default: break;
        }
    }
}

struct Geometry {
    int n, h, w, th, tw;
    long tiles() const { return long(n) * th * tw; }
};

// Where tile t's element (i, j) lies: the 6x6 input tile (origin (4 ty - 1, 4 tx - 1)) of an NHWC tensor with `ch`
// channels, `zeros` (ch zero floats) outside the image.
struct InputTile {
    const float* x;
    const float* zeros;
    int h, w, ch, img, y0, x0;
    InputTile(const float* x_, const float* zeros_, const Geometry& g, int ch_, long t, int tile, int offset)
        : x(x_), zeros(zeros_), h(g.h), w(g.w), ch(ch_) {
        int tx = int(t % g.tw), ty = int((t / g.tw) % g.th);
        img = int(t / (long(g.tw) * g.th));
        y0 = tile * ty + offset;
        x0 = tile * tx + offset;
    }
    const float* operator()(int i, int j) const {
        int yy = y0 + i, xx = x0 + j;
        if (yy < 0 || yy >= h || xx < 0 || xx >= w) return zeros;
        return x + ((size_t(img) * h + yy) * w + xx) * ch;
    }
};

}  // namespace

extern "C" {

int metasr_winograd_abi() { return 1; }

// 1 when the transforms compiled in here equal the derived ones (row-major float arrays: F(4x4, 3x3)'s BT 6x6 and
// AT 4x6, F(3x3, 4x4)'s BT 6x6, G 6x4 and AT 3x6), else 0.
int metasr_winograd_check_matrices(const float* fwd_bt, const float* fwd_at, const float* wgrad_bt,
                                   const float* wgrad_g, const float* wgrad_at) {
    auto same = [](const float* given, const float* ours, int count) {
        for (int i = 0; i < count; ++i)
            if (given[i] != ours[i]) return false;
        return true;
    };
    return same(fwd_bt, &kFwdBT[0][0], 36) && same(fwd_at, &kFwdAT[0][0], 24) &&
           same(wgrad_bt, &kWgradBT[0][0], 36) && same(wgrad_g, &kWgradG[0][0], 24) &&
           same(wgrad_at, &kWgradAT[0][0], 18);
}

// U[36][cin][cout] = G g G^T for every filter g (3x3) of an OIHW weight. Not transposed: cout = w's O, cin = w's I.
// Transposed (the input gradient's convolution): cout = w's I, cin = w's O, and the taps turned by 180 degrees.
void metasr_winograd_filters(const float* weight, int w_out, int w_in, int transposed, const float* gmat /* 6x3 */,
                             float* u, int threads) {
    const int cout = transposed ? w_in : w_out, cin = transposed ? w_out : w_in;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int ci = 0; ci < cin; ++ci) {
        std::vector<float> taps(size_t(9) * cout), mid(size_t(kIn) * 3 * cout);  // [3][3][cout], [6][3][cout]
        auto g = [&](int i, int j) { return taps.data() + (i * 3 + j) * cout; };
        auto half = [&](int a, int j) { return mid.data() + (a * 3 + j) * cout; };
        for (int i = 0; i < 3; ++i)
            for (int j = 0; j < 3; ++j)
                for (int co = 0; co < cout; ++co)
                    g(i, j)[co] = transposed ? weight[((size_t(ci) * w_in + co) * 3 + (2 - i)) * 3 + (2 - j)]
                                             : weight[((size_t(co) * w_in + ci) * 3 + i) * 3 + j];
        for (int a = 0; a < kIn; ++a)
            for (int j = 0; j < 3; ++j)
                for (int co = 0; co < cout; ++co)
                    half(a, j)[co] = gmat[a * 3] * g(0, j)[co] + gmat[a * 3 + 1] * g(1, j)[co] +
                                     gmat[a * 3 + 2] * g(2, j)[co];
        for (int a = 0; a < kIn; ++a)
            for (int b = 0; b < kIn; ++b) {
                float* dst = u + ((size_t(a) * kIn + b) * cin + ci) * cout;
                for (int co = 0; co < cout; ++co)
                    dst[co] = gmat[b * 3] * half(a, 0)[co] + gmat[b * 3 + 1] * half(a, 1)[co] +
                              gmat[b * 3 + 2] * half(a, 2)[co];
            }
    }
}

// y (NHWC, n x h x w x cout) = conv(x (NHWC, cin channels), filters u from metasr_winograd_filters) + bias.
// `block` tiles per step and thread.
void metasr_winograd_conv(const float* x, int n, int h, int w, int cin, const float* u, int cout, const float* bias,
                          float* y, int block, int threads) {
    Geometry g{n, h, w, (h + kTile - 1) / kTile, (w + kTile - 1) / kTile};
    const long tiles = g.tiles();
    const long blocks = (tiles + block - 1) / block;
#pragma omp parallel num_threads(threads)
    {
        Buffer v(size_t(kPos) * block * cin), m(size_t(kPos) * block * cout);
        Buffer zeros{size_t(cin)}, sink{size_t(cout)};  // reads outside the image; writes past its bottom/right
        std::memset(zeros.data, 0, sizeof(float) * cin);
#pragma omp for schedule(static)
        for (long bi = 0; bi < blocks; ++bi) {
            const long t0 = bi * block;
            const int bn = int(std::min<long>(block, tiles - t0));
            for (int k = 0; k < bn; ++k)  // V[p][k][:] = BT d BT^T
                transform_tile<kIn, kIn, kIn, kIn, kFwdBT, kFwdBT>(
                    cin, InputTile(x, zeros.data, g, cin, t0 + k, kTile, -1),
                    [&](int a, int b) { return v.data + ((size_t(a) * kIn + b) * block + k) * cin; }, nullptr);
            for (int p = 0; p < kPos; ++p)  // M[p] = V[p] U[p]
                gemm(bn, cout, cin, v.data + size_t(p) * block * cin, cin, 1, u + size_t(p) * cin * cout, cout,
                     m.data + size_t(p) * block * cout, cout, false);
            for (int k = 0; k < bn; ++k) {  // y tile = AT M AT^T (+ bias)
                const long t = t0 + k;
                const int tx = int(t % g.tw), ty = int((t / g.tw) % g.th), img = int(t / (long(g.tw) * g.th));
                transform_tile<kTile, kIn, kTile, kIn, kFwdAT, kFwdAT>(
                    cout,
                    [&](int i, int j) { return m.data + ((size_t(i) * kIn + j) * block + k) * cout; },
                    [&](int a, int b) {
                        const int yy = kTile * ty + a, xx = kTile * tx + b;
                        return (yy < h && xx < w) ? y + ((size_t(img) * h + yy) * w + xx) * cout : sink.data;
                    },
                    bias);
            }
        }
    }
}

// gw (OIHW, cout x cin x 3 x 3) = the weight gradient of conv(x, w) for the output gradient gy (NHWC, cout channels)
// and input x (NHWC, cin channels), by F(3x3, 4x4) with gy's 4x4 tiles as the filters. `acc` is scratch of
// threads * 36 * cout * cin floats.
void metasr_winograd_weight_grad(const float* gy, const float* x, int n, int h, int w, int cin, int cout, float* gw,
                                 float* acc, int block, int threads) {
    Geometry g{n, h, w, (h + kTile - 1) / kTile, (w + kTile - 1) / kTile};
    const long tiles = g.tiles();
    const long blocks = (tiles + block - 1) / block;
    const size_t acc_size = size_t(kPos) * cout * cin;
    int used = 1;
#pragma omp parallel num_threads(threads)
    {
        const int me = omp_get_thread_num();
#pragma omp single
        used = omp_get_num_threads();
        float* mine = acc + acc_size * me;
        std::memset(mine, 0, sizeof(float) * acc_size);
        Buffer v(size_t(kPos) * block * cin), d(size_t(kPos) * block * cout);
        Buffer zeros{size_t(std::max(cin, cout))};
        std::memset(zeros.data, 0, sizeof(float) * std::max(cin, cout));
#pragma omp for schedule(static)
        for (long bi = 0; bi < blocks; ++bi) {
            const long t0 = bi * block;
            const int bn = int(std::min<long>(block, tiles - t0));
            for (int k = 0; k < bn; ++k) {
                transform_tile<kIn, kIn, kIn, kIn, kWgradBT, kWgradBT>(  // V[p][k][:] = BT x-tile BT^T
                    cin, InputTile(x, zeros.data, g, cin, t0 + k, kTile, -1),
                    [&](int a, int b) { return v.data + ((size_t(a) * kIn + b) * block + k) * cin; }, nullptr);
                transform_tile<kIn, kTile, kIn, kTile, kWgradG, kWgradG>(  // D[p][k][:] = G gy-tile G^T (zero
                    cout, InputTile(gy, zeros.data, g, cout, t0 + k, kTile, 0),               // past the edges)
                    [&](int a, int b) { return d.data + ((size_t(a) * kIn + b) * block + k) * cout; }, nullptr);
            }
            for (int p = 0; p < kPos; ++p)  // acc[p] += D[p]^T V[p]
                gemm(cout, cin, bn, d.data + size_t(p) * block * cout, 1, cout, v.data + size_t(p) * block * cin, cin,
                     mine + size_t(p) * cout * cin, cin, true);
        }
    }
    for (int t = 1; t < used; ++t) {  // the threads' sums, in thread order
        const float* other = acc + acc_size * t;
        for (size_t i = 0; i < acc_size; i += 16) store(acc + i, load(acc + i) + load(other + i));
    }
    // gw[o][c][a][b] = (AT S AT^T)[a][b] for S = acc[.][o][c]
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int o = 0; o < cout; ++o) {
        std::vector<float> out(size_t(9) * cin);
        transform_tile<3, kIn, 3, kIn, kWgradAT, kWgradAT>(
            cin, [&](int i, int j) { return acc + ((size_t(i) * kIn + j) * cout + o) * cin; },
            [&](int a, int b) { return out.data() + (size_t(a) * 3 + b) * cin; }, nullptr);
        for (int c = 0; c < cin; ++c)
            for (int k = 0; k < 9; ++k) gw[(size_t(o) * cin + c) * 9 + k] = out[size_t(k) * cin + c];
    }
}

}  // extern "C"

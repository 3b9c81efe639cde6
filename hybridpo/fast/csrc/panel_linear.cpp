// A decode step's few rows (M <= 16) on a kernel of our own: residual + x W^T + b with W streamed once
// from 16-column panels, and the Llama block's other steps fused around it (RMSNorm before a product,
// silu(gate) * up after one, rotary + cache write + attention over the cache in one call).
// Built and loaded by hybridpo/fast/panel_linear.py (which states why and what was measured).
//
// panels: W (N, K) laid out as (N / 16, K, 16): panel p holds output columns 16p .. 16p + 15, one
// 64-byte row of 16 weights per input k, so a panel is one contiguous stream. Every weight is read
// once from memory for all M rows together, in one of two forms (the caller picks, by CPU):
// - pairs: a task takes two panels; over blocks of 128 inputs it keeps 8 rows x 2 panels of outputs
//   in 16 AVX-512 registers and adds x[r, k] * W[16p .. 16p + 31, k] for every k of the block, then
//   the next 8 rows over the same block from L1, with one broadcast of x per two FMAs (one per FMA
//   held a single thread of an Intel Xeon to ~1 FMA a cycle, loads-bound), prefetching 16 KB ahead
//   into L2;
// - one pass: a task takes one panel and keeps all M <= 16 rows' outputs in M registers over the
//   whole of K, one broadcast per FMA, prefetching 8 KB ahead into L1. On the AMD EPYC (Zen 5) the
//   weights then stream without the pairs' second, memory-idle pass over each block: a decode
//   step's 121 products at 16 rows 22.7 -> 16.4 ms, the 113 MB head 27.4 -> 40.9 GB/s
//   (docs/bench/amd/panel_one_pass.md).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#ifndef __AVX512F__
#error "the panel kernel needs AVX-512F"
#endif
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "panels.h"
#include "simd.h"

namespace {

using namespace hybridpo_panels;  // kWidth, check_rows, check_panels, vector_of, pack

constexpr int64_t kAheadL2 = 256;    // pairs: inputs k ahead to prefetch (16 KB of one panel), into L2
constexpr int64_t kAheadL1 = 128;    // one pass: inputs k ahead to prefetch (8 KB), into L1
constexpr int64_t kBlock = 128;      // pairs: inputs k per block (two panels' 2 x 128 x 64 B = 16 KB stay in L1)
constexpr int kChunk = 8;            // pairs: rows per pass over a block (8 rows x 2 panels = 16 accumulators)

enum Prefetch { kNone, kToL2, kToL1 };

// acc (R, G, 16) += x^T[k0:k1, r0:r0+R]^T W_g[k0:k1] for the G panels w[0..G-1]: per k, G weight
// loads and R broadcasts for R x G FMAs, the accumulators in registers. xt is x transposed (K, M).
template <int R, int G, Prefetch F>
void block(const float* xt, int64_t M, const float* const* w, int64_t k0, int64_t k1, float* acc) {
  __m512 a[R][G];
  for (int r = 0; r < R; ++r)
    for (int g = 0; g < G; ++g) a[r][g] = _mm512_loadu_ps(acc + (r * G + g) * kWidth);
  for (int64_t k = k0; k < k1; ++k) {
    __m512 wk[G];
    for (int g = 0; g < G; ++g) {
      if (F == kToL2) _mm_prefetch(reinterpret_cast<const char*>(w[g] + (k + kAheadL2) * kWidth), _MM_HINT_T1);
      if (F == kToL1) _mm_prefetch(reinterpret_cast<const char*>(w[g] + (k + kAheadL1) * kWidth), _MM_HINT_T0);
      wk[g] = _mm512_loadu_ps(w[g] + k * kWidth);
    }
    const float* xk = xt + k * M;
    for (int r = 0; r < R; ++r) {
      const __m512 b = _mm512_set1_ps(xk[r]);
      for (int g = 0; g < G; ++g) a[r][g] = _mm512_fmadd_ps(b, wk[g], a[r][g]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int g = 0; g < G; ++g) _mm512_storeu_ps(acc + (r * G + g) * kWidth, a[r][g]);
}

template <int G>
void block_rows(int R, const float* xt, int64_t M, const float* const* w, int64_t k0, int64_t k1, float* acc,
                bool prefetch) {
  switch (R) {
#define HYBRIDPO_ROWS(m) \
  case m: \
    if (prefetch) block<m, G, kToL2>(xt, M, w, k0, k1, acc); \
    else block<m, G, kNone>(xt, M, w, k0, k1, acc); \
    break;
    HYBRIDPO_ROWS(1) HYBRIDPO_ROWS(2) HYBRIDPO_ROWS(3) HYBRIDPO_ROWS(4)
    HYBRIDPO_ROWS(5) HYBRIDPO_ROWS(6) HYBRIDPO_ROWS(7) HYBRIDPO_ROWS(8)
#undef HYBRIDPO_ROWS
  }
}

// acc (M, G, 16) = x W_g^T for the G panels w[0..G-1], each streamed once from memory: the rows go
// in chunks of at most 8 over blocks of kBlock inputs, the later chunks reading the block from L1.
template <int G>
void panels_product(const float* xt, int64_t M, int64_t K, const float* const* w, float* acc) {
  std::memset(acc, 0, sizeof(float) * M * G * kWidth);
  const int64_t chunks = (M + kChunk - 1) / kChunk;
  for (int64_t k0 = 0; k0 < K; k0 += kBlock) {
    const int64_t k1 = std::min(K, k0 + kBlock);
    for (int64_t c = 0, r0 = 0; c < chunks; ++c) {
      const int64_t rows = (M - r0) / (chunks - c);  // balanced: 16 = 8 + 8, 12 = 6 + 6, 9 = 4 + 5
      block_rows<G>(static_cast<int>(rows), xt + r0, M, w, k0, k1, acc + r0 * G * kWidth, c == 0);
      r0 += rows;
    }
  }
}

// acc (M, 16) = x W^T for the one panel w, all M <= 16 rows in registers in a single pass over K.
void panel_one_pass(const float* xt, int64_t M, int64_t K, const float* w, float* acc) {
  std::memset(acc, 0, sizeof(float) * M * kWidth);
  const float* ws[1] = {w};
  switch (M) {
#define HYBRIDPO_ROWS(m) case m: block<m, 1, kToL1>(xt, M, ws, 0, K, acc); break;
    HYBRIDPO_ROWS(1) HYBRIDPO_ROWS(2) HYBRIDPO_ROWS(3) HYBRIDPO_ROWS(4)
    HYBRIDPO_ROWS(5) HYBRIDPO_ROWS(6) HYBRIDPO_ROWS(7) HYBRIDPO_ROWS(8)
    HYBRIDPO_ROWS(9) HYBRIDPO_ROWS(10) HYBRIDPO_ROWS(11) HYBRIDPO_ROWS(12)
    HYBRIDPO_ROWS(13) HYBRIDPO_ROWS(14) HYBRIDPO_ROWS(15) HYBRIDPO_ROWS(16)
#undef HYBRIDPO_ROWS
  }
}

// Rows over kChunk need two passes over a block in pairs, one in one pass, where the caller asks.
bool take_one_pass(bool one_pass, int64_t M) { return one_pass && M > kChunk; }

// y[:, 16p .. 16p + 16G) = residual + acc + b for the G panels from p, acc (M, G, 16).
void emit(const float* acc, int64_t M, int64_t p, int64_t G, int64_t N, float* y, const float* bias, const float* res) {
  for (int64_t r = 0; r < M; ++r)
    for (int64_t g = 0; g < G; ++g) {
      const int64_t col = (p + g) * kWidth;
      __m512 v = _mm512_loadu_ps(acc + (r * G + g) * kWidth);
      if (bias) v = _mm512_add_ps(v, _mm512_loadu_ps(bias + col));
      if (res) v = _mm512_add_ps(v, _mm512_loadu_ps(res + r * N + col));
      _mm512_storeu_ps(y + r * N + col, v);
    }
}

// y = residual + x W^T + b: a task per panel in one pass, else per pair of panels (the last one
// alone where their count is odd).
void run(const float* xt, int64_t M, int64_t K, const float* w, int64_t panels, float* y, const float* bias,
         const float* res, bool one_pass) {
  const int64_t N = panels * kWidth;
  if (take_one_pass(one_pass, M)) {
    at::parallel_for(0, panels, 16, [&](int64_t begin, int64_t end) {
      alignas(64) float acc[16 * kWidth];
      for (int64_t p = begin; p < end; ++p) {
        panel_one_pass(xt, M, K, w + p * K * kWidth, acc);
        emit(acc, M, p, 1, N, y, bias, res);
      }
    });
    return;
  }
  at::parallel_for(0, (panels + 1) / 2, 8, [&](int64_t begin, int64_t end) {
    alignas(64) float acc[16 * 2 * kWidth];
    for (int64_t pair = begin; pair < end; ++pair) {
      const int64_t p = 2 * pair, G = std::min<int64_t>(2, panels - p);
      const float* ws[2] = {w + p * K * kWidth, w + (p + 1) * K * kWidth};
      if (G == 2) panels_product<2>(xt, M, K, ws, acc);
      else panels_product<1>(xt, M, K, ws, acc);
      emit(acc, M, p, G, N, y, bias, res);
    }
  });
}

// x (M, K) transposed to (K, M), each row first RMS-normalised where `norm`: x / sqrt(mean(x^2) +
// eps) * gamma (gamma optional), in fp32 as torch's rms_norm computes it (the sum of squares 16
// lanes at a time, then one square root per row).
at::Tensor transposed(const at::Tensor& x, bool norm, double eps, const float* gamma) {
  const int64_t M = x.size(0), K = x.size(1), whole = K / kWidth * kWidth;
  at::Tensor out = at::empty({K, M}, x.options());
  const float* xp = x.data_ptr<float>();
  float* op = out.data_ptr<float>();
  for (int64_t r = 0; r < M; ++r) {
    const float* row = xp + r * K;
    float scale = 1.f;
    if (norm) {
      __m512 squares = _mm512_setzero_ps();
      for (int64_t k = 0; k < whole; k += kWidth) {
        const __m512 v = _mm512_loadu_ps(row + k);
        squares = _mm512_fmadd_ps(v, v, squares);
      }
      float sum = _mm512_reduce_add_ps(squares);
      for (int64_t k = whole; k < K; ++k) sum += row[k] * row[k];
      scale = 1.f / std::sqrt(sum / static_cast<float>(K) + static_cast<float>(eps));
    }
    for (int64_t k = 0; k < K; ++k) op[k * M + r] = norm ? row[k] * scale * (gamma ? gamma[k] : 1.f) : row[k];
  }
  return out;
}

// y = residual + xt^T W^T + b for xt = x transposed (K, M), M <= 16, W as panels.
at::Tensor product(const at::Tensor& xt, const at::Tensor& panels, const float* b, const float* r, bool one_pass) {
  const int64_t K = xt.size(0), M = xt.size(1), P = panels.size(0);
  at::Tensor y = at::empty({M, P * kWidth}, xt.options());
  run(xt.data_ptr<float>(), M, K, panels.data_ptr<float>(), P, y.data_ptr<float>(), b, r, one_pass);
  return y;
}

at::Tensor linear(const at::Tensor& x, const at::Tensor& panels, const c10::optional<at::Tensor>& bias,
                  const c10::optional<at::Tensor>& residual, bool one_pass) {
  check_rows(x);
  check_panels(panels, x.size(1));
  const int64_t M = x.size(0), N = panels.size(0) * kWidth;
  const float* r = nullptr;
  if (residual) {
    TORCH_CHECK(residual->dim() == 2 && residual->size(0) == M && residual->size(1) == N && residual->is_contiguous() &&
                residual->scalar_type() == at::kFloat, "residual: a contiguous (M, N) fp32 tensor");
    r = residual->data_ptr<float>();
  }
  return product(transposed(x, false, 0., nullptr), panels, vector_of(bias, N, "bias"), r, one_pass);
}

// rms_norm(x) W^T + b: the norm (its scale gamma folded into W, or given here) before the product.
at::Tensor norm_linear(const at::Tensor& x, double eps, const c10::optional<at::Tensor>& gamma,
                       const at::Tensor& panels, const c10::optional<at::Tensor>& bias, bool one_pass) {
  check_rows(x);
  check_panels(panels, x.size(1));
  const at::Tensor xt = transposed(x, true, eps, vector_of(gamma, x.size(1), "gamma"));
  return product(xt, panels, vector_of(bias, panels.size(0) * kWidth, "bias"), nullptr, one_pass);
}

// silu(g) * u for (g | u) = rms_norm(x) W^T + b, W the gate's F rows then the up's F rows: a task
// streams gate panels j, j + 1 and up panels j, j + 1 and writes output columns 16 j .. 16 j + 31.
at::Tensor norm_glu(const at::Tensor& x, double eps, const at::Tensor& panels, const c10::optional<at::Tensor>& bias,
                    bool one_pass) {
  check_rows(x);
  check_panels(panels, x.size(1));
  TORCH_CHECK(panels.size(0) % 4 == 0, "panels: the gate's then the up's, as many of each, an even count");
  const int64_t M = x.size(0), K = x.size(1), half = panels.size(0) / 2, F = half * kWidth;
  const int64_t G = take_one_pass(one_pass, M) ? 1 : 2;  // gate (and up) panels a task: one pass, or a pair
  const at::Tensor xt = transposed(x, true, eps, nullptr);
  const float* b = vector_of(bias, 2 * F, "bias");
  at::Tensor y = at::empty({M, F}, x.options());
  const float* xp = xt.data_ptr<float>();
  const float* wp = panels.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  at::parallel_for(0, half / G, 8 / G, [&](int64_t begin, int64_t end) {
    alignas(64) float gate[16 * 2 * kWidth];
    alignas(64) float up[16 * 2 * kWidth];
    for (int64_t task = begin; task < end; ++task) {
      const int64_t j = G * task;
      if (G == 1) {
        panel_one_pass(xp, M, K, wp + j * K * kWidth, gate);
        panel_one_pass(xp, M, K, wp + (half + j) * K * kWidth, up);
      } else {
        const float* gw[2] = {wp + j * K * kWidth, wp + (j + 1) * K * kWidth};
        const float* uw[2] = {wp + (half + j) * K * kWidth, wp + (half + j + 1) * K * kWidth};
        panels_product<2>(xp, M, K, gw, gate);
        panels_product<2>(xp, M, K, uw, up);
      }
      for (int64_t r = 0; r < M; ++r)
        for (int64_t g = 0; g < G; ++g) {
          const int64_t col = (j + g) * kWidth;
          __m512 gv = _mm512_load_ps(gate + (r * G + g) * kWidth);
          __m512 uv = _mm512_load_ps(up + (r * G + g) * kWidth);
          if (b) {
            gv = _mm512_add_ps(gv, _mm512_loadu_ps(b + col));
            uv = _mm512_add_ps(uv, _mm512_loadu_ps(b + F + col));
          }
          const __m512 silu = _mm512_div_ps(gv, _mm512_add_ps(_mm512_set1_ps(1.f), exp16(_mm512_sub_ps(_mm512_setzero_ps(), gv))));
          _mm512_storeu_ps(yp + r * F + col, _mm512_mul_ps(silu, uv));
        }
    }
  });
  return y;
}

// One decode step's attention on the (prompt, sample) grid, the layout of hybridpo.fast.neox_decode.decode:
//   qkv (P k, (H + 2 KV) D): each row's queries | keys | values (the scale 1/sqrt(D) folded into the
//     queries, the rotary pairs (i, i + R/2) of each head reordered next to each other);
//   rotation (P, R / 2, 2): cos | sin of each prompt's current position, per rotary pair;
//   cache (P, KV, C, 2D): keys | values per column, the step's k columns width - k .. width - 1 written here;
//   bias (P, 1, k, C): 0 where sample j of prompt p may read column c, -inf where not.
// Rotates q and k in place (as (a + ib)(cos + i sin)), writes k and v into the cache, and returns
// softmax(q K^T + bias) V per query head (P k, H D), query head h reading KV head h / (H / KV).
at::Tensor attend(at::Tensor& qkv, const at::Tensor& rotation, at::Tensor& cache, const at::Tensor& bias,
                  int64_t width, int64_t heads) {
  const AttendShape shape = check_attend(qkv, rotation, cache, bias, width, heads);
  const int64_t P = shape.P, KV = shape.KV, C = shape.C, D = shape.D, H = shape.H, k = shape.k;
  const int64_t row = (H + 2 * KV) * D, group = H / KV, chunks = D / kWidth;
  float* q = qkv.data_ptr<float>();
  float* kc = cache.data_ptr<float>();
  const float* mask = bias.data_ptr<float>();
  rotate_and_cache(q, rotation.data_ptr<float>(), kc, shape, width);
  at::Tensor out = at::empty({P * k, H * D}, qkv.options());
  at::Tensor scratch = at::empty({P * KV, width}, qkv.options());
  float* op = out.data_ptr<float>();
  float* sp = scratch.data_ptr<float>();
  const float neg_inf = -std::numeric_limits<float>::infinity();
  at::parallel_for(0, P * KV, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t p = task / KV, g = task % KV;
      const float* keys = kc + (p * KV + g) * C * 2 * D;
      float* score = sp + task * width;
      for (int64_t j = 0; j < k; ++j) {
        const float* allowed = mask + (p * k + j) * C;
        for (int64_t hh = 0; hh < group; ++hh) {
          const int64_t h = g * group + hh;
          const float* query = q + (p * k + j) * row + h * D;
          __m512 qv[16];
          for (int64_t c = 0; c < chunks; ++c) qv[c] = _mm512_loadu_ps(query + c * kWidth);
          float top = neg_inf;
          for (int64_t col = 0; col < width; ++col) {
            if (allowed[col] == neg_inf) { score[col] = neg_inf; continue; }
            const float* key = keys + col * 2 * D;
            __m512 acc = _mm512_mul_ps(qv[0], _mm512_loadu_ps(key));
            for (int64_t c = 1; c < chunks; ++c) acc = _mm512_fmadd_ps(qv[c], _mm512_loadu_ps(key + c * kWidth), acc);
            const float s = _mm512_reduce_add_ps(acc) + allowed[col];
            score[col] = s;
            top = std::max(top, s);
          }
          __m512 total = _mm512_setzero_ps();
          int64_t col = 0;
          for (; col + kWidth <= width; col += kWidth) {
            const __m512 e = exp16(_mm512_sub_ps(_mm512_loadu_ps(score + col), _mm512_set1_ps(top)));
            _mm512_storeu_ps(score + col, e);
            total = _mm512_add_ps(total, e);
          }
          if (col < width) {
            const __mmask16 tail = static_cast<__mmask16>((1u << (width - col)) - 1);
            const __m512 e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(tail, score + col), _mm512_set1_ps(top)));
            _mm512_mask_storeu_ps(score + col, tail, e);
            total = _mm512_add_ps(total, _mm512_maskz_mov_ps(tail, e));
          }
          const __m512 inv = _mm512_set1_ps(1.f / _mm512_reduce_add_ps(total));
          __m512 acc[16];
          for (int64_t c = 0; c < chunks; ++c) acc[c] = _mm512_setzero_ps();
          for (int64_t col2 = 0; col2 < width; ++col2) {
            if (score[col2] == 0.f) continue;  // masked (or underflowed) columns add nothing
            const __m512 wgt = _mm512_set1_ps(score[col2]);
            const float* value = keys + col2 * 2 * D + D;
            for (int64_t c = 0; c < chunks; ++c) acc[c] = _mm512_fmadd_ps(wgt, _mm512_loadu_ps(value + c * kWidth), acc[c]);
          }
          float* dst = op + (p * k + j) * H * D + h * D;
          for (int64_t c = 0; c < chunks; ++c) _mm512_storeu_ps(dst + c * kWidth, _mm512_mul_ps(acc[c], inv));
        }
      }
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY(hybridpo_panel, m) {
  // one_pass: rows over 8 in one pass over each panel (the AMD EPYC's form), else in pairs of panels
  m.def("linear(Tensor x, Tensor panels, Tensor? bias, Tensor? residual, bool one_pass=False) -> Tensor", &linear);
  m.def("pack(Tensor weight, Tensor(a!) panels) -> Tensor(a!)", &hybridpo_panels::pack);
  m.def("norm_linear(Tensor x, float eps, Tensor? gamma, Tensor panels, Tensor? bias, bool one_pass=False) -> Tensor",
        &norm_linear);
  m.def("norm_glu(Tensor x, float eps, Tensor panels, Tensor? bias, bool one_pass=False) -> Tensor", &norm_glu);
  m.def("attend(Tensor(a!) qkv, Tensor rotation, Tensor(b!) cache, Tensor bias, int width, int heads) -> Tensor", &attend);
}

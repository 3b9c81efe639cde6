// The decode's few-row products y = residual + x W^T + b on CPUs with AVX2 and FMA but no AVX-512
// (AMD EPYCs of the Zen 2 and Zen 3 generations): W as 16-column panels (../panels.h), every
// weight read once from memory for all M <= 16 rows together.
// Built and loaded by hybridpo/fast/kernels.py (load_avx2), called by hybridpo/fast/panel_linear.py.
//
// A task takes one panel. Over blocks of 128 inputs (the panel's 8 KB stay in L1) it keeps up to
// 6 rows x 16 outputs in 12 of AVX2's 16 registers and adds x[r, k] * W[16p .. 16p + 15, k] for
// every k of the block, then the next rows over the same block from L1; the first pass over a
// block prefetches the panel 8 KB ahead. The accumulators are named variables: as an array GCC 12
// kept them on the stack and stored all 12 on every k, which halved the rate (Zen 3, 2 threads,
// alternated in one process: the 113 MB head at 16 rows 13.5 -> 8.2 ms, the Llama block's products
// 1.8-2.5x; docs/bench/zen3/avx2_accumulators.md).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#if !defined(__AVX2__) || !defined(__FMA__)
#error "the AVX2 panel kernel needs AVX2 and FMA"
#endif
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "panels.h"

namespace {

using namespace hybridpo_panels;  // kWidth, check_rows, check_panels, vector_of, pack

constexpr int64_t kBlock = 128;  // inputs k per block: the panel's 128 x 64 B = 8 KB stay in L1
constexpr int kChunk = 6;        // rows per pass over a block: 6 rows x 2 registers = 12 accumulators
constexpr int64_t kAhead = 128;  // inputs k ahead to prefetch (8 KB of the panel), on a block's first pass

// acc (R, 16) += x^T[k0:k1, r0:r0+R]^T W[k0:k1] for the panel w: per k, two weight loads and R
// broadcasts for 2R FMAs. xt is x transposed (K, M), offset to the chunk's first row.
template <int R, bool Prefetch>
void block(const float* xt, int64_t M, const float* w, int64_t k0, int64_t k1, float* acc) {
  // named accumulators, not an array (see the top of this file)
  __m256 a00, a01, a10, a11, a20, a21, a30, a31, a40, a41, a50, a51;
#define HYBRIDPO_LOAD(r) if constexpr (R > r) { a##r##0 = _mm256_loadu_ps(acc + r * kWidth); \
                                               a##r##1 = _mm256_loadu_ps(acc + r * kWidth + 8); }
  HYBRIDPO_LOAD(0) HYBRIDPO_LOAD(1) HYBRIDPO_LOAD(2) HYBRIDPO_LOAD(3) HYBRIDPO_LOAD(4) HYBRIDPO_LOAD(5)
#undef HYBRIDPO_LOAD
  for (int64_t k = k0; k < k1; ++k) {
    if (Prefetch) _mm_prefetch(reinterpret_cast<const char*>(w + (k + kAhead) * kWidth), _MM_HINT_T0);
    const __m256 w0 = _mm256_loadu_ps(w + k * kWidth), w1 = _mm256_loadu_ps(w + k * kWidth + 8);
    const float* xk = xt + k * M;
#define HYBRIDPO_FMA(r) if constexpr (R > r) { const __m256 x = _mm256_broadcast_ss(xk + r); \
                                              a##r##0 = _mm256_fmadd_ps(x, w0, a##r##0);  \
                                              a##r##1 = _mm256_fmadd_ps(x, w1, a##r##1); }
    HYBRIDPO_FMA(0) HYBRIDPO_FMA(1) HYBRIDPO_FMA(2) HYBRIDPO_FMA(3) HYBRIDPO_FMA(4) HYBRIDPO_FMA(5)
#undef HYBRIDPO_FMA
  }
#define HYBRIDPO_STORE(r) if constexpr (R > r) { _mm256_storeu_ps(acc + r * kWidth, a##r##0); \
                                                _mm256_storeu_ps(acc + r * kWidth + 8, a##r##1); }
  HYBRIDPO_STORE(0) HYBRIDPO_STORE(1) HYBRIDPO_STORE(2) HYBRIDPO_STORE(3) HYBRIDPO_STORE(4) HYBRIDPO_STORE(5)
#undef HYBRIDPO_STORE
}

template <bool Prefetch>
void block_rows(int R, const float* xt, int64_t M, const float* w, int64_t k0, int64_t k1, float* acc) {
  switch (R) {
#define HYBRIDPO_ROWS(m) case m: block<m, Prefetch>(xt, M, w, k0, k1, acc); break;
    HYBRIDPO_ROWS(1) HYBRIDPO_ROWS(2) HYBRIDPO_ROWS(3) HYBRIDPO_ROWS(4) HYBRIDPO_ROWS(5) HYBRIDPO_ROWS(6)
#undef HYBRIDPO_ROWS
  }
}

// acc (M, 16) = x W^T for the one panel w, the rows in chunks of kChunk over each block of K.
void panel_product(const float* xt, int64_t M, int64_t K, const float* w, float* acc) {
  std::memset(acc, 0, sizeof(float) * M * kWidth);
  for (int64_t k0 = 0; k0 < K; k0 += kBlock) {
    const int64_t k1 = std::min(K, k0 + kBlock);
    for (int64_t r0 = 0; r0 < M; r0 += kChunk) {
      const int R = static_cast<int>(std::min<int64_t>(kChunk, M - r0));
      if (r0 == 0) block_rows<true>(R, xt + r0, M, w, k0, k1, acc);
      else block_rows<false>(R, xt + r0, M, w, k0, k1, acc + r0 * kWidth);
    }
  }
}

at::Tensor linear(const at::Tensor& x, const at::Tensor& panels, const c10::optional<at::Tensor>& bias,
                  const c10::optional<at::Tensor>& residual) {
  check_rows(x);
  check_panels(panels, x.size(1));
  const int64_t M = x.size(0), K = x.size(1), P = panels.size(0), N = P * kWidth;
  const float* res = nullptr;
  if (residual) {
    TORCH_CHECK(residual->sizes() == at::IntArrayRef({M, N}) && residual->is_contiguous() &&
                residual->scalar_type() == at::kFloat, "residual: a contiguous (M, N) fp32 tensor");
    res = residual->data_ptr<float>();
  }
  const float* b = vector_of(bias, N, "bias");
  const at::Tensor xt = x.t().contiguous();  // (K, M): a row's inputs k apart, one broadcast each
  at::Tensor y = at::empty({M, N}, x.options());
  const float* xp = xt.data_ptr<float>();
  const float* wp = panels.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  at::parallel_for(0, P, 16, [&](int64_t begin, int64_t end) {
    alignas(32) float acc[16 * kWidth];
    for (int64_t p = begin; p < end; ++p) {
      panel_product(xp, M, K, wp + p * K * kWidth, acc);
      for (int64_t r = 0; r < M; ++r)
        for (int64_t h = 0; h < kWidth; h += 8) {
          const int64_t col = p * kWidth + h;
          __m256 v = _mm256_loadu_ps(acc + r * kWidth + h);
          if (b) v = _mm256_add_ps(v, _mm256_loadu_ps(b + col));
          if (res) v = _mm256_add_ps(v, _mm256_loadu_ps(res + r * N + col));
          _mm256_storeu_ps(yp + r * N + col, v);
        }
    }
  });
  return y;
}

}  // namespace

TORCH_LIBRARY(hybridpo_panel_avx2, m) {
  m.def("linear(Tensor x, Tensor panels, Tensor? bias, Tensor? residual) -> Tensor", &linear);
  m.def("pack(Tensor weight, Tensor(a!) panels) -> Tensor(a!)", &hybridpo_panels::pack);
}

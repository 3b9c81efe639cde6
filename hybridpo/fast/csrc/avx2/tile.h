// The AVX2 kernels' one product routine and their lane reductions, shared by panel_avx2.cpp (the
// decode's few-row products) and span_attention_avx2.cpp (training attention span by span).
//
// block<R>: acc (R, 16) += x[:, k0:k1] W[k0:k1] for one panel W of (K, 16) (one 64-byte row of 16
// weights per input k), x[r, k] read at x[r rs + k ks] (a matrix or its transpose), acc's rows ld
// apart. Per k: two weight loads and R broadcasts for 2R FMAs; R <= 6 keeps 12 accumulators and
// the weights in AVX2's 16 registers. The accumulators are named variables: as an array GCC 12
// kept them on the stack and stored all 12 on every k, which halved the rate (Zen 3, 2 threads,
// alternated in one process: the 113 MB head at 16 rows 13.5 -> 8.2 ms, the Llama block's products
// 1.8-2.5x at 12-16 rows; docs/bench/zen3/avx2_accumulators.md).
#pragma once

#if !defined(__AVX2__) || !defined(__FMA__)
#error "the AVX2 kernels need AVX2 and FMA"
#endif
#include <immintrin.h>

#include <cstdint>

namespace hybridpo_avx2 {

constexpr int kChunk = 6;        // rows per pass over a panel: 6 rows x 2 registers = 12 accumulators
constexpr int64_t kAhead = 128;  // inputs k ahead to prefetch (8 KB of a panel), where asked

// The sum and the maximum of a register's 8 lanes.
inline float sum8(__m256 v) {
  const __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 q = _mm_add_ps(h, _mm_movehl_ps(h, h));
  return _mm_cvtss_f32(_mm_add_ss(q, _mm_movehdup_ps(q)));
}

inline float max8(__m256 v) {
  const __m128 h = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 q = _mm_max_ps(h, _mm_movehl_ps(h, h));
  return _mm_cvtss_f32(_mm_max_ss(q, _mm_movehdup_ps(q)));
}

// All ones in the first n lanes (n <= 0: none, n >= 8: all).
inline __m256 lanes_below(int64_t n) {
  const int32_t m = static_cast<int32_t>(n < 0 ? 0 : (n > 8 ? 8 : n));
  return _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(m), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)));
}

template <int R, bool Prefetch>
void block(const float* x, int64_t rs, int64_t ks, const float* w, int64_t k0, int64_t k1, float* acc, int64_t ld) {
  __m256 a00, a01, a10, a11, a20, a21, a30, a31, a40, a41, a50, a51;  // named, not an array (see above)
#define HYBRIDPO_LOAD(r) if constexpr (R > r) { a##r##0 = _mm256_loadu_ps(acc + r * ld); \
                                               a##r##1 = _mm256_loadu_ps(acc + r * ld + 8); }
  HYBRIDPO_LOAD(0) HYBRIDPO_LOAD(1) HYBRIDPO_LOAD(2) HYBRIDPO_LOAD(3) HYBRIDPO_LOAD(4) HYBRIDPO_LOAD(5)
#undef HYBRIDPO_LOAD
  for (int64_t k = k0; k < k1; ++k) {
    if (Prefetch) _mm_prefetch(reinterpret_cast<const char*>(w + (k + kAhead) * 16), _MM_HINT_T0);
    const __m256 w0 = _mm256_loadu_ps(w + k * 16), w1 = _mm256_loadu_ps(w + k * 16 + 8);
    const float* xk = x + k * ks;
#define HYBRIDPO_FMA(r) if constexpr (R > r) { const __m256 b = _mm256_broadcast_ss(xk + r * rs); \
                                              a##r##0 = _mm256_fmadd_ps(b, w0, a##r##0);     \
                                              a##r##1 = _mm256_fmadd_ps(b, w1, a##r##1); }
    HYBRIDPO_FMA(0) HYBRIDPO_FMA(1) HYBRIDPO_FMA(2) HYBRIDPO_FMA(3) HYBRIDPO_FMA(4) HYBRIDPO_FMA(5)
#undef HYBRIDPO_FMA
  }
#define HYBRIDPO_STORE(r) if constexpr (R > r) { _mm256_storeu_ps(acc + r * ld, a##r##0); \
                                                _mm256_storeu_ps(acc + r * ld + 8, a##r##1); }
  HYBRIDPO_STORE(0) HYBRIDPO_STORE(1) HYBRIDPO_STORE(2) HYBRIDPO_STORE(3) HYBRIDPO_STORE(4) HYBRIDPO_STORE(5)
#undef HYBRIDPO_STORE
}

// block<R> for a run-time R of 1 .. kChunk.
template <bool Prefetch>
void block_rows(int R, const float* x, int64_t rs, int64_t ks, const float* w, int64_t k0, int64_t k1, float* acc,
                int64_t ld) {
  switch (R) {
#define HYBRIDPO_ROWS(m) case m: block<m, Prefetch>(x, rs, ks, w, k0, k1, acc, ld); break;
    HYBRIDPO_ROWS(1) HYBRIDPO_ROWS(2) HYBRIDPO_ROWS(3) HYBRIDPO_ROWS(4) HYBRIDPO_ROWS(5) HYBRIDPO_ROWS(6)
#undef HYBRIDPO_ROWS
  }
}

}  // namespace hybridpo_avx2

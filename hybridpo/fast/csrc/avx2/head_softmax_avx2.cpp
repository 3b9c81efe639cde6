// The LM head's softmax over the vocabulary on CPUs with AVX2 and FMA but no AVX-512: ../head_softmax.cpp's
// two ops (which it describes; their loops over rows are ../head_softmax.h's), a row 8 lanes at a
// time, e^x by simd.h's exp8. Built and loaded by
// hybridpo/fast/kernels.py (load_avx2); called by hybridpo/fast/fused_head.py.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "head_softmax.h"
#include "simd.h"
#include "tile.h"

namespace {

using namespace hybridpo_head;  // kSumChunk, head_lse, head_scaled_softmax_
using namespace hybridpo_avx2;  // sum8, max8, lanes_below

inline __m256i tail_of(int64_t left) { return _mm256_castps_si256(lanes_below(left)); }

// log Σ_j e^{x_j} of one row, as ../head_softmax.cpp's row_lse (torch's answers for -inf, +inf, NaN).
float row_lse(const float* x, int64_t V) {
  const int64_t whole = V / 8 * 8;
  const __m256 neg_inf = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  __m256 top = neg_inf, nan = _mm256_setzero_ps();
  for (int64_t j = 0; j < whole; j += 8) {
    const __m256 v = _mm256_loadu_ps(x + j);
    nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    top = _mm256_max_ps(top, v);
  }
  const __m256i tail = tail_of(V - whole);
  if (whole < V) {
    const __m256 v = _mm256_blendv_ps(neg_inf, _mm256_maskload_ps(x + whole, tail), _mm256_castsi256_ps(tail));
    nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    top = _mm256_max_ps(top, v);
  }
  if (_mm256_movemask_ps(nan)) return std::numeric_limits<float>::quiet_NaN();
  const float m = max8(top);
  if (!std::isfinite(m)) return m;
  const __m256 mv = _mm256_set1_ps(m);
  // two levels, as ../head_softmax.cpp: 2 x 8 lanes over a chunk of kSumChunk, the chunks' sums added after
  __m256 total = _mm256_setzero_ps();
  for (int64_t c = 0; c < whole; c += kSumChunk) {
    const int64_t stop = std::min(whole, c + kSumChunk);
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    int64_t j = c;
    for (; j + 16 <= stop; j += 16) {
      s0 = _mm256_add_ps(s0, exp8(_mm256_sub_ps(_mm256_loadu_ps(x + j), mv)));
      s1 = _mm256_add_ps(s1, exp8(_mm256_sub_ps(_mm256_loadu_ps(x + j + 8), mv)));
    }
    for (; j < stop; j += 8) s0 = _mm256_add_ps(s0, exp8(_mm256_sub_ps(_mm256_loadu_ps(x + j), mv)));
    total = _mm256_add_ps(total, _mm256_add_ps(s0, s1));
  }
  if (whole < V)
    total = _mm256_add_ps(total, _mm256_and_ps(_mm256_castsi256_ps(tail),
                                               exp8(_mm256_sub_ps(_mm256_maskload_ps(x + whole, tail), mv))));
  return m + std::log(sum8(total));
}

// row[:V] <- exp(row - l) * s, in place
void row_scaled(float* row, int64_t V, float l, float s) {
  const int64_t whole = V / 8 * 8;
  const __m256 lv = _mm256_set1_ps(l), sv = _mm256_set1_ps(s);
  for (int64_t j = 0; j < whole; j += 8)
    _mm256_storeu_ps(row + j, _mm256_mul_ps(exp8(_mm256_sub_ps(_mm256_loadu_ps(row + j), lv)), sv));
  if (whole < V) {
    const __m256i tail = tail_of(V - whole);
    _mm256_maskstore_ps(row + whole, tail, _mm256_mul_ps(exp8(_mm256_sub_ps(_mm256_maskload_ps(row + whole, tail), lv)), sv));
  }
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(hybridpo_panel_avx2, m) {
  m.def("head_lse(Tensor logits) -> Tensor", &head_lse<row_lse>);
  m.def("head_scaled_softmax_(Tensor(a!) logits, Tensor lse, Tensor scale) -> Tensor(a!)", &head_scaled_softmax_<row_scaled>);
}

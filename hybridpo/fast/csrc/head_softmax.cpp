// The LM head's softmax over the vocabulary, row by row, for hybridpo/fast/fused_head.py (which
// states why and what was measured): the log-sum-exp of each row of a block of logits, and the
// backward's in-place dL/dlogits = -p Σg = -exp(logits - lse) Σg. Each is one pass per row over
// the row (a 49,152-token row is 192 KB, read again from L2 by the second pass of the log-sum-exp)
// with e^x by simd.h's exp16 (2 ulp), on torch's threads a block of rows each.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "head_softmax.h"
#include "simd.h"

namespace {

using namespace hybridpo_head;  // kSumChunk, head_lse, head_scaled_softmax_

constexpr int64_t kLanes = 16;

__mmask16 tail_mask(int64_t left) { return static_cast<__mmask16>((1u << left) - 1); }

// log Σ_j e^{x_j} of one row: its max, then Σ e^{x_j - max}. As torch's logsumexp: a row of -inf
// gives -inf, one holding NaN gives NaN, one holding +inf (and no NaN) gives +inf.
float row_lse(const float* x, int64_t V) {
  const int64_t whole = V / kLanes * kLanes;
  const float neg_inf = -std::numeric_limits<float>::infinity();
  __m512 top = _mm512_set1_ps(neg_inf);
  __mmask16 nan = 0;
  for (int64_t j = 0; j < whole; j += kLanes) {
    const __m512 v = _mm512_loadu_ps(x + j);
    nan |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    top = _mm512_max_ps(top, v);
  }
  if (whole < V) {
    const __mmask16 t = tail_mask(V - whole);
    const __m512 v = _mm512_maskz_loadu_ps(t, x + whole);
    nan |= _mm512_mask_cmp_ps_mask(t, v, v, _CMP_UNORD_Q);
    top = _mm512_mask_max_ps(top, t, top, v);
  }
  if (nan) return std::numeric_limits<float>::quiet_NaN();
  const float m = _mm512_reduce_max_ps(top);
  if (!std::isfinite(m)) return m;
  const __m512 mv = _mm512_set1_ps(m);
  // two levels: 2 x 16 lanes over a chunk of kSumChunk, the chunks' sums added after (a lane sums at
  // most kSumChunk / 32 terms, then the chunks': fp32 within ~1e-7 of the float64 sum on 49,152 terms)
  __m512 total = _mm512_setzero_ps();
  for (int64_t c = 0; c < whole; c += kSumChunk) {
    const int64_t stop = std::min(whole, c + kSumChunk);
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    int64_t j = c;
    for (; j + 2 * kLanes <= stop; j += 2 * kLanes) {
      s0 = _mm512_add_ps(s0, exp16(_mm512_sub_ps(_mm512_loadu_ps(x + j), mv)));
      s1 = _mm512_add_ps(s1, exp16(_mm512_sub_ps(_mm512_loadu_ps(x + j + kLanes), mv)));
    }
    for (; j < stop; j += kLanes) s0 = _mm512_add_ps(s0, exp16(_mm512_sub_ps(_mm512_loadu_ps(x + j), mv)));
    total = _mm512_add_ps(total, _mm512_add_ps(s0, s1));
  }
  if (whole < V) {
    const __mmask16 t = tail_mask(V - whole);
    total = _mm512_add_ps(total, _mm512_maskz_mov_ps(t, exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(t, x + whole), mv))));
  }
  return m + std::log(_mm512_reduce_add_ps(total));
}

// row[:V] <- exp(row - l) * s, in place
void row_scaled(float* row, int64_t V, float l, float s) {
  const int64_t whole = V / kLanes * kLanes;
  const __m512 lv = _mm512_set1_ps(l), sv = _mm512_set1_ps(s);
  int64_t j = 0;
  for (; j < whole; j += kLanes)
    _mm512_storeu_ps(row + j, _mm512_mul_ps(exp16(_mm512_sub_ps(_mm512_loadu_ps(row + j), lv)), sv));
  if (j < V) {
    const __mmask16 t = tail_mask(V - j);
    _mm512_mask_storeu_ps(row + j, t, _mm512_mul_ps(exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(t, row + j), lv)), sv));
  }
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(hybridpo_panel, m) {
  m.def("head_lse(Tensor logits) -> Tensor", &head_lse<row_lse>);
  m.def("head_scaled_softmax_(Tensor(a!) logits, Tensor lse, Tensor scale) -> Tensor(a!)", &head_scaled_softmax_<row_scaled>);
}

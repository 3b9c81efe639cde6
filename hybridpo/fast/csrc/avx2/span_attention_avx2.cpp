// Training attention of a packed row, span by span, forward and backward, on CPUs with AVX2 and FMA
// but no AVX-512: the algorithm of ../span_attention.cpp (which describes the spans, the tasks and
// both passes), its loops ../spans.h's span_forward and span_backward, with the vector code here in
// 8 lanes. Every product is tile.h's block: 6 rows x one 16-wide panel of outputs in 12 registers,
// x read through two strides, over blocks of 256 inputs (a 16 KB slice of the panel stays in L1).
// e^x by simd.h's exp8.
// Built and loaded by hybridpo/fast/kernels.py (load_avx2); called by hybridpo/fast/varlen_attention.py.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "simd.h"
#include "spans.h"
#include "tile.h"

namespace {

using namespace hybridpo_spans;  // kPanel, kPositions, Keys, gather, by_dim_rows, Task, task_of, Shape, shape_of, ...
using namespace hybridpo_avx2;   // block_rows, kChunk, sum8, max8, lanes_below

constexpr int64_t kDepth = 256;  // inputs per pass of a panel's rows: 256 x 64 B = 16 KB of the panel

// The AVX2 form of the vector code ../spans.h's span_forward and span_backward call.
struct Avx2 {
  // out (M, 16 NP) = / += x (M, K) W, x[r rs + k ks], W as NP panels of (K, 16) pstride apart
  static void product(const float* x, int64_t rs, int64_t ks, int64_t M, int64_t K, const float* w, int64_t pstride,
                      int64_t NP, float* out, int64_t ld, bool accumulate) {
    for (int64_t p = 0; p < NP; ++p) {
      float* o = out + p * kPanel;
      if (!accumulate)
        for (int64_t r = 0; r < M; ++r) std::memset(o + r * ld, 0, kPanel * sizeof(float));
      for (int64_t k0 = 0; k0 < K; k0 += kDepth) {
        const int64_t k1 = std::min(K, k0 + kDepth);
        for (int64_t r0 = 0; r0 < M; r0 += kChunk) {
          const int R = static_cast<int>(std::min<int64_t>(kChunk, M - r0));
          block_rows<false>(R, x + r0 * rs, rs, ks, w + p * pstride, k0, k1, o + r0 * ld, ld);
        }
      }
    }
  }

  static float softmax_row(float* row, int64_t limit, int64_t width, float sc) {
    const __m256 scv = _mm256_set1_ps(sc), neg_inf = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
    __m256 top = neg_inf;
    for (int64_t c = 0; c < limit; c += 8)
      top = _mm256_max_ps(top, _mm256_blendv_ps(neg_inf, _mm256_mul_ps(_mm256_loadu_ps(row + c), scv), lanes_below(limit - c)));
    const float mx = max8(top);
    const __m256 mxv = _mm256_set1_ps(mx);
    __m256 total = _mm256_setzero_ps();
    for (int64_t c = 0; c < width; c += 8) {
      const __m256 e = _mm256_and_ps(lanes_below(limit - c), exp8(_mm256_fmsub_ps(_mm256_loadu_ps(row + c), scv, mxv)));
      _mm256_storeu_ps(row + c, e);
      total = _mm256_add_ps(total, e);
    }
    const float sum = sum8(total);
    const __m256 inv = _mm256_set1_ps(1.f / sum);
    for (int64_t c = 0; c < width; c += 8) _mm256_storeu_ps(row + c, _mm256_mul_ps(_mm256_loadu_ps(row + c), inv));
    return mx + std::log(sum);
  }

  static void backward_row(float* p, float* d, int64_t limit, int64_t width, float sc, float lse, float delta) {
    const __m256 l = _mm256_set1_ps(lse), dl = _mm256_set1_ps(delta), scv = _mm256_set1_ps(sc);
    for (int64_t c = 0; c < width; c += 8) {
      const __m256 e = _mm256_and_ps(lanes_below(limit - c), exp8(_mm256_fmsub_ps(_mm256_loadu_ps(p + c), scv, l)));
      _mm256_storeu_ps(p + c, e);
      _mm256_storeu_ps(d + c, _mm256_mul_ps(_mm256_mul_ps(e, _mm256_sub_ps(_mm256_loadu_ps(d + c), dl)), scv));
    }
  }

  static float dot(const float* a, const float* b, int64_t D) {
    __m256 acc = _mm256_setzero_ps();
    for (int64_t c = 0; c < D; c += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + c), _mm256_loadu_ps(b + c), acc);
    return sum8(acc);
  }
};

}  // namespace

// Forward: out (N, H, D), lse (N, H), as ../span_attention.cpp's span_attention.
std::vector<at::Tensor> span_attention_avx2(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                            const at::Tensor& spans, double scale) {
  return span_forward<Avx2>(q, k, v, spans, scale);
}

// Backward of span_attention_avx2: dq (N, H, D), dk and dv (Nk, KV, D), as ../span_attention.cpp's.
std::vector<at::Tensor> span_attention_backward_avx2(const at::Tensor& grad, const at::Tensor& q, const at::Tensor& k,
                                                     const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse,
                                                     const at::Tensor& spans, double scale) {
  return span_backward<Avx2>(grad, q, k, v, out, lse, spans, scale);
}

TORCH_LIBRARY_FRAGMENT(hybridpo_panel_avx2, m) {
  m.def("span_attention(Tensor q, Tensor k, Tensor v, Tensor spans, float scale) -> Tensor[]", &span_attention_avx2);
  m.def("span_attention_backward(Tensor grad, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, Tensor spans, "
        "float scale) -> Tensor[]", &span_attention_backward_avx2);
}

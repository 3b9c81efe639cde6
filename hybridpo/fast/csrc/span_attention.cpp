// Training attention of a packed row, span by span, forward and backward, on a kernel of our own.
// Built and loaded by hybridpo/fast/kernels.py; called by hybridpo/fast/varlen_attention.py (which
// states why and what was measured).
//
// A span (hybridpo.fast.varlen_attention.Span): queries q0 .. q1 of the row and its keys, the key
// ranges a1 .. b1 then a2 .. b2 concatenated (m keys); the last n = q1 - q0 are the queries' own
// tokens, and query t sees the m - n keys before them and its own up to itself (a prompt: plain
// causal). Grouped-query heads are read as they are: a task is one (span, key / value head) and
// takes the G query heads over that head together, G x 16 query positions a block, so a block's
// scores are one (G 16, m) product of rows against key panels. Every product is one routine:
// out (M, 16 NP) = x (M, K) W with x read through two strides (a matrix or its transpose) and W as
// NP panels of (K, 16), 8 rows x 2 panels of outputs in AVX-512 registers (the form of
// panel_linear.cpp). A block computes only the key panels its last query can see.
//
// Forward: S = scale Q K^T, an exact softmax per row (its log-sum-exp kept), O = P V.
// Backward, per block: P again from S and the log-sum-exp, dP = dO V^T, dS = P (dP - rowsum(dO O)),
// dQ = scale dS K, and each task's own dK += scale dS^T Q, dV += P^T dO, summed into dk / dv after
// (spans share their prompt's keys; a key / value head's rows are summed by one thread).
// fp32 throughout; e^x by simd.h's exp16 (2 ulp). The loops over tasks and blocks are spans.h's
// span_forward and span_backward, shared with the AVX2 form (avx2/span_attention_avx2.cpp); this
// file supplies their AVX-512 vector code.
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

namespace {

using namespace hybridpo_spans;  // kPositions, Keys, gather, by_dim_rows, Task, task_of, Shape, shape_of, ...

constexpr int64_t kLanes = 16;  // fp32 lanes of an AVX-512 register

// out (R, 16 G) (ld) = / += sum_k x[r rs + k ks] w_g[k 16 + i]: panel g at w + g pstride, (K, 16) each
template <int R, int G>
void tile(const float* x, int64_t rs, int64_t ks, const float* w, int64_t pstride, int64_t K, float* out,
          int64_t ld, bool accumulate) {
  __m512 a[R][G];
  for (int r = 0; r < R; ++r)
    for (int g = 0; g < G; ++g) a[r][g] = accumulate ? _mm512_loadu_ps(out + r * ld + g * kLanes) : _mm512_setzero_ps();
  for (int64_t k = 0; k < K; ++k) {
    __m512 wk[G];
    for (int g = 0; g < G; ++g) wk[g] = _mm512_loadu_ps(w + g * pstride + k * kLanes);
    const float* xk = x + k * ks;
    for (int r = 0; r < R; ++r) {
      const __m512 b = _mm512_set1_ps(xk[r * rs]);
      for (int g = 0; g < G; ++g) a[r][g] = _mm512_fmadd_ps(b, wk[g], a[r][g]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int g = 0; g < G; ++g) _mm512_storeu_ps(out + r * ld + g * kLanes, a[r][g]);
}

template <int G>
void tile_rows(int R, const float* x, int64_t rs, int64_t ks, const float* w, int64_t pstride, int64_t K, float* out,
               int64_t ld, bool accumulate) {
  switch (R) {
#define HYBRIDPO_TILE(m) case m: tile<m, G>(x, rs, ks, w, pstride, K, out, ld, accumulate); break;
    HYBRIDPO_TILE(1) HYBRIDPO_TILE(2) HYBRIDPO_TILE(3) HYBRIDPO_TILE(4)
    HYBRIDPO_TILE(5) HYBRIDPO_TILE(6) HYBRIDPO_TILE(7) HYBRIDPO_TILE(8)
#undef HYBRIDPO_TILE
  }
}

// out (M, 16 NP) = / += x (M, K) W, x[r rs + k ks], W as NP panels of (K, 16) pstride apart
void panels_product(const float* x, int64_t rs, int64_t ks, int64_t M, int64_t K, const float* w, int64_t pstride,
                    int64_t NP, float* out, int64_t ld, bool accumulate) {
  for (int64_t p = 0; p < NP; p += 2) {
    for (int64_t r0 = 0; r0 < M; r0 += 8) {
      const int R = static_cast<int>(std::min<int64_t>(8, M - r0));
      if (NP - p >= 2)
        tile_rows<2>(R, x + r0 * rs, rs, ks, w + p * pstride, pstride, K, out + r0 * ld + p * kLanes, ld, accumulate);
      else
        tile_rows<1>(R, x + r0 * rs, rs, ks, w + p * pstride, pstride, K, out + r0 * ld + p * kLanes, ld, accumulate);
    }
  }
}

inline __mmask16 lanes_below(int64_t n) {  // the first n (0 .. 16) lanes
  return n >= kLanes ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << std::max<int64_t>(n, 0)) - 1);
}

// The AVX-512 form of the vector code spans.h's span_forward and span_backward call.
struct Avx512 {
  static void product(const float* x, int64_t rs, int64_t ks, int64_t M, int64_t K, const float* w, int64_t pstride,
                      int64_t NP, float* out, int64_t ld, bool accumulate) {
    panels_product(x, rs, ks, M, K, w, pstride, NP, out, ld, accumulate);
  }

  static float softmax_row(float* row, int64_t limit, int64_t width, float sc) {
    const float neg_inf = -std::numeric_limits<float>::infinity();
    __m512 top = _mm512_set1_ps(neg_inf);
    for (int64_t c = 0; c < limit; c += kLanes)
      top = _mm512_mask_max_ps(top, lanes_below(limit - c), top, _mm512_mul_ps(_mm512_loadu_ps(row + c), _mm512_set1_ps(sc)));
    const float mx = _mm512_reduce_max_ps(top);
    __m512 total = _mm512_setzero_ps();
    for (int64_t c = 0; c < width; c += kLanes) {
      const __m512 e = _mm512_maskz_mov_ps(lanes_below(limit - c),
          exp16(_mm512_fmsub_ps(_mm512_loadu_ps(row + c), _mm512_set1_ps(sc), _mm512_set1_ps(mx))));
      _mm512_storeu_ps(row + c, e);
      total = _mm512_add_ps(total, e);
    }
    const float sum = _mm512_reduce_add_ps(total);
    const __m512 inv = _mm512_set1_ps(1.f / sum);
    for (int64_t c = 0; c < width; c += kLanes) _mm512_storeu_ps(row + c, _mm512_mul_ps(_mm512_loadu_ps(row + c), inv));
    return mx + std::log(sum);
  }

  static void backward_row(float* p, float* d, int64_t limit, int64_t width, float sc, float lse, float delta) {
    const __m512 l = _mm512_set1_ps(lse), dl = _mm512_set1_ps(delta), scv = _mm512_set1_ps(sc);
    for (int64_t c = 0; c < width; c += kLanes) {
      const __m512 e = _mm512_maskz_mov_ps(lanes_below(limit - c), exp16(_mm512_fmsub_ps(_mm512_loadu_ps(p + c), scv, l)));
      _mm512_storeu_ps(p + c, e);
      _mm512_storeu_ps(d + c, _mm512_mul_ps(_mm512_mul_ps(e, _mm512_sub_ps(_mm512_loadu_ps(d + c), dl)), scv));
    }
  }

  static float dot(const float* a, const float* b, int64_t D) {
    __m512 acc = _mm512_setzero_ps();
    for (int64_t c = 0; c < D; c += kLanes) acc = _mm512_fmadd_ps(_mm512_loadu_ps(a + c), _mm512_loadu_ps(b + c), acc);
    return _mm512_reduce_add_ps(acc);
  }
};

}  // namespace

// Forward: out (N, H, D), lse (N, H). Span i: queries q0 .. q1 see its keys (ranges a1 .. b1, a2 .. b2,
// in that order); the last q1 - q0 keys are the queries' own tokens, and query t sees every key
// before them and its own up to itself.
std::vector<at::Tensor> span_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                       const at::Tensor& spans, double scale) {
  return span_forward<Avx512>(q, k, v, spans, scale);
}

// Backward of span_attention: dq (N, H, D), dk and dv (Nk, KV, D) for the output's gradient.
std::vector<at::Tensor> span_attention_backward(const at::Tensor& grad, const at::Tensor& q, const at::Tensor& k,
                                                const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse,
                                                const at::Tensor& spans, double scale) {
  return span_backward<Avx512>(grad, q, k, v, out, lse, spans, scale);
}

TORCH_LIBRARY_FRAGMENT(hybridpo_panel, m) {
  m.def("span_attention(Tensor q, Tensor k, Tensor v, Tensor spans, float scale) -> Tensor[]", &span_attention);
  m.def("span_attention_backward(Tensor grad, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, Tensor spans, "
        "float scale) -> Tensor[]", &span_attention_backward);
}

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
// fp32 throughout; e^x by simd.h's exp16 (2 ulp).
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
void product(const float* x, int64_t rs, int64_t ks, int64_t M, int64_t K, const float* w, int64_t pstride, int64_t NP,
             float* out, int64_t ld, bool accumulate) {
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

}  // namespace

// Forward: out (N, H, D), lse (N, H). Span i: queries q0 .. q1 see its keys (ranges a1 .. b1, a2 .. b2,
// in that order); the last q1 - q0 keys are the queries' own tokens, and query t sees every key
// before them and its own up to itself.
std::vector<at::Tensor> span_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                       const at::Tensor& spans, double scale) {
  const Shape s = shape_of(q, k, v, spans);
  at::Tensor out = at::zeros({s.N, s.H, s.D}, q.options());
  at::Tensor lse = at::zeros({s.N, s.H}, q.options());
  const float *qp = q.data_ptr<float>(), *kp = k.data_ptr<float>(), *vp = v.data_ptr<float>();
  float *op = out.data_ptr<float>(), *lp = lse.data_ptr<float>();
  const int64_t* sp = spans.data_ptr<int64_t>();
  const int64_t S = spans.size(0), D = s.D, G = s.G;
  const float sc = static_cast<float>(scale), neg_inf = -std::numeric_limits<float>::infinity();
  at::parallel_for(0, S * s.KV, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const Task t = task_of(sp, task, s.KV);
      if (t.n == 0) continue;
      const Keys& ks = t.ks;
      const int64_t g = t.g, q0 = t.q0, n = t.n, prefix = t.prefix, rows_max = kPositions * G;
      std::vector<float> kbk(ks.m16 * D), vbd(ks.m16 * D), qb(rows_max * D), sb(rows_max * ks.m16), ob(rows_max * D);
      gather(kp + g * D, s.KV * D, D, ks, kbk.data(), nullptr);
      gather(vp + g * D, s.KV * D, D, ks, nullptr, vbd.data());
      for (int64_t t0 = 0; t0 < n; t0 += kPositions) {
        const int64_t bt = std::min(kPositions, n - t0), rows = bt * G;
        for (int64_t tl = 0; tl < bt; ++tl)
          std::memcpy(qb.data() + tl * G * D, qp + ((q0 + t0 + tl) * s.H + g * G) * D, G * D * sizeof(float));
        const int64_t panels = (prefix + t0 + bt + kLanes - 1) / kLanes;
        product(qb.data(), D, 1, rows, D, kbk.data(), D * kLanes, panels, sb.data(), ks.m16, false);
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t limit = prefix + t0 + r / G + 1;
          float* row = sb.data() + r * ks.m16;
          __m512 top = _mm512_set1_ps(neg_inf);
          for (int64_t c = 0; c < limit; c += kLanes)
            top = _mm512_mask_max_ps(top, lanes_below(limit - c), top, _mm512_mul_ps(_mm512_loadu_ps(row + c), _mm512_set1_ps(sc)));
          const float mx = _mm512_reduce_max_ps(top);
          __m512 total = _mm512_setzero_ps();
          for (int64_t c = 0; c < panels * kLanes; c += kLanes) {
            const __m512 e = _mm512_maskz_mov_ps(lanes_below(limit - c),
                exp16(_mm512_fmsub_ps(_mm512_loadu_ps(row + c), _mm512_set1_ps(sc), _mm512_set1_ps(mx))));
            _mm512_storeu_ps(row + c, e);
            total = _mm512_add_ps(total, e);
          }
          const float sum = _mm512_reduce_add_ps(total);
          const __m512 inv = _mm512_set1_ps(1.f / sum);
          for (int64_t c = 0; c < panels * kLanes; c += kLanes) _mm512_storeu_ps(row + c, _mm512_mul_ps(_mm512_loadu_ps(row + c), inv));
          lp[(q0 + t0 + r / G) * s.H + g * G + r % G] = mx + std::log(sum);
        }
        product(sb.data(), ks.m16, 1, rows, panels * kLanes, vbd.data(), ks.m16 * kLanes, D / kLanes, ob.data(), D, false);
        for (int64_t tl = 0; tl < bt; ++tl)
          std::memcpy(op + ((q0 + t0 + tl) * s.H + g * G) * D, ob.data() + tl * G * D, G * D * sizeof(float));
      }
    }
  });
  return {out, lse};
}

// Backward of span_attention: dq (N, H, D), dk and dv (Nk, KV, D) for the output's gradient.
std::vector<at::Tensor> span_attention_backward(const at::Tensor& grad, const at::Tensor& q, const at::Tensor& k,
                                                const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse,
                                                const at::Tensor& spans, double scale) {
  const Shape s = shape_of(q, k, v, spans);
  check_backward(s, q, grad, out, lse);
  const int64_t S = spans.size(0), D = s.D, G = s.G, tasks = S * s.KV;
  const int64_t* sp = spans.data_ptr<int64_t>();
  const std::vector<int64_t> offset = task_offsets(sp, tasks, s.KV);  // each task's rows in the private dk | dv buffer
  at::Tensor dq = at::zeros({s.N, s.H, D}, q.options());
  at::Tensor own = at::zeros({2, offset[tasks], D}, q.options());
  const float *qp = q.data_ptr<float>(), *kp = k.data_ptr<float>(), *vp = v.data_ptr<float>();
  const float *gp = grad.data_ptr<float>(), *op = out.data_ptr<float>(), *lp = lse.data_ptr<float>();
  float *dqp = dq.data_ptr<float>(), *dkp = own.data_ptr<float>(), *dvp = dkp + offset[tasks] * D;
  const float sc = static_cast<float>(scale);
  at::parallel_for(0, tasks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const Task t = task_of(sp, task, s.KV);
      if (t.n == 0) continue;
      const Keys& ks = t.ks;
      const int64_t g = t.g, q0 = t.q0, n = t.n, prefix = t.prefix, rows_max = kPositions * G;
      std::vector<float> kbk(ks.m16 * D), kbd(ks.m16 * D), vbk(ks.m16 * D), qb(rows_max * D), gb(rows_max * D),
          qpan(rows_max * D), gpan(rows_max * D), pb(rows_max * ks.m16), db(rows_max * ks.m16), dqb(rows_max * D),
          delta(rows_max), lrow(rows_max);
      gather(kp + g * D, s.KV * D, D, ks, kbk.data(), kbd.data());
      gather(vp + g * D, s.KV * D, D, ks, vbk.data(), nullptr);
      float *dk = dkp + offset[task] * D, *dv = dvp + offset[task] * D;
      for (int64_t t0 = 0; t0 < n; t0 += kPositions) {
        const int64_t bt = std::min(kPositions, n - t0), rows = bt * G;
        for (int64_t tl = 0; tl < bt; ++tl) {
          const int64_t at = ((q0 + t0 + tl) * s.H + g * G) * D;
          std::memcpy(qb.data() + tl * G * D, qp + at, G * D * sizeof(float));
          std::memcpy(gb.data() + tl * G * D, gp + at, G * D * sizeof(float));
          for (int64_t hh = 0; hh < G; ++hh) {
            __m512 acc = _mm512_setzero_ps();
            for (int64_t c = 0; c < D; c += kLanes)
              acc = _mm512_fmadd_ps(_mm512_loadu_ps(gp + at + hh * D + c), _mm512_loadu_ps(op + at + hh * D + c), acc);
            delta[tl * G + hh] = _mm512_reduce_add_ps(acc);
            lrow[tl * G + hh] = lp[(q0 + t0 + tl) * s.H + g * G + hh];
          }
        }
        by_dim_rows(qb.data(), rows, D, qpan.data());
        by_dim_rows(gb.data(), rows, D, gpan.data());
        const int64_t panels = (prefix + t0 + bt + kLanes - 1) / kLanes, width = panels * kLanes;
        product(qb.data(), D, 1, rows, D, kbk.data(), D * kLanes, panels, pb.data(), ks.m16, false);   // S = Q K^T
        product(gb.data(), D, 1, rows, D, vbk.data(), D * kLanes, panels, db.data(), ks.m16, false);   // dP = dO V^T
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t limit = prefix + t0 + r / G + 1;
          float *p = pb.data() + r * ks.m16, *d = db.data() + r * ks.m16;
          const __m512 l = _mm512_set1_ps(lrow[r]), dl = _mm512_set1_ps(delta[r]), scv = _mm512_set1_ps(sc);
          for (int64_t c = 0; c < width; c += kLanes) {
            const __m512 e = _mm512_maskz_mov_ps(lanes_below(limit - c), exp16(_mm512_fmsub_ps(_mm512_loadu_ps(p + c), scv, l)));
            _mm512_storeu_ps(p + c, e);
            _mm512_storeu_ps(d + c, _mm512_mul_ps(_mm512_mul_ps(e, _mm512_sub_ps(_mm512_loadu_ps(d + c), dl)), scv));
          }
        }
        product(db.data(), ks.m16, 1, rows, width, kbd.data(), ks.m16 * kLanes, D / kLanes, dqb.data(), D, false);  // dQ = dS K
        for (int64_t tl = 0; tl < bt; ++tl)
          std::memcpy(dqp + ((q0 + t0 + tl) * s.H + g * G) * D, dqb.data() + tl * G * D, G * D * sizeof(float));
        product(db.data(), 1, ks.m16, width, rows, qpan.data(), rows * kLanes, D / kLanes, dk, D, true);  // dK += dS^T Q
        product(pb.data(), 1, ks.m16, width, rows, gpan.data(), rows * kLanes, D / kLanes, dv, D, true);  // dV += P^T dO
      }
    }
  });
  at::Tensor dk = at::zeros_like(k), dv = at::zeros_like(v);
  sum_key_gradients(s, sp, tasks, offset, dkp, dvp, dk.data_ptr<float>(), dv.data_ptr<float>());
  return {dq, dk, dv};
}

TORCH_LIBRARY_FRAGMENT(hybridpo_panel, m) {
  m.def("span_attention(Tensor q, Tensor k, Tensor v, Tensor spans, float scale) -> Tensor[]", &span_attention);
  m.def("span_attention_backward(Tensor grad, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, Tensor spans, "
        "float scale) -> Tensor[]", &span_attention_backward);
}

// Training attention of a packed row, span by span, forward and backward, on CPUs with AVX2 and FMA
// but no AVX-512: the algorithm of ../span_attention.cpp (which describes the spans, the tasks and
// both passes) 8 lanes at a time, on the same panel layouts (../spans.h). Every product is
// tile.h's block: 6 rows x one 16-wide panel of outputs in 12 registers, x read through two
// strides, over blocks of 256 inputs (a 16 KB slice of the panel stays in L1). e^x by simd.h's exp8.
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

// out (M, 16 NP) = / += x (M, K) W, x[r rs + k ks], W as NP panels of (K, 16) pstride apart
void product(const float* x, int64_t rs, int64_t ks, int64_t M, int64_t K, const float* w, int64_t pstride, int64_t NP,
             float* out, int64_t ld, bool accumulate) {
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

}  // namespace

// Forward: out (N, H, D), lse (N, H), as ../span_attention.cpp's span_attention.
std::vector<at::Tensor> span_attention_avx2(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
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
        const int64_t panels = (prefix + t0 + bt + kPanel - 1) / kPanel, width = panels * kPanel;
        product(qb.data(), D, 1, rows, D, kbk.data(), D * kPanel, panels, sb.data(), ks.m16, false);  // S = Q K^T
        const __m256 scv = _mm256_set1_ps(sc);
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t limit = prefix + t0 + r / G + 1;
          float* row = sb.data() + r * ks.m16;
          __m256 top = _mm256_set1_ps(neg_inf);
          for (int64_t c = 0; c < limit; c += 8)
            top = _mm256_max_ps(top, _mm256_blendv_ps(_mm256_set1_ps(neg_inf), _mm256_mul_ps(_mm256_loadu_ps(row + c), scv),
                                                      lanes_below(limit - c)));
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
          lp[(q0 + t0 + r / G) * s.H + g * G + r % G] = mx + std::log(sum);
        }
        product(sb.data(), ks.m16, 1, rows, width, vbd.data(), ks.m16 * kPanel, D / kPanel, ob.data(), D, false);  // O = P V
        for (int64_t tl = 0; tl < bt; ++tl)
          std::memcpy(op + ((q0 + t0 + tl) * s.H + g * G) * D, ob.data() + tl * G * D, G * D * sizeof(float));
      }
    }
  });
  return {out, lse};
}

// Backward of span_attention_avx2: dq (N, H, D), dk and dv (Nk, KV, D), as ../span_attention.cpp's.
std::vector<at::Tensor> span_attention_backward_avx2(const at::Tensor& grad, const at::Tensor& q, const at::Tensor& k,
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
            __m256 acc = _mm256_setzero_ps();
            for (int64_t c = 0; c < D; c += 8)
              acc = _mm256_fmadd_ps(_mm256_loadu_ps(gp + at + hh * D + c), _mm256_loadu_ps(op + at + hh * D + c), acc);
            delta[tl * G + hh] = sum8(acc);  // rowsum(dO O)
            lrow[tl * G + hh] = lp[(q0 + t0 + tl) * s.H + g * G + hh];
          }
        }
        by_dim_rows(qb.data(), rows, D, qpan.data());
        by_dim_rows(gb.data(), rows, D, gpan.data());
        const int64_t panels = (prefix + t0 + bt + kPanel - 1) / kPanel, width = panels * kPanel;
        product(qb.data(), D, 1, rows, D, kbk.data(), D * kPanel, panels, pb.data(), ks.m16, false);  // S = Q K^T
        product(gb.data(), D, 1, rows, D, vbk.data(), D * kPanel, panels, db.data(), ks.m16, false);  // dP = dO V^T
        const __m256 scv = _mm256_set1_ps(sc);
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t limit = prefix + t0 + r / G + 1;
          float *p = pb.data() + r * ks.m16, *d = db.data() + r * ks.m16;
          const __m256 l = _mm256_set1_ps(lrow[r]), dl = _mm256_set1_ps(delta[r]);
          for (int64_t c = 0; c < width; c += 8) {  // P = e^(S - lse), dS = scale P (dP - delta)
            const __m256 e = _mm256_and_ps(lanes_below(limit - c), exp8(_mm256_fmsub_ps(_mm256_loadu_ps(p + c), scv, l)));
            _mm256_storeu_ps(p + c, e);
            _mm256_storeu_ps(d + c, _mm256_mul_ps(_mm256_mul_ps(e, _mm256_sub_ps(_mm256_loadu_ps(d + c), dl)), scv));
          }
        }
        product(db.data(), ks.m16, 1, rows, width, kbd.data(), ks.m16 * kPanel, D / kPanel, dqb.data(), D, false);  // dQ = dS K
        for (int64_t tl = 0; tl < bt; ++tl)
          std::memcpy(dqp + ((q0 + t0 + tl) * s.H + g * G) * D, dqb.data() + tl * G * D, G * D * sizeof(float));
        product(db.data(), 1, ks.m16, width, rows, qpan.data(), rows * kPanel, D / kPanel, dk, D, true);  // dK += dS^T Q
        product(pb.data(), 1, ks.m16, width, rows, gpan.data(), rows * kPanel, D / kPanel, dv, D, true);  // dV += P^T dO
      }
    }
  });
  at::Tensor dk = at::zeros_like(k), dv = at::zeros_like(v);
  sum_key_gradients(s, sp, tasks, offset, dkp, dvp, dk.data_ptr<float>(), dv.data_ptr<float>());
  return {dq, dk, dv};
}

TORCH_LIBRARY_FRAGMENT(hybridpo_panel_avx2, m) {
  m.def("span_attention(Tensor q, Tensor k, Tensor v, Tensor spans, float scale) -> Tensor[]", &span_attention_avx2);
  m.def("span_attention_backward(Tensor grad, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, Tensor spans, "
        "float scale) -> Tensor[]", &span_attention_backward_avx2);
}

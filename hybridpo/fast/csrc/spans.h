// What the two span-attention kernels share (span_attention.cpp on AVX-512,
// avx2/span_attention_avx2.cpp on AVX2): a span's keys and their two panel layouts, the task a
// (span, key / value head) is, the argument checks, the forward and backward over every task
// (span_forward, span_backward), and the sum of each task's key gradients into dk / dv.
// span_attention.cpp describes the spans and the algorithm. A form supplies its vector code as a
// struct of static functions (span_forward's comment lists them).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace hybridpo_spans {

constexpr int64_t kPanel = 16;      // keys (or dims) per panel: one AVX-512 register, two AVX2 registers, of fp32
constexpr int64_t kPositions = 16;  // query positions per block (x the group's heads = the block's rows)

// A span's keys (the concatenation of its key ranges) in the two layouts the products read:
//   by_key (m16 / 16, D, 16): panel p holds keys 16p .. 16p + 15 as columns (for Q K^T, dO V^T);
//   by_dim (D / 16, m16, 16): panel c holds dims 16c .. 16c + 15 of every key (for P V, dS K).
struct Keys {
  int64_t m, m16;
  std::vector<int64_t> where;  // the key's row on the key axis
};

inline Keys key_rows(const int64_t* span) {
  Keys ks;
  for (int64_t i = span[2]; i < span[3]; ++i) ks.where.push_back(i);
  for (int64_t i = span[4]; i < span[5]; ++i) ks.where.push_back(i);
  ks.m = static_cast<int64_t>(ks.where.size());
  ks.m16 = (ks.m + kPanel - 1) / kPanel * kPanel;
  return ks;
}

inline void gather(const float* x, int64_t stride, int64_t D, const Keys& ks, float* by_key, float* by_dim) {
  if (by_key) std::memset(by_key, 0, ks.m16 * D * sizeof(float));
  if (by_dim) std::memset(by_dim, 0, ks.m16 * D * sizeof(float));
  for (int64_t j = 0; j < ks.m; ++j) {
    const float* row = x + ks.where[j] * stride;
    if (by_key) {
      float* col = by_key + (j / kPanel) * D * kPanel + j % kPanel;
      for (int64_t d = 0; d < D; ++d) col[d * kPanel] = row[d];
    }
    if (by_dim)
      for (int64_t c = 0; c < D / kPanel; ++c) std::memcpy(by_dim + (c * ks.m16 + j) * kPanel, row + c * kPanel, kPanel * sizeof(float));
  }
}

inline void by_dim_rows(const float* x, int64_t rows, int64_t D, float* out) {  // (rows, D) -> (D / 16, rows, 16)
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < D / kPanel; ++c) std::memcpy(out + (c * rows + r) * kPanel, x + r * D + c * kPanel, kPanel * sizeof(float));
}

// One task: a span's queries over one key / value head g, with the span's keys.
struct Task {
  int64_t g, q0, n, prefix;  // the head, the span's first query and query count, the keys before its own
  Keys ks;
};

inline Task task_of(const int64_t* spans, int64_t task, int64_t KV) {
  const int64_t* span = spans + 6 * (task / KV);
  Task t{task % KV, span[0], span[1] - span[0], 0, key_rows(span)};
  t.prefix = t.ks.m - t.n;
  return t;
}

struct Shape {
  int64_t N, H, KV, D, G, Nk;
};

inline Shape shape_of(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& spans) {
  TORCH_CHECK(q.dim() == 3 && q.is_contiguous() && q.scalar_type() == at::kFloat, "q: a contiguous (N, H, D) fp32 tensor");
  TORCH_CHECK(k.dim() == 3 && k.is_contiguous() && k.scalar_type() == at::kFloat && v.sizes() == k.sizes() &&
              v.is_contiguous() && v.scalar_type() == at::kFloat, "k, v: contiguous (Nk, KV, D) fp32 tensors");
  TORCH_CHECK(spans.dim() == 2 && spans.size(1) == 6 && spans.is_contiguous() && spans.scalar_type() == at::kLong,
              "spans: a contiguous (S, 6) int64 tensor of q0, q1, a1, b1, a2, b2");
  Shape s{q.size(0), q.size(1), k.size(1), q.size(2), 0, k.size(0)};
  TORCH_CHECK(k.size(2) == s.D && s.D % kPanel == 0, "head size ", s.D, ": a multiple of 16, the same for q and k");
  TORCH_CHECK(s.H % s.KV == 0, s.H, " query heads over ", s.KV, " key / value heads");
  s.G = s.H / s.KV;
  const int64_t* sp = spans.data_ptr<int64_t>();
  for (int64_t i = 0; i < spans.size(0); ++i) {
    const int64_t* x = sp + 6 * i;
    const int64_t n = x[1] - x[0], m = (x[3] - x[2]) + (x[5] - x[4]);
    TORCH_CHECK(0 <= x[0] && x[0] <= x[1] && x[1] <= s.N && 0 <= x[2] && x[2] <= x[3] && x[3] <= s.Nk && 0 <= x[4] &&
                x[4] <= x[5] && x[5] <= s.Nk && m >= n, "span ", i, ": ranges outside the row");
  }
  return s;
}

inline void check_backward(const Shape& s, const at::Tensor& q, const at::Tensor& grad, const at::Tensor& out,
                           const at::Tensor& lse) {
  TORCH_CHECK(grad.sizes() == q.sizes() && grad.is_contiguous() && out.sizes() == q.sizes() && out.is_contiguous() &&
              lse.dim() == 2 && lse.size(0) == s.N && lse.size(1) == s.H && lse.is_contiguous(),
              "grad, out: contiguous (N, H, D); lse: contiguous (N, H)");
}

// Each task's first row in the backward's private dk | dv buffer (tasks + 1 entries; a task of no
// queries has none).
inline std::vector<int64_t> task_offsets(const int64_t* sp, int64_t tasks, int64_t KV) {
  std::vector<int64_t> offset(tasks + 1, 0);
  for (int64_t t = 0; t < tasks; ++t) {
    const int64_t* span = sp + 6 * (t / KV);
    const int64_t m = (span[3] - span[2]) + (span[5] - span[4]);
    offset[t + 1] = offset[t] + (span[1] > span[0] ? (m + kPanel - 1) / kPanel * kPanel : 0);
  }
  return offset;
}

// dk, dv (Nk, KV, D) = the sum of every task's own key gradients (dkp, dvp at `offset`) at its
// keys' rows; a key / value head's rows are summed by one thread.
inline void sum_key_gradients(const Shape& s, const int64_t* sp, int64_t tasks, const std::vector<int64_t>& offset,
                              const float* dkp, const float* dvp, float* dkout, float* dvout) {
  const int64_t D = s.D;
  at::parallel_for(0, s.KV, 1, [&](int64_t begin, int64_t end) {
    for (int64_t g = begin; g < end; ++g)
      for (int64_t task = g; task < tasks; task += s.KV) {
        const int64_t* span = sp + 6 * (task / s.KV);
        if (span[1] == span[0]) continue;
        const Keys ks = key_rows(span);
        for (int64_t j = 0; j < ks.m; ++j) {
          const float *a = dkp + (offset[task] + j) * D, *b = dvp + (offset[task] + j) * D;
          float *x = dkout + (ks.where[j] * s.KV + g) * D, *y = dvout + (ks.where[j] * s.KV + g) * D;
          for (int64_t c = 0; c < D; ++c) {
            x[c] += a[c];
            y[c] += b[c];
          }
        }
      }
  });
}

// The forward over every task for a form `F` of the vector code, a struct of static functions:
//   F::product(x, rs, ks, M, K, w, pstride, NP, out, ld, accumulate): out (M, 16 NP) = / += x (M, K) W,
//     x[r rs + k ks], W as NP panels of (K, 16) pstride apart;
//   F::softmax_row(row, limit, width, scale): row[:width] <- softmax(scale row[:limit]), 0 from limit
//     on; returns the log-sum-exp of scale row[:limit];
//   F::backward_row(p, d, limit, width, scale, lse, delta): p[:width] <- e^(scale p - lse), 0 from
//     limit on; d[:width] <- scale p (d - delta);
//   F::dot(a, b, D): the sum of a b over D (a multiple of 16).
// Returns out (N, H, D) and lse (N, H).
template <class F>
std::vector<at::Tensor> span_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& spans,
                                     double scale) {
  const Shape s = shape_of(q, k, v, spans);
  at::Tensor out = at::zeros({s.N, s.H, s.D}, q.options());
  at::Tensor lse = at::zeros({s.N, s.H}, q.options());
  const float *qp = q.data_ptr<float>(), *kp = k.data_ptr<float>(), *vp = v.data_ptr<float>();
  float *op = out.data_ptr<float>(), *lp = lse.data_ptr<float>();
  const int64_t* sp = spans.data_ptr<int64_t>();
  const int64_t S = spans.size(0), D = s.D, G = s.G;
  const float sc = static_cast<float>(scale);
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
        F::product(qb.data(), D, 1, rows, D, kbk.data(), D * kPanel, panels, sb.data(), ks.m16, false);  // S = Q K^T
        for (int64_t r = 0; r < rows; ++r)
          lp[(q0 + t0 + r / G) * s.H + g * G + r % G] = F::softmax_row(sb.data() + r * ks.m16, prefix + t0 + r / G + 1, width, sc);
        F::product(sb.data(), ks.m16, 1, rows, width, vbd.data(), ks.m16 * kPanel, D / kPanel, ob.data(), D, false);  // O = P V
        for (int64_t tl = 0; tl < bt; ++tl)
          std::memcpy(op + ((q0 + t0 + tl) * s.H + g * G) * D, ob.data() + tl * G * D, G * D * sizeof(float));
      }
    }
  });
  return {out, lse};
}

// The backward of span_forward<F> for the output's gradient: dq (N, H, D), dk and dv (Nk, KV, D).
template <class F>
std::vector<at::Tensor> span_backward(const at::Tensor& grad, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                      const at::Tensor& out, const at::Tensor& lse, const at::Tensor& spans, double scale) {
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
            delta[tl * G + hh] = F::dot(gp + at + hh * D, op + at + hh * D, D);  // rowsum(dO O)
            lrow[tl * G + hh] = lp[(q0 + t0 + tl) * s.H + g * G + hh];
          }
        }
        by_dim_rows(qb.data(), rows, D, qpan.data());
        by_dim_rows(gb.data(), rows, D, gpan.data());
        const int64_t panels = (prefix + t0 + bt + kPanel - 1) / kPanel, width = panels * kPanel;
        F::product(qb.data(), D, 1, rows, D, kbk.data(), D * kPanel, panels, pb.data(), ks.m16, false);  // S = Q K^T
        F::product(gb.data(), D, 1, rows, D, vbk.data(), D * kPanel, panels, db.data(), ks.m16, false);  // dP = dO V^T
        for (int64_t r = 0; r < rows; ++r)  // P = e^(S - lse), dS = scale P (dP - delta)
          F::backward_row(pb.data() + r * ks.m16, db.data() + r * ks.m16, prefix + t0 + r / G + 1, width, sc, lrow[r], delta[r]);
        F::product(db.data(), ks.m16, 1, rows, width, kbd.data(), ks.m16 * kPanel, D / kPanel, dqb.data(), D, false);  // dQ = dS K
        for (int64_t tl = 0; tl < bt; ++tl)
          std::memcpy(dqp + ((q0 + t0 + tl) * s.H + g * G) * D, dqb.data() + tl * G * D, G * D * sizeof(float));
        F::product(db.data(), 1, ks.m16, width, rows, qpan.data(), rows * kPanel, D / kPanel, dk, D, true);  // dK += dS^T Q
        F::product(pb.data(), 1, ks.m16, width, rows, gpan.data(), rows * kPanel, D / kPanel, dv, D, true);  // dV += P^T dO
      }
    }
  });
  at::Tensor dk = at::zeros_like(k), dv = at::zeros_like(v);
  sum_key_gradients(s, sp, tasks, offset, dkp, dvp, dk.data_ptr<float>(), dv.data_ptr<float>());
  return {dq, dk, dv};
}

}  // namespace hybridpo_spans

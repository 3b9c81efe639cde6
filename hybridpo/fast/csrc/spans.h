// What the two span-attention kernels share (span_attention.cpp on AVX-512,
// avx2/span_attention_avx2.cpp on AVX2): a span's keys and their two panel layouts, the task a
// (span, key / value head) is, the argument checks, and the sum of each task's key gradients into
// dk / dv. span_attention.cpp describes the spans and the algorithm.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

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

}  // namespace hybridpo_spans

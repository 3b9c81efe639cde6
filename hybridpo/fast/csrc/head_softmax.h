// What the two head-softmax kernels share (head_softmax.cpp on AVX-512, avx2/head_softmax_avx2.cpp
// on AVX2): the argument checks, the chunk of a row's first-level sums, and the two ops over a
// block of rows (head_lse, head_scaled_softmax_), each form giving its vector code for one row.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

namespace hybridpo_head {

constexpr int64_t kSumChunk = 1024;  // terms per first-level sum of a row's e^{x - max}

inline void check_logits(const at::Tensor& logits) {
  TORCH_CHECK(logits.dim() == 2 && logits.is_contiguous() && logits.scalar_type() == at::kFloat && logits.device().is_cpu(),
              "logits: a contiguous (n, V) fp32 CPU tensor");
}

inline void check_rows(const at::Tensor& v, int64_t n, const char* what) {
  TORCH_CHECK(v.dim() == 1 && v.size(0) == n && v.is_contiguous() && v.scalar_type() == at::kFloat, what, ": (", n,
              ",) contiguous fp32");
}

// (n,) log-sum-exp of each row of logits (n, V), a row by RowLse(row, V), on torch's threads a block of rows each
template <float (*RowLse)(const float*, int64_t)>
at::Tensor head_lse(const at::Tensor& logits) {
  check_logits(logits);
  const int64_t n = logits.size(0), V = logits.size(1);
  at::Tensor out = at::empty({n}, logits.options());
  const float* x = logits.data_ptr<float>();
  float* o = out.data_ptr<float>();
  at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) o[r] = RowLse(x + r * V, V);
  });
  return out;
}

// logits (n, V) <- exp(logits - lse[r]) * scale[r] per row r, in place, a row by RowScaled(row, V,
// lse[r], scale[r]); returns logits
template <void (*RowScaled)(float*, int64_t, float, float)>
at::Tensor head_scaled_softmax_(at::Tensor& logits, const at::Tensor& lse, const at::Tensor& scale) {
  check_logits(logits);
  const int64_t n = logits.size(0), V = logits.size(1);
  check_rows(lse, n, "lse");
  check_rows(scale, n, "scale");
  float* x = logits.data_ptr<float>();
  const float* l = lse.data_ptr<float>();
  const float* s = scale.data_ptr<float>();
  at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) RowScaled(x + r * V, V, l[r], s[r]);
  });
  return logits;
}

}  // namespace hybridpo_head

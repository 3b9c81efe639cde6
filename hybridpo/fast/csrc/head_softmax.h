// What the two head-softmax kernels share (head_softmax.cpp on AVX-512, avx2/head_softmax_avx2.cpp
// on AVX2): the argument checks and the chunk of a row's first-level sums.
#pragma once

#include <ATen/ATen.h>

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

}  // namespace hybridpo_head

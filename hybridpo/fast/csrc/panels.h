// What the two panel kernels share (panel_linear.cpp on AVX-512, avx2/panel_avx2.cpp on AVX2): the
// panel layout, the argument checks and the pack into panels.
//
// panels: W (N, K) laid out as (N / 16, K, 16): panel p holds output columns 16p .. 16p + 15, one
// 64-byte row of 16 weights per input k, so a panel is one contiguous stream.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

namespace hybridpo_panels {

constexpr int64_t kWidth = 16;  // outputs per panel: one AVX-512 register, two AVX2 registers, of fp32

inline void check_rows(const at::Tensor& x) {
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous() && x.scalar_type() == at::kFloat && x.device().is_cpu(),
              "x: a contiguous (M, K) fp32 CPU tensor");
  TORCH_CHECK(x.size(0) >= 1 && x.size(0) <= 16, "the panel kernel takes 1 to 16 rows, got ", x.size(0));
}

inline void check_panels(const at::Tensor& panels, int64_t K) {
  TORCH_CHECK(panels.dim() == 3 && panels.size(2) == kWidth && panels.is_contiguous() &&
              panels.scalar_type() == at::kFloat, "panels: a contiguous (N / 16, K, 16) fp32 tensor");
  TORCH_CHECK(panels.size(1) == K, "x has ", K, " inputs, the panels ", panels.size(1));
}

inline const float* vector_of(const c10::optional<at::Tensor>& v, int64_t n, const char* what) {
  if (!v) return nullptr;
  TORCH_CHECK(v->numel() == n && v->is_contiguous() && v->scalar_type() == at::kFloat, what, ": (", n, ",) fp32");
  return v->data_ptr<float>();
}

// panels[p, k, j] = weight[16 p + j, k], written into `panels` (N / 16, K, 16), a panel per task:
// its 16 rows of W are read along k while its panel is written in order.
inline at::Tensor pack(const at::Tensor& weight, at::Tensor& panels) {
  TORCH_CHECK(weight.dim() == 2 && weight.is_contiguous() && weight.scalar_type() == at::kFloat &&
              weight.size(0) % kWidth == 0, "weight: a contiguous (N, K) fp32 tensor, N a multiple of 16");
  const int64_t N = weight.size(0), K = weight.size(1), P = N / kWidth;
  TORCH_CHECK(panels.is_contiguous() && panels.numel() == N * K && panels.scalar_type() == at::kFloat,
              "panels: a contiguous fp32 tensor of N x K elements");
  const float* w = weight.data_ptr<float>();
  float* out = panels.data_ptr<float>();
  at::parallel_for(0, P, 1, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const float* rows = w + p * kWidth * K;
      float* dst = out + p * K * kWidth;
      for (int64_t k = 0; k < K; ++k)
        for (int64_t j = 0; j < kWidth; ++j) dst[k * kWidth + j] = rows[j * K + k];
    }
  });
  return panels;
}

}  // namespace hybridpo_panels

// What the two panel kernels share (panel_linear.cpp on AVX-512, avx2/panel_avx2.cpp on AVX2): the
// panel layout, the argument checks, the pack into panels, and the scalar part of a decode step's
// attention (its checks, rotary and the cache write).
//
// panels: W (N, K) laid out as (N / 16, K, 16): panel p holds output columns 16p .. 16p + 15, one
// 64-byte row of 16 weights per input k, so a panel is one contiguous stream.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cstring>

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

// The sizes of a decode step's attention (hybridpo_panel.attend, described in panel_linear.cpp),
// its arguments checked.
struct AttendShape {
  int64_t P, KV, C, D, H, k, R;  // prompts, KV heads, cache columns, head size, query heads, samples, rotary dims
};

inline AttendShape check_attend(const at::Tensor& qkv, const at::Tensor& rotation, const at::Tensor& cache,
                                const at::Tensor& bias, int64_t width, int64_t heads) {
  TORCH_CHECK(cache.dim() == 4 && cache.is_contiguous() && cache.scalar_type() == at::kFloat,
              "cache: a contiguous (P, KV, C, 2D) fp32 tensor");
  const int64_t P = cache.size(0), KV = cache.size(1), C = cache.size(2), D = cache.size(3) / 2, H = heads;
  TORCH_CHECK(D % kWidth == 0 && D <= 256, "head size ", D, ": a multiple of 16, at most 256");
  TORCH_CHECK(H % KV == 0, heads, " query heads over ", KV, " KV heads");
  TORCH_CHECK(bias.dim() == 4 && bias.size(0) == P && bias.size(1) == 1 && bias.size(3) == C && bias.is_contiguous() &&
              bias.scalar_type() == at::kFloat, "bias: a contiguous (P, 1, k, C) fp32 tensor");
  const int64_t k = bias.size(2), R = rotation.dim() == 3 ? 2 * rotation.size(1) : -1;
  TORCH_CHECK(qkv.dim() == 2 && qkv.size(0) == P * k && qkv.size(1) == (H + 2 * KV) * D && qkv.is_contiguous() &&
              qkv.scalar_type() == at::kFloat, "qkv: a contiguous (P k, (H + 2 KV) D) fp32 tensor");
  TORCH_CHECK(rotation.dim() == 3 && rotation.size(0) == P && rotation.size(2) == 2 && R <= D && rotation.is_contiguous() &&
              rotation.scalar_type() == at::kFloat, "rotation: a contiguous (P, R / 2, 2) fp32 tensor, R <= D");
  TORCH_CHECK(width >= k && width <= C, "width ", width, " outside ", k, " .. ", C);
  return {P, KV, C, D, H, k, R};
}

// Rotary on each row's query and key heads in place, as (a + ib)(cos + i sin) per pair, then the
// row's keys | values into the cache's column width - k + j (sample j).
inline void rotate_and_cache(float* q, const float* rot, float* kc, const AttendShape& s, int64_t width) {
  const int64_t row = (s.H + 2 * s.KV) * s.D, D = s.D;
  for (int64_t p = 0; p < s.P; ++p) {
    const float* cs = rot + p * s.R;
    for (int64_t j = 0; j < s.k; ++j) {
      float* r = q + (p * s.k + j) * row;
      for (int64_t h = 0; h < s.H + s.KV; ++h) {
        float* v = r + h * D;
        for (int64_t i = 0; i < s.R / 2; ++i) {
          const float a = v[2 * i], b = v[2 * i + 1], c = cs[2 * i], sn = cs[2 * i + 1];
          v[2 * i] = a * c - b * sn;
          v[2 * i + 1] = a * sn + b * c;
        }
      }
      for (int64_t g = 0; g < s.KV; ++g) {
        float* dst = kc + ((p * s.KV + g) * s.C + width - s.k + j) * 2 * D;
        std::memcpy(dst, r + (s.H + g) * D, D * sizeof(float));
        std::memcpy(dst + D, r + (s.H + s.KV + g) * D, D * sizeof(float));
      }
    }
  }
}

}  // namespace hybridpo_panels

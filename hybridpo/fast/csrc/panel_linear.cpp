// residual + x W^T + b for a decode step's few rows (M <= 16), W streamed once from 16-column panels.
// Built and loaded by hybridpo/fast/panel_linear.py (which states why and what was measured).
//
// panels: W (N, K) laid out as (N / 16, K, 16): panel p holds output columns 16p .. 16p + 15, one
// 64-byte row of 16 weights per input k, so a panel is one contiguous stream. For each panel the
// kernel keeps the M x 16 outputs in M AVX-512 registers and adds x[r, k] * W[16p .. 16p + 15, k]
// for every k: every weight is read once, from memory, for all M rows together.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#ifndef __AVX512F__
#error "the panel kernel needs AVX-512F"
#endif
#include <immintrin.h>

namespace {

constexpr int64_t kWidth = 16;       // outputs per panel: one AVX-512 register of fp32
constexpr int64_t kPrefetch = 256;   // inputs k ahead to prefetch (16 KB of one panel), into L2

template <int M>
void panel(const float* x, int64_t K, const float* w, float* y, int64_t ldy, const float* bias, const float* res) {
  __m512 acc[M];
  for (int r = 0; r < M; ++r) acc[r] = _mm512_setzero_ps();
  for (int64_t k = 0; k < K; ++k) {
    _mm_prefetch(reinterpret_cast<const char*>(w + (k + kPrefetch) * kWidth), _MM_HINT_T1);
    const __m512 wk = _mm512_loadu_ps(w + k * kWidth);
    for (int r = 0; r < M; ++r) acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(x[r * K + k]), wk, acc[r]);
  }
  const __m512 b = bias ? _mm512_loadu_ps(bias) : _mm512_setzero_ps();
  for (int r = 0; r < M; ++r) {
    __m512 v = _mm512_add_ps(acc[r], b);
    if (res) v = _mm512_add_ps(v, _mm512_loadu_ps(res + r * ldy));
    _mm512_storeu_ps(y + r * ldy, v);
  }
}

template <int M>
void run(const float* x, int64_t K, const float* w, int64_t panels, float* y, const float* bias, const float* res) {
  const int64_t N = panels * kWidth;
  at::parallel_for(0, panels, 16, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const int64_t col = p * kWidth;
      panel<M>(x, K, w + p * K * kWidth, y + col, N, bias ? bias + col : nullptr, res ? res + col : nullptr);
    }
  });
}

at::Tensor linear(const at::Tensor& x, const at::Tensor& panels, const c10::optional<at::Tensor>& bias,
                  const c10::optional<at::Tensor>& residual) {
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous() && x.scalar_type() == at::kFloat && x.device().is_cpu(),
              "x: a contiguous (M, K) fp32 CPU tensor");
  TORCH_CHECK(panels.dim() == 3 && panels.size(2) == kWidth && panels.is_contiguous() &&
              panels.scalar_type() == at::kFloat, "panels: a contiguous (N / 16, K, 16) fp32 tensor");
  const int64_t M = x.size(0), K = x.size(1), P = panels.size(0), N = P * kWidth;
  TORCH_CHECK(panels.size(1) == K, "x has ", K, " inputs, the panels ", panels.size(1));
  TORCH_CHECK(M >= 1 && M <= 16, "the panel kernel takes 1 to 16 rows, got ", M);
  const float* b = nullptr;
  const float* r = nullptr;
  if (bias) {
    TORCH_CHECK(bias->numel() == N && bias->is_contiguous() && bias->scalar_type() == at::kFloat, "bias: (N,) fp32");
    b = bias->data_ptr<float>();
  }
  if (residual) {
    TORCH_CHECK(residual->size(0) == M && residual->size(1) == N && residual->is_contiguous() &&
                residual->scalar_type() == at::kFloat, "residual: a contiguous (M, N) fp32 tensor");
    r = residual->data_ptr<float>();
  }
  at::Tensor y = at::empty({M, N}, x.options());
  const float* xp = x.data_ptr<float>();
  const float* wp = panels.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  switch (M) {
#define HYBRIDPO_ROWS(m) case m: run<m>(xp, K, wp, P, yp, b, r); break;
    HYBRIDPO_ROWS(1) HYBRIDPO_ROWS(2) HYBRIDPO_ROWS(3) HYBRIDPO_ROWS(4) HYBRIDPO_ROWS(5) HYBRIDPO_ROWS(6)
    HYBRIDPO_ROWS(7) HYBRIDPO_ROWS(8) HYBRIDPO_ROWS(9) HYBRIDPO_ROWS(10) HYBRIDPO_ROWS(11) HYBRIDPO_ROWS(12)
    HYBRIDPO_ROWS(13) HYBRIDPO_ROWS(14) HYBRIDPO_ROWS(15) HYBRIDPO_ROWS(16)
#undef HYBRIDPO_ROWS
  }
  return y;
}

// panels[p, k, j] = weight[16 p + j, k], written into `panels` (N / 16, K, 16), a panel per task:
// its 16 rows of W are read along k while its panel is written in order.
at::Tensor pack(const at::Tensor& weight, at::Tensor& panels) {
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

}  // namespace

TORCH_LIBRARY(hybridpo_panel, m) {
  m.def("linear(Tensor x, Tensor panels, Tensor? bias, Tensor? residual) -> Tensor", &linear);
  m.def("pack(Tensor weight, Tensor(a!) panels) -> Tensor(a!)", &pack);
}

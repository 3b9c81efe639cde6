// The decode's few-row products y = residual + x W^T + b on CPUs with AVX2 and FMA but no AVX-512
// (AMD EPYCs of the Zen 2 and Zen 3 generations): W as 16-column panels (../panels.h), every
// weight read once from memory for all M <= 16 rows together; and the Llama block's calls fused
// around them, as ../panel_linear.cpp's (norm_linear, attend, norm_glu), 8 lanes at a time.
// Built and loaded by hybridpo/fast/kernels.py (load_avx2), called by hybridpo/fast/panel_linear.py.
//
// A task takes one panel. Over blocks of 128 inputs (the panel's 8 KB stay in L1) it keeps up to
// 6 rows x 16 outputs in 12 of AVX2's 16 registers (tile.h's block, which says why its
// accumulators are named) and adds x[r, k] * W[16p .. 16p + 15, k] for every k of the block, then
// the next rows over the same block from L1; the first pass over a block prefetches the panel 8 KB
// ahead.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "panels.h"
#include "simd.h"
#include "tile.h"

namespace {

using namespace hybridpo_panels;  // kWidth, check_rows, check_panels, vector_of, pack
using namespace hybridpo_avx2;    // block_rows, kChunk, sum8

constexpr int64_t kBlock = 128;  // inputs k per block: the panel's 128 x 64 B = 8 KB stay in L1

// acc (M, 16) = x W^T for the one panel w, the rows in chunks of kChunk over each block of K.
void panel_product(const float* xt, int64_t M, int64_t K, const float* w, float* acc) {
  std::memset(acc, 0, sizeof(float) * M * kWidth);
  for (int64_t k0 = 0; k0 < K; k0 += kBlock) {
    const int64_t k1 = std::min(K, k0 + kBlock);
    for (int64_t r0 = 0; r0 < M; r0 += kChunk) {
      const int R = static_cast<int>(std::min<int64_t>(kChunk, M - r0));
      if (r0 == 0) block_rows<true>(R, xt, 1, M, w, k0, k1, acc, kWidth);
      else block_rows<false>(R, xt + r0, 1, M, w, k0, k1, acc + r0 * kWidth, kWidth);
    }
  }
}

// x (M, K) transposed to (K, M), each row first RMS-normalised where `norm`: x / sqrt(mean(x^2) +
// eps) * gamma (gamma optional), in fp32 (the sum of squares 8 lanes at a time, then one square
// root per row).
at::Tensor transposed(const at::Tensor& x, bool norm, double eps, const float* gamma) {
  const int64_t M = x.size(0), K = x.size(1), whole = K / 8 * 8;
  at::Tensor out = at::empty({K, M}, x.options());
  const float* xp = x.data_ptr<float>();
  float* op = out.data_ptr<float>();
  for (int64_t r = 0; r < M; ++r) {
    const float* row = xp + r * K;
    float scale = 1.f;
    if (norm) {
      __m256 squares = _mm256_setzero_ps();
      for (int64_t k = 0; k < whole; k += 8) {
        const __m256 v = _mm256_loadu_ps(row + k);
        squares = _mm256_fmadd_ps(v, v, squares);
      }
      float sum = sum8(squares);
      for (int64_t k = whole; k < K; ++k) sum += row[k] * row[k];
      scale = 1.f / std::sqrt(sum / static_cast<float>(K) + static_cast<float>(eps));
    }
    for (int64_t k = 0; k < K; ++k) op[k * M + r] = norm ? row[k] * scale * (gamma ? gamma[k] : 1.f) : row[k];
  }
  return out;
}

// y = residual + xt^T W^T + b for xt = x transposed (K, M), M <= 16, W as panels: a task per panel.
at::Tensor product(const at::Tensor& xt, const at::Tensor& panels, const float* b, const float* res) {
  const int64_t K = xt.size(0), M = xt.size(1), P = panels.size(0), N = P * kWidth;
  at::Tensor y = at::empty({M, N}, xt.options());
  const float* xp = xt.data_ptr<float>();
  const float* wp = panels.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  at::parallel_for(0, P, 16, [&](int64_t begin, int64_t end) {
    alignas(32) float acc[16 * kWidth];
    for (int64_t p = begin; p < end; ++p) {
      panel_product(xp, M, K, wp + p * K * kWidth, acc);
      for (int64_t r = 0; r < M; ++r)
        for (int64_t h = 0; h < kWidth; h += 8) {
          const int64_t col = p * kWidth + h;
          __m256 v = _mm256_loadu_ps(acc + r * kWidth + h);
          if (b) v = _mm256_add_ps(v, _mm256_loadu_ps(b + col));
          if (res) v = _mm256_add_ps(v, _mm256_loadu_ps(res + r * N + col));
          _mm256_storeu_ps(yp + r * N + col, v);
        }
    }
  });
  return y;
}

at::Tensor linear(const at::Tensor& x, const at::Tensor& panels, const c10::optional<at::Tensor>& bias,
                  const c10::optional<at::Tensor>& residual) {
  check_rows(x);
  check_panels(panels, x.size(1));
  const int64_t M = x.size(0), N = panels.size(0) * kWidth;
  const float* res = nullptr;
  if (residual) {
    TORCH_CHECK(residual->sizes() == at::IntArrayRef({M, N}) && residual->is_contiguous() &&
                residual->scalar_type() == at::kFloat, "residual: a contiguous (M, N) fp32 tensor");
    res = residual->data_ptr<float>();
  }
  return product(transposed(x, false, 0., nullptr), panels, vector_of(bias, N, "bias"), res);
}

// rms_norm(x) W^T + b: the norm (its scale gamma folded into W, or given here) before the product.
at::Tensor norm_linear(const at::Tensor& x, double eps, const c10::optional<at::Tensor>& gamma,
                       const at::Tensor& panels, const c10::optional<at::Tensor>& bias) {
  check_rows(x);
  check_panels(panels, x.size(1));
  const at::Tensor xt = transposed(x, true, eps, vector_of(gamma, x.size(1), "gamma"));
  return product(xt, panels, vector_of(bias, panels.size(0) * kWidth, "bias"), nullptr);
}

// silu(g) * u for (g | u) = rms_norm(x) W^T + b, W the gate's F rows then the up's F rows: a task
// streams gate panel j and up panel j and writes output columns 16 j .. 16 j + 15.
at::Tensor norm_glu(const at::Tensor& x, double eps, const at::Tensor& panels, const c10::optional<at::Tensor>& bias) {
  check_rows(x);
  check_panels(panels, x.size(1));
  TORCH_CHECK(panels.size(0) % 2 == 0, "panels: the gate's then the up's, as many of each");
  const int64_t M = x.size(0), K = x.size(1), half = panels.size(0) / 2, F = half * kWidth;
  const at::Tensor xt = transposed(x, true, eps, nullptr);
  const float* b = vector_of(bias, 2 * F, "bias");
  at::Tensor y = at::empty({M, F}, x.options());
  const float* xp = xt.data_ptr<float>();
  const float* wp = panels.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  at::parallel_for(0, half, 8, [&](int64_t begin, int64_t end) {
    alignas(32) float gate[16 * kWidth];
    alignas(32) float up[16 * kWidth];
    for (int64_t j = begin; j < end; ++j) {
      panel_product(xp, M, K, wp + j * K * kWidth, gate);
      panel_product(xp, M, K, wp + (half + j) * K * kWidth, up);
      for (int64_t r = 0; r < M; ++r)
        for (int64_t h = 0; h < kWidth; h += 8) {
          const int64_t col = j * kWidth + h;
          __m256 gv = _mm256_load_ps(gate + r * kWidth + h), uv = _mm256_load_ps(up + r * kWidth + h);
          if (b) {
            gv = _mm256_add_ps(gv, _mm256_loadu_ps(b + col));
            uv = _mm256_add_ps(uv, _mm256_loadu_ps(b + F + col));
          }
          const __m256 silu = _mm256_div_ps(gv, _mm256_add_ps(_mm256_set1_ps(1.f), exp8(_mm256_sub_ps(_mm256_setzero_ps(), gv))));
          _mm256_storeu_ps(yp + r * F + col, _mm256_mul_ps(silu, uv));
        }
    }
  });
  return y;
}

// One decode step's attention on the (prompt, sample) grid, as hybridpo_panel.attend (../panel_linear.cpp,
// which describes the arguments): rotates q and k in place, writes k and v into the cache, and
// returns softmax(q K^T + bias) V per query head (P k, H D), query head h reading KV head h / (H / KV).
at::Tensor attend(at::Tensor& qkv, const at::Tensor& rotation, at::Tensor& cache, const at::Tensor& bias,
                  int64_t width, int64_t heads) {
  const AttendShape shape = check_attend(qkv, rotation, cache, bias, width, heads);
  const int64_t P = shape.P, KV = shape.KV, C = shape.C, D = shape.D, H = shape.H, k = shape.k;
  const int64_t row = (H + 2 * KV) * D, group = H / KV, chunks = D / 8;
  float* q = qkv.data_ptr<float>();
  float* kc = cache.data_ptr<float>();
  const float* mask = bias.data_ptr<float>();
  rotate_and_cache(q, rotation.data_ptr<float>(), kc, shape, width);
  at::Tensor out = at::empty({P * k, H * D}, qkv.options());
  at::Tensor scratch = at::empty({P * KV, width + 8}, qkv.options());  // + a tail of 8 for the last exp8
  float* op = out.data_ptr<float>();
  float* sp = scratch.data_ptr<float>();
  const float neg_inf = -std::numeric_limits<float>::infinity();
  at::parallel_for(0, P * KV, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t p = task / KV, g = task % KV;
      const float* keys = kc + (p * KV + g) * C * 2 * D;
      float* score = sp + task * (width + 8);
      for (int64_t j = 0; j < k; ++j) {
        const float* allowed = mask + (p * k + j) * C;
        for (int64_t hh = 0; hh < group; ++hh) {
          const int64_t h = g * group + hh;
          const float* query = q + (p * k + j) * row + h * D;
          float top = neg_inf;
          for (int64_t col = 0; col < width; ++col) {
            if (allowed[col] == neg_inf) { score[col] = neg_inf; continue; }
            const float* key = keys + col * 2 * D;
            __m256 acc = _mm256_mul_ps(_mm256_loadu_ps(query), _mm256_loadu_ps(key));
            for (int64_t c = 1; c < chunks; ++c)
              acc = _mm256_fmadd_ps(_mm256_loadu_ps(query + c * 8), _mm256_loadu_ps(key + c * 8), acc);
            const float s = sum8(acc) + allowed[col];
            score[col] = s;
            top = std::max(top, s);
          }
          for (int64_t col = width; col < width + 8; ++col) score[col] = neg_inf;  // the tail: e^-inf = 0
          __m256 total = _mm256_setzero_ps();
          for (int64_t col = 0; col < width; col += 8) {
            const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(score + col), _mm256_set1_ps(top)));
            _mm256_storeu_ps(score + col, e);
            total = _mm256_add_ps(total, e);
          }
          const __m256 inv = _mm256_set1_ps(1.f / sum8(total));
          __m256 acc[32];
          for (int64_t c = 0; c < chunks; ++c) acc[c] = _mm256_setzero_ps();
          for (int64_t col = 0; col < width; ++col) {
            if (score[col] == 0.f) continue;  // masked (or underflowed) columns add nothing
            const __m256 wgt = _mm256_set1_ps(score[col]);
            const float* value = keys + col * 2 * D + D;
            for (int64_t c = 0; c < chunks; ++c) acc[c] = _mm256_fmadd_ps(wgt, _mm256_loadu_ps(value + c * 8), acc[c]);
          }
          float* dst = op + (p * k + j) * H * D + h * D;
          for (int64_t c = 0; c < chunks; ++c) _mm256_storeu_ps(dst + c * 8, _mm256_mul_ps(acc[c], inv));
        }
      }
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY(hybridpo_panel_avx2, m) {
  m.def("linear(Tensor x, Tensor panels, Tensor? bias, Tensor? residual) -> Tensor", &linear);
  m.def("pack(Tensor weight, Tensor(a!) panels) -> Tensor(a!)", &hybridpo_panels::pack);
  m.def("norm_linear(Tensor x, float eps, Tensor? gamma, Tensor panels, Tensor? bias) -> Tensor", &norm_linear);
  m.def("norm_glu(Tensor x, float eps, Tensor panels, Tensor? bias) -> Tensor", &norm_glu);
  m.def("attend(Tensor(a!) qkv, Tensor rotation, Tensor(b!) cache, Tensor bias, int width, int heads) -> Tensor", &attend);
}

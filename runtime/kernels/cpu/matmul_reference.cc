#include "runtime/kernels/cpu/matmul_reference.h"

#include <cmath>
#include <vector>

#include "common/status.h"
#include "runtime/kernels/cpu/convert.h"

namespace tandem::kernels {
namespace {

// x converted to activation_type(w.type) exactly as matmul does, then
// expanded to f32 values.
std::vector<float> converted_activations(DType weight_type, const float* x, int64_t ldx,
                                         int64_t n_tokens, int64_t n_cols) {
  std::vector<float> out(static_cast<size_t>(n_tokens * n_cols));
  std::vector<BlockQ8_0> q(static_cast<size_t>(n_cols / kQK8_0));
  std::vector<BlockQ8_K> qk(static_cast<size_t>(n_cols / kQK_K));
  for (int64_t t = 0; t < n_tokens; ++t) {
    const float* xt = x + t * ldx;
    float* o = out.data() + t * n_cols;
    switch (activation_type(weight_type)) {
      case DType::kF16:
        for (int64_t c = 0; c < n_cols; ++c) o[c] = fp16_to_f32(f32_to_fp16(xt[c]));
        break;
      case DType::kBF16:
        for (int64_t c = 0; c < n_cols; ++c) o[c] = bf16_to_f32(f32_to_bf16(xt[c]));
        break;
      case DType::kQ8_0:
      case DType::kQ8_1:  // the same quants as Q8_0, with their sum
        quantize_row_q8_0_act(xt, q.data(), n_cols);
        dequantize_row(DType::kQ8_0, q.data(), o, n_cols);
        break;
      case DType::kQ8_K:
        quantize_row_q8_k(xt, qk.data(), n_cols);
        dequantize_row_q8_k(qk.data(), o, n_cols);
        break;
      default:
        for (int64_t c = 0; c < n_cols; ++c) o[c] = xt[c];
        break;
    }
  }
  return out;
}

template <bool kAbs>
void reference(const Matrix& w, const float* x, int64_t ldx, int64_t n_tokens, float* y,
               int64_t ldy) {
  TANDEM_CHECK(kernels_support(w.type) && w.n_cols % 32 == 0 && w.layout == Layout::kRowMajor);
  const std::vector<float> xc = converted_activations(w.type, x, ldx, n_tokens, w.n_cols);
  std::vector<float> wr(static_cast<size_t>(w.n_cols));
  const size_t stride = row_bytes(w.type, w.n_cols);
  for (int64_t r = 0; r < w.n_rows; ++r) {
    dequantize_row(w.type, static_cast<const uint8_t*>(w.data) + r * stride, wr.data(), w.n_cols);
    for (int64_t t = 0; t < n_tokens; ++t) {
      const float* xt = xc.data() + t * w.n_cols;
      double sum = 0.0;
      for (int64_t c = 0; c < w.n_cols; ++c) {
        const double p = static_cast<double>(wr[c]) * static_cast<double>(xt[c]);
        sum += kAbs ? std::fabs(p) : p;
      }
      y[t * ldy + r] = static_cast<float>(sum);
    }
  }
}

}  // namespace

void matmul_reference(const Matrix& w, const float* x, int64_t ldx, int64_t n_tokens, float* y,
                      int64_t ldy) {
  reference<false>(w, x, ldx, n_tokens, y, ldy);
}

void matmul_abs_reference(const Matrix& w, const float* x, int64_t ldx, int64_t n_tokens, float* y,
                          int64_t ldy) {
  reference<true>(w, x, ldx, n_tokens, y, ldy);
}

}  // namespace tandem::kernels

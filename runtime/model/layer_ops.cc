#include "runtime/model/layer_ops.h"

#include <cmath>

namespace tandem::model {

void rms_norm(const float* x, const float* weight, float eps, int64_t n, float* out) {
  // Four double sums: one chain waits an add's latency per element (the
  // order changes only the double's last bits, not the float mean).
  double part[4] = {0.0, 0.0, 0.0, 0.0};
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    for (int u = 0; u < 4; ++u) part[u] += static_cast<double>(x[i + u] * x[i + u]);
  }
  for (; i < n; ++i) part[0] += static_cast<double>(x[i] * x[i]);
  const double sum = (part[0] + part[1]) + (part[2] + part[3]);
  const float mean = static_cast<float>(sum / static_cast<double>(n));
  const float scale = 1.0f / std::sqrt(mean + eps);
  for (int64_t i = 0; i < n; ++i) out[i] = (x[i] * scale) * weight[i];
}

void rope_angles(int32_t pos, int64_t rope_dim, float freq_base, float freq_scale,
                 std::span<const float> freq_factors, float* cos_sin) {
  const float theta_scale = std::pow(freq_base, -2.0f / static_cast<float>(rope_dim));
  float theta = static_cast<float>(pos);
  for (int64_t i = 0; i < rope_dim / 2; ++i) {
    const float factor = freq_factors.empty() ? 1.0f : freq_factors[i];
    const float angle = freq_scale * (theta / factor);
    cos_sin[2 * i] = std::cos(angle);
    cos_sin[2 * i + 1] = std::sin(angle);
    theta *= theta_scale;
  }
}

void rope_apply(float* x, int64_t n_heads, int64_t head_dim, int64_t rope_dim,
                const float* cos_sin) {
  for (int64_t h = 0; h < n_heads; ++h) {
    float* v = x + h * head_dim;
    for (int64_t i = 0; i < rope_dim; i += 2) {
      const float c = cos_sin[i];
      const float s = cos_sin[i + 1];
      const float x0 = v[i];
      const float x1 = v[i + 1];
      v[i] = x0 * c - x1 * s;
      v[i + 1] = x0 * s + x1 * c;
    }
  }
}

void add_in_place(float* x, const float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] += y[i];
}

}  // namespace tandem::model

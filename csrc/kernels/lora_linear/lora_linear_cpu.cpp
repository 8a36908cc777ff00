// CPU launcher for the fused LoRA rank-r part: one OpenMP iteration per row.
#include "lora_linear.h"

#include <stdexcept>

namespace l2vsd {
namespace lora_linear {
namespace {

template <typename T>
void add_lora_impl(const T* x, const T* x_dot, const T* A, const T* A_dot, const T* B,
                   const T* B_dot, T* y, T* y_dot, int64_t m, int64_t in, int64_t out, int r,
                   T scale) {
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < m; ++row) {
    T u[kMaxRank], u_dot[kMaxRank];
    down_project_row<T>(x + row * in, x_dot + row * in, A, A_dot, in, r, u, u_dot);
    T* yr = y + row * out;
    T* ydr = y_dot + row * out;
    for (int64_t o = 0; o < out; ++o) {
      T add, add_dot;
      up_project_col<T>(u, u_dot, B, B_dot, r, o, scale, &add, &add_dot);
      yr[o] += add;
      ydr[o] += add_dot;
    }
  }
}

}  // namespace

void add_lora_cpu(DType dtype, const void* x, const void* x_dot, const void* A,
                  const void* A_dot, const void* B, const void* B_dot, void* y, void* y_dot,
                  int64_t m, int64_t in, int64_t out, int r, double scale) {
  if (r < 1 || r > kMaxRank) throw std::invalid_argument("lora_linear: rank out of range");
  switch (dtype) {
    case DType::kFloat32:
      add_lora_impl<float>(static_cast<const float*>(x), static_cast<const float*>(x_dot),
                           static_cast<const float*>(A), static_cast<const float*>(A_dot),
                           static_cast<const float*>(B), static_cast<const float*>(B_dot),
                           static_cast<float*>(y), static_cast<float*>(y_dot), m, in, out, r,
                           static_cast<float>(scale));
      break;
    case DType::kFloat64:
      add_lora_impl<double>(static_cast<const double*>(x), static_cast<const double*>(x_dot),
                            static_cast<const double*>(A), static_cast<const double*>(A_dot),
                            static_cast<const double*>(B), static_cast<const double*>(B_dot),
                            static_cast<double*>(y), static_cast<double*>(y_dot), m, in, out, r,
                            scale);
      break;
    default: throw std::invalid_argument("lora_linear: the CPU kernel supports float32 and float64");
  }
}

}  // namespace lora_linear
}  // namespace l2vsd

// CPU launcher for group/layer norm with tangent: one OpenMP iteration per normalisation group.
#include "norm_jvp.h"

#include <stdexcept>

namespace l2vsd {
namespace norm_jvp {
namespace {

template <typename T>
void forward_impl(const T* x, const T* x_dot, const T* gamma, const T* beta, T* y, T* y_dot,
                  const NormShape& s, T eps) {
#pragma omp parallel for schedule(static)
  for (int64_t g = 0; g < s.n_groups; ++g) {
    const int64_t base = g * s.group_size;
    const GroupStats<T> st = group_stats<T>(x + base, x_dot + base, s.group_size, eps);
    const int64_t affine_base = (g % s.groups_per_sample) * s.affine_per_group;
    for (int64_t i = 0; i < s.group_size; ++i) {
      const int64_t a = affine_base + i / s.affine_stride;
      const T gm = gamma ? gamma[a] : T(1);
      const T bt = beta ? beta[a] : T(0);
      normalize_element<T>(x[base + i], x_dot[base + i], st, gm, bt, &y[base + i],
                           &y_dot[base + i]);
    }
  }
}

}  // namespace

void forward_cpu(DType dtype, const void* x, const void* x_dot, const void* gamma,
                 const void* beta, void* y, void* y_dot, const NormShape& shape, double eps) {
  switch (dtype) {
    case DType::kFloat32:
      forward_impl<float>(static_cast<const float*>(x), static_cast<const float*>(x_dot),
                          static_cast<const float*>(gamma), static_cast<const float*>(beta),
                          static_cast<float*>(y), static_cast<float*>(y_dot), shape,
                          static_cast<float>(eps));
      break;
    case DType::kFloat64:
      forward_impl<double>(static_cast<const double*>(x), static_cast<const double*>(x_dot),
                           static_cast<const double*>(gamma), static_cast<const double*>(beta),
                           static_cast<double*>(y), static_cast<double*>(y_dot), shape, eps);
      break;
    default: throw std::invalid_argument("norm_jvp: the CPU kernel supports float32 and float64");
  }
}

}  // namespace norm_jvp
}  // namespace l2vsd

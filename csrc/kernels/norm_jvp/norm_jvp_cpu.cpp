// CPU launcher for group/layer norm with tangent (the math of norm_jvp.h): one OpenMP iteration per
// normalisation group; the two statistics passes are SIMD reductions, and the normalisation walks
// runs of elements that share one affine entry (a channel's spatial extent for group norm, single
// elements for layer norm), so no element needs an integer division. The scalar per-element form
// was ~9x PyTorch's own group/layer norm at SD 2.1's sizes. Compiled for AVX-512, AVX2+FMA and the
// baseline, picked at run time (cpu_isa.h).
#include "norm_jvp.h"

#include "../cpu_isa.h"

#include <algorithm>
#include <stdexcept>

namespace l2vsd {
namespace norm_jvp {
namespace {

// Two-pass statistics of one group (as group_stats in norm_jvp.h, with vectorised sums).
template <typename T>
__attribute__((always_inline)) inline GroupStats<T> simd_group_stats(const T* x, const T* x_dot,
                                                                     int64_t n, T eps) {
  T s = T(0), s_dot = T(0);
#pragma omp simd reduction(+ : s, s_dot)
  for (int64_t i = 0; i < n; ++i) {
    s += x[i];
    s_dot += x_dot[i];
  }
  GroupStats<T> st;
  st.mean = s / static_cast<T>(n);
  st.mean_dot = s_dot / static_cast<T>(n);
  T var = T(0), cov = T(0);
  const T mean = st.mean, mean_dot = st.mean_dot;
#pragma omp simd reduction(+ : var, cov)
  for (int64_t i = 0; i < n; ++i) {
    const T c = x[i] - mean;
    var += c * c;
    cov += c * (x_dot[i] - mean_dot);
  }
  return finish_stats(st, var, cov, n, eps);
}

// Elements [0, len) of a run, all with the same affine entry (gm, bt).
template <typename T>
__attribute__((always_inline)) inline void normalize_run(const T* x, const T* x_dot,
                                                         const GroupStats<T>& st, T gm, T bt,
                                                         int64_t len, T* y, T* y_dot) {
  const T mean = st.mean, mean_dot = st.mean_dot, rstd = st.rstd, cov = st.cov;
#pragma omp simd
  for (int64_t i = 0; i < len; ++i) {
    const T xhat = (x[i] - mean) * rstd;
    y[i] = xhat * gm + bt;
    y_dot[i] = ((x_dot[i] - mean_dot) * rstd - xhat * cov) * gm;
  }
}

template <typename T>
__attribute__((always_inline)) inline void norm_groups(const T* x, const T* x_dot, const T* gamma,
                                                       const T* beta, T* y, T* y_dot,
                                                       const NormShape& s, T eps) {
#pragma omp parallel for schedule(static)
  for (int64_t g = 0; g < s.n_groups; ++g) {
    const int64_t base = g * s.group_size;
    const GroupStats<T> st = simd_group_stats<T>(x + base, x_dot + base, s.group_size, eps);
    const int64_t affine_base = (g % s.groups_per_sample) * s.affine_per_group;
    if (s.affine_stride == 1 && gamma != nullptr) {
      // Every element its own affine entry (layer norm).
      const T* gm = gamma + affine_base;
      const T* bt = beta ? beta + affine_base : nullptr;
      const T mean = st.mean, mean_dot = st.mean_dot, rstd = st.rstd, cov = st.cov;
      T* yg = y + base;
      T* ydg = y_dot + base;
      const T* xg = x + base;
      const T* xdg = x_dot + base;
#pragma omp simd
      for (int64_t i = 0; i < s.group_size; ++i) {
        const T xhat = (xg[i] - mean) * rstd;
        yg[i] = xhat * gm[i] + (bt ? bt[i] : T(0));
        ydg[i] = ((xdg[i] - mean_dot) * rstd - xhat * cov) * gm[i];
      }
      continue;
    }
    for (int64_t i0 = 0, a = affine_base; i0 < s.group_size; i0 += s.affine_stride, ++a) {
      const int64_t len = std::min<int64_t>(s.affine_stride, s.group_size - i0);
      const T gm = gamma ? gamma[a] : T(1);
      const T bt = beta ? beta[a] : T(0);
      normalize_run<T>(x + base + i0, x_dot + base + i0, st, gm, bt, len, y + base + i0,
                       y_dot + base + i0);
    }
  }
}

template <typename T>
using GroupsFn = void (*)(const T*, const T*, const T*, const T*, T*, T*, const NormShape&, T);

#define L2VSD_NORM_ENTRY(NAME, TARGET, T)                                                         \
  TARGET void NAME(const T* x, const T* xd, const T* gm, const T* bt, T* y, T* yd,               \
                   const NormShape& s, T eps) {                                                   \
    norm_groups<T>(x, xd, gm, bt, y, yd, s, eps);                                                 \
  }
L2VSD_NORM_ENTRY(groups_f32_avx512, L2VSD_TARGET_AVX512, float)
L2VSD_NORM_ENTRY(groups_f32_avx2, L2VSD_TARGET_AVX2, float)
L2VSD_NORM_ENTRY(groups_f32_base, , float)
L2VSD_NORM_ENTRY(groups_f64_avx512, L2VSD_TARGET_AVX512, double)
L2VSD_NORM_ENTRY(groups_f64_avx2, L2VSD_TARGET_AVX2, double)
L2VSD_NORM_ENTRY(groups_f64_base, , double)
#undef L2VSD_NORM_ENTRY

GroupsFn<float> groups_for(cpu_isa::Isa isa, float) {
  return cpu_isa::pick<GroupsFn<float>>(isa, groups_f32_avx512, groups_f32_avx2, groups_f32_base);
}
GroupsFn<double> groups_for(cpu_isa::Isa isa, double) {
  return cpu_isa::pick<GroupsFn<double>>(isa, groups_f64_avx512, groups_f64_avx2, groups_f64_base);
}

}  // namespace

void forward_cpu(DType dtype, const void* x, const void* x_dot, const void* gamma,
                 const void* beta, void* y, void* y_dot, const NormShape& shape, double eps) {
  switch (dtype) {
    case DType::kFloat32:
      groups_for(cpu_isa::current(), float{})(
          static_cast<const float*>(x), static_cast<const float*>(x_dot),
          static_cast<const float*>(gamma), static_cast<const float*>(beta),
          static_cast<float*>(y), static_cast<float*>(y_dot), shape, static_cast<float>(eps));
      break;
    case DType::kFloat64:
      groups_for(cpu_isa::current(), double{})(
          static_cast<const double*>(x), static_cast<const double*>(x_dot),
          static_cast<const double*>(gamma), static_cast<const double*>(beta),
          static_cast<double*>(y), static_cast<double*>(y_dot), shape, eps);
      break;
    default: throw std::invalid_argument("norm_jvp: the CPU kernel supports float32 and float64");
  }
}

}  // namespace norm_jvp
}  // namespace l2vsd

// Group norm and layer norm with their forward-mode tangents (affine weights carry no tangent: the
// engine differentiates w.r.t. LoRA parameters only). For one normalisation group of n values:
//   mu = mean(x), rstd = 1/sqrt(var(x) + eps), xhat = (x - mu) * rstd,
//   xhat_dot = rstd * (x_dot - mean(x_dot)) - xhat * rstd^2 * mean((x - mu) * (x_dot - mean(x_dot)))
//   y = xhat * gamma + beta, y_dot = xhat_dot * gamma.
// Group norm and layer norm differ only in which affine entry an element uses: element i of a group
// uses gamma[affine_base + i / affine_stride] (group norm: stride = spatial size; layer norm: 1).
#pragma once

#include "../common.h"

namespace l2vsd {
namespace norm_jvp {

template <typename Acc>
struct GroupStats {
  Acc mean, mean_dot, rstd, cov;  // cov = mean((x - mu)(x_dot - mu_dot)) * rstd^2
};

HD float inverse_sqrt(float v) { return 1.0f / sqrtf(v); }
HD double inverse_sqrt(double v) { return 1.0 / ::sqrt(v); }

// rstd and the tangent covariance from the centred sums of a group.
template <typename Acc>
HD GroupStats<Acc> finish_stats(GroupStats<Acc> st, Acc var_sum, Acc cov_sum, int64_t n, Acc eps) {
  const Acc var = var_sum / cast_to<Acc>(n);
  st.rstd = inverse_sqrt(var + eps);
  st.cov = cov_sum / cast_to<Acc>(n) * st.rstd * st.rstd;
  return st;
}

// Two-pass statistics over x[0, n) and x_dot[0, n) (two passes: no cancellation in float).
template <typename Acc, typename T>
HD GroupStats<Acc> group_stats(const T* x, const T* x_dot, int64_t n, Acc eps) {
  Acc s = Acc(0), s_dot = Acc(0);
  for (int64_t i = 0; i < n; ++i) {
    s += cast_to<Acc>(x[i]);
    s_dot += cast_to<Acc>(x_dot[i]);
  }
  GroupStats<Acc> st;
  st.mean = s / cast_to<Acc>(n);
  st.mean_dot = s_dot / cast_to<Acc>(n);
  Acc var = Acc(0), cov = Acc(0);
  for (int64_t i = 0; i < n; ++i) {
    const Acc c = cast_to<Acc>(x[i]) - st.mean;
    var += c * c;
    cov += c * (cast_to<Acc>(x_dot[i]) - st.mean_dot);
  }
  return finish_stats(st, var, cov, n, eps);
}

// Output and tangent of one element, given its group's statistics and its affine entry.
template <typename Acc>
HD void normalize_element(Acc x, Acc x_dot, const GroupStats<Acc>& st, Acc gamma, Acc beta,
                          Acc* y, Acc* y_dot) {
  const Acc xhat = (x - st.mean) * st.rstd;
  const Acc xhat_dot = (x_dot - st.mean_dot) * st.rstd - xhat * st.cov;
  *y = xhat * gamma + beta;
  *y_dot = xhat_dot * gamma;
}

// Launchers. x, x_dot, y, y_dot: n_groups contiguous groups of group_size values. gamma/beta may be
// null (no affine); group g uses entries starting at (g % groups_per_sample) * affine_per_group,
// element i of the group entry i / affine_stride.
struct NormShape {
  int64_t n_groups;
  int64_t group_size;
  int64_t groups_per_sample;
  int64_t affine_per_group;
  int64_t affine_stride;
};

void forward_cpu(DType dtype, const void* x, const void* x_dot, const void* gamma,
                 const void* beta, void* y, void* y_dot, const NormShape& shape, double eps);
// The CUDA launcher splits each group over cuda_chunks(shape) blocks (about 512 blocks in all,
// at least ~1024 elements per block) and needs a workspace of cuda_workspace_elements(shape)
// accumulator values (double for float64 data, float otherwise); it need not be zeroed.
inline int cuda_chunks(const NormShape& s) {
  constexpr int64_t kTargetBlocks = 512, kMinPerChunk = 1024, kMaxChunks = 64;
  int64_t chunks = s.n_groups > 0 ? (kTargetBlocks + s.n_groups - 1) / s.n_groups : 1;
  const int64_t by_size = (s.group_size + kMinPerChunk - 1) / kMinPerChunk;
  if (chunks > by_size) chunks = by_size;
  if (chunks > kMaxChunks) chunks = kMaxChunks;
  return chunks < 1 ? 1 : static_cast<int>(chunks);
}
inline int64_t cuda_workspace_elements(const NormShape& s) {
  return 4 * s.n_groups * cuda_chunks(s);
}

void forward_cuda(DType dtype, const void* x, const void* x_dot, const void* gamma,
                  const void* beta, void* y, void* y_dot, const NormShape& shape, double eps,
                  void* workspace, cudaStream_t stream);

}  // namespace norm_jvp
}  // namespace l2vsd

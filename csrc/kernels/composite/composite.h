// Volume-rendering compositing in nerfacc's packed layout (see shared DESIGN.md): samples sorted by
// ray, ray r owning samples [offsets[r], offsets[r+1]). One thread walks one ray, front to back
// for the forward and back to front for the backward, so neither pass needs atomics.
#pragma once

#include <cmath>
#include <cstdint>

#include "../common.h"

namespace l2vsd {
namespace composite {

HD float exp_of(float v) { return expf(v); }
HD double exp_of(double v) { return ::exp(v); }

// alpha_i = 1 - exp(-sigma_i * delta_i), T_i = exp(-sum_{j<i} sigma_j delta_j) = prod_{j<i}(1 - alpha_j),
// w_i = T_i * alpha_i, for the samples [begin, end) of one ray.
template <typename T>
HD void weights_forward_ray(const T* t_starts, const T* t_ends, const T* sigmas, int64_t begin,
                            int64_t end, T* weights, T* transmittance, T* alphas) {
  T optical_depth = T(0);
  for (int64_t i = begin; i < end; ++i) {
    const T tau = sigmas[i] * (t_ends[i] - t_starts[i]);
    const T trans = exp_of(-optical_depth);
    const T alpha = T(1) - exp_of(-tau);
    weights[i] = trans * alpha;
    transmittance[i] = trans;
    alphas[i] = alpha;
    optical_depth += tau;
  }
}

// Gradient w.r.t. sigma from the gradients of all three outputs (a null gradient counts as zero).
// With tau_k = sigma_k delta_k:  dL/dtau_k = g_alpha_k (1 - alpha_k) + g_w_k T_{k+1}
//                                            - sum_{i>k} (g_w_i w_i + g_T_i T_i),
// where T_{k+1} = T_k - w_k; the suffix sum is carried back to front.
template <typename T>
HD void weights_backward_ray(const T* t_starts, const T* t_ends, const T* weights,
                             const T* transmittance, const T* alphas, const T* grad_weights,
                             const T* grad_transmittance, const T* grad_alphas, int64_t begin,
                             int64_t end, T* grad_sigmas) {
  T suffix = T(0);
  for (int64_t i = end - 1; i >= begin; --i) {
    const T gw = grad_weights ? grad_weights[i] : T(0);
    const T gt = grad_transmittance ? grad_transmittance[i] : T(0);
    const T ga = grad_alphas ? grad_alphas[i] : T(0);
    const T trans_after = transmittance[i] - weights[i];
    const T grad_tau = ga * (T(1) - alphas[i]) + gw * trans_after - suffix;
    grad_sigmas[i] = grad_tau * (t_ends[i] - t_starts[i]);
    suffix += gw * weights[i] + gt * transmittance[i];
  }
}

// out[c] = sum_i w_i * values[i, c] over one ray's samples; values == nullptr means all ones
// (n_channels must then be 1), which gives the opacity.
template <typename T>
HD void accumulate_forward_ray(const T* weights, const T* values, int64_t n_channels,
                               int64_t begin, int64_t end, T* out) {
  for (int64_t c = 0; c < n_channels; ++c) out[c] = T(0);
  for (int64_t i = begin; i < end; ++i) {
    const T w = weights[i];
    for (int64_t c = 0; c < n_channels; ++c)
      out[c] += w * (values ? values[i * n_channels + c] : T(1));
  }
}

// Per sample i of ray r: dL/dw_i = sum_c values[i,c] g[r,c], dL/dvalues[i,c] = w_i g[r,c].
// Either output pointer may be null when that gradient is not needed.
template <typename T>
HD void accumulate_backward_sample(const T* weights, const T* values, const T* grad_out_ray,
                                   int64_t n_channels, int64_t i, T* grad_weights,
                                   T* grad_values) {
  T gw = T(0);
  for (int64_t c = 0; c < n_channels; ++c) {
    const T g = grad_out_ray[c];
    gw += (values ? values[i * n_channels + c] : T(1)) * g;
    if (grad_values) grad_values[i * n_channels + c] = weights[i] * g;
  }
  if (grad_weights) grad_weights[i] = gw;
}

// accumulate_backward_sample() for a sample that names its ray (the CUDA launcher's one thread
// per sample): a ray index outside [0, n_rays) would read grad_out out of bounds, so such a
// sample (in no ray, hence no gradient) gets zeros. Returns whether the ray was in range.
template <typename T>
HD bool accumulate_backward_sample_of_ray(const T* weights, const T* values, const T* grad_out,
                                          int64_t n_channels, int64_t ray, int64_t n_rays,
                                          int64_t i, T* grad_weights, T* grad_values) {
  if (ray < 0 || ray >= n_rays) {
    for (int64_t c = 0; c < n_channels && grad_values; ++c) grad_values[i * n_channels + c] = T(0);
    if (grad_weights) grad_weights[i] = T(0);
    return false;
  }
  accumulate_backward_sample(weights, values, grad_out + ray * n_channels, n_channels, i,
                             grad_weights, grad_values);
  return true;
}

// Depth spread of a ray (HiFA's z-variance), accumulated inside the fused op. With the sample
// midpoints t_i and d_i = t_i - t_ref, t_ref the ray's first midpoint (so the sums stay near the
// ray's own depth range and float32 keeps its digits), the forward sums W = sum w_i,
// A = sum w_i d_i, B = sum w_i d_i^2 and stores per ray
//   stats = (W, mu = A / W, var = B / W - mu^2)   (all zero when W == 0),
// i.e. the opacity, the mean of the normalised weights' depth (relative to t_ref) and their
// variance. var can come out a rounding error below zero (about eps * mu^2). These helpers take a
// scalar or, on the CPU, a SIMD vector U of the element type T.
constexpr int kDepthStats = 3;

// The helpers below also run on the CPU launcher's SIMD vectors inside its per-instruction-set
// entry points, so for g++ they must inline there (lanes.h: wide vectors never cross a call).
#if defined(__CUDACC__)
#define L2VSD_COMPOSITE_HD HD
#else
#define L2VSD_COMPOSITE_HD __attribute__((always_inline)) inline
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"  // see lanes.h
#endif

template <typename T, typename U> L2VSD_COMPOSITE_HD U depth_offset(U t_start, U t_end, T t_ref) {
  return T(0.5) * (t_start + t_end) - t_ref;
}

template <typename U> L2VSD_COMPOSITE_HD void add_depth_moments(U w, U d, U& sum_w, U& sum_wd, U& sum_wdd) {
  sum_w += w;
  const U wd = w * d;
  sum_wd += wd;
  sum_wdd += wd * d;
}

template <typename T> HD void finish_depth_stats(T sum_w, T sum_wd, T sum_wdd, T* stats) {
  const T mu = sum_w > T(0) ? sum_wd / sum_w : T(0);
  stats[0] = sum_w;
  stats[1] = mu;
  stats[2] = sum_w > T(0) ? sum_wdd / sum_w - mu * mu : T(0);
}

// The gradient of the stats' loss w.r.t. one weight w_i (everything else fixed), written around
// the mean so that no large terms cancel:
//   dL/dw_i = g_W + (g_mu / W)(d_i - mu) + (g_var / W)((d_i - mu)^2 - var),
// and its weighted sum over the ray, sum_i w_i dL/dw_i = g_W W (the other two terms sum to zero),
// which the backward adds to its total. A ray with W == 0 only keeps g_W.
template <typename T> struct DepthStatsGrad {
  T g_w, g_mu, g_var, mu, var, total;
  HD static DepthStatsGrad of(const T* stats, const T* grad) {
    const T w = stats[0];
    const T inv = w > T(0) ? T(1) / w : T(0);
    return {grad[0], grad[1] * inv, grad[2] * inv, stats[1], stats[2], grad[0] * w};
  }
  template <typename U> L2VSD_COMPOSITE_HD U weight_grad(U d) const {
    const U centred = d - mu;
    return g_w + g_mu * centred + g_var * (centred * centred - var);
  }
};

// dL/dsigma_k of the fused op from g_k = dL/dw_k: dL/dtau_k = g_k T_{k+1} - sum_{i>k} g_i w_i with
// T_{k+1} = T_k - w_k and the suffix sum taken as total - sum_{i<=k} g_i w_i (`upto`).
template <typename U> L2VSD_COMPOSITE_HD U fused_sigma_grad(U g, U trans, U w, U total, U upto, U dt) {
  return (g * (trans - w) - (total - upto)) * dt;
}

#if !defined(__CUDACC__)
#pragma GCC diagnostic pop
#endif

// The fused op composite_along_rays: out[c] = sum_i w_i values[i, c] with w_i as in
// weights_forward_ray(), in one sweep that stores nothing per sample. depth_stats (3 values, may
// be null): the ray's depth spread, see above.
template <typename T>
HD void composite_forward_ray(const T* t_starts, const T* t_ends, const T* sigmas,
                              const T* values, int64_t n_channels, int64_t begin, int64_t end,
                              T* out, T* depth_stats = nullptr) {
  for (int64_t c = 0; c < n_channels; ++c) out[c] = T(0);
  T optical_depth = T(0);
  T sum_w = T(0), sum_wd = T(0), sum_wdd = T(0);
  const T t_ref = end > begin ? T(0.5) * (t_starts[begin] + t_ends[begin]) : T(0);
  for (int64_t i = begin; i < end; ++i) {
    const T tau = sigmas[i] * (t_ends[i] - t_starts[i]);
    const T w = exp_of(-optical_depth) * (T(1) - exp_of(-tau));
    for (int64_t c = 0; c < n_channels; ++c) out[c] += w * values[i * n_channels + c];
    if (depth_stats)
      add_depth_moments(w, depth_offset(t_starts[i], t_ends[i], t_ref), sum_w, sum_wd, sum_wdd);
    optical_depth += tau;
  }
  if (depth_stats) finish_depth_stats(sum_w, sum_wd, sum_wdd, depth_stats);
}

// Its gradient in one front-to-back sweep that recomputes T_i and w_i from the sigmas (nothing
// was stored). With g_i = sum_c values[i, c] g[c] (the gradient of w_i):
//   dL/dtau_k = g_k T_{k+1} - sum_{i>k} g_i w_i,  sum_{i>k} g_i w_i = S - sum_{i<=k} g_i w_i,
// where S = sum_i g_i w_i = sum_c g[c] out[c] comes from the forward's output (instant-ngp's
// backward does the same). dL/dvalues[i, c] = w_i g[c]. Either output pointer may be null.
// depth_stats / grad_depth_stats (the forward's stats and their gradient, both or neither): g_i
// gains DepthStatsGrad::weight_grad(d_i) and S its total.
template <typename T>
HD void composite_backward_ray(const T* t_starts, const T* t_ends, const T* sigmas,
                               const T* values, const T* grad_out_ray, const T* out_ray,
                               int64_t n_channels, int64_t begin, int64_t end, T* grad_sigmas,
                               T* grad_values, const T* depth_stats = nullptr,
                               const T* grad_depth_stats = nullptr) {
  const bool depth = depth_stats && grad_depth_stats;
  DepthStatsGrad<T> dg{};
  if (depth) dg = DepthStatsGrad<T>::of(depth_stats, grad_depth_stats);
  const T t_ref = end > begin ? T(0.5) * (t_starts[begin] + t_ends[begin]) : T(0);
  T total = T(0);
  for (int64_t c = 0; c < n_channels; ++c) total += grad_out_ray[c] * out_ray[c];
  if (depth) total += dg.total;
  T optical_depth = T(0), before = T(0);
  for (int64_t i = begin; i < end; ++i) {
    const T dt = t_ends[i] - t_starts[i];
    const T tau = sigmas[i] * dt;
    const T trans = exp_of(-optical_depth);
    const T w = trans * (T(1) - exp_of(-tau));
    T gw = T(0);
    for (int64_t c = 0; c < n_channels; ++c) {
      gw += values[i * n_channels + c] * grad_out_ray[c];
      if (grad_values) grad_values[i * n_channels + c] = w * grad_out_ray[c];
    }
    if (depth) gw += dg.weight_grad(depth_offset(t_starts[i], t_ends[i], t_ref));
    before += gw * w;
    if (grad_sigmas) grad_sigmas[i] = fused_sigma_grad(gw, trans, w, total, before, dt);
    optical_depth += tau;
  }
}

}  // namespace composite
}  // namespace l2vsd

namespace l2vsd {
namespace composite {

// Launchers. offsets: (n_rays + 1) int64, non-decreasing; samples outside [offsets[0],
// offsets[n_rays]) belong to no ray and are not written (the glue only passes offsets that cover
// every sample). ray_of_sample: (n_samples) int64, the owning ray (the CUDA backward of the
// accumulation runs a thread per sample; the CPU one walks rays by their offsets).
void weights_forward_cpu(DType dtype, const void* t_starts, const void* t_ends,
                         const void* sigmas, const int64_t* offsets, int64_t n_rays,
                         void* weights, void* transmittance, void* alphas);
void weights_backward_cpu(DType dtype, const void* t_starts, const void* t_ends,
                          const void* weights, const void* transmittance, const void* alphas,
                          const void* grad_weights, const void* grad_transmittance,
                          const void* grad_alphas, const int64_t* offsets, int64_t n_rays,
                          void* grad_sigmas);
void accumulate_forward_cpu(DType dtype, const void* weights, const void* values,
                            int64_t n_channels, const int64_t* offsets, int64_t n_rays,
                            void* out);
void accumulate_backward_cpu(DType dtype, const void* weights, const void* values,
                             const void* grad_out, int64_t n_channels, const int64_t* offsets,
                             int64_t n_rays, void* grad_weights, void* grad_values);

// The fused op: out (n_rays, C) from (t_starts, t_ends, sigmas, values (n_samples, C)); the
// backward reads the forward's out and writes grad_sigmas and/or grad_values (null: not needed).
// depth_stats (n_rays, 3), null when not wanted: the depth spread per ray (see DepthStatsGrad);
// the backward takes it with its gradient grad_depth_stats (both null: not wanted). The CUDA
// launchers take the same arguments plus the stream.
void composite_forward_cpu(DType dtype, const void* t_starts, const void* t_ends,
                           const void* sigmas, const void* values, int64_t n_channels,
                           const int64_t* offsets, int64_t n_rays, void* out, void* depth_stats);
void composite_backward_cpu(DType dtype, const void* t_starts, const void* t_ends,
                            const void* sigmas, const void* values, const void* grad_out,
                            const void* out, const void* depth_stats,
                            const void* grad_depth_stats, int64_t n_channels,
                            const int64_t* offsets, int64_t n_rays, void* grad_sigmas,
                            void* grad_values);
void composite_forward_cuda(DType dtype, const void* t_starts, const void* t_ends,
                            const void* sigmas, const void* values, int64_t n_channels,
                            const int64_t* offsets, int64_t n_rays, void* out, void* depth_stats,
                            cudaStream_t stream);
void composite_backward_cuda(DType dtype, const void* t_starts, const void* t_ends,
                             const void* sigmas, const void* values, const void* grad_out,
                             const void* out, const void* depth_stats,
                             const void* grad_depth_stats, int64_t n_channels,
                             const int64_t* offsets, int64_t n_rays, void* grad_sigmas,
                             void* grad_values, cudaStream_t stream);

void weights_forward_cuda(DType dtype, const void* t_starts, const void* t_ends,
                          const void* sigmas, const int64_t* offsets, int64_t n_rays,
                          void* weights, void* transmittance, void* alphas, cudaStream_t stream);
void weights_backward_cuda(DType dtype, const void* t_starts, const void* t_ends,
                           const void* weights, const void* transmittance, const void* alphas,
                           const void* grad_weights, const void* grad_transmittance,
                           const void* grad_alphas, const int64_t* offsets, int64_t n_rays,
                           void* grad_sigmas, cudaStream_t stream);
void accumulate_forward_cuda(DType dtype, const void* weights, const void* values,
                             int64_t n_channels, const int64_t* offsets, int64_t n_rays,
                             void* out, cudaStream_t stream);
void accumulate_backward_cuda(DType dtype, const void* weights, const void* values,
                              const void* grad_out, int64_t n_channels,
                              const int64_t* ray_of_sample, int64_t n_samples, int64_t n_rays,
                              void* grad_weights, void* grad_values, cudaStream_t stream);

}  // namespace composite
}  // namespace l2vsd

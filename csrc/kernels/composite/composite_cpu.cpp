// CPU launcher for compositing: OpenMP over rays (forward, weight backward) or samples
// (accumulate backward), calling the HD bodies in composite.h.
#include "composite.h"

#include <stdexcept>

namespace l2vsd {
namespace composite {
namespace {

// Rays differ wildly in sample count (empty space is skipped), hence dynamic scheduling.
template <typename T>
void weights_forward_impl(const T* ts, const T* te, const T* sig, const int64_t* off, int64_t n_rays,
                          T* w, T* tr, T* al) {
#pragma omp parallel for schedule(dynamic, 64)
  for (int64_t r = 0; r < n_rays; ++r)
    weights_forward_ray(ts, te, sig, off[r], off[r + 1], w, tr, al);
}

template <typename T>
void weights_backward_impl(const T* ts, const T* te, const T* w, const T* tr, const T* al,
                           const T* gw, const T* gt, const T* ga, const int64_t* off,
                           int64_t n_rays, T* gs) {
#pragma omp parallel for schedule(dynamic, 64)
  for (int64_t r = 0; r < n_rays; ++r)
    weights_backward_ray(ts, te, w, tr, al, gw, gt, ga, off[r], off[r + 1], gs);
}

template <typename T>
void accumulate_forward_impl(const T* w, const T* v, int64_t c, const int64_t* off, int64_t n_rays,
                             T* out) {
#pragma omp parallel for schedule(dynamic, 64)
  for (int64_t r = 0; r < n_rays; ++r)
    accumulate_forward_ray(w, v, c, off[r], off[r + 1], out + r * c);
}

template <typename T>
void accumulate_backward_impl(const T* w, const T* v, const T* g, int64_t c, const int64_t* ray,
                              int64_t n, T* gw, T* gv) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    if (ray[i] < 0) continue;
    accumulate_backward_sample(w, v, g + ray[i] * c, c, i, gw, gv);
  }
}

}  // namespace

#define L2VSD_COMPOSITE_DISPATCH(dtype, CALL) \
  L2VSD_DISPATCH_FLOAT_DOUBLE(dtype, "composite", "CPU", CALL)

void weights_forward_cpu(DType dtype, const void* t_starts, const void* t_ends,
                         const void* sigmas, const int64_t* offsets, int64_t n_rays,
                         void* weights, void* transmittance, void* alphas) {
  L2VSD_COMPOSITE_DISPATCH(dtype, weights_forward_impl<T>(
      static_cast<const T*>(t_starts), static_cast<const T*>(t_ends),
      static_cast<const T*>(sigmas), offsets, n_rays, static_cast<T*>(weights),
      static_cast<T*>(transmittance), static_cast<T*>(alphas)));
}

void weights_backward_cpu(DType dtype, const void* t_starts, const void* t_ends,
                          const void* weights, const void* transmittance, const void* alphas,
                          const void* grad_weights, const void* grad_transmittance,
                          const void* grad_alphas, const int64_t* offsets, int64_t n_rays,
                          void* grad_sigmas) {
  L2VSD_COMPOSITE_DISPATCH(dtype, weights_backward_impl<T>(
      static_cast<const T*>(t_starts), static_cast<const T*>(t_ends),
      static_cast<const T*>(weights), static_cast<const T*>(transmittance),
      static_cast<const T*>(alphas), static_cast<const T*>(grad_weights),
      static_cast<const T*>(grad_transmittance), static_cast<const T*>(grad_alphas), offsets,
      n_rays, static_cast<T*>(grad_sigmas)));
}

void accumulate_forward_cpu(DType dtype, const void* weights, const void* values,
                            int64_t n_channels, const int64_t* offsets, int64_t n_rays,
                            void* out) {
  L2VSD_COMPOSITE_DISPATCH(dtype, accumulate_forward_impl<T>(
      static_cast<const T*>(weights), static_cast<const T*>(values), n_channels, offsets, n_rays,
      static_cast<T*>(out)));
}

void accumulate_backward_cpu(DType dtype, const void* weights, const void* values,
                             const void* grad_out, int64_t n_channels,
                             const int64_t* ray_of_sample, int64_t n_samples,
                             void* grad_weights, void* grad_values) {
  L2VSD_COMPOSITE_DISPATCH(dtype, accumulate_backward_impl<T>(
      static_cast<const T*>(weights), static_cast<const T*>(values),
      static_cast<const T*>(grad_out), n_channels, ray_of_sample, n_samples,
      static_cast<T*>(grad_weights), static_cast<T*>(grad_values)));
}

}  // namespace composite
}  // namespace l2vsd

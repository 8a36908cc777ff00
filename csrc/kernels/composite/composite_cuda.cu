// CUDA launcher for compositing: the same HD bodies as the CPU launcher, one thread per ray for
// the forward and the weight backward (no atomics), one thread per sample for the accumulate
// backward.
#include "composite.h"

#include "../cuda_launch.cuh"

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace l2vsd {
namespace composite {
namespace {

constexpr int kThreads = 256;

unsigned blocks_for(int64_t n) { return l2vsd::blocks_for(n, kThreads); }

void check_launch(const char* what) { check_cuda_launch("composite", what); }

template <typename T>
__global__ void weights_forward_kernel(const T* __restrict__ ts, const T* __restrict__ te,
                                       const T* __restrict__ sig, const int64_t* __restrict__ off,
                                       int64_t n_rays, T* w, T* tr, T* al) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= n_rays) return;
  weights_forward_ray(ts, te, sig, off[r], off[r + 1], w, tr, al);
}

template <typename T>
__global__ void weights_backward_kernel(const T* __restrict__ ts, const T* __restrict__ te,
                                        const T* __restrict__ w, const T* __restrict__ tr,
                                        const T* __restrict__ al, const T* gw, const T* gt,
                                        const T* ga, const int64_t* __restrict__ off,
                                        int64_t n_rays, T* gs) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= n_rays) return;
  weights_backward_ray(ts, te, w, tr, al, gw, gt, ga, off[r], off[r + 1], gs);
}

template <typename T>
__global__ void accumulate_forward_kernel(const T* __restrict__ w, const T* v, int64_t c,
                                          const int64_t* __restrict__ off, int64_t n_rays,
                                          T* out) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= n_rays) return;
  accumulate_forward_ray(w, v, c, off[r], off[r + 1], out + r * c);
}

template <typename T>
__global__ void accumulate_backward_kernel(const T* __restrict__ w, const T* v,
                                           const T* __restrict__ g, int64_t c,
                                           const int64_t* __restrict__ ray, int64_t n,
                                           int64_t n_rays, T* gw, T* gv) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  accumulate_backward_sample_of_ray(w, v, g, c, ray[i], n_rays, i, gw, gv);  // bounds ray[i]
}

}  // namespace

#define L2VSD_COMPOSITE_DISPATCH(dtype, CALL) \
  L2VSD_DISPATCH_FLOAT_DOUBLE(dtype, "composite", "CUDA", CALL)

void weights_forward_cuda(DType dtype, const void* t_starts, const void* t_ends,
                          const void* sigmas, const int64_t* offsets, int64_t n_rays,
                          void* weights, void* transmittance, void* alphas, cudaStream_t stream) {
  if (n_rays == 0) return;
  L2VSD_COMPOSITE_DISPATCH(dtype, (weights_forward_kernel<T><<<blocks_for(n_rays), kThreads, 0, stream>>>(
      static_cast<const T*>(t_starts), static_cast<const T*>(t_ends),
      static_cast<const T*>(sigmas), offsets, n_rays, static_cast<T*>(weights),
      static_cast<T*>(transmittance), static_cast<T*>(alphas))));
  check_launch("weights forward kernel");
}

void weights_backward_cuda(DType dtype, const void* t_starts, const void* t_ends,
                           const void* weights, const void* transmittance, const void* alphas,
                           const void* grad_weights, const void* grad_transmittance,
                           const void* grad_alphas, const int64_t* offsets, int64_t n_rays,
                           void* grad_sigmas, cudaStream_t stream) {
  if (n_rays == 0) return;
  L2VSD_COMPOSITE_DISPATCH(dtype, (weights_backward_kernel<T><<<blocks_for(n_rays), kThreads, 0, stream>>>(
      static_cast<const T*>(t_starts), static_cast<const T*>(t_ends),
      static_cast<const T*>(weights), static_cast<const T*>(transmittance),
      static_cast<const T*>(alphas), static_cast<const T*>(grad_weights),
      static_cast<const T*>(grad_transmittance), static_cast<const T*>(grad_alphas), offsets,
      n_rays, static_cast<T*>(grad_sigmas))));
  check_launch("weights backward kernel");
}

void accumulate_forward_cuda(DType dtype, const void* weights, const void* values,
                             int64_t n_channels, const int64_t* offsets, int64_t n_rays,
                             void* out, cudaStream_t stream) {
  if (n_rays == 0) return;
  L2VSD_COMPOSITE_DISPATCH(dtype, (accumulate_forward_kernel<T><<<blocks_for(n_rays), kThreads, 0, stream>>>(
      static_cast<const T*>(weights), static_cast<const T*>(values), n_channels, offsets, n_rays,
      static_cast<T*>(out))));
  check_launch("accumulate forward kernel");
}

void accumulate_backward_cuda(DType dtype, const void* weights, const void* values,
                              const void* grad_out, int64_t n_channels,
                              const int64_t* ray_of_sample, int64_t n_samples, int64_t n_rays,
                              void* grad_weights, void* grad_values, cudaStream_t stream) {
  if (n_samples == 0) return;
  L2VSD_COMPOSITE_DISPATCH(dtype, (accumulate_backward_kernel<T><<<blocks_for(n_samples), kThreads, 0, stream>>>(
      static_cast<const T*>(weights), static_cast<const T*>(values),
      static_cast<const T*>(grad_out), n_channels, ray_of_sample, n_samples, n_rays,
      static_cast<T*>(grad_weights), static_cast<T*>(grad_values))));
  check_launch("accumulate backward kernel");
}

}  // namespace composite
}  // namespace l2vsd

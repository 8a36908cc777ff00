// CUDA launcher for ray/box intersection and occupancy-grid marching: one thread per ray, the
// same HD bodies as the CPU launcher.
#include "raymarch.h"

#include "../cuda_launch.cuh"

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace l2vsd {
namespace raymarch {
namespace {

constexpr int kThreads = 256;

unsigned blocks_for(int64_t n) { return l2vsd::blocks_for(n, kThreads); }

void check_launch(const char* what) { check_cuda_launch("raymarch", what); }

template <typename T>
__global__ void ray_aabb_kernel(const T* __restrict__ o, const T* __restrict__ d,
                                const T* __restrict__ aabb, int64_t n, T* tn, T* tf,
                                uint8_t* hit) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= n) return;
  hit[r] = ray_aabb(o + 3 * r, d + 3 * r, aabb, tn + r, tf + r);
}

struct NoEmit {
  template <typename T> __device__ void operator()(int32_t, T, T) const {}
};

template <typename T>
__global__ void count_kernel(const T* __restrict__ o, const T* __restrict__ d,
                             const T* __restrict__ t_min, const T* __restrict__ t_max,
                             const T* __restrict__ off, int64_t n, Grid g,
                             const uint8_t* __restrict__ bits, MarchOptions opt, int64_t* counts) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= n) return;
  counts[r] = march_ray(g, bits, opt, o + 3 * r, d + 3 * r, t_min[r], t_max[r],
                        off ? off[r] : T(0), false, NoEmit());
}

template <typename T>
__global__ void fill_kernel(const T* __restrict__ o, const T* __restrict__ d,
                            const T* __restrict__ t_min, const T* __restrict__ t_max,
                            const T* __restrict__ off, int64_t n, Grid g,
                            const uint8_t* __restrict__ bits, MarchOptions opt,
                            const int64_t* __restrict__ offsets, int64_t* ray_indices, T* ts,
                            T* te) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= n) return;
  // Bounded by the ray's own slot [offsets[r], offsets[r + 1]), not by trust in the count pass.
  fill_ray(g, bits, opt, o + 3 * r, d + 3 * r, t_min[r], t_max[r], off ? off[r] : T(0), r,
           offsets[r], offsets[r + 1], ray_indices, ts, te);
}

}  // namespace

#define L2VSD_RAYMARCH_DISPATCH(dtype, CALL) \
  L2VSD_DISPATCH_FLOAT_DOUBLE(dtype, "raymarch", "CUDA", CALL)

void ray_aabb_cuda(DType dtype, const void* rays_o, const void* rays_d, const void* aabb,
                   int64_t n, void* t_near, void* t_far, uint8_t* hit, cudaStream_t stream) {
  if (n == 0) return;
  L2VSD_RAYMARCH_DISPATCH(dtype, (ray_aabb_kernel<T><<<blocks_for(n), kThreads, 0, stream>>>(
      static_cast<const T*>(rays_o), static_cast<const T*>(rays_d), static_cast<const T*>(aabb),
      n, static_cast<T*>(t_near), static_cast<T*>(t_far), hit)));
  check_launch("ray/aabb kernel");
}

void march_count_cuda(DType dtype, const void* rays_o, const void* rays_d, const void* t_min,
                      const void* t_max, const void* offset, int64_t n, const Grid& grid,
                      const uint8_t* bits, const MarchOptions& opt, int64_t* counts,
                      cudaStream_t stream) {
  if (n == 0) return;
  L2VSD_RAYMARCH_DISPATCH(dtype, (count_kernel<T><<<blocks_for(n), kThreads, 0, stream>>>(
      static_cast<const T*>(rays_o), static_cast<const T*>(rays_d),
      static_cast<const T*>(t_min), static_cast<const T*>(t_max), static_cast<const T*>(offset),
      n, grid, bits, opt, counts)));
  check_launch("march count kernel");
}

void march_fill_cuda(DType dtype, const void* rays_o, const void* rays_d, const void* t_min,
                     const void* t_max, const void* offset, int64_t n, const Grid& grid,
                     const uint8_t* bits, const MarchOptions& opt, const int64_t* offsets,
                     int64_t* ray_indices, void* t_starts, void* t_ends, cudaStream_t stream) {
  if (n == 0) return;
  L2VSD_RAYMARCH_DISPATCH(dtype, (fill_kernel<T><<<blocks_for(n), kThreads, 0, stream>>>(
      static_cast<const T*>(rays_o), static_cast<const T*>(rays_d),
      static_cast<const T*>(t_min), static_cast<const T*>(t_max), static_cast<const T*>(offset),
      n, grid, bits, opt, offsets, ray_indices, static_cast<T*>(t_starts),
      static_cast<T*>(t_ends))));
  check_launch("march fill kernel");
}

}  // namespace raymarch
}  // namespace l2vsd

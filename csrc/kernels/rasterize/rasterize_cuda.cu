// CUDA launcher for rasterize / interpolate / antialias: the same HD bodies as the CPU launcher.
// Coverage: one thread per (image, triangle) over its pixel bounding box, a 64-bit atomicMin on
// the packed (depth bits, id) key per pixel, then a resolve pass (one thread per pixel) that
// recomputes the winner's barycentrics and depth: deterministic whatever the schedule. Antialias
// forward gathers per pixel (no atomics); backward passes scatter with atomicAdd.
#include "rasterize.h"

#include "../cuda_launch.cuh"

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace l2vsd {
namespace rasterize {
namespace {

constexpr int kThreads = 256;

unsigned blocks_for(int64_t n) { return l2vsd::blocks_for(n, kThreads); }

void check_launch(const char* what) { check_cuda_launch("rasterize", what); }

__global__ void clear_keys_kernel(uint64_t* keys, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) keys[i] = kEmptyKey;
}

template <typename T>
__global__ void raster_kernel(RasterArgs a, const T* __restrict__ pos,
                              const int32_t* __restrict__ tris, uint64_t* keys) {
  const int64_t k = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (k >= a.batch * a.n_triangles) return;
  const int64_t b = k / a.n_triangles, t = k % a.n_triangles;
  raster_triangle(pos + b * a.pos_stride, tris, a.n_vertices, static_cast<int32_t>(t), a.height,
                  a.width, static_cast<T>(a.near_w), keys + b * a.height * a.width);
}

template <typename T>
__global__ void resolve_kernel(RasterArgs a, const T* __restrict__ pos,
                               const int32_t* __restrict__ tris, const uint64_t* __restrict__ keys,
                               int32_t* tri_id, T* bary, T* depth) {
  const int64_t hw = a.height * a.width;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= a.batch * hw) return;
  resolve_pixel(pos + (i / hw) * a.pos_stride, tris, a.n_vertices, a.height, a.width,
                static_cast<T>(a.near_w), i % hw, keys[i], tri_id + i, bary + 3 * i, depth + i);
}

template <typename T>
__global__ void backward_kernel(RasterArgs a, const T* __restrict__ pos,
                                const int32_t* __restrict__ tris,
                                const int32_t* __restrict__ tri_id, const T* __restrict__ g_bary,
                                const T* __restrict__ g_depth, T* grad_pos) {
  const int64_t hw = a.height * a.width;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= a.batch * hw) return;
  const int64_t b = i / hw;
  resolve_backward_pixel(pos + b * a.pos_stride, tris, a.n_vertices, a.height, a.width,
                         static_cast<T>(a.near_w), i % hw, tri_id[i], g_bary + 3 * i,
                         g_depth ? g_depth[i] : T(0), grad_pos + b * a.pos_stride);
}

template <typename T>
__global__ void interp_forward_kernel(int64_t hw, int64_t batch, int64_t C, int64_t stride,
                                      const T* __restrict__ attr, const int32_t* __restrict__ tris,
                                      const int32_t* __restrict__ tri_id,
                                      const T* __restrict__ bary, T* out) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= batch * hw) return;
  interpolate_pixel(attr + (i / hw) * stride, tris, tri_id[i], bary + 3 * i, C, out + C * i);
}

template <typename T>
__global__ void interp_backward_kernel(int64_t hw, int64_t batch, int64_t C, int64_t stride,
                                       const T* __restrict__ attr,
                                       const int32_t* __restrict__ tris,
                                       const int32_t* __restrict__ tri_id,
                                       const T* __restrict__ bary, const T* __restrict__ g_out,
                                       T* grad_attr, T* grad_bary) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= batch * hw) return;
  const int64_t b = i / hw;
  interpolate_backward_pixel(attr + b * stride, tris, tri_id[i], bary + 3 * i, C, g_out + C * i,
                             grad_attr ? grad_attr + b * stride : nullptr, grad_bary + 3 * i);
}

template <typename T>
__global__ void aa_forward_kernel(RasterArgs a, int64_t C, const T* __restrict__ color,
                                  const T* __restrict__ pos, const int32_t* __restrict__ tris,
                                  const int32_t* __restrict__ nbrs,
                                  const int32_t* __restrict__ tri_id, const T* __restrict__ depth,
                                  T* out) {
  const int64_t hw = a.height * a.width;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= a.batch * hw) return;
  const int64_t b = i / hw;
  antialias_pixel(color + b * hw * C, pos + b * a.pos_stride, tris, nbrs, a.n_vertices,
                  tri_id + b * hw, depth + b * hw, a.height, a.width, C, static_cast<T>(a.near_w),
                  i % hw, out + C * i);
}

template <typename T>
__global__ void aa_backward_kernel(RasterArgs a, int64_t C, const T* __restrict__ color,
                                   const T* __restrict__ pos, const int32_t* __restrict__ tris,
                                   const int32_t* __restrict__ nbrs,
                                   const int32_t* __restrict__ tri_id,
                                   const T* __restrict__ depth, const T* __restrict__ g_out,
                                   T* grad_color, T* grad_pos) {
  const int64_t hw = a.height * a.width;
  const int64_t k = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (k >= 2 * a.batch * hw) return;
  const int64_t i = k / 2, b = i / hw, p = i % hw;
  const int axis = static_cast<int>(k % 2);
  if (axis == 0 ? (p % a.width) + 1 >= a.width : (p / a.width) + 1 >= a.height) return;
  antialias_backward_pair(color + b * hw * C, pos + b * a.pos_stride, tris, nbrs, a.n_vertices,
                          tri_id + b * hw, depth + b * hw, a.height, a.width, C,
                          static_cast<T>(a.near_w), p, axis, g_out + b * hw * C,
                          grad_color + b * hw * C,
                          grad_pos ? grad_pos + b * a.pos_stride : nullptr);
}

}  // namespace

#define L2VSD_RASTER_DISPATCH(dtype, CALL) \
  L2VSD_DISPATCH_FLOAT_DOUBLE(dtype, "rasterize", "CUDA", CALL)

void rasterize_forward_cuda(DType dtype, const RasterArgs& a, const void* pos,
                            const int32_t* tris, uint64_t* keys, int32_t* tri_id, void* bary,
                            void* depth, cudaStream_t stream) {
  const int64_t n_pixels = a.batch * a.height * a.width;
  if (n_pixels == 0) return;
  clear_keys_kernel<<<blocks_for(n_pixels), kThreads, 0, stream>>>(keys, n_pixels);
  check_launch("clear kernel");
  const int64_t n_tris = a.batch * a.n_triangles;
  if (n_tris > 0) {
    L2VSD_RASTER_DISPATCH(dtype, (raster_kernel<T><<<blocks_for(n_tris), kThreads, 0, stream>>>(
        a, static_cast<const T*>(pos), tris, keys)));
    check_launch("coverage kernel");
  }
  L2VSD_RASTER_DISPATCH(dtype, (resolve_kernel<T><<<blocks_for(n_pixels), kThreads, 0, stream>>>(
      a, static_cast<const T*>(pos), tris, keys, tri_id, static_cast<T*>(bary),
      static_cast<T*>(depth))));
  check_launch("resolve kernel");
}

void rasterize_backward_cuda(DType dtype, const RasterArgs& a, const void* pos,
                             const int32_t* tris, const int32_t* tri_id, const void* g_bary,
                             const void* g_depth, void* grad_pos, cudaStream_t stream) {
  const int64_t n_pixels = a.batch * a.height * a.width;
  if (n_pixels == 0) return;
  L2VSD_RASTER_DISPATCH(dtype, (backward_kernel<T><<<blocks_for(n_pixels), kThreads, 0, stream>>>(
      a, static_cast<const T*>(pos), tris, tri_id, static_cast<const T*>(g_bary),
      static_cast<const T*>(g_depth), static_cast<T*>(grad_pos))));
  check_launch("backward kernel");
}

void interpolate_forward_cuda(DType dtype, int64_t hw, int64_t batch, int64_t C, int64_t stride,
                              const void* attr, const int32_t* tris, const int32_t* tri_id,
                              const void* bary, void* out, cudaStream_t stream) {
  if (hw * batch == 0) return;
  L2VSD_RASTER_DISPATCH(dtype, (interp_forward_kernel<T><<<blocks_for(hw * batch), kThreads, 0,
                                                           stream>>>(
      hw, batch, C, stride, static_cast<const T*>(attr), tris, tri_id,
      static_cast<const T*>(bary), static_cast<T*>(out))));
  check_launch("interpolate kernel");
}

void interpolate_backward_cuda(DType dtype, int64_t hw, int64_t batch, int64_t C, int64_t stride,
                               const void* attr, const int32_t* tris, const int32_t* tri_id,
                               const void* bary, const void* g_out, void* grad_attr,
                               void* grad_bary, cudaStream_t stream) {
  if (hw * batch == 0) return;
  L2VSD_RASTER_DISPATCH(dtype, (interp_backward_kernel<T><<<blocks_for(hw * batch), kThreads, 0,
                                                            stream>>>(
      hw, batch, C, stride, static_cast<const T*>(attr), tris, tri_id,
      static_cast<const T*>(bary), static_cast<const T*>(g_out), static_cast<T*>(grad_attr),
      static_cast<T*>(grad_bary))));
  check_launch("interpolate backward kernel");
}

void antialias_forward_cuda(DType dtype, const RasterArgs& a, int64_t C, const void* color,
                            const void* pos, const int32_t* tris, const int32_t* neighbors,
                            const int32_t* tri_id, const void* depth, void* out,
                            cudaStream_t stream) {
  const int64_t n_pixels = a.batch * a.height * a.width;
  if (n_pixels == 0) return;
  L2VSD_RASTER_DISPATCH(dtype, (aa_forward_kernel<T><<<blocks_for(n_pixels), kThreads, 0,
                                                       stream>>>(
      a, C, static_cast<const T*>(color), static_cast<const T*>(pos), tris, neighbors, tri_id,
      static_cast<const T*>(depth), static_cast<T*>(out))));
  check_launch("antialias kernel");
}

void antialias_backward_cuda(DType dtype, const RasterArgs& a, int64_t C, const void* color,
                             const void* pos, const int32_t* tris, const int32_t* neighbors,
                             const int32_t* tri_id, const void* depth, const void* g_out,
                             void* grad_color, void* grad_pos, cudaStream_t stream) {
  const int64_t n_pairs = 2 * a.batch * a.height * a.width;
  if (n_pairs == 0) return;
  L2VSD_RASTER_DISPATCH(dtype, (aa_backward_kernel<T><<<blocks_for(n_pairs), kThreads, 0,
                                                        stream>>>(
      a, C, static_cast<const T*>(color), static_cast<const T*>(pos), tris, neighbors, tri_id,
      static_cast<const T*>(depth), static_cast<const T*>(g_out), static_cast<T*>(grad_color),
      static_cast<T*>(grad_pos))));
  check_launch("antialias backward kernel");
}

}  // namespace rasterize
}  // namespace l2vsd

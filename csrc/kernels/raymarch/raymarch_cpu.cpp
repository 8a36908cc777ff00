// CPU launcher for ray/box intersection and occupancy-grid marching (OpenMP over rays).
#include "raymarch.h"

#include <stdexcept>

namespace l2vsd {
namespace raymarch {
namespace {

template <typename T>
void ray_aabb_impl(const T* o, const T* d, const T* aabb, int64_t n, T* tn, T* tf, uint8_t* hit) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < n; ++r) hit[r] = ray_aabb(o + 3 * r, d + 3 * r, aabb, tn + r, tf + r);
}

template <typename T>
void count_impl(const T* o, const T* d, const T* t_min, const T* t_max, const T* off, int64_t n,
                const Grid& g, const uint8_t* bits, const MarchOptions& opt, int64_t* counts) {
#pragma omp parallel for schedule(dynamic, 64)
  for (int64_t r = 0; r < n; ++r)
    counts[r] = march_ray(g, bits, opt, o + 3 * r, d + 3 * r, t_min[r], t_max[r],
                          off ? off[r] : T(0), false, [](int32_t, T, T) {});
}

template <typename T>
void fill_impl(const T* o, const T* d, const T* t_min, const T* t_max, const T* off, int64_t n,
               const Grid& g, const uint8_t* bits, const MarchOptions& opt,
               const int64_t* offsets, int64_t* ray_indices, T* ts, T* te) {
#pragma omp parallel for schedule(dynamic, 64)
  for (int64_t r = 0; r < n; ++r)
    fill_ray(g, bits, opt, o + 3 * r, d + 3 * r, t_min[r], t_max[r], off ? off[r] : T(0), r,
             offsets[r], offsets[r + 1], ray_indices, ts, te);
}

}  // namespace

#define L2VSD_RAYMARCH_DISPATCH(dtype, CALL) \
  L2VSD_DISPATCH_FLOAT_DOUBLE(dtype, "raymarch", "CPU", CALL)

void ray_aabb_cpu(DType dtype, const void* rays_o, const void* rays_d, const void* aabb,
                  int64_t n, void* t_near, void* t_far, uint8_t* hit) {
  L2VSD_RAYMARCH_DISPATCH(dtype, ray_aabb_impl<T>(
      static_cast<const T*>(rays_o), static_cast<const T*>(rays_d), static_cast<const T*>(aabb),
      n, static_cast<T*>(t_near), static_cast<T*>(t_far), hit));
}

void march_count_cpu(DType dtype, const void* rays_o, const void* rays_d, const void* t_min,
                     const void* t_max, const void* offset, int64_t n, const Grid& grid,
                     const uint8_t* bits, const MarchOptions& opt, int64_t* counts) {
  L2VSD_RAYMARCH_DISPATCH(dtype, count_impl<T>(
      static_cast<const T*>(rays_o), static_cast<const T*>(rays_d),
      static_cast<const T*>(t_min), static_cast<const T*>(t_max), static_cast<const T*>(offset),
      n, grid, bits, opt, counts));
}

void march_fill_cpu(DType dtype, const void* rays_o, const void* rays_d, const void* t_min,
                    const void* t_max, const void* offset, int64_t n, const Grid& grid,
                    const uint8_t* bits, const MarchOptions& opt, const int64_t* offsets,
                    int64_t* ray_indices, void* t_starts, void* t_ends) {
  L2VSD_RAYMARCH_DISPATCH(dtype, fill_impl<T>(
      static_cast<const T*>(rays_o), static_cast<const T*>(rays_d),
      static_cast<const T*>(t_min), static_cast<const T*>(t_max), static_cast<const T*>(offset),
      n, grid, bits, opt, offsets, ray_indices, static_cast<T*>(t_starts),
      static_cast<T*>(t_ends)));
}

}  // namespace raymarch
}  // namespace l2vsd

// Ray/box intersection and occupancy-grid ray marching (nerfacc's packed sample layout): the
// per-ray math shared by the CPU and CUDA launchers. Marching runs twice per ray, once to count
// the samples (so the caller can size the packed buffers with a prefix sum) and once to write them.
#pragma once

#include <cmath>
#include <cstdint>

#include "../common.h"

namespace l2vsd {
namespace raymarch {

// nerfacc's value for t_near/t_far of a ray that misses the box.
constexpr double kMissT = 1e10;

HD float ceil_of(float v) { return ceilf(v); }
HD double ceil_of(double v) { return ::ceil(v); }
// v - v is NaN for both infinities and NaN; the same spelling works under g++ and nvcc.
template <typename T> HD bool is_finite(T v) { return v - v == T(0); }

template <typename T> HD T min_of(T a, T b) { return a < b ? a : b; }
template <typename T> HD T max_of(T a, T b) { return a > b ? a : b; }

// Slab test against aabb = (xmin, ymin, zmin, xmax, ymax, zmax). A hit needs t_far >= t_near and
// t_far > 0 (the box is not entirely behind the origin); t_near may be negative when the origin is
// inside. Non-finite origins/directions and zero-length directions are misses, never NaN.
template <typename T>
HD bool ray_aabb(const T* o, const T* d, const T* aabb, T* t_near, T* t_far) {
  T lo = -INFINITY, hi = INFINITY;
  bool valid = true, moving = false;
  for (int k = 0; k < 3; ++k) {
    valid = valid && is_finite(o[k]) && is_finite(d[k]);
    moving = moving || d[k] != T(0);
  }
  if (valid && moving) {
    for (int k = 0; k < 3; ++k) {
      if (d[k] == T(0)) {
        // Parallel to this slab: inside it for all t, or never.
        if (o[k] < aabb[k] || o[k] > aabb[k + 3]) valid = false;
        continue;
      }
      const T inv = T(1) / d[k];
      T t0 = (aabb[k] - o[k]) * inv, t1 = (aabb[k + 3] - o[k]) * inv;
      if (t0 > t1) { const T s = t0; t0 = t1; t1 = s; }
      lo = max_of(lo, t0);
      hi = min_of(hi, t1);
    }
  }
  const bool hit = valid && moving && hi >= lo && hi > T(0);
  *t_near = hit ? lo : T(kMissT);
  *t_far = hit ? hi : T(kMissT);
  return hit;
}

// The occupancy grid: a bitfield over res[0] x res[1] x res[2] cells spanning the aabb, cell
// (i, j, k) at bit (i * res[1] + j) * res[2] + k (nerfacc's order), bit b in byte b / 8.
struct Grid {
  float aabb[6];
  int32_t res[3];
};

struct MarchOptions {
  float step_size;     // render_step_size: the step near the camera
  float cone_angle;    // step grows as t * cone_angle (0: uniform steps)
  int32_t max_samples; // per ray
};

// Cell holding point p, or -1 outside the grid.
template <typename T>
HD int64_t cell_of(const Grid& g, const T* p, int32_t* ijk) {
  for (int k = 0; k < 3; ++k) {
    const T u = (p[k] - T(g.aabb[k])) / (T(g.aabb[k + 3]) - T(g.aabb[k])) * T(g.res[k]);
    if (!(u >= T(0)) || u > T(g.res[k])) return -1;
    const int32_t c = static_cast<int32_t>(u);
    ijk[k] = c < g.res[k] ? c : g.res[k] - 1;
  }
  return (static_cast<int64_t>(ijk[0]) * g.res[1] + ijk[1]) * g.res[2] + ijk[2];
}

HD bool occupied(const uint8_t* bits, int64_t cell) {
  return cell >= 0 && ((bits[cell >> 3] >> (cell & 7)) & 1);
}

// Ray parameter where the ray leaves cell ijk.
template <typename T>
HD T cell_exit(const Grid& g, const T* o, const T* d, const int32_t* ijk) {
  T t_exit = INFINITY;
  for (int k = 0; k < 3; ++k) {
    if (d[k] == T(0)) continue;
    const T size = (T(g.aabb[k + 3]) - T(g.aabb[k])) / T(g.res[k]);
    const T bound = T(g.aabb[k]) + T(ijk[k] + (d[k] > T(0) ? 1 : 0)) * size;
    t_exit = min_of(t_exit, (bound - o[k]) / d[k]);
  }
  return t_exit;
}

// Marches [t_min, t_max] from t_min + offset * step (offset in [0,1): stratified jitter). Each
// step is a segment [t0, t1] (t1 clipped to t_max); it is kept when the cell of its midpoint is
// occupied. An empty cell is skipped whole: we jump by whole steps to the first one whose midpoint
// lies past the cell, so samples stay on the ray's step lattice. emit(k, t0, t1) is called for
// the k-th kept sample when `write` is true; returns the number kept (at most max_samples).
template <typename T, typename Emit>
HD int32_t march_ray(const Grid& g, const uint8_t* bits, const MarchOptions& opt, const T* o,
                     const T* d, T t_min, T t_max, T offset, bool write, Emit emit) {
  if (!(t_min < t_max) || !is_finite(t_min) || !is_finite(t_max)) return 0;
  const T base = T(opt.step_size);
  auto step_at = [&](T t) { return max_of(base, t * T(opt.cone_angle)); };
  T t0 = t_min + offset * step_at(t_min);
  int32_t n = 0;
  while (t0 < t_max && n < opt.max_samples) {
    const T dt = step_at(t0);
    const T t1 = min_of(t0 + dt, t_max);
    const T mid = T(0.5) * (t0 + t1);
    T p[3];
    for (int k = 0; k < 3; ++k) p[k] = o[k] + mid * d[k];
    int32_t ijk[3];
    const int64_t cell = cell_of(g, p, ijk);
    if (occupied(bits, cell)) {
      if (write) emit(n, t0, t1);
      ++n;
      t0 += dt;
    } else if (cell >= 0) {
      const T t_exit = cell_exit(g, o, d, ijk);
      const T jumps = ceil_of((t_exit - t0) / dt - T(0.5));
      t0 += dt * max_of(T(1), jumps);
    } else {
      t0 += dt;
    }
  }
  return n;
}

// The fill pass for ray `ray`: re-marches it and writes its samples into its slot [begin, end)
// of the packed arrays (the prefix sum of the count pass). The march stops at the slot's end, so a
// ray that yields more samples than it was counted with (the grid updated between the passes, a
// differently contracted multiply-add) cannot overwrite the next ray's slot; slots it leaves
// unfilled get zero-length samples at its last t (no weight) instead of uninitialised memory.
template <typename T>
HD void fill_ray(const Grid& g, const uint8_t* bits, MarchOptions opt, const T* o, const T* d,
                 T t_min, T t_max, T offset, int64_t ray, int64_t begin, int64_t end,
                 int64_t* ray_indices, T* ts, T* te) {
  if (end <= begin) return;
  if (end - begin < opt.max_samples) opt.max_samples = static_cast<int32_t>(end - begin);
  T last = is_finite(t_min) ? t_min : T(0);
  const int32_t written =
      march_ray(g, bits, opt, o, d, t_min, t_max, offset, true, [&](int32_t k, T t0, T t1) {
        ray_indices[begin + k] = ray;
        ts[begin + k] = t0;
        te[begin + k] = t1;
        last = t1;
      });
  for (int64_t i = begin + written; i < end; ++i) {
    ray_indices[i] = ray;
    ts[i] = last;
    te[i] = last;
  }
}

}  // namespace raymarch
}  // namespace l2vsd

namespace l2vsd {
namespace raymarch {

// Launchers. rays: (n, 3) row-major; aabb: 6 values of the rays' dtype; outputs t_near, t_far (n),
// hit (n, bool as uint8).
void ray_aabb_cpu(DType dtype, const void* rays_o, const void* rays_d, const void* aabb,
                  int64_t n, void* t_near, void* t_far, uint8_t* hit);
void ray_aabb_cuda(DType dtype, const void* rays_o, const void* rays_d, const void* aabb,
                   int64_t n, void* t_near, void* t_far, uint8_t* hit, cudaStream_t stream);

// Marching. t_min/t_max/offset: (n) in the rays' dtype (offset may be null: no jitter).
// count pass: writes counts (n) int64. fill pass: offsets (n+1) from the exclusive prefix sum of
// counts; writes ray_indices (int64), t_starts, t_ends at [offsets[r], offsets[r+1]).
void march_count_cpu(DType dtype, const void* rays_o, const void* rays_d, const void* t_min,
                     const void* t_max, const void* offset, int64_t n, const Grid& grid,
                     const uint8_t* bits, const MarchOptions& opt, int64_t* counts);
void march_fill_cpu(DType dtype, const void* rays_o, const void* rays_d, const void* t_min,
                    const void* t_max, const void* offset, int64_t n, const Grid& grid,
                    const uint8_t* bits, const MarchOptions& opt, const int64_t* offsets,
                    int64_t* ray_indices, void* t_starts, void* t_ends);
void march_count_cuda(DType dtype, const void* rays_o, const void* rays_d, const void* t_min,
                      const void* t_max, const void* offset, int64_t n, const Grid& grid,
                      const uint8_t* bits, const MarchOptions& opt, int64_t* counts,
                      cudaStream_t stream);
void march_fill_cuda(DType dtype, const void* rays_o, const void* rays_d, const void* t_min,
                     const void* t_max, const void* offset, int64_t n, const Grid& grid,
                     const uint8_t* bits, const MarchOptions& opt, const int64_t* offsets,
                     int64_t* ray_indices, void* t_starts, void* t_ends, cudaStream_t stream);

}  // namespace raymarch
}  // namespace l2vsd

// Multi-resolution hash-grid encoding (tiny-cuda-nn's HashGrid layout, see shared DESIGN.md):
// the per-point, per-level math shared by the CPU launcher and the CUDA launcher.
#pragma once

#include <cmath>
#include <cstdint>

#include "../common.h"

namespace l2vsd {
namespace hashgrid {

constexpr int kMaxLevels = 32;
constexpr int kMaxDims = 3;
// Largest level scale (cells per side) a layout may have: past 2^24 a float32 x * scale + 0.5 no
// longer resolves the fraction inside a cell, and the float-to-integer conversions of the scale
// and of cell coordinates stay far inside their types' range.
constexpr double kMaxScale = 16777216.0;  // 2^24

struct LevelLayout {
  float scale;          // base_resolution * per_level_scale^level - 1
  uint32_t resolution;  // ceil(scale) + 1 vertices per side
  uint32_t offset;      // first table entry of this level
  uint32_t size;        // entries in this level (multiple of 8)
};

// Passed by value to CUDA kernels, so it lives in the parameter space and needs no device copy.
struct GridLayout {
  int n_dims;
  int n_levels;
  int n_features;
  uint32_t n_entries;  // total entries over all levels
  LevelLayout levels[kMaxLevels];
};

HD uint32_t next_multiple(uint32_t value, uint32_t multiple) {
  return (value + multiple - 1) / multiple * multiple;
}

// tiny-cuda-nn evaluates exp2f(level * log2f(per_level_scale)) * base - 1 in float, whose last bit
// depends on the libm. We evaluate base * pow(per_level_scale, level) - 1 in double and round once
// to float: reproducible (the Python reference gets the same bits) and within an ulp of tcnn, so
// the resolutions (a ceil) and hence the table layout are the same.
inline float level_scale(int level, double per_level_scale, uint32_t base_resolution) {
  return static_cast<float>(static_cast<double>(base_resolution) *
                                std::pow(per_level_scale, static_cast<double>(level)) - 1.0);
}

// Bounded: a scale outside [0, kMaxScale] (make_layout refuses those) maps to the nearest bound
// instead of an undefined float-to-integer conversion.
inline uint32_t level_resolution(float scale) {
  const double s = std::isnan(scale) ? 0.0 : std::fmin(std::fmax(double(scale), 0.0), kMaxScale);
  return static_cast<uint32_t>(std::ceil(s)) + 1u;
}

// Entries of one level: res^D rounded up to a multiple of 8, capped at 2^log2_hashmap_size.
inline uint32_t level_size(uint32_t resolution, int n_dims, int log2_hashmap_size) {
  const uint32_t max_params = 0xffffffffu / 2;
  uint32_t dense;
  if (std::pow(static_cast<float>(resolution), static_cast<float>(n_dims)) >
      static_cast<float>(max_params)) {
    dense = max_params;
  } else {
    dense = 1;
    for (int d = 0; d < n_dims; ++d) dense *= resolution;
  }
  dense = next_multiple(dense, 8u);
  const uint32_t cap = 1u << log2_hashmap_size;
  return dense < cap ? dense : cap;
}

// Returns false (and leaves `out` unspecified) when the configuration has too many levels/dims
// or a level's scale is not in [0, kMaxScale] (see max_level_scale()).
inline double max_level_scale(int n_levels, double per_level_scale, uint32_t base_resolution) {
  return static_cast<double>(base_resolution) *
             std::pow(per_level_scale, static_cast<double>(n_levels - 1)) - 1.0;
}

inline bool make_layout(int n_dims, int n_levels, int n_features, int log2_hashmap_size,
                        uint32_t base_resolution, double per_level_scale, GridLayout* out) {
  if (n_dims < 1 || n_dims > kMaxDims || n_levels < 1 || n_levels > kMaxLevels) return false;
  const double finest = max_level_scale(n_levels, per_level_scale, base_resolution);
  if (!(finest <= kMaxScale) || !(per_level_scale >= 1.0)) return false;
  out->n_dims = n_dims;
  out->n_levels = n_levels;
  out->n_features = n_features;
  uint32_t offset = 0;
  for (int l = 0; l < n_levels; ++l) {
    LevelLayout& lv = out->levels[l];
    lv.scale = level_scale(l, per_level_scale, base_resolution);
    lv.resolution = level_resolution(lv.scale);
    lv.offset = offset;
    lv.size = level_size(lv.resolution, n_dims, log2_hashmap_size);
    offset += lv.size;
  }
  out->n_entries = offset;
  return true;
}

// tiny-cuda-nn's coherent prime hash.
template <int D>
HD uint32_t coherent_hash(const uint32_t* pos) {
  constexpr uint32_t primes[3] = {1u, 2654435761u, 805459861u};
  uint32_t result = 0;
  L2VSD_UNROLL
  for (int d = 0; d < D; ++d) result ^= pos[d] * primes[d];
  return result;
}

// Dense index while the level fits in its table, hash otherwise; the stride test stops before
// uint32 overflow exactly where tiny-cuda-nn stops.
template <int D>
HD uint32_t grid_index(const uint32_t* pos, uint32_t resolution, uint32_t size) {
  uint32_t stride = 1;
  uint32_t index = 0;
  L2VSD_UNROLL
  for (int d = 0; d < D; ++d) {
    if (stride > size) break;
    index += pos[d] * stride;
    stride *= resolution;
  }
  if (size < stride) index = coherent_hash<D>(pos);
  return index % size;
}

// floor(x * scale + 0.5) as tiny-cuda-nn's (uint32_t)(int) cast, but defined for every input: an
// unclamped x far outside [0, 1] (or NaN) would make the float-to-int conversion undefined (x86
// gives INT_MIN, the GPU saturates), so values beyond int32 saturate and NaN maps to cell 0.
template <typename T>
HD uint32_t cell_coordinate(T fl) {
  if (!(fl == fl)) return 0u;
  if (fl <= T(-2147483648.0)) return 0x80000000u;
  if (fl >= T(2147483647.0)) return 0x7fffffffu;
  return static_cast<uint32_t>(static_cast<int>(fl));
}

// Splits x*scale + 0.5 into the integer cell and the fraction used for trilinear weights.
// With clamp, x is clamped to [0,1] first and `inside` reports whether it was already there.
template <typename T>
HD void cell_and_fraction(T x, float scale, bool clamp, uint32_t* cell, T* frac, bool* inside) {
  *inside = (x >= T(0) && x <= T(1));
  if (clamp && !*inside) x = x < T(0) ? T(0) : T(1);
  const T pos = fused_multiply_add(x, cast_to<T>(scale), T(0.5));  // fmaf, as tiny-cuda-nn
  const T fl = floor_of(pos);
  *cell = cell_coordinate(fl);
  *frac = pos - fl;
}

// Weight of a corner (bit d of `corner` picks cell+1 along d) and its derivative w.r.t. frac[d].
template <int D, typename T>
HD T corner_weight(const T* frac, int corner) {
  T w = T(1);
  L2VSD_UNROLL
  for (int d = 0; d < D; ++d) w *= ((corner >> d) & 1) ? frac[d] : T(1) - frac[d];
  return w;
}

template <int D, typename T>
HD T corner_weight_dfrac(const T* frac, int corner, int dim) {
  T w = T(1);
  L2VSD_UNROLL
  for (int d = 0; d < D; ++d) {
    const bool hi = (corner >> d) & 1;
    if (d == dim) w *= hi ? T(1) : T(-1);
    else w *= hi ? frac[d] : T(1) - frac[d];
  }
  return w;
}

template <int D>
HD uint32_t corner_entry(const uint32_t* cell, int corner, const LevelLayout& lv) {
  uint32_t pos[D];
  L2VSD_UNROLL
  for (int d = 0; d < D; ++d) pos[d] = cell[d] + ((corner >> d) & 1);
  return lv.offset + grid_index<D>(pos, lv.resolution, lv.size);
}

// Forward for one point and one level: writes F features to out[0..F).
// A = arithmetic type (float/double), T = table storage type, X = input type.
template <int D, typename A, typename T, typename X, typename O>
HD void encode_point_level(const X* x, const T* table, const LevelLayout& lv, int F, bool clamp,
                           O* out) {
  uint32_t cell[D];
  A frac[D];
  bool inside;
  L2VSD_UNROLL
  for (int d = 0; d < D; ++d) cell_and_fraction<A>(cast_to<A>(x[d]), lv.scale, clamp, &cell[d], &frac[d], &inside);
  // Each feature sums its corners in A (float32 for float16 tables, as the CUDA register path
  // does), in corner order, and is rounded to O once: accumulating in `out` itself would round
  // every partial sum to float16.
  A w[1 << D];
  const T* entry[1 << D];
  L2VSD_UNROLL
  for (int c = 0; c < (1 << D); ++c) {
    w[c] = corner_weight<D, A>(frac, c);
    entry[c] = table + static_cast<size_t>(corner_entry<D>(cell, c, lv)) * F;
  }
  for (int f = 0; f < F; ++f) {
    A acc = A(0);
    L2VSD_UNROLL
    for (int c = 0; c < (1 << D); ++c) acc += w[c] * cast_to<A>(entry[c][f]);
    out[f] = cast_to<O>(acc);
  }
}

// Backward w.r.t. the table for one point and one level: adds w_c * dy[f] into each corner entry
// through `add` (atomic on the GPU, plain where a launcher gives each level a single owner).
template <int D, typename A, typename T, typename X, typename G, typename Add>
HD void backward_table_point_level(const X* x, const G* dy, const LevelLayout& lv, int F,
                                   bool clamp, T* grad_table, Add add) {
  uint32_t cell[D];
  A frac[D];
  bool inside;
  L2VSD_UNROLL
  for (int d = 0; d < D; ++d) cell_and_fraction<A>(cast_to<A>(x[d]), lv.scale, clamp, &cell[d], &frac[d], &inside);
  for (int c = 0; c < (1 << D); ++c) {
    const A w = corner_weight<D, A>(frac, c);
    T* entry = grad_table + static_cast<size_t>(corner_entry<D>(cell, c, lv)) * F;
    for (int f = 0; f < F; ++f) add(entry + f, w * cast_to<A>(dy[f]));
  }
}

// Backward w.r.t. the input for one point and one level: accumulates into dx[0..D).
// A clamped coordinate has zero derivative (the clamp's own derivative).
template <int D, typename A, typename T, typename X, typename G>
HD void backward_input_point_level(const X* x, const G* dy, const T* table, const LevelLayout& lv,
                                   int F, bool clamp, A* dx) {
  uint32_t cell[D];
  A frac[D];
  bool inside[D];
  L2VSD_UNROLL
  for (int d = 0; d < D; ++d) cell_and_fraction<A>(cast_to<A>(x[d]), lv.scale, clamp, &cell[d], &frac[d], &inside[d]);
  for (int c = 0; c < (1 << D); ++c) {
    const T* entry = table + static_cast<size_t>(corner_entry<D>(cell, c, lv)) * F;
    A dot = A(0);
    for (int f = 0; f < F; ++f) dot += cast_to<A>(dy[f]) * cast_to<A>(entry[f]);
  L2VSD_UNROLL
    for (int d = 0; d < D; ++d) {
      if (clamp && !inside[d]) continue;
      dx[d] += dot * corner_weight_dfrac<D, A>(frac, c, d) * cast_to<A>(lv.scale);
    }
  }
}

}  // namespace hashgrid
}  // namespace l2vsd

namespace l2vsd {
namespace hashgrid {

// Launchers. x: (N, n_dims) row-major; table: (n_entries, F); out/dy: (N, n_levels*F), level-major.
// dtype is the table's; x shares it except for float16 tables (CUDA only), whose x is float32.
// grad_table must be zeroed by the caller; dx is written (not accumulated). On CUDA grad_table
// has grad_dtype: float32 for float16 tables (half atomics lose small terms) or float64 (the
// deterministic option), which the caller rounds to the table's dtype afterwards.
void forward_cpu(DType dtype, const void* x, const void* table, void* out, int64_t n,
                 const GridLayout& layout, bool clamp);
void backward_cpu(DType dtype, const void* x, const void* dy, const void* table, void* grad_table,
                  void* dx, int64_t n, const GridLayout& layout, bool clamp);

void forward_cuda(DType dtype, const void* x, const void* table, void* out, int64_t n,
                  const GridLayout& layout, bool clamp, cudaStream_t stream);
void backward_cuda(DType dtype, DType grad_dtype, const void* x, const void* dy,
                   const void* table, void* grad_table, void* dx, int64_t n,
                   const GridLayout& layout, bool clamp, cudaStream_t stream);

}  // namespace hashgrid
}  // namespace l2vsd

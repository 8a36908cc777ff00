// CPU launcher for the hash-grid encoding. Same math as the per-point bodies in hashgrid.h, laid
// out for a CPU, where the cost is waiting on the table: every point reads 2^D random table rows
// per level, and the fine levels (2^log2_hashmap_size rows each) are larger than L2.
//
// - Level-major: all points of one level before the next, so the rows being read stay within one
//   level's slice of the table (L3-resident) instead of all levels' (larger than L3).
// - Per level the corner rows come from per-dimension parts (cell * stride for dense levels,
//   cell * prime for hashed ones) combined per corner, and the modulo is a mask for the
//   power-of-two hashed levels: no integer division per corner.
// - Software pipeline: the rows of the next kBatch points are computed and prefetched while the
//   current batch is accumulated, so the table misses overlap instead of queueing one by one.
// - The table gradient is parallel over levels: each level's slice has one owner thread, which
//   zeroes it (while it is about to be hot in cache) and adds into it in point order, so there
//   are no atomics and the sums are bit-identical whatever the thread count.
// Results are bit-identical to the per-point bodies (same products, same summation order).
#include "hashgrid.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <type_traits>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace l2vsd {
namespace hashgrid {
namespace {

constexpr int kBatch = 8;  // points whose rows are in flight ahead of the accumulation

// A table row for each corner of one level, from per-dimension parts; mirrors grid_index().
struct LevelIndexer {
  uint32_t offset = 0, size = 1, mask = 0;
  bool hashed = false, pow2 = false;
  uint32_t factor[kMaxDims] = {0, 0, 0};  // dense: res^d; hashed: the coherent-hash primes

  LevelIndexer(const LevelLayout& lv, int n_dims) : offset(lv.offset), size(lv.size) {
    // grid_index()'s stride walk, wrap-around included, decides dense vs hashed.
    uint32_t stride = 1;
    for (int d = 0; d < n_dims; ++d) {
      if (stride > size) break;
      factor[d] = stride;
      stride *= lv.resolution;
    }
    hashed = size < stride;
    if (hashed) {
      constexpr uint32_t primes[3] = {1u, 2654435761u, 805459861u};
      for (int d = 0; d < n_dims; ++d) factor[d] = primes[d];
    }
    pow2 = (size & (size - 1)) == 0;
    mask = size - 1;
  }

  uint32_t reduce(uint32_t index) const {
    if (pow2) return index & mask;
    return index < size ? index : index % size;  // a dense index reaches size only at x = 1
  }
};

// Everything one point needs at one level: corner rows, corner weights, and (for the input
// gradient) the fractions and which coordinates were inside [0, 1].
template <int D, typename A>
struct PointCorners {
  uint32_t row[1 << D];
  A weight[1 << D];
  A frac[D];
  bool inside[D];
};

template <int D, typename A, typename X>
inline void point_corners(const X* x, const LevelIndexer& ix, float scale, bool clamp,
                          PointCorners<D, A>* pc) {
  uint32_t part[D][2];
  A side[D][2];
  for (int d = 0; d < D; ++d) {
    uint32_t cell;
    cell_and_fraction<A>(static_cast<A>(x[d]), scale, clamp, &cell, &pc->frac[d], &pc->inside[d]);
    part[d][0] = cell * ix.factor[d];
    part[d][1] = (cell + 1u) * ix.factor[d];
    side[d][0] = A(1) - pc->frac[d];
    side[d][1] = pc->frac[d];
  }
  for (int c = 0; c < (1 << D); ++c) {
    uint32_t index = part[0][c & 1];
    A w = side[0][c & 1];  // corner_weight()'s product, same order
    for (int d = 1; d < D; ++d) {
      const int bit = (c >> d) & 1;
      index = ix.hashed ? (index ^ part[d][bit]) : (index + part[d][bit]);
      w *= side[d][bit];
    }
    pc->row[c] = ix.offset + ix.reduce(index);
    pc->weight[c] = w;
  }
}

// Walks points [begin, end) of one level in batches; the rows of batch k+1 are prefetched
// (for writing when `for_write`) before batch k is consumed.
template <int D, typename A, typename X, typename R, typename Consume>
inline void pipelined_level(const X* x, int64_t begin, int64_t end, const LevelIndexer& ix,
                            float scale, bool clamp, const R* rows, int row_len, bool for_write,
                            Consume consume) {
  PointCorners<D, A> batch[2][kBatch];
  auto stage = [&](int64_t start, PointCorners<D, A>* dst) {
    const int count = static_cast<int>(std::min<int64_t>(kBatch, end - start));
    for (int j = 0; j < count; ++j) {
      point_corners<D, A>(x + (start + j) * D, ix, scale, clamp, &dst[j]);
      for (int c = 0; c < (1 << D); ++c) {
        const R* p = rows + static_cast<size_t>(dst[j].row[c]) * row_len;
        if (for_write) __builtin_prefetch(p, 1, 3);
        else __builtin_prefetch(p, 0, 3);
      }
    }
  };
  if (begin >= end) return;
  stage(begin, batch[0]);
  int k = 0;
  for (int64_t start = begin; start < end; start += kBatch, k ^= 1) {
    if (start + kBatch < end) stage(start + kBatch, batch[k ^ 1]);
    const int count = static_cast<int>(std::min<int64_t>(kBatch, end - start));
    for (int j = 0; j < count; ++j) consume(start + j, batch[k][j]);
  }
}

// This thread's share [begin, end) of n points; the same split for every level, so a thread
// keeps writing the same output rows.
inline void thread_range(int64_t n, int64_t* begin, int64_t* end) {
#ifdef _OPENMP
  const int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
#else
  const int64_t t = 0, nt = 1;
#endif
  *begin = n * t / nt;
  *end = n * (t + 1) / nt;
}

// kF > 0: the feature count as a compile-time constant (unrolled); kF == 0: runtime F.
template <int D, int kF, typename T>
void forward_impl(const T* x, const T* table, T* out, int64_t n, const GridLayout& layout,
                  bool clamp) {
  const int L = layout.n_levels, F = kF > 0 ? kF : layout.n_features;
#pragma omp parallel
  {
    int64_t begin, end;
    thread_range(n, &begin, &end);
    for (int l = 0; l < L; ++l) {
      const LevelIndexer ix(layout.levels[l], D);
      pipelined_level<D, T>(x, begin, end, ix, layout.levels[l].scale, clamp, table, F, false,
                            [&](int64_t i, const PointCorners<D, T>& pc) {
        T acc[kF > 0 ? kF : 64];
        for (int f = 0; f < F; ++f) acc[f] = T(0);
        for (int c = 0; c < (1 << D); ++c) {
          const T* entry = table + static_cast<size_t>(pc.row[c]) * F;
          for (int f = 0; f < F; ++f) acc[f] = acc[f] + pc.weight[c] * entry[f];
        }
        T* o = out + (i * L + l) * F;
        for (int f = 0; f < F; ++f) o[f] = acc[f];
      });
    }
  }
}

// Fine (expensive) levels first, so the dynamic schedule ends on cheap ones.
template <int D, int kF, typename T>
void backward_table_impl(const T* x, const T* dy, T* grad_table, int64_t n,
                         const GridLayout& layout, bool clamp) {
  const int L = layout.n_levels, F = kF > 0 ? kF : layout.n_features;
#pragma omp parallel for schedule(dynamic, 1)
  for (int k = 0; k < L; ++k) {
    const int l = L - 1 - k;
    const LevelLayout& lv = layout.levels[l];
    std::memset(grad_table + static_cast<size_t>(lv.offset) * F, 0,
                static_cast<size_t>(lv.size) * F * sizeof(T));
    const LevelIndexer ix(lv, D);
    pipelined_level<D, T>(x, 0, n, ix, lv.scale, clamp, grad_table, F, true,
                          [&](int64_t i, const PointCorners<D, T>& pc) {
      const T* g = dy + (i * L + l) * F;
      for (int c = 0; c < (1 << D); ++c) {
        T* entry = grad_table + static_cast<size_t>(pc.row[c]) * F;
        for (int f = 0; f < F; ++f) entry[f] += pc.weight[c] * g[f];
      }
    });
  }
}

// Each point's dx has one owner thread (the same split for every level); level-major as above.
template <int D, int kF, typename T>
void backward_input_impl(const T* x, const T* dy, const T* table, T* dx, int64_t n,
                         const GridLayout& layout, bool clamp) {
  const int L = layout.n_levels, F = kF > 0 ? kF : layout.n_features;
#pragma omp parallel
  {
    int64_t begin, end;
    thread_range(n, &begin, &end);
    std::fill(dx + begin * D, dx + end * D, T(0));
    for (int l = 0; l < L; ++l) {
      const LevelIndexer ix(layout.levels[l], D);
      const T scale = static_cast<T>(layout.levels[l].scale);
      pipelined_level<D, T>(x, begin, end, ix, layout.levels[l].scale, clamp, table, F, false,
                            [&](int64_t i, const PointCorners<D, T>& pc) {
        const T* g = dy + (i * L + l) * F;
        T* d_x = dx + i * D;
        for (int c = 0; c < (1 << D); ++c) {
          const T* entry = table + static_cast<size_t>(pc.row[c]) * F;
          T dot = T(0);
          for (int f = 0; f < F; ++f) dot += g[f] * entry[f];
          for (int d = 0; d < D; ++d) {
            if (clamp && !pc.inside[d]) continue;
            d_x[d] += dot * corner_weight_dfrac<D, T>(pc.frac, c, d) * scale;
          }
        }
      });
    }
  }
}

// Calls KERNEL<D, kF, T>(args...) for the layout's dims and feature count.
#define L2VSD_HASHGRID_DISPATCH(KERNEL, T, layout, ...)                                     \
  do {                                                                                      \
    const int dims_ = (layout).n_dims, feats_ = (layout).n_features;                        \
    auto by_features_ = [&](auto dims_tag) {                                                \
      constexpr int D_ = decltype(dims_tag)::value;                                         \
      switch (feats_) {                                                                     \
        case 1: KERNEL<D_, 1, T>(__VA_ARGS__); break;                                       \
        case 2: KERNEL<D_, 2, T>(__VA_ARGS__); break;                                       \
        case 4: KERNEL<D_, 4, T>(__VA_ARGS__); break;                                       \
        case 8: KERNEL<D_, 8, T>(__VA_ARGS__); break;                                       \
        default: KERNEL<D_, 0, T>(__VA_ARGS__); break;                                      \
      }                                                                                     \
    };                                                                                      \
    switch (dims_) {                                                                        \
      case 1: by_features_(std::integral_constant<int, 1>()); break;                        \
      case 2: by_features_(std::integral_constant<int, 2>()); break;                        \
      case 3: by_features_(std::integral_constant<int, 3>()); break;                        \
      default: throw std::invalid_argument("hashgrid: n_dims must be 1, 2 or 3");           \
    }                                                                                       \
  } while (0)

template <typename T>
void forward_typed(const void* x, const void* table, void* out, int64_t n,
                   const GridLayout& layout, bool clamp) {
  L2VSD_HASHGRID_DISPATCH(forward_impl, T, layout, static_cast<const T*>(x),
                          static_cast<const T*>(table), static_cast<T*>(out), n, layout, clamp);
}

template <typename T>
void backward_typed(const void* x, const void* dy, const void* table, void* grad_table, void* dx,
                    int64_t n, const GridLayout& layout, bool clamp) {
  auto xs = static_cast<const T*>(x);
  auto g = static_cast<const T*>(dy);
  if (grad_table) {
    L2VSD_HASHGRID_DISPATCH(backward_table_impl, T, layout, xs, g, static_cast<T*>(grad_table),
                            n, layout, clamp);
  }
  if (dx) {
    L2VSD_HASHGRID_DISPATCH(backward_input_impl, T, layout, xs, g, static_cast<const T*>(table),
                            static_cast<T*>(dx), n, layout, clamp);
  }
}

#undef L2VSD_HASHGRID_DISPATCH

}  // namespace

void forward_cpu(DType dtype, const void* x, const void* table, void* out, int64_t n,
                 const GridLayout& layout, bool clamp) {
  switch (dtype) {
    case DType::kFloat32: forward_typed<float>(x, table, out, n, layout, clamp); break;
    case DType::kFloat64: forward_typed<double>(x, table, out, n, layout, clamp); break;
    default: throw std::invalid_argument("hashgrid: the CPU kernel supports float32 and float64");
  }
}

// grad_table is overwritten level by level (each owner zeroes its slice), so the caller may pass
// uninitialised memory; zeroed memory works too.
void backward_cpu(DType dtype, const void* x, const void* dy, const void* table, void* grad_table,
                  void* dx, int64_t n, const GridLayout& layout, bool clamp) {
  switch (dtype) {
    case DType::kFloat32:
      backward_typed<float>(x, dy, table, grad_table, dx, n, layout, clamp);
      break;
    case DType::kFloat64:
      backward_typed<double>(x, dy, table, grad_table, dx, n, layout, clamp);
      break;
    default: throw std::invalid_argument("hashgrid: the CPU kernel supports float32 and float64");
  }
}

}  // namespace hashgrid
}  // namespace l2vsd

// CPU launcher for the hash-grid encoding: OpenMP loops over the HD bodies in hashgrid.h.
#include "hashgrid.h"

#include <algorithm>
#include <stdexcept>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace l2vsd {
namespace hashgrid {
namespace {

struct PlainAdd {
  template <typename T, typename V>
  void operator()(T* addr, V val) const { *addr += static_cast<T>(val); }
};

// Level-major: all points of one level before the next, so the working set is one level's table
// (<= 2^log2_hashmap_size entries) rather than all levels' tables at once; the fine levels are far
// larger than the cache, and point-major order would thrash it on every point.
template <int D, typename T>
void forward_impl(const T* x, const T* table, T* out, int64_t n, const GridLayout& layout,
                  bool clamp) {
  const int L = layout.n_levels, F = layout.n_features;
  for (int l = 0; l < L; ++l) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i)
      encode_point_level<D, T>(x + i * D, table, layout.levels[l], F, clamp,
                               out + (i * L + l) * F);
  }
}

// The table gradient is parallel over levels: each level's slice of the table has one owner
// thread, so there are no atomics, no contention and the sum order is deterministic.
template <int D, typename T>
void backward_table_impl(const T* x, const T* dy, T* grad_table, int64_t n,
                         const GridLayout& layout, bool clamp) {
  const int L = layout.n_levels, F = layout.n_features;
#pragma omp parallel for schedule(dynamic, 1)
  for (int l = 0; l < L; ++l) {
    for (int64_t i = 0; i < n; ++i)
      backward_table_point_level<D, T>(x + i * D, dy + (i * L + l) * F, layout.levels[l], F,
                                       clamp, grad_table, PlainAdd());
  }
}

// Level-major for the same cache reason as the forward; each point's dx has one owner thread.
template <int D, typename T>
void backward_input_impl(const T* x, const T* dy, const T* table, T* dx, int64_t n,
                         const GridLayout& layout, bool clamp) {
  const int L = layout.n_levels, F = layout.n_features;
  std::fill(dx, dx + n * D, T(0));
  for (int l = 0; l < L; ++l) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i)
      backward_input_point_level<D, T>(x + i * D, dy + (i * L + l) * F, table, layout.levels[l],
                                       F, clamp, dx + i * D);
  }
}

template <typename T>
void forward_typed(const void* x, const void* table, void* out, int64_t n,
                   const GridLayout& layout, bool clamp) {
  auto xs = static_cast<const T*>(x);
  auto tb = static_cast<const T*>(table);
  auto o = static_cast<T*>(out);
  switch (layout.n_dims) {
    case 1: forward_impl<1>(xs, tb, o, n, layout, clamp); break;
    case 2: forward_impl<2>(xs, tb, o, n, layout, clamp); break;
    case 3: forward_impl<3>(xs, tb, o, n, layout, clamp); break;
    default: throw std::invalid_argument("hashgrid: n_dims must be 1, 2 or 3");
  }
}

template <typename T>
void backward_typed(const void* x, const void* dy, const void* table, void* grad_table, void* dx,
                    int64_t n, const GridLayout& layout, bool clamp) {
  auto xs = static_cast<const T*>(x);
  auto g = static_cast<const T*>(dy);
  auto tb = static_cast<const T*>(table);
  if (grad_table) {
    auto gt = static_cast<T*>(grad_table);
    switch (layout.n_dims) {
      case 1: backward_table_impl<1>(xs, g, gt, n, layout, clamp); break;
      case 2: backward_table_impl<2>(xs, g, gt, n, layout, clamp); break;
      case 3: backward_table_impl<3>(xs, g, gt, n, layout, clamp); break;
      default: throw std::invalid_argument("hashgrid: n_dims must be 1, 2 or 3");
    }
  }
  if (dx) {
    auto d = static_cast<T*>(dx);
    switch (layout.n_dims) {
      case 1: backward_input_impl<1>(xs, g, tb, d, n, layout, clamp); break;
      case 2: backward_input_impl<2>(xs, g, tb, d, n, layout, clamp); break;
      case 3: backward_input_impl<3>(xs, g, tb, d, n, layout, clamp); break;
      default: throw std::invalid_argument("hashgrid: n_dims must be 1, 2 or 3");
    }
  }
}

}  // namespace

void forward_cpu(DType dtype, const void* x, const void* table, void* out, int64_t n,
                 const GridLayout& layout, bool clamp) {
  switch (dtype) {
    case DType::kFloat32: forward_typed<float>(x, table, out, n, layout, clamp); break;
    case DType::kFloat64: forward_typed<double>(x, table, out, n, layout, clamp); break;
    default: throw std::invalid_argument("hashgrid: the CPU kernel supports float32 and float64");
  }
}

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

// CUDA launcher for the hash-grid encoding: the same HD bodies as the CPU launcher, one thread
// per (point, level) for forward and the table gradient (atomics), one per point for dx.
// Forward threads run level-fastest (thread t = point t / L, level t % L), so a warp writes one
// contiguous stretch of the level-major output, and each thread sums its corners in registers.
// float16 tables accumulate their gradient in a float32 buffer (half atomics lose small terms).
#include "hashgrid.h"

#include "../cuda_launch.cuh"

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace l2vsd {
namespace hashgrid {
namespace {

constexpr int kThreads = 256;

struct AtomicAdd {
  template <typename T, typename V>
  __device__ void operator()(T* addr, V val) const { atomic_add(addr, cast_to<acc_t<T>>(val)); }
};

// Features per level the forward keeps in registers; wider levels take the generic body.
constexpr int kMaxRegisterFeatures = 8;

template <int D, typename T, typename X>
__global__ void forward_kernel(const X* __restrict__ x, const T* __restrict__ table,
                               T* __restrict__ out, int64_t n, GridLayout layout, bool clamp) {
  using A = acc_t<T>;
  const int L = layout.n_levels, F = layout.n_features;
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= n * L) return;
  const int64_t i = t / L;
  const int l = static_cast<int>(t - i * L);
  const LevelLayout& lv = layout.levels[l];
  T* dst = out + t * F;
  if (F > kMaxRegisterFeatures) {
    encode_point_level<D, A>(x + i * D, table, lv, F, clamp, dst);
    return;
  }
  uint32_t cell[D];
  A frac[D];
  bool inside;
  L2VSD_UNROLL
  for (int d = 0; d < D; ++d)
    cell_and_fraction<A>(cast_to<A>(x[i * D + d]), lv.scale, clamp, &cell[d], &frac[d], &inside);
  A acc[kMaxRegisterFeatures];
  L2VSD_UNROLL
  for (int f = 0; f < kMaxRegisterFeatures; ++f) acc[f] = A(0);
  L2VSD_UNROLL
  for (int c = 0; c < (1 << D); ++c) {
    const A w = corner_weight<D, A>(frac, c);
    const T* entry = table + static_cast<size_t>(corner_entry<D>(cell, c, lv)) * F;
    L2VSD_UNROLL
    for (int f = 0; f < kMaxRegisterFeatures; ++f)
      if (f < F) acc[f] += w * cast_to<A>(entry[f]);
  }
  L2VSD_UNROLL
  for (int f = 0; f < kMaxRegisterFeatures; ++f)
    if (f < F) dst[f] = cast_to<T>(acc[f]);
}

template <int D, typename T, typename X, typename G>
__global__ void backward_table_kernel(const X* __restrict__ x, const T* __restrict__ dy,
                                      G* __restrict__ grad_table, int64_t n, GridLayout layout,
                                      bool clamp) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int l = blockIdx.y;
  if (i >= n) return;
  const int L = layout.n_levels, F = layout.n_features;
  backward_table_point_level<D, acc_t<T>>(x + i * D, dy + (i * L + l) * F, layout.levels[l], F,
                                          clamp, grad_table, AtomicAdd());
}

template <int D, typename T, typename X>
__global__ void backward_input_kernel(const X* __restrict__ x, const T* __restrict__ dy,
                                      const T* __restrict__ table, X* __restrict__ dx, int64_t n,
                                      GridLayout layout, bool clamp) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const int L = layout.n_levels, F = layout.n_features;
  acc_t<X> acc[D];
  for (int d = 0; d < D; ++d) acc[d] = 0;
  for (int l = 0; l < L; ++l)
    backward_input_point_level<D, acc_t<X>>(x + i * D, dy + (i * L + l) * F, table,
                                            layout.levels[l], F, clamp, acc);
  for (int d = 0; d < D; ++d) dx[i * D + d] = cast_to<X>(acc[d]);
}

void check_launch(const char* what) { check_cuda_launch("hashgrid", what); }

template <int D, typename T, typename X>
void forward_dims(const void* x, const void* table, void* out, int64_t n, const GridLayout& layout,
                  bool clamp, cudaStream_t stream) {
  forward_kernel<D, T, X><<<blocks_for(n * layout.n_levels, kThreads), kThreads, 0, stream>>>(
      static_cast<const X*>(x), static_cast<const T*>(table), static_cast<T*>(out), n, layout, clamp);
  check_launch("forward kernel");
}

template <int D, typename T, typename X, typename G>
void backward_dims(const void* x, const void* dy, const void* table, void* grad_table, void* dx,
                   int64_t n, const GridLayout& layout, bool clamp, cudaStream_t stream) {
  if (grad_table) {
    const dim3 grid(blocks_for(n, kThreads), layout.n_levels);
    backward_table_kernel<D, T, X, G><<<grid, kThreads, 0, stream>>>(
        static_cast<const X*>(x), static_cast<const T*>(dy), static_cast<G*>(grad_table), n,
        layout, clamp);
    check_launch("table-gradient kernel");
  }
  if (dx) {
    const dim3 grid(blocks_for(n, kThreads));
    backward_input_kernel<D, T, X><<<grid, kThreads, 0, stream>>>(
        static_cast<const X*>(x), static_cast<const T*>(dy), static_cast<const T*>(table),
        static_cast<X*>(dx), n, layout, clamp);
    check_launch("input-gradient kernel");
  }
}

template <typename T, typename X>
void forward_typed(const void* x, const void* table, void* out, int64_t n,
                   const GridLayout& layout, bool clamp, cudaStream_t stream) {
  switch (layout.n_dims) {
    case 1: forward_dims<1, T, X>(x, table, out, n, layout, clamp, stream); break;
    case 2: forward_dims<2, T, X>(x, table, out, n, layout, clamp, stream); break;
    case 3: forward_dims<3, T, X>(x, table, out, n, layout, clamp, stream); break;
    default: throw std::invalid_argument("hashgrid: n_dims must be 1, 2 or 3");
  }
}

template <typename T, typename X, typename G>
void backward_typed(const void* x, const void* dy, const void* table, void* grad_table, void* dx,
                    int64_t n, const GridLayout& layout, bool clamp, cudaStream_t stream) {
  switch (layout.n_dims) {
    case 1: backward_dims<1, T, X, G>(x, dy, table, grad_table, dx, n, layout, clamp, stream); break;
    case 2: backward_dims<2, T, X, G>(x, dy, table, grad_table, dx, n, layout, clamp, stream); break;
    case 3: backward_dims<3, T, X, G>(x, dy, table, grad_table, dx, n, layout, clamp, stream); break;
    default: throw std::invalid_argument("hashgrid: n_dims must be 1, 2 or 3");
  }
}

}  // namespace

void forward_cuda(DType dtype, const void* x, const void* table, void* out, int64_t n,
                  const GridLayout& layout, bool clamp, cudaStream_t stream) {
  if (n == 0) return;
  switch (dtype) {
    case DType::kFloat32: forward_typed<float, float>(x, table, out, n, layout, clamp, stream); break;
    case DType::kFloat64: forward_typed<double, double>(x, table, out, n, layout, clamp, stream); break;
    case DType::kFloat16: forward_typed<__half, float>(x, table, out, n, layout, clamp, stream); break;
    default: throw std::invalid_argument("hashgrid: the CUDA kernels support float32, float64, float16");
  }
}

void backward_cuda(DType dtype, DType grad_dtype, const void* x, const void* dy,
                   const void* table, void* grad_table, void* dx, int64_t n,
                   const GridLayout& layout, bool clamp, cudaStream_t stream) {
  if (n == 0) return;
  // grad_dtype: float32 for float16 tables, the table's own otherwise; float64 for every table
  // under torch.use_deterministic_algorithms (float64 atomics: the float32 rounding of an entry's N
  // contributions depends on their order with probability at most about N * 2^-29, so a backward
  // pass of 2^26 contributions differs somewhere with probability up to 1/8; see
  // docs/reproducibility.md).
  const bool wide = grad_dtype == DType::kFloat64;
#define L2VSD_HG_BACKWARD(T, X, G) \
  backward_typed<T, X, G>(x, dy, table, grad_table, dx, n, layout, clamp, stream)
  switch (dtype) {
    case DType::kFloat32:
      if (wide) L2VSD_HG_BACKWARD(float, float, double); else L2VSD_HG_BACKWARD(float, float, float);
      break;
    case DType::kFloat64: L2VSD_HG_BACKWARD(double, double, double); break;
    case DType::kFloat16:
      if (wide) L2VSD_HG_BACKWARD(__half, float, double); else L2VSD_HG_BACKWARD(__half, float, float);
      break;
    default: throw std::invalid_argument("hashgrid: the CUDA kernels support float32, float64, float16");
  }
#undef L2VSD_HG_BACKWARD
}

}  // namespace hashgrid
}  // namespace l2vsd

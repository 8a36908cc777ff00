// CUDA launcher for the hash-grid encoding: the same HD bodies as the CPU launcher, one thread
// per (point, level) for forward and the table gradient (atomics), one per point for dx.
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
  __device__ void operator()(T* addr, V val) const { atomic_add(addr, static_cast<acc_t<T>>(val)); }
};

template <int D, typename T, typename X>
__global__ void forward_kernel(const X* __restrict__ x, const T* __restrict__ table,
                               T* __restrict__ out, int64_t n, GridLayout layout, bool clamp) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int l = blockIdx.y;
  if (i >= n) return;
  const int L = layout.n_levels, F = layout.n_features;
  encode_point_level<D, acc_t<T>>(x + i * D, table, layout.levels[l], F, clamp,
                                  out + (i * L + l) * F);
}

template <int D, typename T, typename X>
__global__ void backward_table_kernel(const X* __restrict__ x, const T* __restrict__ dy,
                                      T* __restrict__ grad_table, int64_t n, GridLayout layout,
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
  for (int d = 0; d < D; ++d) dx[i * D + d] = static_cast<X>(acc[d]);
}

void check_launch(const char* what) { check_cuda_launch("hashgrid", what); }

template <int D, typename T, typename X>
void forward_dims(const void* x, const void* table, void* out, int64_t n, const GridLayout& layout,
                  bool clamp, cudaStream_t stream) {
  const dim3 grid(blocks_for(n, kThreads), layout.n_levels);
  forward_kernel<D, T, X><<<grid, kThreads, 0, stream>>>(
      static_cast<const X*>(x), static_cast<const T*>(table), static_cast<T*>(out), n, layout, clamp);
  check_launch("forward kernel");
}

template <int D, typename T, typename X>
void backward_dims(const void* x, const void* dy, const void* table, void* grad_table, void* dx,
                   int64_t n, const GridLayout& layout, bool clamp, cudaStream_t stream) {
  if (grad_table) {
    const dim3 grid(blocks_for(n, kThreads), layout.n_levels);
    backward_table_kernel<D, T, X><<<grid, kThreads, 0, stream>>>(
        static_cast<const X*>(x), static_cast<const T*>(dy), static_cast<T*>(grad_table), n,
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

template <typename T, typename X>
void backward_typed(const void* x, const void* dy, const void* table, void* grad_table, void* dx,
                    int64_t n, const GridLayout& layout, bool clamp, cudaStream_t stream) {
  switch (layout.n_dims) {
    case 1: backward_dims<1, T, X>(x, dy, table, grad_table, dx, n, layout, clamp, stream); break;
    case 2: backward_dims<2, T, X>(x, dy, table, grad_table, dx, n, layout, clamp, stream); break;
    case 3: backward_dims<3, T, X>(x, dy, table, grad_table, dx, n, layout, clamp, stream); break;
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

void backward_cuda(DType dtype, const void* x, const void* dy, const void* table,
                   void* grad_table, void* dx, int64_t n, const GridLayout& layout, bool clamp,
                   cudaStream_t stream) {
  if (n == 0) return;
  switch (dtype) {
    case DType::kFloat32:
      backward_typed<float, float>(x, dy, table, grad_table, dx, n, layout, clamp, stream);
      break;
    case DType::kFloat64:
      backward_typed<double, double>(x, dy, table, grad_table, dx, n, layout, clamp, stream);
      break;
    case DType::kFloat16:
      backward_typed<__half, float>(x, dy, table, grad_table, dx, n, layout, clamp, stream);
      break;
    default: throw std::invalid_argument("hashgrid: the CUDA kernels support float32, float64, float16");
  }
}

}  // namespace hashgrid
}  // namespace l2vsd

// CUDA launcher for group/layer norm with tangent: one block per group; the two statistics passes
// are block reductions, then the block's threads write the group with the CPU's element body.
#include "norm_jvp.h"
#include "../cuda_launch.cuh"

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace l2vsd {
namespace norm_jvp {
namespace {

constexpr int kThreads = 256;

// Sums a and b over the block; every thread gets the totals.
template <typename Acc>
__device__ void block_sum2(Acc* a, Acc* b) {
  __shared__ Acc sa[kThreads / 32], sb[kThreads / 32];
  Acc va = *a, vb = *b;
  for (int offset = 16; offset > 0; offset >>= 1) {
    va += __shfl_down_sync(0xffffffffu, va, offset);
    vb += __shfl_down_sync(0xffffffffu, vb, offset);
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) { sa[warp] = va; sb[warp] = vb; }
  __syncthreads();
  Acc ta = Acc(0), tb = Acc(0);
  for (int w = 0; w < kThreads / 32; ++w) { ta += sa[w]; tb += sb[w]; }
  __syncthreads();  // the shared slots are reused by the next call
  *a = ta;
  *b = tb;
}

template <typename T>
__global__ void forward_kernel(const T* __restrict__ x, const T* __restrict__ x_dot,
                               const T* __restrict__ gamma, const T* __restrict__ beta,
                               T* __restrict__ y, T* __restrict__ y_dot, NormShape s,
                               acc_t<T> eps) {
  using Acc = acc_t<T>;
  const int64_t g = blockIdx.x;
  const int64_t base = g * s.group_size;
  const T* xg = x + base;
  const T* xdg = x_dot + base;
  Acc sum = Acc(0), sum_dot = Acc(0);
  for (int64_t i = threadIdx.x; i < s.group_size; i += blockDim.x) {
    sum += static_cast<Acc>(xg[i]);
    sum_dot += static_cast<Acc>(xdg[i]);
  }
  block_sum2(&sum, &sum_dot);
  GroupStats<Acc> st;
  st.mean = sum / static_cast<Acc>(s.group_size);
  st.mean_dot = sum_dot / static_cast<Acc>(s.group_size);
  Acc var = Acc(0), cov = Acc(0);
  for (int64_t i = threadIdx.x; i < s.group_size; i += blockDim.x) {
    const Acc c = static_cast<Acc>(xg[i]) - st.mean;
    var += c * c;
    cov += c * (static_cast<Acc>(xdg[i]) - st.mean_dot);
  }
  block_sum2(&var, &cov);
  st = finish_stats(st, var, cov, s.group_size, eps);
  const int64_t affine_base = (g % s.groups_per_sample) * s.affine_per_group;
  for (int64_t i = threadIdx.x; i < s.group_size; i += blockDim.x) {
    const int64_t a = affine_base + i / s.affine_stride;
    const Acc gm = gamma ? static_cast<Acc>(gamma[a]) : Acc(1);
    const Acc bt = beta ? static_cast<Acc>(beta[a]) : Acc(0);
    Acc out, out_dot;
    normalize_element<Acc>(static_cast<Acc>(xg[i]), static_cast<Acc>(xdg[i]), st, gm, bt, &out,
                           &out_dot);
    y[base + i] = static_cast<T>(out);
    y_dot[base + i] = static_cast<T>(out_dot);
  }
}

template <typename T>
void launch(const void* x, const void* x_dot, const void* gamma, const void* beta, void* y,
            void* y_dot, const NormShape& shape, double eps, cudaStream_t stream) {
  forward_kernel<T><<<static_cast<unsigned>(shape.n_groups), kThreads, 0, stream>>>(
      static_cast<const T*>(x), static_cast<const T*>(x_dot), static_cast<const T*>(gamma),
      static_cast<const T*>(beta), static_cast<T*>(y), static_cast<T*>(y_dot), shape,
      static_cast<acc_t<T>>(eps));
  check_cuda_launch("norm_jvp", "kernel launch");
}

}  // namespace

void forward_cuda(DType dtype, const void* x, const void* x_dot, const void* gamma,
                  const void* beta, void* y, void* y_dot, const NormShape& shape, double eps,
                  cudaStream_t stream) {
  if (shape.n_groups == 0 || shape.group_size == 0) return;
  switch (dtype) {
    case DType::kFloat32: launch<float>(x, x_dot, gamma, beta, y, y_dot, shape, eps, stream); break;
    case DType::kFloat64: launch<double>(x, x_dot, gamma, beta, y, y_dot, shape, eps, stream); break;
    case DType::kFloat16: launch<__half>(x, x_dot, gamma, beta, y, y_dot, shape, eps, stream); break;
    case DType::kBFloat16: launch<__nv_bfloat16>(x, x_dot, gamma, beta, y, y_dot, shape, eps, stream); break;
  }
}

}  // namespace norm_jvp
}  // namespace l2vsd

// CUDA launcher for group/layer norm with tangent. A group is split over `chunks` blocks
// (grid = groups x chunks) so that batch 1 with 32 groups still fills the GPU: pass 1 writes each
// chunk's partial sums, pass 2 reduces them in a fixed order (deterministic, no atomics) into the
// mean and writes the partial centred sums, pass 3 reduces those and writes its chunk of the
// group with the CPU's element body. Element indices within a group use 32-bit arithmetic.
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

// Chunk c of a group covers elements [c * chunk_len, min((c + 1) * chunk_len, group_size)).
struct ChunkRange {
  uint32_t begin, end;
};

__device__ ChunkRange chunk_range(uint32_t group_size, uint32_t chunk_len) {
  const uint32_t begin = blockIdx.y * chunk_len;
  const uint32_t end = begin + chunk_len < group_size ? begin + chunk_len : group_size;
  return {begin, end};
}

// Sum of this group's `chunks` partial pairs, in chunk order (same result in every block).
template <typename Acc>
__device__ void reduce_partials(const Acc* partials, int chunks, Acc* a, Acc* b) {
  Acc ta = Acc(0), tb = Acc(0);
  for (int c = 0; c < chunks; ++c) {
    ta += partials[2 * c];
    tb += partials[2 * c + 1];
  }
  *a = ta;
  *b = tb;
}

template <typename T>
__global__ void sums_kernel(const T* __restrict__ x, const T* __restrict__ x_dot,
                            uint32_t group_size, uint32_t chunk_len,
                            acc_t<T>* __restrict__ partials) {
  using Acc = acc_t<T>;
  const int64_t g = blockIdx.x;
  const T* xg = x + g * group_size;
  const T* xdg = x_dot + g * group_size;
  const ChunkRange r = chunk_range(group_size, chunk_len);
  Acc sum = Acc(0), sum_dot = Acc(0);
  for (uint32_t i = r.begin + threadIdx.x; i < r.end; i += blockDim.x) {
    sum += cast_to<Acc>(xg[i]);
    sum_dot += cast_to<Acc>(xdg[i]);
  }
  block_sum2(&sum, &sum_dot);
  if (threadIdx.x == 0) {
    Acc* out = partials + (g * gridDim.y + blockIdx.y) * 2;
    out[0] = sum;
    out[1] = sum_dot;
  }
}

template <typename T>
__global__ void centred_kernel(const T* __restrict__ x, const T* __restrict__ x_dot,
                               uint32_t group_size, uint32_t chunk_len,
                               const acc_t<T>* __restrict__ sums, acc_t<T>* __restrict__ partials) {
  using Acc = acc_t<T>;
  const int64_t g = blockIdx.x;
  const int chunks = gridDim.y;
  const T* xg = x + g * group_size;
  const T* xdg = x_dot + g * group_size;
  Acc sum, sum_dot;
  reduce_partials(sums + g * chunks * 2, chunks, &sum, &sum_dot);
  const Acc mean = sum / cast_to<Acc>(group_size), mean_dot = sum_dot / cast_to<Acc>(group_size);
  const ChunkRange r = chunk_range(group_size, chunk_len);
  Acc var = Acc(0), cov = Acc(0);
  for (uint32_t i = r.begin + threadIdx.x; i < r.end; i += blockDim.x) {
    const Acc c = cast_to<Acc>(xg[i]) - mean;
    var += c * c;
    cov += c * (cast_to<Acc>(xdg[i]) - mean_dot);
  }
  block_sum2(&var, &cov);
  if (threadIdx.x == 0) {
    Acc* out = partials + (g * chunks + blockIdx.y) * 2;
    out[0] = var;
    out[1] = cov;
  }
}

template <typename T>
__global__ void normalize_kernel(const T* __restrict__ x, const T* __restrict__ x_dot,
                                 const T* __restrict__ gamma, const T* __restrict__ beta,
                                 T* __restrict__ y, T* __restrict__ y_dot, NormShape s,
                                 uint32_t chunk_len, const acc_t<T>* __restrict__ sums,
                                 const acc_t<T>* __restrict__ centred, acc_t<T> eps) {
  using Acc = acc_t<T>;
  const int64_t g = blockIdx.x;
  const int chunks = gridDim.y;
  const uint32_t group_size = static_cast<uint32_t>(s.group_size);
  const uint32_t affine_stride = static_cast<uint32_t>(s.affine_stride);
  GroupStats<Acc> st;
  Acc sum, sum_dot, var, cov;
  reduce_partials(sums + g * chunks * 2, chunks, &sum, &sum_dot);
  reduce_partials(centred + g * chunks * 2, chunks, &var, &cov);
  st.mean = sum / cast_to<Acc>(group_size);
  st.mean_dot = sum_dot / cast_to<Acc>(group_size);
  st = finish_stats(st, var, cov, s.group_size, eps);
  const int64_t base = g * s.group_size;
  const int64_t affine_base = (g % s.groups_per_sample) * s.affine_per_group;
  const ChunkRange r = chunk_range(group_size, chunk_len);
  for (uint32_t i = r.begin + threadIdx.x; i < r.end; i += blockDim.x) {
    const int64_t a = affine_base + i / affine_stride;
    const Acc gm = gamma ? cast_to<Acc>(gamma[a]) : Acc(1);
    const Acc bt = beta ? cast_to<Acc>(beta[a]) : Acc(0);
    Acc out, out_dot;
    normalize_element<Acc>(cast_to<Acc>(x[base + i]), cast_to<Acc>(x_dot[base + i]), st, gm, bt,
                           &out, &out_dot);
    y[base + i] = cast_to<T>(out);
    y_dot[base + i] = cast_to<T>(out_dot);
  }
}

template <typename T>
void launch(const void* x, const void* x_dot, const void* gamma, const void* beta, void* y,
            void* y_dot, const NormShape& shape, double eps, void* workspace,
            cudaStream_t stream) {
  using Acc = acc_t<T>;
  const int chunks = cuda_chunks(shape);
  const uint32_t group_size = static_cast<uint32_t>(shape.group_size);
  const uint32_t chunk_len = static_cast<uint32_t>((group_size + chunks - 1) / chunks);
  const dim3 grid(static_cast<unsigned>(shape.n_groups), static_cast<unsigned>(chunks));
  Acc* sums = static_cast<Acc*>(workspace);
  Acc* centred = sums + shape.n_groups * chunks * 2;
  const T* xt = static_cast<const T*>(x);
  const T* xdt = static_cast<const T*>(x_dot);
  sums_kernel<T><<<grid, kThreads, 0, stream>>>(xt, xdt, group_size, chunk_len, sums);
  check_cuda_launch("norm_jvp", "sums kernel launch");
  centred_kernel<T><<<grid, kThreads, 0, stream>>>(xt, xdt, group_size, chunk_len, sums, centred);
  check_cuda_launch("norm_jvp", "centred-sums kernel launch");
  normalize_kernel<T><<<grid, kThreads, 0, stream>>>(
      xt, xdt, static_cast<const T*>(gamma), static_cast<const T*>(beta), static_cast<T*>(y),
      static_cast<T*>(y_dot), shape, chunk_len, sums, centred, cast_to<Acc>(eps));
  check_cuda_launch("norm_jvp", "normalize kernel launch");
}

}  // namespace

void forward_cuda(DType dtype, const void* x, const void* x_dot, const void* gamma,
                  const void* beta, void* y, void* y_dot, const NormShape& shape, double eps,
                  void* workspace, cudaStream_t stream) {
  if (shape.n_groups == 0 || shape.group_size == 0) return;
  if (shape.group_size > 0xffffffffLL || shape.n_groups > 0x7fffffffLL)
    throw std::invalid_argument("norm_jvp: the CUDA kernel takes groups of at most 2^32 - 1 "
                                "elements and at most 2^31 - 1 groups");
  switch (dtype) {
    case DType::kFloat32: launch<float>(x, x_dot, gamma, beta, y, y_dot, shape, eps, workspace, stream); break;
    case DType::kFloat64: launch<double>(x, x_dot, gamma, beta, y, y_dot, shape, eps, workspace, stream); break;
    case DType::kFloat16: launch<__half>(x, x_dot, gamma, beta, y, y_dot, shape, eps, workspace, stream); break;
    case DType::kBFloat16: launch<__nv_bfloat16>(x, x_dot, gamma, beta, y, y_dot, shape, eps, workspace, stream); break;
  }
}

}  // namespace norm_jvp
}  // namespace l2vsd

// CUDA launcher for the fused LoRA rank-r part: one block per row. Each warp computes some of the
// 2r down-projections (lane-strided dot products + shuffle reduction) into shared memory, then the
// block's threads stride over the output columns with the same up-projection body as the CPU.
// T is the activation / base-layer type, L the LoRA factors' type: L = T, or float32 factors with
// a float16/bfloat16 activation (the score model on CUDA: fp16 UNet, fp32 LoRA parameters).
#include "lora_linear.h"
#include "../cuda_launch.cuh"

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace l2vsd {
namespace lora_linear {
namespace {

constexpr int kThreads = 128;

template <typename Acc>
__device__ Acc warp_sum(Acc v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
  return v;
}

template <typename T, typename L>
__global__ void add_lora_kernel(const T* __restrict__ x, const T* __restrict__ x_dot,
                                const L* __restrict__ A, const L* __restrict__ A_dot,
                                const L* __restrict__ B, const L* __restrict__ B_dot,
                                T* __restrict__ y, T* __restrict__ y_dot, int64_t in, int64_t out,
                                int r, acc_t<T> scale) {
  using Acc = acc_t<T>;
  __shared__ Acc u[kMaxRank], u_dot[kMaxRank];
  const int64_t row = blockIdx.x;
  const T* xr = x + row * in;
  const T* xdr = x_dot + row * in;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, n_warps = blockDim.x / 32;
  for (int k = warp; k < r; k += n_warps) {
    Acc acc = Acc(0), acc_dot = Acc(0);
    for (int64_t i = lane; i < in; i += 32) {
      const Acc xi = cast_to<Acc>(xr[i]);
      const Acc ai = cast_to<Acc>(A[k * in + i]);
      acc += ai * xi;
      acc_dot += cast_to<Acc>(A_dot[k * in + i]) * xi + ai * cast_to<Acc>(xdr[i]);
    }
    acc = warp_sum(acc);
    acc_dot = warp_sum(acc_dot);
    if (lane == 0) {
      u[k] = acc;
      u_dot[k] = acc_dot;
    }
  }
  __syncthreads();
  for (int64_t o = threadIdx.x; o < out; o += blockDim.x) {
    Acc add, add_dot;
    up_project_col<Acc>(u, u_dot, B, B_dot, r, o, scale, &add, &add_dot);
    plain_add(y + row * out + o, add);
    plain_add(y_dot + row * out + o, add_dot);
  }
}

template <typename T, typename L>
void launch(const void* x, const void* x_dot, const void* A, const void* A_dot, const void* B,
            const void* B_dot, void* y, void* y_dot, int64_t m, int64_t in, int64_t out, int r,
            double scale, cudaStream_t stream) {
  add_lora_kernel<T, L><<<static_cast<unsigned>(m), kThreads, 0, stream>>>(
      static_cast<const T*>(x), static_cast<const T*>(x_dot), static_cast<const L*>(A),
      static_cast<const L*>(A_dot), static_cast<const L*>(B), static_cast<const L*>(B_dot),
      static_cast<T*>(y), static_cast<T*>(y_dot), in, out, r, cast_to<acc_t<T>>(scale));
  check_cuda_launch("lora_linear", "kernel launch");
}

}  // namespace

void add_lora_cuda(DType dtype, DType lora_dtype, const void* x, const void* x_dot, const void* A,
                   const void* A_dot, const void* B, const void* B_dot, void* y, void* y_dot,
                   int64_t m, int64_t in, int64_t out, int r, double scale, cudaStream_t stream) {
  if (m == 0) return;
  if (r < 1 || r > kMaxRank) throw std::invalid_argument("lora_linear: rank out of range");
#define L2VSD_LORA_LAUNCH(T, L) \
  launch<T, L>(x, x_dot, A, A_dot, B, B_dot, y, y_dot, m, in, out, r, scale, stream)
  const bool same = lora_dtype == dtype;
  const bool fp32_factors = lora_dtype == DType::kFloat32;
  switch (dtype) {
    case DType::kFloat32: if (same) { L2VSD_LORA_LAUNCH(float, float); return; } break;
    case DType::kFloat64: if (same) { L2VSD_LORA_LAUNCH(double, double); return; } break;
    case DType::kFloat16:
      if (same) { L2VSD_LORA_LAUNCH(__half, __half); return; }
      if (fp32_factors) { L2VSD_LORA_LAUNCH(__half, float); return; }
      break;
    case DType::kBFloat16:
      if (same) { L2VSD_LORA_LAUNCH(__nv_bfloat16, __nv_bfloat16); return; }
      if (fp32_factors) { L2VSD_LORA_LAUNCH(__nv_bfloat16, float); return; }
      break;
  }
#undef L2VSD_LORA_LAUNCH
  throw std::invalid_argument(
      "lora_linear: the LoRA factors must have the activation's dtype, or float32 with a "
      "float16/bfloat16 activation");
}

}  // namespace lora_linear
}  // namespace l2vsd

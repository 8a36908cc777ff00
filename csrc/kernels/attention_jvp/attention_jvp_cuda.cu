// CUDA launcher for attention with tangent: one warp per query row. Lane l holds head-dim entries
// [l*VPL, l*VPL + VPL) of q, q_dot and the accumulators in registers; each key's two dot products
// are butterfly-reduced so every lane sees s and s_dot, then runs the shared online-softmax body.
#include "attention_jvp.h"
#include "../cuda_launch.cuh"

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace l2vsd {
namespace attention_jvp {
namespace {

constexpr int kWarpsPerBlock = 4;

template <typename Acc>
__device__ Acc warp_allsum(Acc v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// Heads run along grid.y, strided by gridDim.y: batch * heads may exceed grid.y's 65535 limit.
// The per-lane arrays are indexed only inside loops unrolled over the compile-time VPL (a guard
// `c < len` inside), so they stay in registers; a run-time bound would put them in local memory.
template <int VPL, typename T>
__global__ void forward_kernel(const T* __restrict__ q, const T* __restrict__ q_dot,
                               const T* __restrict__ k, const T* __restrict__ k_dot,
                               const T* __restrict__ v, const T* __restrict__ v_dot,
                               T* __restrict__ out, T* __restrict__ out_dot, int64_t bh,
                               int64_t n, int64_t m, int d, acc_t<T> scale) {
  using Acc = acc_t<T>;
  const int lane = threadIdx.x % 32;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  if (i >= n) return;  // whole warps exit together: i is uniform within a warp
  const int c0 = lane * VPL;
  const int len = c0 >= d ? 0 : (d - c0 < VPL ? d - c0 : VPL);
  for (int64_t h = blockIdx.y; h < bh; h += gridDim.y) {
    const int64_t row = (h * n + i) * d;
    Acc qi[VPL], qdi[VPL], o[VPL], od[VPL];
    L2VSD_UNROLL
    for (int c = 0; c < VPL; ++c) {
      qi[c] = c < len ? cast_to<Acc>(q[row + c0 + c]) : Acc(0);
      qdi[c] = c < len ? cast_to<Acc>(q_dot[row + c0 + c]) : Acc(0);
      o[c] = od[c] = Acc(0);
    }
    const int64_t head = h * m * d;
    OnlineState<Acc> st = initial_state<Acc>();
    for (int64_t j = 0; j < m; ++j) {
      const int64_t kj = head + j * d + c0;
      Acc s = Acc(0), sd = Acc(0);
      L2VSD_UNROLL
      for (int c = 0; c < VPL; ++c) {
        if (c < len) {
          const Acc kc = cast_to<Acc>(k[kj + c]);
          s += qi[c] * kc;
          sd += qdi[c] * kc + qi[c] * cast_to<Acc>(k_dot[kj + c]);
        }
      }
      s = warp_allsum(s) * scale;
      sd = warp_allsum(sd) * scale;
      Acc p;
      const Acc alpha = admit_key<Acc>(&st, s, sd, &p);
      // accumulate() from attention_jvp.h, unrolled over VPL.
      L2VSD_UNROLL
      for (int c = 0; c < VPL; ++c) {
        if (c < len) {
          const Acc vc = cast_to<Acc>(v[kj + c]);
          o[c] = o[c] * alpha + p * vc;
          od[c] = od[c] * alpha + p * (sd * vc + cast_to<Acc>(v_dot[kj + c]));
        }
      }
    }
    L2VSD_UNROLL
    for (int c = 0; c < VPL; ++c) {
      if (c < len) {
        Acc r, rd;
        finalize<Acc>(st, o[c], od[c], &r, &rd);
        out[row + c0 + c] = cast_to<T>(r);
        out_dot[row + c0 + c] = cast_to<T>(rd);
      }
    }
  }
}

template <int VPL, typename T>
void launch(const void* q, const void* q_dot, const void* k, const void* k_dot, const void* v,
            const void* v_dot, void* out, void* out_dot, int64_t bh, int64_t n, int64_t m, int d,
            double scale, cudaStream_t stream) {
  constexpr int64_t kMaxGridY = 65535;
  const dim3 grid(static_cast<unsigned>((n + kWarpsPerBlock - 1) / kWarpsPerBlock),
                  static_cast<unsigned>(bh < kMaxGridY ? bh : kMaxGridY));
  forward_kernel<VPL, T><<<grid, kWarpsPerBlock * 32, 0, stream>>>(
      static_cast<const T*>(q), static_cast<const T*>(q_dot), static_cast<const T*>(k),
      static_cast<const T*>(k_dot), static_cast<const T*>(v), static_cast<const T*>(v_dot),
      static_cast<T*>(out), static_cast<T*>(out_dot), bh, n, m, d, cast_to<acc_t<T>>(scale));
  check_cuda_launch("attention_jvp", "kernel launch");
}

// Picks the smallest per-lane width that covers d: 40 -> 2, 64 -> 2, 80 -> 3, 160 -> 5.
template <typename T>
void launch_width(const void* q, const void* q_dot, const void* k, const void* k_dot,
                  const void* v, const void* v_dot, void* out, void* out_dot, int64_t bh,
                  int64_t n, int64_t m, int d, double scale, cudaStream_t stream) {
  const int vpl = (d + 31) / 32;
  switch (vpl) {
    case 1: launch<1, T>(q, q_dot, k, k_dot, v, v_dot, out, out_dot, bh, n, m, d, scale, stream); break;
    case 2: launch<2, T>(q, q_dot, k, k_dot, v, v_dot, out, out_dot, bh, n, m, d, scale, stream); break;
    case 3: launch<3, T>(q, q_dot, k, k_dot, v, v_dot, out, out_dot, bh, n, m, d, scale, stream); break;
    case 4: launch<4, T>(q, q_dot, k, k_dot, v, v_dot, out, out_dot, bh, n, m, d, scale, stream); break;
    case 5: launch<5, T>(q, q_dot, k, k_dot, v, v_dot, out, out_dot, bh, n, m, d, scale, stream); break;
    case 6: launch<6, T>(q, q_dot, k, k_dot, v, v_dot, out, out_dot, bh, n, m, d, scale, stream); break;
    case 7: case 8: launch<8, T>(q, q_dot, k, k_dot, v, v_dot, out, out_dot, bh, n, m, d, scale, stream); break;
    default: throw std::invalid_argument("attention_jvp: head dim out of range");
  }
}

}  // namespace

void forward_cuda(DType dtype, const void* q, const void* q_dot, const void* k,
                  const void* k_dot, const void* v, const void* v_dot, void* out, void* out_dot,
                  int64_t bh, int64_t n, int64_t m, int d, double scale, cudaStream_t stream) {
  if (bh == 0 || n == 0) return;
  if (d < 1 || d > kMaxHeadDim) throw std::invalid_argument("attention_jvp: head dim out of range");
  switch (dtype) {
    case DType::kFloat32: launch_width<float>(q, q_dot, k, k_dot, v, v_dot, out, out_dot, bh, n, m, d, scale, stream); break;
    case DType::kFloat64: launch_width<double>(q, q_dot, k, k_dot, v, v_dot, out, out_dot, bh, n, m, d, scale, stream); break;
    case DType::kFloat16: launch_width<__half>(q, q_dot, k, k_dot, v, v_dot, out, out_dot, bh, n, m, d, scale, stream); break;
    case DType::kBFloat16: launch_width<__nv_bfloat16>(q, q_dot, k, k_dot, v, v_dot, out, out_dot, bh, n, m, d, scale, stream); break;
  }
}

}  // namespace attention_jvp
}  // namespace l2vsd

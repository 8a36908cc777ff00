// Fused rank-r part of a LoRA linear layer with its forward-mode tangent (see shared DESIGN.md,
// "The JVP engine"). The base GEMM [x; x_dot] W^T runs in ATen; these bodies add, per row m,
//   y[m]     += s * B u,                 u     = A x[m]
//   y_dot[m] += s * (B_dot u + B u_dot), u_dot = A_dot x[m] + A x_dot[m]
// so the rank-r intermediates never leave registers / shared memory.
#pragma once

#include "../common.h"

namespace l2vsd {
namespace lora_linear {

// Largest rank the fused kernels keep in registers; larger ranks take the ATen path in the glue.
constexpr int kMaxRank = 64;

// u[k] = A[k,:]·x, u_dot[k] = A_dot[k,:]·x + A[k,:]·x_dot for one row; A, A_dot are (r, in).
template <typename Acc, typename T>
HD void down_project_row(const T* x, const T* x_dot, const T* A, const T* A_dot, int64_t in,
                         int r, Acc* u, Acc* u_dot) {
  for (int k = 0; k < r; ++k) {
    const T* a = A + k * in;
    const T* a_dot = A_dot + k * in;
    Acc acc = Acc(0), acc_dot = Acc(0);
    for (int64_t i = 0; i < in; ++i) {
      const Acc xi = cast_to<Acc>(x[i]);
      const Acc ai = cast_to<Acc>(a[i]);
      acc += ai * xi;
      acc_dot += cast_to<Acc>(a_dot[i]) * xi + ai * cast_to<Acc>(x_dot[i]);
    }
    u[k] = acc;
    u_dot[k] = acc_dot;
  }
}

// The rank-r contribution to output column o of one row; B, B_dot are (out, r).
template <typename Acc, typename T>
HD void up_project_col(const Acc* u, const Acc* u_dot, const T* B, const T* B_dot, int r,
                       int64_t o, Acc scale, Acc* y_add, Acc* y_dot_add) {
  const T* b = B + o * r;
  const T* b_dot = B_dot + o * r;
  Acc acc = Acc(0), acc_dot = Acc(0);
  for (int k = 0; k < r; ++k) {
    const Acc bk = cast_to<Acc>(b[k]);
    acc += bk * u[k];
    acc_dot += cast_to<Acc>(b_dot[k]) * u[k] + bk * u_dot[k];
  }
  *y_add = scale * acc;
  *y_dot_add = scale * acc_dot;
}

}  // namespace lora_linear
}  // namespace l2vsd

namespace l2vsd {
namespace lora_linear {

// Launchers. x, x_dot: (M, in); A, A_dot: (r, in); B, B_dot: (out, r); y, y_dot: (M, out) holding
// the base GEMM results, to which the rank-r part is added in place.
void add_lora_cpu(DType dtype, const void* x, const void* x_dot, const void* A,
                  const void* A_dot, const void* B, const void* B_dot, void* y, void* y_dot,
                  int64_t m, int64_t in, int64_t out, int r, double scale);
// lora_dtype is A/A_dot/B/B_dot's type: dtype itself, or float32 with a float16/bfloat16 dtype.
void add_lora_cuda(DType dtype, DType lora_dtype, const void* x, const void* x_dot, const void* A,
                   const void* A_dot, const void* B, const void* B_dot, void* y, void* y_dot,
                   int64_t m, int64_t in, int64_t out, int r, double scale, cudaStream_t stream);

}  // namespace lora_linear
}  // namespace l2vsd

// CPU launcher for attention with tangent: one OpenMP iteration per (batch*head, query row), the
// online-softmax bodies of attention_jvp.h over the keys. (The engine's CPU path uses a blocked
// ATen formulation instead when it is faster; this kernel is the CPU twin of the CUDA kernel.)
#include "attention_jvp.h"

#include <stdexcept>

namespace l2vsd {
namespace attention_jvp {
namespace {

template <typename T>
void forward_impl(const T* q, const T* q_dot, const T* k, const T* k_dot, const T* v,
                  const T* v_dot, T* out, T* out_dot, int64_t bh, int64_t n, int64_t m, int d,
                  T scale) {
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t h = 0; h < bh; ++h) {
    for (int64_t i = 0; i < n; ++i) {
      const int64_t row = (h * n + i) * d;
      const T* qi = q + row;
      const T* qdi = q_dot + row;
      const T* kh = k + h * m * d;
      const T* kdh = k_dot + h * m * d;
      const T* vh = v + h * m * d;
      const T* vdh = v_dot + h * m * d;
      T o[kMaxHeadDim], od[kMaxHeadDim];
      for (int c = 0; c < d; ++c) o[c] = od[c] = T(0);
      OnlineState<T> st = initial_state<T>();
      for (int64_t j = 0; j < m; ++j) {
        const T* kj = kh + j * d;
        const T* kdj = kdh + j * d;
        T s = T(0), sd = T(0);
        for (int c = 0; c < d; ++c) {
          s += qi[c] * kj[c];
          sd += qdi[c] * kj[c] + qi[c] * kdj[c];
        }
        T p;
        const T alpha = admit_key<T>(&st, s * scale, sd * scale, &p);
        accumulate<T>(alpha, p, sd * scale, vh + j * d, vdh + j * d, d, o, od);
      }
      for (int c = 0; c < d; ++c) finalize<T>(st, o[c], od[c], &out[row + c], &out_dot[row + c]);
    }
  }
}

}  // namespace

void forward_cpu(JvpDType dtype, const void* q, const void* q_dot, const void* k, const void* k_dot,
                 const void* v, const void* v_dot, void* out, void* out_dot, int64_t bh, int64_t n,
                 int64_t m, int d, double scale) {
  if (d < 1 || d > kMaxHeadDim) throw std::invalid_argument("attention_jvp: head dim out of range");
  switch (dtype) {
    case JvpDType::kFloat32:
      forward_impl<float>(static_cast<const float*>(q), static_cast<const float*>(q_dot),
                          static_cast<const float*>(k), static_cast<const float*>(k_dot),
                          static_cast<const float*>(v), static_cast<const float*>(v_dot),
                          static_cast<float*>(out), static_cast<float*>(out_dot), bh, n, m, d,
                          static_cast<float>(scale));
      break;
    case JvpDType::kFloat64:
      forward_impl<double>(static_cast<const double*>(q), static_cast<const double*>(q_dot),
                           static_cast<const double*>(k), static_cast<const double*>(k_dot),
                           static_cast<const double*>(v), static_cast<const double*>(v_dot),
                           static_cast<double*>(out), static_cast<double*>(out_dot), bh, n, m, d,
                           scale);
      break;
    default: throw std::invalid_argument("attention_jvp: the CPU kernel supports float32 and float64");
  }
}

}  // namespace attention_jvp
}  // namespace l2vsd

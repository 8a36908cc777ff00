// CPU launcher for attention with tangent: the online-softmax recurrence of attention_jvp.h run
// over tiles of kKeyTile keys, so that the score, score-tangent and exp loops vectorise over keys
// (keys and values transposed to (d, M)), including the accumulations into O and O_dot, which
// are reductions over the tile's keys. One OpenMP iteration
// per (batch*head, query row); no N x M matrix, every tile stays in L1. Head dim 8 (the 64-channel
// level of small UNets) has a compile-time specialisation whose score loop keeps the head-dim sums
// in registers (about 25% less CPU time than the generic loop).
#include "attention_jvp.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>

namespace l2vsd {
namespace attention_jvp {
namespace {

constexpr int kKeyTile = 512;

// exp for x <= 0 that GCC vectorises inside `omp simd` loops (libm's expf does not without
// -ffast-math): 2^n * p(r), r = x - n ln2 (Cody-Waite), p of degree 6; ~2 ulp over [-87, 0].
// Below -87 it returns ~1e-38 instead of 0, which no softmax sum (>= 1) can tell apart.
inline float exp_nonpositive(float x) {
  x = x < -87.0f ? -87.0f : x;
  // round to nearest by the 1.5 * 2^23 trick: plain float adds, which vectorise everywhere
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
  float p = 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  return p * std::bit_cast<float>(bits);
}
inline double exp_nonpositive(double x) { return std::exp(x); }

template <int D, typename T>
__attribute__((always_inline)) inline void query_row(const T* qi, const T* qdi, const T* kt, const T* kdt, const T* vt, const T* vdt,
               T* out, T* out_dot, int64_t m, int d, T scale) {
  alignas(64) T s[kKeyTile], sd[kKeyTile], p[kKeyTile];
  T o[kMaxHeadDim], od[kMaxHeadDim];
  T qs[kMaxHeadDim], qds[kMaxHeadDim];
  for (int c = 0; c < d; ++c) {
    o[c] = od[c] = T(0);
    qs[c] = qi[c] * scale;
    qds[c] = qdi[c] * scale;
  }
  OnlineState<T> st = initial_state<T>();
  for (int64_t j0 = 0; j0 < m; j0 += kKeyTile) {
    const int tn = static_cast<int>(std::min<int64_t>(kKeyTile, m - j0));
    if constexpr (D > 0) {
      // Head dim known at compile time: the head-dim sums stay in registers, one pass over keys.
      const T* kt0 = kt + j0;
      const T* kdt0 = kdt + j0;
#pragma omp simd
      for (int j = 0; j < tn; ++j) {
        T a = T(0), b = T(0);
        L2VSD_UNROLL
        for (int c = 0; c < D; ++c) {
          const T kc = kt0[c * m + j];
          a += qs[c] * kc;
          b += qds[c] * kc + qs[c] * kdt0[c * m + j];
        }
        s[j] = a;
        sd[j] = b;
      }
    } else {
      for (int j = 0; j < tn; ++j) s[j] = sd[j] = T(0);
      for (int c = 0; c < d; ++c) {  // s = scale q·k, sd = scale (q_dot·k + q·k_dot), over keys
        const T* kr = kt + c * m + j0;
        const T* kdr = kdt + c * m + j0;
#pragma omp simd
        for (int j = 0; j < tn; ++j) {
          s[j] += qs[c] * kr[j];
          sd[j] += qds[c] * kr[j] + qs[c] * kdr[j];
        }
      }
    }
    T tile_max = -std::numeric_limits<T>::infinity();
#pragma omp simd reduction(max : tile_max)
    for (int j = 0; j < tn; ++j) tile_max = s[j] > tile_max ? s[j] : tile_max;
    // One rescale per tile instead of one per key: the same recurrence as admit_key.
    const T new_max = tile_max > st.max ? tile_max : st.max;
    const T alpha = exp_of(st.max - new_max);
    T tile_sum = T(0), tile_sum_dot = T(0);
#pragma omp simd
    for (int j = 0; j < tn; ++j) p[j] = exp_nonpositive(s[j] - new_max);
#pragma omp simd reduction(+ : tile_sum, tile_sum_dot)
    for (int j = 0; j < tn; ++j) {
      tile_sum += p[j];
      tile_sum_dot += p[j] * sd[j];
    }
    st.max = new_max;
    st.sum = st.sum * alpha + tile_sum;
    st.sum_dot = st.sum_dot * alpha + tile_sum_dot;
    for (int j = 0; j < tn; ++j) sd[j] *= p[j];  // P * S_dot
    for (int c = 0; c < d; ++c) {  // o = alpha o + P v, o_dot = alpha o_dot + (P*S_dot) v + P v_dot
      const T* vr = vt + c * m + j0;
      const T* vdr = vdt + c * m + j0;
      T acc = T(0), acc_dot = T(0);
#pragma omp simd reduction(+ : acc, acc_dot)
      for (int j = 0; j < tn; ++j) {
        acc += p[j] * vr[j];
        acc_dot += sd[j] * vr[j] + p[j] * vdr[j];
      }
      o[c] = o[c] * alpha + acc;
      od[c] = od[c] * alpha + acc_dot;
    }
  }
  for (int c = 0; c < d; ++c) finalize<T>(st, o[c], od[c], &out[c], &out_dot[c]);
}

// The row body compiled for AVX-512, AVX2 and the baseline, picked at load time (the extension is
// built without -march flags): 4-16x wider vectors than the SSE2 baseline on current x86.
#define L2VSD_ROW_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
L2VSD_ROW_CLONES void query_row_float(const float* qi, const float* qdi, const float* kt,
                                      const float* kdt, const float* v, const float* vd,
                                      float* out, float* out_dot, int64_t m, int d, float scale) {
  if (d == 8) query_row<8, float>(qi, qdi, kt, kdt, v, vd, out, out_dot, m, d, scale);
  else query_row<0, float>(qi, qdi, kt, kdt, v, vd, out, out_dot, m, d, scale);
}
L2VSD_ROW_CLONES void query_row_double(const double* qi, const double* qdi, const double* kt,
                                       const double* kdt, const double* v, const double* vd,
                                       double* out, double* out_dot, int64_t m, int d,
                                       double scale) {
  query_row<0, double>(qi, qdi, kt, kdt, v, vd, out, out_dot, m, d, scale);
}
inline void query_row_any(const float* qi, const float* qdi, const float* kt, const float* kdt,
                          const float* v, const float* vd, float* out, float* out_dot, int64_t m,
                          int d, float scale) {
  query_row_float(qi, qdi, kt, kdt, v, vd, out, out_dot, m, d, scale);
}
inline void query_row_any(const double* qi, const double* qdi, const double* kt,
                          const double* kdt, const double* v, const double* vd, double* out,
                          double* out_dot, int64_t m, int d, double scale) {
  query_row_double(qi, qdi, kt, kdt, v, vd, out, out_dot, m, d, scale);
}

template <typename T>
void forward_impl(const T* q, const T* q_dot, const T* kt, const T* kdt, const T* v,
                  const T* v_dot, T* out, T* out_dot, int64_t bh, int64_t n, int64_t m, int d,
                  T scale) {
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t h = 0; h < bh; ++h) {
    for (int64_t i = 0; i < n; ++i) {
      const int64_t row = (h * n + i) * d;
      const int64_t head = h * m * d;
      query_row_any(q + row, q_dot + row, kt + head, kdt + head, v + head, v_dot + head,
                   out + row, out_dot + row, m, d, scale);
    }
  }
}

}  // namespace

void forward_cpu(DType dtype, const void* q, const void* q_dot, const void* k_t,
                 const void* k_dot_t, const void* v, const void* v_dot, void* out, void* out_dot,
                 int64_t bh, int64_t n, int64_t m, int d, double scale) {
  if (d < 1 || d > kMaxHeadDim) throw std::invalid_argument("attention_jvp: head dim out of range");
  switch (dtype) {
    case DType::kFloat32:
      forward_impl<float>(static_cast<const float*>(q), static_cast<const float*>(q_dot),
                          static_cast<const float*>(k_t), static_cast<const float*>(k_dot_t),
                          static_cast<const float*>(v), static_cast<const float*>(v_dot),
                          static_cast<float*>(out), static_cast<float*>(out_dot), bh, n, m, d,
                          static_cast<float>(scale));
      break;
    case DType::kFloat64:
      forward_impl<double>(static_cast<const double*>(q), static_cast<const double*>(q_dot),
                           static_cast<const double*>(k_t), static_cast<const double*>(k_dot_t),
                           static_cast<const double*>(v), static_cast<const double*>(v_dot),
                           static_cast<double*>(out), static_cast<double*>(out_dot), bh, n, m, d,
                           scale);
      break;
    default: throw std::invalid_argument("attention_jvp: the CPU kernel supports float32 and float64");
  }
}

}  // namespace attention_jvp
}  // namespace l2vsd

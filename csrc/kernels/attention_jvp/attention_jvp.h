// Softmax attention with its forward-mode tangent in one pass over the keys (online softmax, no
// N x M matrix). With s_j = scale q·k_j, s_dot_j = scale (q_dot·k_j + q·k_dot_j), P = softmax(s):
//   O     = sum_j P_j v_j
//   O_dot = sum_j P_j (s_dot_j v_j + v_dot_j) - (sum_j P_j s_dot_j) O
// The running state keeps un-normalised sums against the running max m; a larger key rescales
// them by exp(m_old - m_new), exactly as flash attention does for O alone.
#pragma once

#include "../common.h"

namespace l2vsd {
namespace attention_jvp {

HD float exp_of(float v) { return expf(v); }
HD double exp_of(double v) { return ::exp(v); }

// Scalars of the running state; the d-sized accumulators live with the caller (registers on the
// GPU, where each lane holds a slice of them).
template <typename Acc>
struct OnlineState {
  Acc max;      // running max of s
  Acc sum;      // sum_j exp(s_j - max)
  Acc sum_dot;  // sum_j exp(s_j - max) s_dot_j
};

template <typename Acc>
HD OnlineState<Acc> initial_state() {
  OnlineState<Acc> st;
  st.max = -INFINITY;
  st.sum = Acc(0);
  st.sum_dot = Acc(0);
  return st;
}

// Admits key j: returns the factor `alpha` by which the caller rescales its accumulators before
// adding p * v_j and p * (s_dot_j v_j + v_dot_j), and writes p = exp(s_j - max).
template <typename Acc>
HD Acc admit_key(OnlineState<Acc>* st, Acc s, Acc s_dot, Acc* p) {
  Acc alpha = Acc(1);
  if (s > st->max) {
    alpha = exp_of(st->max - s);  // exp(-inf) = 0 for the first key
    st->max = s;
    st->sum *= alpha;
    st->sum_dot *= alpha;
  }
  *p = exp_of(s - st->max);
  st->sum += *p;
  st->sum_dot += *p * s_dot;
  return alpha;
}

// Accumulator update for `len` entries of the head dimension.
template <typename Acc, typename T>
HD void accumulate(Acc alpha, Acc p, Acc s_dot, const T* v, const T* v_dot, int len, Acc* o,
                   Acc* o_dot) {
  for (int c = 0; c < len; ++c) {
    const Acc vc = cast_to<Acc>(v[c]);
    o[c] = o[c] * alpha + p * vc;
    o_dot[c] = o_dot[c] * alpha + p * (s_dot * vc + cast_to<Acc>(v_dot[c]));
  }
}

// Final normalisation: O = o / sum; O_dot = o_dot / sum - (sum_dot / sum) O.
template <typename Acc>
HD void finalize(const OnlineState<Acc>& st, Acc o, Acc o_dot, Acc* out, Acc* out_dot) {
  const Acc inv = Acc(1) / st.sum;
  *out = o * inv;
  *out_dot = o_dot * inv - st.sum_dot * inv * (*out);
}

// Launchers (CPU and CUDA alike). q, q_dot, out, out_dot: (BH, N, d); k, k_dot, v, v_dot:
// (BH, M, d). All contiguous; the glue materialises absent tangents as zeros.
constexpr int kMaxHeadDim = 256;

void forward_cpu(DType dtype, const void* q, const void* q_dot, const void* k, const void* k_dot,
                 const void* v, const void* v_dot, void* out, void* out_dot, int64_t bh, int64_t n,
                 int64_t m, int d, double scale);
// CPU only: heads packed along the last dimension, q-like tensors (B, N, heads * d) and k-like
// (B, M, heads * d), each with its own batch and row strides (in elements; entries within a row
// contiguous). Head h of a row starts at entry h * d.
struct RowStrides {
  int64_t q, q_dot, k, k_dot, v, v_dot, out, out_dot;
};
struct HeadsLayout {
  int64_t batch, heads, n, m;
  int d;
  RowStrides row;
  RowStrides batch_stride;
};
void forward_cpu_heads(DType dtype, const void* q, const void* q_dot, const void* k,
                       const void* k_dot, const void* v, const void* v_dot, void* out,
                       void* out_dot, const HeadsLayout& layout, double scale);
void forward_cuda(DType dtype, const void* q, const void* q_dot, const void* k,
                  const void* k_dot, const void* v, const void* v_dot, void* out, void* out_dot,
                  int64_t bh, int64_t n, int64_t m, int d, double scale, cudaStream_t stream);

}  // namespace attention_jvp
}  // namespace l2vsd

// CPU launcher for attention with tangent: the online-softmax recurrence of attention_jvp.h with
// the vector lanes over query rows. A block of L query rows (one SIMD register wide) walks the
// keys in tiles; every key is broadcast to all lanes, so one load of k_j, k_dot_j, v_j, v_dot_j
// serves L rows, the running max/sum are per-lane and need no horizontal reductions, and the O and
// O_dot accumulators of a chunk of the head dim stay in registers across a whole tile.
// Per tile: (1) s and s_dot for the tile's keys, (2) the tile max, one rescale, p = exp(s - max),
// (3) O += p v, O_dot += (p s_dot) v + p v_dot. No N x M matrix; the tile buffers stay in L1.
// Compiled three times (AVX-512, AVX2+FMA, SSE2 baseline), picked at run time, because the
// extension is built without -march flags. Layouts: the CUDA launcher's (BH, N|M, d), or
// (B, N|M, heads * d) with any row and batch strides (the projections' own layout, no head-split
// copies).
#include "attention_jvp.h"

#include "../cpu_isa.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>

namespace l2vsd {
namespace attention_jvp {
namespace {

constexpr int kKeyTile = 128;

// GCC vector extensions: arithmetic on them compiles to the target's SIMD instructions.
template <typename T, int Bytes> struct Vec {
  typedef T type __attribute__((vector_size(Bytes)));
};

// exp(x) for x <= 0, lane-wise. float: 2^n * p(r), r = x - n ln2 (Cody-Waite), p of degree 6,
// ~2 ulp over [-87, 0]; below -87 it returns ~1e-38 instead of 0, which no softmax sum (>= 1) can
// tell apart. double: libm per lane (the float64 path is for checking, not for speed).
// (In place, by reference: functions taking or returning wide vectors by value draw GCC's ABI
// warnings, although everything here is inlined.)
template <typename V>
__attribute__((always_inline)) inline void exp_nonpositive(V& x) {
  constexpr int lanes = sizeof(V) / sizeof(x[0]);
  if constexpr (sizeof(x[0]) == 8) {
    for (int l = 0; l < lanes; ++l) x[l] = std::exp(x[l]);
  } else {
    typedef int32_t VI __attribute__((vector_size(sizeof(V))));
    x = x < -87.0f ? V{} - 87.0f : x;
    // round to nearest by the 1.5 * 2^23 trick: plain float adds, which vectorise everywhere
    const V n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    const V r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
    V p = V{} + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const VI bits = (__builtin_convertvector(n, VI) + 127) << 23;
    x = p * __builtin_bit_cast(V, bits);
  }
}

// Per-block working set: q and q_dot (scaled, transposed to lanes), the accumulators, the tile's
// s and s_dot (then p and p * s_dot).
template <typename V> struct Block {
  V q[kMaxHeadDim], qd[kMaxHeadDim], o[kMaxHeadDim], od[kMaxHeadDim];
  V s[kKeyTile], sd[kKeyTile];
};

// (1) s_j += q·k_j and s_dot_j += q_dot·k_j + q·k_dot_j over head-dim entries [c0, c0 + C).
template <int C, typename V, typename T>
__attribute__((always_inline)) inline void scores_chunk(Block<V>& b, const T* k, const T* kd,
                                                        int64_t ldk, int64_t ldkd, int c0, int tn,
                                                        bool first) {
  V q[C], qd[C];
  for (int c = 0; c < C; ++c) q[c] = b.q[c0 + c], qd[c] = b.qd[c0 + c];
  for (int j = 0; j < tn; ++j) {
    const T* kj = k + j * ldk + c0;
    const T* kdj = kd + j * ldkd + c0;
    V s = first ? V{} : b.s[j], sd = first ? V{} : b.sd[j];
    for (int c = 0; c < C; ++c) {
      s += q[c] * kj[c];
      sd += qd[c] * kj[c] + q[c] * kdj[c];
    }
    b.s[j] = s;
    b.sd[j] = sd;
  }
}

// (3) o += p v_j and o_dot += (p s_dot) v_j + p v_dot_j over head-dim entries [c0, c0 + C).
template <int C, typename V, typename T>
__attribute__((always_inline)) inline void values_chunk(Block<V>& b, const T* v, const T* vd,
                                                        int64_t ldv, int64_t ldvd, int c0, int tn) {
  V o[C], od[C];
  for (int c = 0; c < C; ++c) o[c] = b.o[c0 + c], od[c] = b.od[c0 + c];
  for (int j = 0; j < tn; ++j) {
    const T* vj = v + j * ldv + c0;
    const T* vdj = vd + j * ldvd + c0;
    const V p = b.s[j], psd = b.sd[j];
    for (int c = 0; c < C; ++c) {
      o[c] += p * vj[c];
      od[c] += psd * vj[c] + p * vdj[c];
    }
  }
  for (int c = 0; c < C; ++c) b.o[c0 + c] = o[c], b.od[c0 + c] = od[c];
}

// Head dim in chunks of 8, then 4, 2, 1: each chunk's registers are known at compile time.
template <typename V, typename T>
__attribute__((always_inline)) inline void scores(Block<V>& b, const T* k, const T* kd,
                                                  int64_t ldk, int64_t ldkd, int d, int tn) {
  int c0 = 0;
  for (; c0 + 8 <= d; c0 += 8) scores_chunk<8>(b, k, kd, ldk, ldkd, c0, tn, c0 == 0);
  if (c0 + 4 <= d) scores_chunk<4>(b, k, kd, ldk, ldkd, c0, tn, c0 == 0), c0 += 4;
  if (c0 + 2 <= d) scores_chunk<2>(b, k, kd, ldk, ldkd, c0, tn, c0 == 0), c0 += 2;
  if (c0 < d) scores_chunk<1>(b, k, kd, ldk, ldkd, c0, tn, c0 == 0);
}

template <typename V, typename T>
__attribute__((always_inline)) inline void values(Block<V>& b, const T* v, const T* vd,
                                                  int64_t ldv, int64_t ldvd, int d, int tn) {
  int c0 = 0;
  for (; c0 + 8 <= d; c0 += 8) values_chunk<8>(b, v, vd, ldv, ldvd, c0, tn);
  if (c0 + 4 <= d) values_chunk<4>(b, v, vd, ldv, ldvd, c0, tn), c0 += 4;
  if (c0 + 2 <= d) values_chunk<2>(b, v, vd, ldv, ldvd, c0, tn), c0 += 2;
  if (c0 < d) values_chunk<1>(b, v, vd, ldv, ldvd, c0, tn);
}

// One block of `rows` (<= lanes) query rows of one head against all m keys of that head. The
// pointers are at the head's first entry of the block's first row; `ld` are row strides.
template <typename V, typename T>
__attribute__((always_inline)) inline void row_block(const T* q, const T* qd, const T* k,
                                                     const T* kd, const T* v, const T* vd, T* out,
                                                     T* out_dot, const RowStrides& ld, int rows,
                                                     int64_t m, int d, T scale) {
  Block<V> b;
  for (int c = 0; c < d; ++c) {
    b.q[c] = b.qd[c] = b.o[c] = b.od[c] = V{};
    for (int l = 0; l < rows; ++l) {
      b.q[c][l] = q[l * ld.q + c] * scale;
      b.qd[c][l] = qd[l * ld.q_dot + c] * scale;
    }
  }
  V run_max = V{} - std::numeric_limits<T>::infinity(), sum = V{}, sum_dot = V{};
  for (int64_t j0 = 0; j0 < m; j0 += kKeyTile) {
    const int tn = static_cast<int>(std::min<int64_t>(kKeyTile, m - j0));
    scores(b, k + j0 * ld.k, kd + j0 * ld.k_dot, ld.k, ld.k_dot, d, tn);
    V tile_max = b.s[0];
    for (int j = 1; j < tn; ++j) tile_max = b.s[j] > tile_max ? b.s[j] : tile_max;
    // One rescale per tile: the same recurrence as admit_key, for a whole tile at once.
    const V new_max = tile_max > run_max ? tile_max : run_max;
    V alpha = run_max - new_max;
    exp_nonpositive(alpha);
    run_max = new_max;
    sum *= alpha;
    sum_dot *= alpha;
    for (int c = 0; c < d; ++c) b.o[c] *= alpha, b.od[c] *= alpha;
    for (int j = 0; j < tn; ++j) {
      V p = b.s[j] - new_max;
      exp_nonpositive(p);
      const V psd = p * b.sd[j];
      sum += p;
      sum_dot += psd;
      b.s[j] = p;
      b.sd[j] = psd;
    }
    values(b, v + j0 * ld.v, vd + j0 * ld.v_dot, ld.v, ld.v_dot, d, tn);
  }
  // Final normalisation as finalize(): O = o / sum; O_dot = o_dot / sum - (sum_dot / sum) O.
  const V inv = T(1) / sum;
  const V mean_sd = sum_dot * inv;
  for (int c = 0; c < d; ++c) {
    const V o = b.o[c] * inv;
    const V od = b.od[c] * inv - mean_sd * o;
    for (int l = 0; l < rows; ++l) {
      out[l * ld.out + c] = o[l];
      out_dot[l * ld.out_dot + c] = od[l];
    }
  }
}

// One entry point per instruction set; everything above is inlined into each.
template <typename T>
using BlockFn = void (*)(const T*, const T*, const T*, const T*, const T*, const T*, T*, T*,
                         const RowStrides&, int, int64_t, int, T);

#define L2VSD_BLOCK_ENTRY(NAME, TARGET, T, BYTES)                                                 \
  TARGET void NAME(const T* q, const T* qd, const T* k, const T* kd, const T* v, const T* vd,    \
                   T* out, T* out_dot, const RowStrides& ld, int rows, int64_t m, int d,          \
                   T scale) {                                                                     \
    row_block<typename Vec<T, BYTES>::type, T>(q, qd, k, kd, v, vd, out, out_dot, ld, rows, m, d, \
                                               scale);                                            \
  }
L2VSD_BLOCK_ENTRY(block_f32_avx512, L2VSD_TARGET_AVX512, float, 64)
L2VSD_BLOCK_ENTRY(block_f32_avx2, L2VSD_TARGET_AVX2, float, 32)
L2VSD_BLOCK_ENTRY(block_f32_base, , float, 16)
L2VSD_BLOCK_ENTRY(block_f64_avx512, L2VSD_TARGET_AVX512, double, 64)
L2VSD_BLOCK_ENTRY(block_f64_avx2, L2VSD_TARGET_AVX2, double, 32)
L2VSD_BLOCK_ENTRY(block_f64_base, , double, 16)
#undef L2VSD_BLOCK_ENTRY

using cpu_isa::Isa;

int vector_bytes(Isa isa) { return isa == Isa::kAvx512 ? 64 : isa == Isa::kAvx2 ? 32 : 16; }

BlockFn<float> block_for(Isa isa, float) {
  return cpu_isa::pick<BlockFn<float>>(isa, block_f32_avx512, block_f32_avx2, block_f32_base);
}
BlockFn<double> block_for(Isa isa, double) {
  return cpu_isa::pick<BlockFn<double>>(isa, block_f64_avx512, block_f64_avx2, block_f64_base);
}

template <typename T>
void forward_impl(const T* q, const T* q_dot, const T* k, const T* k_dot, const T* v,
                  const T* v_dot, T* out, T* out_dot, const HeadsLayout& L, T scale) {
  const Isa isa = cpu_isa::current();
  const int lanes = vector_bytes(isa) / static_cast<int>(sizeof(T));  // query rows per block
  const BlockFn<T> block = block_for(isa, T{});
  const int64_t blocks = (L.n + lanes - 1) / lanes;
  const RowStrides& ld = L.row;
  const int d = L.d;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t bh = 0; bh < L.batch * L.heads; ++bh) {
    for (int64_t ib = 0; ib < blocks; ++ib) {
      const int64_t b = bh / L.heads, h = bh % L.heads;
      const int64_t i0 = ib * lanes;
      const int rows = static_cast<int>(std::min<int64_t>(lanes, L.n - i0));
      const int64_t head = h * d;
      block(q + b * L.batch_stride.q + i0 * ld.q + head,
            q_dot + b * L.batch_stride.q_dot + i0 * ld.q_dot + head,
            k + b * L.batch_stride.k + head, k_dot + b * L.batch_stride.k_dot + head,
            v + b * L.batch_stride.v + head, v_dot + b * L.batch_stride.v_dot + head,
            out + b * L.batch_stride.out + i0 * ld.out + head,
            out_dot + b * L.batch_stride.out_dot + i0 * ld.out_dot + head, ld, rows, L.m, d,
            scale);
    }
  }
}

}  // namespace

void forward_cpu_heads(DType dtype, const void* q, const void* q_dot, const void* k,
                       const void* k_dot, const void* v, const void* v_dot, void* out,
                       void* out_dot, const HeadsLayout& layout, double scale) {
  if (layout.d < 1 || layout.d > kMaxHeadDim)
    throw std::invalid_argument("attention_jvp: head dim out of range");
  switch (dtype) {
    case DType::kFloat32:
      forward_impl<float>(static_cast<const float*>(q), static_cast<const float*>(q_dot),
                          static_cast<const float*>(k), static_cast<const float*>(k_dot),
                          static_cast<const float*>(v), static_cast<const float*>(v_dot),
                          static_cast<float*>(out), static_cast<float*>(out_dot), layout,
                          static_cast<float>(scale));
      break;
    case DType::kFloat64:
      forward_impl<double>(static_cast<const double*>(q), static_cast<const double*>(q_dot),
                           static_cast<const double*>(k), static_cast<const double*>(k_dot),
                           static_cast<const double*>(v), static_cast<const double*>(v_dot),
                           static_cast<double*>(out), static_cast<double*>(out_dot), layout,
                           scale);
      break;
    default: throw std::invalid_argument("attention_jvp: the CPU kernel supports float32 and float64");
  }
}

void forward_cpu(DType dtype, const void* q, const void* q_dot, const void* k, const void* k_dot,
                 const void* v, const void* v_dot, void* out, void* out_dot, int64_t bh, int64_t n,
                 int64_t m, int d, double scale) {
  // (BH, N|M, d) contiguous: BH batches of one head each.
  const int64_t nd = n * d, md = m * d;
  HeadsLayout layout;
  layout.batch = bh;
  layout.heads = 1;
  layout.n = n;
  layout.m = m;
  layout.d = d;
  layout.row = {d, d, d, d, d, d, d, d};
  layout.batch_stride = {nd, nd, md, md, md, md, nd, nd};
  forward_cpu_heads(dtype, q, q_dot, k, k_dot, v, v_dot, out, out_dot, layout, scale);
}

}  // namespace attention_jvp
}  // namespace l2vsd

// CUDA launchers for attention with tangent.
//
// Tiled kernel (float32, float16, bfloat16; head dim <= 128): FlashAttention-style. A block of
// 128 threads owns BR query rows of one head; K and K_dot, then V and V_dot, tiles of BC keys are
// staged in shared memory as fp32 and every tile is used by all BR rows, so each key is read from
// global memory once per BR rows instead of once per row. Per tile: s and s_dot for a TM x TN
// micro-tile per thread, the row max over the 8 lanes sharing a row (xor shuffles), one exp per
// (row, key), the rescale of the running sums, then O += P V and O_dot += (P s_dot) V + P V_dot
// with P broadcast from the lane that computed it. Exact softmax JVP in the same pass:
//   O_dot = sum_j P_j (s_dot_j v_j + v_dot_j) - (sum_j P_j s_dot_j) O,
// s_dot = scale (q_dot k + q k_dot); fp32 accumulation throughout. Geometry: attention_jvp_tiled.h.
// Plain CUDA only (no tensor-core intrinsics, no inline PTX), so the CPU emulator can run it.
//
// Per-row kernel (float64, and head dims 129..256): one warp per query row. Lane l holds head-dim
// entries [l*VPL, l*VPL + VPL) of q, q_dot and the accumulators in registers; each key's two dot
// products are butterfly-reduced so every lane sees s and s_dot, then runs the shared
// online-softmax body. It stays for float64 (the checking path: doubles would double the tiled
// kernel's shared memory and registers) and for head dims above 128, whose fp32 tiles and
// accumulators do not fit the 48 KiB / 64-register budget of the tiled configurations.
#include "attention_jvp.h"
#include "attention_jvp_tiled.h"
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

// Picks the smallest per-lane width that covers d: 40 -> 2, 64 -> 2, 80 -> 3, 160 -> 5. Types with
// a tiled kernel reach it only for d > 128 (widths 5..8), so only those widths are instantiated.
template <typename T, int kMinVpl>
void launch_width(const void* q, const void* q_dot, const void* k, const void* k_dot,
                  const void* v, const void* v_dot, void* out, void* out_dot, int64_t bh,
                  int64_t n, int64_t m, int d, double scale, cudaStream_t stream) {
  const int vpl = (d + 31) / 32;
#define L2VSD_ATTN_WIDTH(W)                                                                 \
  if constexpr (W >= kMinVpl) {                                                             \
    launch<W, T>(q, q_dot, k, k_dot, v, v_dot, out, out_dot, bh, n, m, d, scale, stream); \
    return;                                                                                 \
  }
  switch (vpl) {
    case 1: L2VSD_ATTN_WIDTH(1) break;
    case 2: L2VSD_ATTN_WIDTH(2) break;
    case 3: L2VSD_ATTN_WIDTH(3) break;
    case 4: L2VSD_ATTN_WIDTH(4) break;
    case 5: L2VSD_ATTN_WIDTH(5) break;
    case 6: L2VSD_ATTN_WIDTH(6) break;
    case 7: case 8: L2VSD_ATTN_WIDTH(8) break;
    default: break;
  }
#undef L2VSD_ATTN_WIDTH
  throw std::invalid_argument("attention_jvp: head dim out of range");
}

// ---- Tiled kernel ---------------------------------------------------------------------------

// Stages rows [0, rows) x entries [0, d) of two (., d) tensors starting at `base` into the
// swizzled fp32 tiles sa, sb; entries past d and rows past `rows` are zeroed (they take part in
// whole-chunk dot products and value updates, where zeros are neutral). Consecutive threads take
// consecutive entries of a row: coalesced global reads, conflict-free shared stores.
template <typename C, typename T>
__device__ __forceinline__ void stage_tile(const T* __restrict__ a, const T* __restrict__ b,
                                           int64_t base, int rows, int d, float* sa, float* sb) {
  for (int idx = threadIdx.x; idx < C::BC * C::D; idx += tiled::kThreads) {
    const int j = idx / C::D, c = idx % C::D;
    float x = 0.0f, y = 0.0f;
    if (j < rows && c < d) {
      const int64_t off = base + static_cast<int64_t>(j) * d + c;
      x = cast_to<float>(a[off]);
      y = cast_to<float>(b[off]);
    }
    const int pos = tiled::swizzled<C::D>(j, c);
    sa[pos] = x;
    sb[pos] = y;
  }
}

__device__ __forceinline__ float dot4(float4 a, float4 b, float acc) {
  acc = fmaf(a.x, b.x, acc);
  acc = fmaf(a.y, b.y, acc);
  acc = fmaf(a.z, b.z, acc);
  return fmaf(a.w, b.w, acc);
}

// Heads run along grid.y, strided by gridDim.y (batch * heads may exceed 65535); the head loop and
// the key-tile loop are uniform across the block, so every thread reaches every barrier. Rows past
// n compute on zero queries and are not stored. Register arrays are indexed only by unrolled
// compile-time indices so they stay in registers.
template <typename C, typename T>
__global__ void __launch_bounds__(tiled::kThreads)
tiled_kernel(const T* __restrict__ q, const T* __restrict__ q_dot, const T* __restrict__ k,
             const T* __restrict__ k_dot, const T* __restrict__ v, const T* __restrict__ v_dot,
             T* __restrict__ out, T* __restrict__ out_dot, int64_t bh, int64_t n, int64_t m, int d,
             float scale) {
  using namespace tiled;
  constexpr int D = C::D, TM = C::TM, TN = C::TN, BR = C::BR, BC = C::BC;
  constexpr int kCols = D / 8;  // O entries per thread and row
  extern __shared__ float4 smem4[];
  float* const sq = reinterpret_cast<float*>(smem4);  // BR x D, plain row-major, scaled
  float* const sqd = sq + BR * D;
  float* const sa = sqd + BR * D;  // BC x D swizzled: k, then v
  float* const sb = sa + BC * D;   // BC x D swizzled: k_dot, then v_dot
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int rg = lane / kLanesPerRow, cg = lane % kLanesPerRow;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * BR;

  for (int64_t h = blockIdx.y; h < bh; h += gridDim.y) {
    // q and q_dot of the block's rows, pre-multiplied by the scale. The previous head's last read
    // of sq was followed by a barrier (before its last value tile), so overwriting is safe.
    for (int idx = threadIdx.x; idx < BR * D; idx += kThreads) {
      const int r = idx / D, c = idx % D;
      const int64_t i = row0 + r;
      float a = 0.0f, b = 0.0f;
      if (i < n && c < d) {
        const int64_t off = (h * n + i) * d + c;
        a = cast_to<float>(q[off]) * scale;
        b = cast_to<float>(q_dot[off]) * scale;
      }
      sq[idx] = a;
      sqd[idx] = b;
    }
    float o[TM][kCols], od[TM][kCols];
    float run_max[TM], sum[TM], sum_dot[TM];  // per-lane partial sums over the lane's keys
    L2VSD_UNROLL
    for (int i = 0; i < TM; ++i) {
      run_max[i] = -INFINITY;
      sum[i] = sum_dot[i] = 0.0f;
      L2VSD_UNROLL
      for (int c = 0; c < kCols; ++c) o[i][c] = od[i][c] = 0.0f;
    }

    for (int64_t j0 = 0; j0 < m; j0 += BC) {
      const int rows = static_cast<int>(m - j0 < BC ? m - j0 : BC);
      __syncthreads();  // q stores visible / previous value step done with sa, sb
      stage_tile<C>(k, k_dot, (h * m + j0) * d, rows, d, sa, sb);
      __syncthreads();

      // Scores: s = q.k and s_dot = q_dot.k + q.k_dot (scale already in q, q_dot).
      float s[TM][TN], sd[TM][TN];
      L2VSD_UNROLL
      for (int i = 0; i < TM; ++i)
        L2VSD_UNROLL
        for (int t = 0; t < TN; ++t) s[i][t] = sd[i][t] = 0.0f;
#pragma unroll 2
      for (int c4 = 0; c4 < C::kChunks; ++c4) {
        float4 kv[TN], kdv[TN];
        L2VSD_UNROLL
        for (int t = 0; t < TN; ++t) {
          const int pos = swizzled<D>(thread_key(cg, t), 4 * c4);
          kv[t] = *reinterpret_cast<const float4*>(sa + pos);
          kdv[t] = *reinterpret_cast<const float4*>(sb + pos);
        }
        L2VSD_UNROLL
        for (int i = 0; i < TM; ++i) {
          const int r = thread_row<C>(warp, rg, i);
          const float4 qv = *reinterpret_cast<const float4*>(sq + r * D + 4 * c4);
          const float4 qdv = *reinterpret_cast<const float4*>(sqd + r * D + 4 * c4);
          L2VSD_UNROLL
          for (int t = 0; t < TN; ++t) {
            s[i][t] = dot4(qv, kv[t], s[i][t]);
            sd[i][t] = dot4(qv, kdv[t], dot4(qdv, kv[t], sd[i][t]));
          }
        }
      }

      // Online softmax: tile max over the row's 8 lanes, rescale, p = exp(s - max). Keys past m
      // get s = -inf (p = 0; their s_dot is 0 from the zeroed tile). Key j0 is always valid, so
      // the new max is finite. s becomes p and sd becomes p * s_dot.
      L2VSD_UNROLL
      for (int i = 0; i < TM; ++i) {
        float tile_max = -INFINITY;
        L2VSD_UNROLL
        for (int t = 0; t < TN; ++t) {
          if (thread_key(cg, t) >= rows) s[i][t] = -INFINITY;
          tile_max = fmaxf(tile_max, s[i][t]);
        }
        L2VSD_UNROLL
        for (int offset = 1; offset < kLanesPerRow; offset <<= 1)
          tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, offset));
        const float new_max = fmaxf(run_max[i], tile_max);
        const float alpha = expf(run_max[i] - new_max);  // exp(-inf) = 0 on the first tile
        run_max[i] = new_max;
        sum[i] *= alpha;
        sum_dot[i] *= alpha;
        L2VSD_UNROLL
        for (int c = 0; c < kCols; ++c) {
          o[i][c] *= alpha;
          od[i][c] *= alpha;
        }
        L2VSD_UNROLL
        for (int t = 0; t < TN; ++t) {
          const float p = expf(s[i][t] - new_max);
          s[i][t] = p;
          sd[i][t] *= p;
          sum[i] += p;
          sum_dot[i] += sd[i][t];
        }
      }

      __syncthreads();  // every lane is done reading k, k_dot
      stage_tile<C>(v, v_dot, (h * m + j0) * d, rows, d, sa, sb);
      __syncthreads();

      // Values: key j = t * 8 + g was scored by lane 8 * rg + g of this row group.
      L2VSD_UNROLL
      for (int t = 0; t < TN; ++t) {
#pragma unroll 2
        for (int g = 0; g < kLanesPerRow; ++g) {
          const int j = thread_key(g, t);
          float p[TM], psd[TM];
          L2VSD_UNROLL
          for (int i = 0; i < TM; ++i) {
            p[i] = __shfl_sync(0xffffffffu, s[i][t], rg * kLanesPerRow + g);
            psd[i] = __shfl_sync(0xffffffffu, sd[i][t], rg * kLanesPerRow + g);
          }
          L2VSD_UNROLL
          for (int u = 0; u < C::kColChunks; ++u) {
            const int pos = swizzled<D>(j, thread_col(cg, u));
            const float4 vv = *reinterpret_cast<const float4*>(sa + pos);
            const float4 vdv = *reinterpret_cast<const float4*>(sb + pos);
            const float ve[4] = {vv.x, vv.y, vv.z, vv.w};
            const float vde[4] = {vdv.x, vdv.y, vdv.z, vdv.w};
            L2VSD_UNROLL
            for (int i = 0; i < TM; ++i)
              L2VSD_UNROLL
              for (int e = 0; e < 4; ++e) {
                o[i][4 * u + e] = fmaf(p[i], ve[e], o[i][4 * u + e]);
                od[i][4 * u + e] = fmaf(psd[i], ve[e], fmaf(p[i], vde[e], od[i][4 * u + e]));
              }
          }
        }
      }
    }

    // finalize() of attention_jvp.h on the row sums gathered from the row's 8 lanes.
    L2VSD_UNROLL
    for (int i = 0; i < TM; ++i) {
      L2VSD_UNROLL
      for (int offset = 1; offset < kLanesPerRow; offset <<= 1) {
        sum[i] += __shfl_xor_sync(0xffffffffu, sum[i], offset);
        sum_dot[i] += __shfl_xor_sync(0xffffffffu, sum_dot[i], offset);
      }
      const int64_t row = row0 + thread_row<C>(warp, rg, i);
      if (row >= n) continue;
      OnlineState<float> st;
      st.max = run_max[i];
      st.sum = sum[i];
      st.sum_dot = sum_dot[i];
      L2VSD_UNROLL
      for (int u = 0; u < C::kColChunks; ++u)
        L2VSD_UNROLL
        for (int e = 0; e < 4; ++e) {
          const int c = thread_col(cg, u) + e;
          if (c < d) {
            float r, rd;
            finalize<float>(st, o[i][4 * u + e], od[i][4 * u + e], &r, &rd);
            const int64_t off = (h * n + row) * d + c;
            out[off] = cast_to<T>(r);
            out_dot[off] = cast_to<T>(rd);
          }
        }
    }
  }
}

template <typename C, typename T>
void launch_tiled(const void* q, const void* q_dot, const void* k, const void* k_dot,
                  const void* v, const void* v_dot, void* out, void* out_dot, int64_t bh,
                  int64_t n, int64_t m, int d, double scale, cudaStream_t stream) {
  constexpr int64_t kMaxGridY = 65535;
  const dim3 grid(static_cast<unsigned>((n + C::BR - 1) / C::BR),
                  static_cast<unsigned>(bh < kMaxGridY ? bh : kMaxGridY));
  tiled_kernel<C, T><<<grid, tiled::kThreads, C::kSmemBytes, stream>>>(
      static_cast<const T*>(q), static_cast<const T*>(q_dot), static_cast<const T*>(k),
      static_cast<const T*>(k_dot), static_cast<const T*>(v), static_cast<const T*>(v_dot),
      static_cast<T*>(out), static_cast<T*>(out_dot), bh, n, m, d, static_cast<float>(scale));
  check_cuda_launch("attention_jvp", "tiled kernel launch");
}

// float32 / float16 / bfloat16: the tiled kernel at the smallest padded head dim covering d; the
// per-row kernel above 128 (see the top of the file).
template <typename T>
void launch_half_or_float(const void* q, const void* q_dot, const void* k, const void* k_dot,
                          const void* v, const void* v_dot, void* out, void* out_dot, int64_t bh,
                          int64_t n, int64_t m, int d, double scale, cudaStream_t stream) {
  using namespace tiled;
  if (d <= 32)
    launch_tiled<Config32, T>(q, q_dot, k, k_dot, v, v_dot, out, out_dot, bh, n, m, d, scale, stream);
  else if (d <= 64)
    launch_tiled<Config64, T>(q, q_dot, k, k_dot, v, v_dot, out, out_dot, bh, n, m, d, scale, stream);
  else if (d <= 96)
    launch_tiled<Config96, T>(q, q_dot, k, k_dot, v, v_dot, out, out_dot, bh, n, m, d, scale, stream);
  else if (d <= kMaxTiledHeadDim)
    launch_tiled<Config128, T>(q, q_dot, k, k_dot, v, v_dot, out, out_dot, bh, n, m, d, scale, stream);
  else
    launch_width<T, 5>(q, q_dot, k, k_dot, v, v_dot, out, out_dot, bh, n, m, d, scale, stream);
}

}  // namespace

void forward_cuda(DType dtype, const void* q, const void* q_dot, const void* k,
                  const void* k_dot, const void* v, const void* v_dot, void* out, void* out_dot,
                  int64_t bh, int64_t n, int64_t m, int d, double scale, cudaStream_t stream) {
  if (bh == 0 || n == 0) return;
  if (d < 1 || d > kMaxHeadDim) throw std::invalid_argument("attention_jvp: head dim out of range");
  switch (dtype) {
    case DType::kFloat32: launch_half_or_float<float>(q, q_dot, k, k_dot, v, v_dot, out, out_dot, bh, n, m, d, scale, stream); break;
    case DType::kFloat64: launch_width<double, 1>(q, q_dot, k, k_dot, v, v_dot, out, out_dot, bh, n, m, d, scale, stream); break;
    case DType::kFloat16: launch_half_or_float<__half>(q, q_dot, k, k_dot, v, v_dot, out, out_dot, bh, n, m, d, scale, stream); break;
    case DType::kBFloat16: launch_half_or_float<__nv_bfloat16>(q, q_dot, k, k_dot, v, v_dot, out, out_dot, bh, n, m, d, scale, stream); break;
  }
}

}  // namespace attention_jvp
}  // namespace l2vsd

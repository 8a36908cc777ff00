// CPU launcher for compositing: OpenMP over tasks of consecutive rays (dynamic: rays differ wildly
// in sample count after empty-space skipping), one ray at a time in SIMD blocks of W samples
// (lanes.h). Same math as the per-ray bodies in composite.h; what differs is the summation order:
// - the running sums along a ray (optical depth in the forward, the gradient's suffix sum in the
//   backward) are in-register prefix/suffix sums per block plus one carry per block, so the
//   dependency chain is one add per W samples instead of one per sample (it bound both passes);
// - the per-ray channel sums keep W-lane partial sums, reduced once per ray.
// Each order is fixed, so results are deterministic (bit-identical run to run and across thread
// counts). float32 exponentials are lanes::exp_of (about 1 ulp); float64 keeps libm's exp.
// Compiled for AVX-512, AVX2+FMA and the SSE2 baseline (cpu_isa.h), picked at run time; the
// per-ray bodies are always_inline'd into each per-instruction-set entry point.
#include "composite.h"

#include "lanes.h"
#include "../cpu_isa.h"

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <utility>

#pragma GCC diagnostic ignored "-Wpsabi"  // wide vectors never cross a non-inlined call

namespace l2vsd {
namespace composite {
namespace {

using lanes::load;
using lanes::load_n;
using lanes::store;
using lanes::store_n;

template <typename T, int Bytes> using VecOf = typename lanes::Vec<T, Bytes>::type;
template <typename T, int Bytes> constexpr int kLanesOf = lanes::Vec<T, Bytes>::kLanes;

constexpr int64_t kRaysPerTask = 32;  // a few thousand samples: scheduling overhead stays small
constexpr int kMaxVectorChannels = 8;  // wider values take the scalar per-ray bodies

// Kernel::ray<Bytes>(args, r) for every ray, compiled once per instruction set.
template <typename Kernel> struct PerIsa {
  using Args = typename Kernel::Args;
  L2VSD_TARGET_AVX512 static void avx512(const Args& a, int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) Kernel::template ray<64>(a, r);
  }
  L2VSD_TARGET_AVX2 static void avx2(const Args& a, int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) Kernel::template ray<32>(a, r);
  }
  static void base(const Args& a, int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) Kernel::template ray<16>(a, r);
  }
};

template <typename Kernel> void for_each_ray(const typename Kernel::Args& args, int64_t n_rays) {
  const auto rays = cpu_isa::pick(cpu_isa::current(), &PerIsa<Kernel>::avx512,
                                  &PerIsa<Kernel>::avx2, &PerIsa<Kernel>::base);
  const int64_t tasks = (n_rays + kRaysPerTask - 1) / kRaysPerTask;
#pragma omp parallel for schedule(dynamic, 1) if (tasks > 1)
  for (int64_t t = 0; t < tasks; ++t)
    rays(args, t * kRaysPerTask, std::min(n_rays, (t + 1) * kRaysPerTask));
}

// weights_forward_ray(): the optical depth in front of each sample is the carry of the blocks
// before plus an in-register exclusive prefix sum of tau.
template <typename T> struct WeightsForward {
  struct Args {
    const T *ts, *te, *sig;
    const int64_t* off;
    T *w, *tr, *al;
  };
  template <int Bytes> L2VSD_LANES_INLINE static void ray(const Args& a, int64_t r) {
    using V = VecOf<T, Bytes>;
    constexpr int W = kLanesOf<T, Bytes>;
    const int64_t begin = a.off[r], end = a.off[r + 1];
    V depth{};  // optical depth in front of the block, in every lane
    for (int64_t s = begin; s < end; s += W) {
      const int m = static_cast<int>(std::min<int64_t>(W, end - s));
      const V tau = load_n<V, W>(a.sig + s, m) *
                    (load_n<V, W>(a.te + s, m) - load_n<V, W>(a.ts + s, m));
      const V through = lanes::prefix_sum<W>(tau);  // depth behind each sample, within the block
      const V trans = lanes::exp_of<V>(-(depth + lanes::shift_up_one<W>(through)));
      const V alpha = T(1) - lanes::exp_of<V>(-tau);
      store_n<V, W>(a.w + s, trans * alpha, m);
      store_n<V, W>(a.tr + s, trans, m);
      store_n<V, W>(a.al + s, alpha, m);
      depth = lanes::broadcast<W, W - 1>(depth + through);
    }
  }
};

// weights_backward_ray(): the suffix sum of (g_w w + g_T T) behind each sample is an
// in-register exclusive suffix sum per block plus the carry of the blocks behind. A ray is walked
// in segments of kSegmentBlocks blocks, the last segment first; within a segment (1) the
// per-sample terms are computed front to back into a stack scratch (inputs streamed forwards,
// which the hardware prefetcher follows: read back to front, every load stalled), (2) the carries
// run back to front over the scratch, (3) the gradients are written front to back.
// kGW/kGT/kGA say which gradients exist; an absent one's saved tensors are not read at all (the
// pass is bound by memory traffic).
constexpr int kSegmentBlocks = 32;

template <bool kGW, bool kGT, bool kGA, typename T> struct WeightsBackward {
  struct Args {
    const T *ts, *te, *w, *tr, *al, *gw, *gt, *ga;
    const int64_t* off;
    T* gs;
  };
  template <int Bytes> L2VSD_LANES_INLINE static void ray(const Args& a, int64_t r) {
    using V = VecOf<T, Bytes>;
    constexpr int W = kLanesOf<T, Bytes>;
    const int64_t begin = a.off[r], end = a.off[r + 1];
    const int64_t blocks = (end - begin + W - 1) / W;
    V local[kSegmentBlocks], behind[kSegmentBlocks], dt[kSegmentBlocks];
    V after{};  // sum of the terms of the samples behind the segment, in every lane
    for (int64_t first = (blocks - 1) / kSegmentBlocks * kSegmentBlocks; first >= 0;
         first -= kSegmentBlocks) {
      const int n_blocks = static_cast<int>(std::min<int64_t>(kSegmentBlocks, blocks - first));
      for (int b = 0; b < n_blocks; ++b) {
        const int64_t s = begin + (first + b) * W;
        const int m = static_cast<int>(std::min<int64_t>(W, end - s));
        V loc{}, term{}, trans{};
        if constexpr (kGW || kGT) trans = load_n<V, W>(a.tr + s, m);
        if constexpr (kGW) {
          const V g = load_n<V, W>(a.gw + s, m), w = load_n<V, W>(a.w + s, m);
          loc = g * (trans - w);  // g_w T_{i+1}
          term = g * w;
        }
        if constexpr (kGA) loc = load_n<V, W>(a.ga + s, m) * (T(1) - load_n<V, W>(a.al + s, m)) + loc;
        if constexpr (kGT) term = term + load_n<V, W>(a.gt + s, m) * trans;
        local[b] = loc;
        behind[b] = lanes::suffix_sum<W>(term);
        dt[b] = load_n<V, W>(a.te + s, m) - load_n<V, W>(a.ts + s, m);
      }
      for (int b = n_blocks - 1; b >= 0; --b) {
        const V through = after + behind[b];
        behind[b] = after + lanes::shift_down_one<W>(behind[b]);
        after = lanes::broadcast<W, 0>(through);
      }
      for (int b = 0; b < n_blocks; ++b) {
        const int64_t s = begin + (first + b) * W;
        const int m = static_cast<int>(std::min<int64_t>(W, end - s));
        store_n<V, W>(a.gs + s, (local[b] - behind[b]) * dt[b], m);
      }
    }
  }
};

// The interleaved (n_samples, C) values of one block of W samples: C vectors, vector k holding
// flat elements [k W, (k + 1) W) (lanes.h). The last block of a ray goes through a zeroed copy.
template <int C, typename V, int W, typename T>
L2VSD_LANES_INLINE void load_values(const T* v, int m, V (&out)[C]) {
  if (m == W) {
    for (int k = 0; k < C; ++k) out[k] = load<V>(v + k * W);
    return;
  }
  alignas(64) T buf[C * W] = {};
  for (int e = 0; e < m * C; ++e) buf[e] = v[e];
  for (int k = 0; k < C; ++k) out[k] = load<V>(buf + k * W);
}

template <int C, typename V, int W, typename T>
L2VSD_LANES_INLINE void store_values(T* v, int m, const V (&in)[C]) {
  if (m == W) {
    for (int k = 0; k < C; ++k) store(v + k * W, in[k]);
    return;
  }
  alignas(64) T buf[C * W];
  for (int k = 0; k < C; ++k) store(buf + k * W, in[k]);
  for (int e = 0; e < m * C; ++e) v[e] = buf[e];
}

// f(std::integral_constant<int, K>) for K = 0..N-1 (compile-time channel/vector indices).
template <int N, typename F> L2VSD_LANES_INLINE void static_for(F&& f) {
  [&]<int... K>(std::integer_sequence<int, K...>) {
    (f(std::integral_constant<int, K>{}), ...);
  }(std::make_integer_sequence<int, N>{});
}

// accumulate_forward_ray() for C <= kMaxVectorChannels channels (kValues = false: the weights
// alone, C = 1): W-lane partial sums per vector of the interleaved block, reduced once per ray.
template <int C, bool kValues, typename T> struct AccumulateForward {
  struct Args {
    const T *w, *v;
    const int64_t* off;
    T* out;
  };
  template <int Bytes> L2VSD_LANES_INLINE static void ray(const Args& a, int64_t r) {
    using V = VecOf<T, Bytes>;
    constexpr int W = kLanesOf<T, Bytes>;
    const int64_t begin = a.off[r], end = a.off[r + 1];
    V acc[C] = {};
    for (int64_t s = begin; s < end; s += W) {
      const int m = static_cast<int>(std::min<int64_t>(W, end - s));
      const V w = load_n<V, W>(a.w + s, m);
      if constexpr (!kValues) {
        acc[0] += w;
      } else {
        V v[C];
        load_values<C, V, W>(a.v + s * C, m, v);
        static_for<C>([&](auto k) {
          constexpr int K = decltype(k)::value;
          acc[K] += lanes::spread<W, C, K>(w) * v[K];
        });
      }
    }
    T sums[C] = {};
    for (int k = 0; k < C; ++k)
      for (int j = 0; j < W; ++j) sums[(k * W + j) % C] += acc[k][j];
    for (int c = 0; c < C; ++c) a.out[r * C + c] = sums[c];
  }
};

// Channel Cc of every sample of a block, from the interleaved vectors p (sample j's element
// j C + Cc sits in vector (j C + Cc) / W): two-source shuffles that merge one vector at a time.
template <int W, int C, int Cc> struct FromFirstTwo {
  static constexpr int at(int j) { return j * C + Cc < 2 * W ? j * C + Cc : 0; }
};
template <int W, int C, int Cc, int K> struct FromVector {
  static constexpr int at(int j) { return (j * C + Cc) / W == K ? W + (j * C + Cc) % W : j; }
};
template <int W, int C, int Cc, typename V>
L2VSD_LANES_INLINE V channel_of(const V (&p)[C]) {
  if constexpr (C == 1) {
    return p[0];
  } else {
    V x = lanes::shuffle<W, FromFirstTwo<W, C, Cc>>(p[0], p[1]);
    static_for<C - 2>([&](auto k) {
      constexpr int K = decltype(k)::value + 2;
      x = lanes::shuffle<W, FromVector<W, C, Cc, K>>(x, p[K]);
    });
    return x;
  }
}

// The gradient of each channel of ray r laid out like its values: lane j of vector k gets
// g[(k W + j) % C].
template <int C, typename V, int W, typename T>
L2VSD_LANES_INLINE void grad_pattern(const T* g, V (&out)[C]) {
  alignas(64) T buf[C * W];
  for (int e = 0; e < C * W; ++e) buf[e] = g[e % C];
  for (int k = 0; k < C; ++k) out[k] = load<V>(buf + k * W);
}

// accumulate_backward_sample() for the samples of one ray: dL/dv[i] = w_i g_r, and
// dL/dw_i = sum_c v[i, c] g_r[c] (summed in channel order, as the per-sample body does).
// Either output may be null.
template <int C, bool kValues, typename T> struct AccumulateBackward {
  struct Args {
    const T *w, *v, *g;
    const int64_t* off;
    T *gw, *gv;
  };
  template <int Bytes> L2VSD_LANES_INLINE static void ray(const Args& a, int64_t r) {
    using V = VecOf<T, Bytes>;
    constexpr int W = kLanesOf<T, Bytes>;
    const int64_t begin = a.off[r], end = a.off[r + 1];
    if (end <= begin) return;
    const T* g = a.g + r * C;
    V pattern[C];
    grad_pattern<C, V, W>(g, pattern);
    for (int64_t s = begin; s < end; s += W) {
      const int m = static_cast<int>(std::min<int64_t>(W, end - s));
      if (kValues && a.gv) {
        const V w = load_n<V, W>(a.w + s, m);
        V out[C];
        static_for<C>([&](auto k) {
          constexpr int K = decltype(k)::value;
          out[K] = lanes::spread<W, C, K>(w) * pattern[K];
        });
        store_values<C, V, W>(a.gv + s * C, m, out);
      }
      if (a.gw) {
        if constexpr (!kValues) {
          store_n<V, W>(a.gw + s, pattern[0], m);  // values = 1: dL/dw_i = g_r
        } else {
          V p[C];
          load_values<C, V, W>(a.v + s * C, m, p);
          for (int k = 0; k < C; ++k) p[k] *= pattern[k];
          V dot = channel_of<W, C, 0>(p);
          static_for<C - 1>([&](auto c) { dot += channel_of<W, C, decltype(c)::value + 1>(p); });
          store_n<V, W>(a.gw + s, dot, m);
        }
      }
    }
  }
};

// How a block of the fused op reads its W lanes:
// - kFull: samples [s, s + W) of the ray;
// - kShort: the m < W samples of a ray shorter than a block, the other lanes zero;
// - kTail: the last m < W samples of a ray of at least W samples, read as the full block
//   [s, s + W) that ends at the ray's end; its first `dead` = W - m lanes were the previous
//   block's and are masked out (zero optical depth, values read as zero, stores blended with what
//   that block wrote). Ragged ends thus cost one full block, not lane-by-lane loads.
enum BlockKind { kFull, kShort, kTail };

// Lanes whose flat index (first + j) is >= bound: the live part of a kTail block.
template <typename V, int W, typename T>
L2VSD_LANES_INLINE auto lanes_from(int first, int bound) {
  V index;
  for (int j = 0; j < W; ++j) index[j] = T(first + j);
  return index >= T(bound);
}

template <BlockKind kKind, typename V, int W, typename T>
L2VSD_LANES_INLINE V load_block(const T* p, int m) {
  if constexpr (kKind == kShort) return load_n<V, W>(p, m);
  else return load<V>(p);
}

template <BlockKind kKind, int C, typename V, int W, typename T>
L2VSD_LANES_INLINE void load_block_values(const T* v, int m, V (&out)[C]) {
  if constexpr (kKind == kShort) {
    load_values<C, V, W>(v, m, out);
  } else {
    for (int k = 0; k < C; ++k) out[k] = load<V>(v + k * W);
    if constexpr (kKind == kTail)
      for (int k = 0; k < C; ++k) out[k] = lanes_from<V, W, T>(k * W, (W - m) * C) ? out[k] : V{};
  }
}

template <BlockKind kKind, typename V, int W, typename T>
L2VSD_LANES_INLINE void store_block(T* p, const V& x, int m) {
  if constexpr (kKind == kShort) store_n<V, W>(p, x, m);
  else if constexpr (kKind == kFull) store(p, x);
  else store(p, lanes_from<V, W, T>(0, W - m) ? x : load<V>(p));
}

template <BlockKind kKind, int C, typename V, int W, typename T>
L2VSD_LANES_INLINE void store_block_values(T* v, int m, const V (&in)[C]) {
  if constexpr (kKind == kShort) {
    store_values<C, V, W>(v, m, in);
  } else {
    for (int k = 0; k < C; ++k) {
      if constexpr (kKind == kFull) store(v + k * W, in[k]);
      else store(v + k * W, lanes_from<V, W, T>(k * W, (W - m) * C) ? in[k] : load<V>(v + k * W));
    }
  }
}

// The weights of one block of the fused op, with one exponential per sample (WeightsForward
// takes two): T_i = T_front * prod_{j<i} exp(-tau_j), an in-register prefix product per block
// carried from block to block (`behind`), instead of exp(-optical depth). The kernels are bound
// by arithmetic, not memory (same time on in-cache data), so this is where the time goes.
template <typename V, int W, typename T> struct BlockWeights {
  V trans, w, dt, behind;  // behind: the transmittance behind the block, every lane
  template <BlockKind kKind>
  L2VSD_LANES_INLINE static BlockWeights of(const T* ts, const T* te, const T* sig, int64_t s,
                                            int m, const V& front) {
    BlockWeights b;
    b.dt = load_block<kKind, V, W>(te + s, m) - load_block<kKind, V, W>(ts + s, m);
    V tau = load_block<kKind, V, W>(sig + s, m) * b.dt;
    if constexpr (kKind == kTail) tau = lanes_from<V, W, T>(0, W - m) ? tau : V{};
    const V keep = lanes::exp_of<V>(-tau);  // 1 - alpha
    const V through = lanes::prefix_product<W>(keep);
    b.trans = front * lanes::shift_up_one<W>(through, V{} + T(1));
    b.w = b.trans * (T(1) - keep);
    b.behind = lanes::broadcast<W, W - 1>(front * through);
    return b;
  }
};

// Full blocks of samples [begin, end), then the ragged end as a kTail or kShort block:
// f.template operator()<kKind>(s, m) for each.
template <int W, typename F>
L2VSD_LANES_INLINE void for_each_block(int64_t begin, int64_t end, F&& f) {
  int64_t s = begin;
  for (; s + W <= end; s += W) f.template operator()<kFull>(s, W);
  const int m = static_cast<int>(end - s);
  if (m == 0) return;
  if (end - begin >= W) f.template operator()<kTail>(end - W, m);
  else f.template operator()<kShort>(s, m);
}

// The depth offsets d = t_mid - t_ref of a block's samples (composite.h's depth_offset). Lanes
// outside the ray get finite values; their weight is zero.
template <BlockKind kKind, typename V, int W, typename T>
L2VSD_LANES_INLINE V block_depth_offsets(const T* ts, const T* te, int64_t s, int m, T t_ref) {
  return depth_offset(load_block<kKind, V, W>(ts + s, m), load_block<kKind, V, W>(te + s, m), t_ref);
}

template <typename T> T first_midpoint(const T* ts, const T* te, int64_t begin, int64_t end) {
  return end > begin ? T(0.5) * (ts[begin] + te[begin]) : T(0);
}

template <int W, typename V, typename T> L2VSD_LANES_INLINE T lane_sum(const V& x) {
  T sum = T(0);
  for (int j = 0; j < W; ++j) sum += x[j];
  return sum;
}

// composite_forward_ray() for C <= kMaxVectorChannels: the weights and AccumulateForward's sums in
// one sweep, nothing stored per sample. kZ: also the depth spread (W-lane partial moments).
template <int C, bool kZ, typename T> struct CompositeForward {
  struct Args {
    const T *ts, *te, *sig, *v;
    const int64_t* off;
    T *out, *zs;
  };
  template <int Bytes> L2VSD_LANES_INLINE static void ray(const Args& a, int64_t r) {
    using V = VecOf<T, Bytes>;
    constexpr int W = kLanesOf<T, Bytes>;
    V front = V{} + T(1), acc[C] = {};
    V sum_w{}, sum_wd{}, sum_wdd{};
    T t_ref = T(0);
    if constexpr (kZ) t_ref = first_midpoint(a.ts, a.te, a.off[r], a.off[r + 1]);
    for_each_block<W>(a.off[r], a.off[r + 1], [&]<BlockKind kKind>(int64_t s, int m)
                                                  L2VSD_LANES_INLINE_LAMBDA {
      const auto b = BlockWeights<V, W, T>::template of<kKind>(a.ts, a.te, a.sig, s, m, front);
      V v[C];
      load_block_values<kKind, C, V, W>(a.v + s * C, m, v);
      static_for<C>([&](auto k) {
        constexpr int K = decltype(k)::value;
        acc[K] += lanes::spread<W, C, K>(b.w) * v[K];
      });
      if constexpr (kZ)
        add_depth_moments(b.w, block_depth_offsets<kKind, V, W>(a.ts, a.te, s, m, t_ref), sum_w,
                          sum_wd, sum_wdd);
      front = b.behind;
    });
    T sums[C] = {};
    for (int k = 0; k < C; ++k)
      for (int j = 0; j < W; ++j) sums[(k * W + j) % C] += acc[k][j];
    for (int c = 0; c < C; ++c) a.out[r * C + c] = sums[c];
    if constexpr (kZ)
      finish_depth_stats(lane_sum<W, V, T>(sum_w), lane_sum<W, V, T>(sum_wd),
                         lane_sum<W, V, T>(sum_wdd), a.zs + r * kDepthStats);
  }
};

// composite_backward_ray() for C <= kMaxVectorChannels, front to back: the weights recomputed as
// in the forward, the running sum of g_i w_i an in-register inclusive prefix sum per block plus
// one carry. kGS/kGV: which gradients are wanted (values are read only for grad_sigmas). kZ: the
// depth spread's gradient joins g_i (it only reaches the sigmas, so only with kGS).
template <int C, bool kGS, bool kGV, bool kZ, typename T> struct CompositeBackward {
  static_assert(kGS || !kZ, "the depth spread only has a sigma gradient");
  struct Args {
    const T *ts, *te, *sig, *v, *g, *out, *zs, *gzs;
    const int64_t* off;
    T *gs, *gv;
  };
  template <int Bytes> L2VSD_LANES_INLINE static void ray(const Args& a, int64_t r) {
    using V = VecOf<T, Bytes>;
    constexpr int W = kLanesOf<T, Bytes>;
    const int64_t begin = a.off[r], end = a.off[r + 1];
    if (end <= begin) return;
    const T* g = a.g + r * C;
    V pattern[C];
    grad_pattern<C, V, W>(g, pattern);
    T total_sum = T(0);
    for (int c = 0; c < C; ++c) total_sum += g[c] * a.out[r * C + c];
    DepthStatsGrad<T> dg{};
    T t_ref = T(0);
    if constexpr (kZ) {
      dg = DepthStatsGrad<T>::of(a.zs + r * kDepthStats, a.gzs + r * kDepthStats);
      total_sum += dg.total;
      t_ref = first_midpoint(a.ts, a.te, begin, end);
    }
    const V total = V{} + total_sum;
    V front = V{} + T(1), before{};  // transmittance and sum of g_i w_i in front of the block
    for_each_block<W>(begin, end, [&]<BlockKind kKind>(int64_t s, int m)
                                      L2VSD_LANES_INLINE_LAMBDA {
      const auto b = BlockWeights<V, W, T>::template of<kKind>(a.ts, a.te, a.sig, s, m, front);
      if constexpr (kGV) {
        V out[C];
        static_for<C>([&](auto k) {
          constexpr int K = decltype(k)::value;
          out[K] = lanes::spread<W, C, K>(b.w) * pattern[K];
        });
        store_block_values<kKind, C, V, W>(a.gv + s * C, m, out);
      }
      if constexpr (kGS) {
        V p[C];
        load_block_values<kKind, C, V, W>(a.v + s * C, m, p);
        for (int k = 0; k < C; ++k) p[k] *= pattern[k];
        V gw = channel_of<W, C, 0>(p);
        static_for<C - 1>([&](auto c) { gw += channel_of<W, C, decltype(c)::value + 1>(p); });
        if constexpr (kZ)
          gw += dg.weight_grad(block_depth_offsets<kKind, V, W>(a.ts, a.te, s, m, t_ref));
        const V upto = before + lanes::prefix_sum<W>(gw * b.w);
        store_block<kKind, V, W>(a.gs + s, fused_sigma_grad(gw, b.trans, b.w, total, upto, b.dt), m);
        before = lanes::broadcast<W, W - 1>(upto);
      }
      front = b.behind;
    });
  }
};

// Any channel count: the scalar per-ray bodies of composite.h.
template <typename T> void accumulate_forward_scalar(const T* w, const T* v, int64_t c,
                                                     const int64_t* off, int64_t n_rays, T* out) {
#pragma omp parallel for schedule(dynamic, 64)
  for (int64_t r = 0; r < n_rays; ++r) accumulate_forward_ray(w, v, c, off[r], off[r + 1], out + r * c);
}

template <typename T>
void accumulate_backward_scalar(const T* w, const T* v, const T* g, int64_t c, const int64_t* off,
                                int64_t n_rays, T* gw, T* gv) {
#pragma omp parallel for schedule(dynamic, 64)
  for (int64_t r = 0; r < n_rays; ++r)
    for (int64_t i = off[r]; i < off[r + 1]; ++i)
      accumulate_backward_sample(w, v, g + r * c, c, i, gw, gv);
}

template <typename T>
void composite_forward_scalar(const T* ts, const T* te, const T* sig, const T* v, int64_t c,
                              const int64_t* off, int64_t n_rays, T* out, T* zs) {
#pragma omp parallel for schedule(dynamic, 64)
  for (int64_t r = 0; r < n_rays; ++r)
    composite_forward_ray(ts, te, sig, v, c, off[r], off[r + 1], out + r * c,
                          zs ? zs + r * kDepthStats : nullptr);
}

template <typename T>
void composite_backward_scalar(const T* ts, const T* te, const T* sig, const T* v, const T* g,
                               const T* out, const T* zs, const T* gzs, int64_t c,
                               const int64_t* off, int64_t n_rays, T* gs, T* gv) {
  const bool depth = zs && gzs;
#pragma omp parallel for schedule(dynamic, 64)
  for (int64_t r = 0; r < n_rays; ++r)
    composite_backward_ray(ts, te, sig, v, g + r * c, out + r * c, c, off[r], off[r + 1], gs, gv,
                           depth ? zs + r * kDepthStats : nullptr,
                           depth ? gzs + r * kDepthStats : nullptr);
}

template <typename T>
void weights_forward_impl(const T* ts, const T* te, const T* sig, const int64_t* off,
                          int64_t n_rays, T* w, T* tr, T* al) {
  for_each_ray<WeightsForward<T>>({ts, te, sig, off, w, tr, al}, n_rays);
}

template <typename T>
void weights_backward_impl(const T* ts, const T* te, const T* w, const T* tr, const T* al,
                           const T* gw, const T* gt, const T* ga, const int64_t* off,
                           int64_t n_rays, T* gs) {
  const int which = (gw ? 4 : 0) | (gt ? 2 : 0) | (ga ? 1 : 0);
  switch (which) {
#define L2VSD_WEIGHTS_BACKWARD_CASE(BITS)                                                    \
    case BITS:                                                                               \
      for_each_ray<WeightsBackward<(BITS & 4) != 0, (BITS & 2) != 0, (BITS & 1) != 0, T>>(  \
          {ts, te, w, tr, al, gw, gt, ga, off, gs}, n_rays);                                 \
      break;
    L2VSD_WEIGHTS_BACKWARD_CASE(0) L2VSD_WEIGHTS_BACKWARD_CASE(1)
    L2VSD_WEIGHTS_BACKWARD_CASE(2) L2VSD_WEIGHTS_BACKWARD_CASE(3)
    L2VSD_WEIGHTS_BACKWARD_CASE(4) L2VSD_WEIGHTS_BACKWARD_CASE(5)
    L2VSD_WEIGHTS_BACKWARD_CASE(6) L2VSD_WEIGHTS_BACKWARD_CASE(7)
#undef L2VSD_WEIGHTS_BACKWARD_CASE
  }
}

// Calls f(std::integral_constant<int, C>) for the runtime c in [1, kMaxVectorChannels]; false
// when c is out of that range.
template <typename F> bool with_channel_count(int64_t c, F&& f) {
  bool found = false;
  static_for<kMaxVectorChannels>([&](auto k) {
    constexpr int kC = decltype(k)::value + 1;
    if (c == kC) {
      f(std::integral_constant<int, kC>{});
      found = true;
    }
  });
  return found;
}

template <typename T>
void accumulate_forward_impl(const T* w, const T* v, int64_t c, const int64_t* off, int64_t n_rays,
                             T* out) {
  if (!v) return for_each_ray<AccumulateForward<1, false, T>>({w, v, off, out}, n_rays);
  const bool vectorised = with_channel_count(c, [&](auto C) {
    for_each_ray<AccumulateForward<decltype(C)::value, true, T>>({w, v, off, out}, n_rays);
  });
  if (!vectorised) accumulate_forward_scalar(w, v, c, off, n_rays, out);
}

template <typename T>
void accumulate_backward_impl(const T* w, const T* v, const T* g, int64_t c, const int64_t* off,
                              int64_t n_rays, T* gw, T* gv) {
  if (!v) return for_each_ray<AccumulateBackward<1, false, T>>({w, v, g, off, gw, nullptr}, n_rays);
  const bool vectorised = with_channel_count(c, [&](auto C) {
    for_each_ray<AccumulateBackward<decltype(C)::value, true, T>>({w, v, g, off, gw, gv}, n_rays);
  });
  if (!vectorised) accumulate_backward_scalar(w, v, g, c, off, n_rays, gw, gv);
}

// zs: the depth spread (n_rays, 3) or null; the kZ = false kernels are the op without it.
template <typename T>
void composite_forward_impl(const T* ts, const T* te, const T* sig, const T* v, int64_t c,
                            const int64_t* off, int64_t n_rays, T* out, T* zs) {
  const bool vectorised = with_channel_count(c, [&](auto C) {
    constexpr int kC = decltype(C)::value;
    if (zs)
      for_each_ray<CompositeForward<kC, true, T>>({ts, te, sig, v, off, out, zs}, n_rays);
    else
      for_each_ray<CompositeForward<kC, false, T>>({ts, te, sig, v, off, out, zs}, n_rays);
  });
  if (!vectorised) composite_forward_scalar(ts, te, sig, v, c, off, n_rays, out, zs);
}

// The depth spread's gradient (zs and gzs) only reaches the sigmas: without gs it is ignored.
template <typename T>
void composite_backward_impl(const T* ts, const T* te, const T* sig, const T* v, const T* g,
                             const T* out, const T* zs, const T* gzs, int64_t c,
                             const int64_t* off, int64_t n_rays, T* gs, T* gv) {
  if (!gs && !gv) return;
  const bool depth = gs && zs && gzs;
  if (!depth) zs = gzs = nullptr;
  const bool vectorised = with_channel_count(c, [&](auto C) {
    constexpr int kC = decltype(C)::value;
    const auto run = [&]<bool kGS, bool kGV, bool kZ>() {
      for_each_ray<CompositeBackward<kC, kGS, kGV, kZ, T>>(
          {ts, te, sig, v, g, out, zs, gzs, off, gs, gv}, n_rays);
    };
    if (depth && gv) run.template operator()<true, true, true>();
    else if (depth) run.template operator()<true, false, true>();
    else if (gs && gv) run.template operator()<true, true, false>();
    else if (gs) run.template operator()<true, false, false>();
    else run.template operator()<false, true, false>();
  });
  if (!vectorised)
    composite_backward_scalar(ts, te, sig, v, g, out, zs, gzs, c, off, n_rays, gs, gv);
}

}  // namespace

#define L2VSD_COMPOSITE_DISPATCH(dtype, CALL) \
  L2VSD_DISPATCH_FLOAT_DOUBLE(dtype, "composite", "CPU", CALL)

void weights_forward_cpu(DType dtype, const void* t_starts, const void* t_ends,
                         const void* sigmas, const int64_t* offsets, int64_t n_rays,
                         void* weights, void* transmittance, void* alphas) {
  L2VSD_COMPOSITE_DISPATCH(dtype, weights_forward_impl<T>(
      static_cast<const T*>(t_starts), static_cast<const T*>(t_ends),
      static_cast<const T*>(sigmas), offsets, n_rays, static_cast<T*>(weights),
      static_cast<T*>(transmittance), static_cast<T*>(alphas)));
}

void weights_backward_cpu(DType dtype, const void* t_starts, const void* t_ends,
                          const void* weights, const void* transmittance, const void* alphas,
                          const void* grad_weights, const void* grad_transmittance,
                          const void* grad_alphas, const int64_t* offsets, int64_t n_rays,
                          void* grad_sigmas) {
  L2VSD_COMPOSITE_DISPATCH(dtype, weights_backward_impl<T>(
      static_cast<const T*>(t_starts), static_cast<const T*>(t_ends),
      static_cast<const T*>(weights), static_cast<const T*>(transmittance),
      static_cast<const T*>(alphas), static_cast<const T*>(grad_weights),
      static_cast<const T*>(grad_transmittance), static_cast<const T*>(grad_alphas), offsets,
      n_rays, static_cast<T*>(grad_sigmas)));
}

void accumulate_forward_cpu(DType dtype, const void* weights, const void* values,
                            int64_t n_channels, const int64_t* offsets, int64_t n_rays,
                            void* out) {
  L2VSD_COMPOSITE_DISPATCH(dtype, accumulate_forward_impl<T>(
      static_cast<const T*>(weights), static_cast<const T*>(values), n_channels, offsets, n_rays,
      static_cast<T*>(out)));
}

void accumulate_backward_cpu(DType dtype, const void* weights, const void* values,
                             const void* grad_out, int64_t n_channels, const int64_t* offsets,
                             int64_t n_rays, void* grad_weights, void* grad_values) {
  L2VSD_COMPOSITE_DISPATCH(dtype, accumulate_backward_impl<T>(
      static_cast<const T*>(weights), static_cast<const T*>(values),
      static_cast<const T*>(grad_out), n_channels, offsets, n_rays,
      static_cast<T*>(grad_weights), static_cast<T*>(grad_values)));
}

void composite_forward_cpu(DType dtype, const void* t_starts, const void* t_ends,
                           const void* sigmas, const void* values, int64_t n_channels,
                           const int64_t* offsets, int64_t n_rays, void* out, void* depth_stats) {
  L2VSD_COMPOSITE_DISPATCH(dtype, composite_forward_impl<T>(
      static_cast<const T*>(t_starts), static_cast<const T*>(t_ends),
      static_cast<const T*>(sigmas), static_cast<const T*>(values), n_channels, offsets, n_rays,
      static_cast<T*>(out), static_cast<T*>(depth_stats)));
}

void composite_backward_cpu(DType dtype, const void* t_starts, const void* t_ends,
                            const void* sigmas, const void* values, const void* grad_out,
                            const void* out, const void* depth_stats,
                            const void* grad_depth_stats, int64_t n_channels,
                            const int64_t* offsets, int64_t n_rays, void* grad_sigmas,
                            void* grad_values) {
  L2VSD_COMPOSITE_DISPATCH(dtype, composite_backward_impl<T>(
      static_cast<const T*>(t_starts), static_cast<const T*>(t_ends),
      static_cast<const T*>(sigmas), static_cast<const T*>(values),
      static_cast<const T*>(grad_out), static_cast<const T*>(out),
      static_cast<const T*>(depth_stats), static_cast<const T*>(grad_depth_stats), n_channels,
      offsets, n_rays, static_cast<T*>(grad_sigmas), static_cast<T*>(grad_values)));
}

}  // namespace composite
}  // namespace l2vsd

// CUDA launcher of the fused op composite_along_rays (and its depth spread): one sweep per ray
// forward, one backward, nothing stored per sample. The CPU twin is composite_cpu.cpp; the
// per-sample math (depth moments, the depth spread's gradient, the sigma gradient) is composite.h's.
//
// Layout: a tile of G consecutive lanes of a warp walks one ray, G samples at a time, lane j
// taking sample s + j, so the loads of a block of samples are coalesced (one thread per ray, as
// the two older kernels do, reads with a stride of one ray per lane and leaves most of the GPU
// idle at a render's few thousand rays). Within a block the transmittance is a tile-wide
// inclusive prefix product of exp(-tau) (one exp per sample, as the CPU kernel) times the
// product carried from the blocks in front; the backward's running sum of g_i w_i is a tile-wide
// prefix sum plus a carry. Every lane of a warp runs the same number of blocks (the longest ray of
// the warp's tiles) and every shuffle names the full warp, so no shuffle is ever divergent; lanes
// past a ray's end (or of a tile past the last ray) carry exp(-tau) = 1 and write nothing.
//
// Channels: up to kRegisterChannels sums live in registers and are reduced over the tile once per
// ray; wider values reduce each channel over the tile once per block (still one sweep).
// Summation orders differ from the CPU kernel's, so the two agree to rounding, not bit for bit.
#include "composite.h"

#include "../cuda_launch.cuh"

#include <cuda_runtime.h>

namespace l2vsd {
namespace composite {
namespace {

constexpr int kFusedThreads = 256;
constexpr int kWarp = 32;
constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kRegisterChannels = 8;
// Lanes per ray. A warp per ray fills the GPU at a render's 4k-16k rays of tens to hundreds of
// samples; shorter tiles for short rays are possible (G is a parameter throughout) but would need
// the sample count at launch, and nothing has been timed on a GPU yet.
constexpr int kTile = 32;

// Tile-wide scans and reductions over the G lanes of a tile (width G shuffles, log2 G steps).
// Every lane of the warp calls them.
template <int G, typename T> __device__ __forceinline__ T tile_prefix_product(T x, int lane) {
#pragma unroll
  for (int o = 1; o < G; o <<= 1) {
    const T y = __shfl_up_sync(kFullMask, x, o, G);
    if (lane >= o) x *= y;
  }
  return x;
}

template <int G, typename T> __device__ __forceinline__ T tile_prefix_sum(T x, int lane) {
#pragma unroll
  for (int o = 1; o < G; o <<= 1) {
    const T y = __shfl_up_sync(kFullMask, x, o, G);
    if (lane >= o) x += y;
  }
  return x;
}

template <int G, typename T> __device__ __forceinline__ T tile_sum(T x) {
#pragma unroll
  for (int o = G / 2; o > 0; o >>= 1) x += __shfl_xor_sync(kFullMask, x, o, G);
  return x;
}

template <int G, typename T> __device__ __forceinline__ T tile_last(T x) {
  return __shfl_sync(kFullMask, x, G - 1, G);
}

__device__ __forceinline__ long long warp_max(long long x) {
#pragma unroll
  for (int o = kWarp / 2; o > 0; o >>= 1) {
    const long long y = __shfl_xor_sync(kFullMask, x, o);
    x = y > x ? y : x;
  }
  return x;
}

// The tile of ray r: its samples [begin, end) (empty past the last ray) and the number of
// G-sample blocks every lane of the warp walks.
template <int G> struct TileRay {
  int64_t r, begin, end, blocks;
  int lane;
  bool live;
  __device__ static TileRay of(const int64_t* off, int64_t n_rays) {
    static_assert(G <= kWarp && kWarp % G == 0 && kFusedThreads % kWarp == 0, "tiles split warps");
    TileRay t;
    t.r = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / G;
    t.lane = static_cast<int>(threadIdx.x % G);
    t.live = t.r < n_rays;
    t.begin = t.live ? off[t.r] : 0;
    t.end = t.live ? off[t.r + 1] : 0;
    t.blocks = warp_max((t.end - t.begin + G - 1) / G);
    return t;
  }
  template <typename T> __device__ T first_midpoint(const T* ts, const T* te) const {
    return end > begin ? T(0.5) * (ts[begin] + te[begin]) : T(0);
  }
};

// One block of G samples: lane j holds sample i = s + j (when `in` the ray), its interval dt,
// transmittance in front and weight. `front` carries the transmittance from block to block.
template <typename T> struct TileSample {
  int64_t i;
  bool in;
  T dt, trans, w;
};

template <int G, typename T>
__device__ __forceinline__ TileSample<T> tile_block(const T* __restrict__ ts,
                                                    const T* __restrict__ te,
                                                    const T* __restrict__ sig, int64_t s,
                                                    int64_t end, int lane, T& front) {
  TileSample<T> b;
  b.i = s + lane;
  b.in = b.i < end;
  b.dt = T(0);
  T keep = T(1);  // 1 - alpha = exp(-tau)
  if (b.in) {
    b.dt = te[b.i] - ts[b.i];
    keep = exp_of(-sig[b.i] * b.dt);
  }
  const T through = tile_prefix_product<G>(keep, lane);
  const T in_front = __shfl_up_sync(kFullMask, through, 1, G);
  b.trans = front * (lane == 0 ? T(1) : in_front);
  b.w = b.trans * (T(1) - keep);
  front *= tile_last<G>(through);
  return b;
}

// out (n_rays, C) and, with kZ, depth stats (n_rays, 3). kRegisters: C <= kRegisterChannels.
template <typename T, int G, bool kRegisters, bool kZ>
__global__ void __launch_bounds__(kFusedThreads)
    fused_forward_kernel(const T* __restrict__ ts, const T* __restrict__ te,
                         const T* __restrict__ sig, const T* __restrict__ v, int64_t c,
                         const int64_t* __restrict__ off, int64_t n_rays, T* __restrict__ out,
                         T* __restrict__ zs) {
  const auto ray = TileRay<G>::of(off, n_rays);
  const bool writer = ray.live && ray.lane == 0;
  T acc[kRegisters ? kRegisterChannels : 1];
#pragma unroll
  for (int k = 0; k < (kRegisters ? kRegisterChannels : 1); ++k) acc[k] = T(0);
  if (!kRegisters && writer)
    for (int64_t k = 0; k < c; ++k) out[ray.r * c + k] = T(0);
  T sum_w = T(0), sum_wd = T(0), sum_wdd = T(0);
  const T t_ref = kZ ? ray.first_midpoint(ts, te) : T(0);
  T front = T(1);
  for (int64_t step = 0; step < ray.blocks; ++step) {
    const auto b = tile_block<G>(ts, te, sig, ray.begin + step * G, ray.end, ray.lane, front);
    if constexpr (kRegisters) {
      if (b.in) {
#pragma unroll
        for (int k = 0; k < kRegisterChannels; ++k)
          if (k < c) acc[k] += b.w * v[b.i * c + k];
      }
    } else {
      for (int64_t k = 0; k < c; ++k) {  // c is the same in every lane: the shuffles converge
        const T sum = tile_sum<G>(b.in ? b.w * v[b.i * c + k] : T(0));
        if (writer) out[ray.r * c + k] += sum;
      }
    }
    if constexpr (kZ) {
      if (b.in) add_depth_moments(b.w, depth_offset(ts[b.i], te[b.i], t_ref), sum_w, sum_wd, sum_wdd);
    }
  }
  if constexpr (kRegisters) {
#pragma unroll
    for (int k = 0; k < kRegisterChannels; ++k) {
      if (k < c) {  // uniform across the warp
        const T sum = tile_sum<G>(acc[k]);
        if (writer) out[ray.r * c + k] = sum;
      }
    }
  }
  if constexpr (kZ) {
    sum_w = tile_sum<G>(sum_w);
    sum_wd = tile_sum<G>(sum_wd);
    sum_wdd = tile_sum<G>(sum_wdd);
    if (writer) finish_depth_stats(sum_w, sum_wd, sum_wdd, zs + ray.r * kDepthStats);
  }
}

// grad_sigmas (gs, may be null) and grad_values (gv, may be null) from grad_out and the
// forward's out; with kZ (needs gs) also the depth spread's gradient gzs through its stats zs.
template <typename T, int G, bool kZ>
__global__ void __launch_bounds__(kFusedThreads)
    fused_backward_kernel(const T* __restrict__ ts, const T* __restrict__ te,
                          const T* __restrict__ sig, const T* __restrict__ v,
                          const T* __restrict__ g, const T* __restrict__ out,
                          const T* __restrict__ zs, const T* __restrict__ gzs, int64_t c,
                          const int64_t* __restrict__ off, int64_t n_rays, T* __restrict__ gs,
                          T* __restrict__ gv) {
  const auto ray = TileRay<G>::of(off, n_rays);
  const T* g_ray = ray.live ? g + ray.r * c : g;
  T total = T(0);  // sum_i g_i w_i over the whole ray
  if (ray.live)
    for (int64_t k = 0; k < c; ++k) total += g_ray[k] * out[ray.r * c + k];
  DepthStatsGrad<T> dg{};
  T t_ref = T(0);
  if (kZ && ray.live) {
    dg = DepthStatsGrad<T>::of(zs + ray.r * kDepthStats, gzs + ray.r * kDepthStats);
    total += dg.total;
    t_ref = ray.first_midpoint(ts, te);
  }
  T front = T(1), before = T(0);  // transmittance and sum of g_i w_i in front of the block
  for (int64_t step = 0; step < ray.blocks; ++step) {
    const auto b = tile_block<G>(ts, te, sig, ray.begin + step * G, ray.end, ray.lane, front);
    T gw = T(0);
    if (b.in) {
      for (int64_t k = 0; k < c; ++k) {
        const T gk = g_ray[k];
        if (gs) gw += v[b.i * c + k] * gk;
        if (gv) gv[b.i * c + k] = b.w * gk;
      }
      if constexpr (kZ) gw += dg.weight_grad(depth_offset(ts[b.i], te[b.i], t_ref));
    }
    if (gs) {  // the same in every lane
      const T upto = before + tile_prefix_sum<G>(b.in ? gw * b.w : T(0), ray.lane);
      if (b.in) gs[b.i] = fused_sigma_grad(gw, b.trans, b.w, total, upto, b.dt);
      before = tile_last<G>(upto);
    }
  }
}

unsigned fused_blocks(int64_t n_rays) { return l2vsd::blocks_for(n_rays * kTile, kFusedThreads); }

template <typename T>
void forward_impl(const T* ts, const T* te, const T* sig, const T* v, int64_t c,
                  const int64_t* off, int64_t n_rays, T* out, T* zs, cudaStream_t stream) {
  const unsigned blocks = fused_blocks(n_rays);
  const bool registers = c <= kRegisterChannels;
  if (registers && zs)
    fused_forward_kernel<T, kTile, true, true><<<blocks, kFusedThreads, 0, stream>>>(
        ts, te, sig, v, c, off, n_rays, out, zs);
  else if (registers)
    fused_forward_kernel<T, kTile, true, false><<<blocks, kFusedThreads, 0, stream>>>(
        ts, te, sig, v, c, off, n_rays, out, zs);
  else if (zs)
    fused_forward_kernel<T, kTile, false, true><<<blocks, kFusedThreads, 0, stream>>>(
        ts, te, sig, v, c, off, n_rays, out, zs);
  else
    fused_forward_kernel<T, kTile, false, false><<<blocks, kFusedThreads, 0, stream>>>(
        ts, te, sig, v, c, off, n_rays, out, zs);
}

template <typename T>
void backward_impl(const T* ts, const T* te, const T* sig, const T* v, const T* g, const T* out,
                   const T* zs, const T* gzs, int64_t c, const int64_t* off, int64_t n_rays,
                   T* gs, T* gv, cudaStream_t stream) {
  // The depth spread's gradient only reaches the sigmas (as in the CPU launcher).
  const bool depth = gs && zs && gzs;
  const unsigned blocks = fused_blocks(n_rays);
  if (depth)
    fused_backward_kernel<T, kTile, true><<<blocks, kFusedThreads, 0, stream>>>(
        ts, te, sig, v, g, out, zs, gzs, c, off, n_rays, gs, gv);
  else
    fused_backward_kernel<T, kTile, false><<<blocks, kFusedThreads, 0, stream>>>(
        ts, te, sig, v, g, out, nullptr, nullptr, c, off, n_rays, gs, gv);
}

}  // namespace

#define L2VSD_FUSED_DISPATCH(dtype, CALL) \
  L2VSD_DISPATCH_FLOAT_DOUBLE(dtype, "composite_along_rays", "CUDA", CALL)

void composite_forward_cuda(DType dtype, const void* t_starts, const void* t_ends,
                            const void* sigmas, const void* values, int64_t n_channels,
                            const int64_t* offsets, int64_t n_rays, void* out, void* depth_stats,
                            cudaStream_t stream) {
  if (n_rays == 0) return;
  L2VSD_FUSED_DISPATCH(dtype, forward_impl<T>(
      static_cast<const T*>(t_starts), static_cast<const T*>(t_ends),
      static_cast<const T*>(sigmas), static_cast<const T*>(values), n_channels, offsets, n_rays,
      static_cast<T*>(out), static_cast<T*>(depth_stats), stream));
  check_cuda_launch("composite_along_rays", "fused forward kernel");
}

void composite_backward_cuda(DType dtype, const void* t_starts, const void* t_ends,
                             const void* sigmas, const void* values, const void* grad_out,
                             const void* out, const void* depth_stats,
                             const void* grad_depth_stats, int64_t n_channels,
                             const int64_t* offsets, int64_t n_rays, void* grad_sigmas,
                             void* grad_values, cudaStream_t stream) {
  if (n_rays == 0 || (!grad_sigmas && !grad_values)) return;
  L2VSD_FUSED_DISPATCH(dtype, backward_impl<T>(
      static_cast<const T*>(t_starts), static_cast<const T*>(t_ends),
      static_cast<const T*>(sigmas), static_cast<const T*>(values),
      static_cast<const T*>(grad_out), static_cast<const T*>(out),
      static_cast<const T*>(depth_stats), static_cast<const T*>(grad_depth_stats), n_channels,
      offsets, n_rays, static_cast<T*>(grad_sigmas), static_cast<T*>(grad_values), stream));
  check_cuda_launch("composite_along_rays", "fused backward kernel");
}

}  // namespace composite
}  // namespace l2vsd

// CPU launcher for compositing: OpenMP over rays (forward, weight backward) or samples
// (accumulate backward). Same math and summation order as the per-ray bodies in composite.h,
// laid out so that the compiler vectorises everything except the one running sum per ray:
// - the weight forward walks a ray in chunks: per-sample terms in one vectorised loop, the
//   optical depth in a short scalar loop, outputs in a third loop, with float exponentials 4 at
//   a time through exp_lanes (below) instead of a libm call each;
// - the weight backward streams a ray's inputs front to back into a per-thread scratch, then
//   runs the gradient suffix sum back to front over that cache-resident scratch;
// - absent gradients and the channel count are template parameters, not per-sample branches.
// Float64 keeps libm's exp and is bit-identical to the per-ray bodies; float32 differs from them
// only by exp_lanes' rounding (about 1 ulp).
#include "composite.h"

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <type_traits>
#include <vector>

namespace l2vsd {
namespace composite {
namespace {

constexpr int64_t kChunk = 64;  // samples per chunk; the scratch lives on the stack

// exp(x) for 4 floats at once (GCC/Clang vector extensions, one SSE register):
// x = k ln2 + r with |r| <= ln2/2 (Cody-Waite split of ln2), exp(r) by Cephes' degree-6
// polynomial (about 1 ulp), times 2^k built in the exponent bits (k in [-126, 127]). Below -87.3
// (results under FLT_MIN) it returns 0, above 88 infinity (true values above 1.6e38); NaN stays
// NaN. libm's expf is a call per sample, which no loop around it can vectorise.
typedef float f32x4 __attribute__((vector_size(16)));
typedef int32_t i32x4 __attribute__((vector_size(16)));
constexpr int kLanes = 4;

__attribute__((always_inline)) inline f32x4 splat(float v) { return f32x4{} + v; }

__attribute__((always_inline)) inline f32x4 exp_lanes(f32x4 x) {
  const f32x4 lo = splat(-87.3365447f), hi = splat(88.0f);
  const i32x4 below = x < lo, above = x > hi;
  const f32x4 xc = below ? lo : (above ? hi : x);
  const f32x4 magic = splat(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer
  const f32x4 shifted = xc * splat(1.44269504088896341f) + magic;
  const i32x4 k = std::bit_cast<i32x4>(shifted) - std::bit_cast<i32x4>(magic);
  const f32x4 kf = shifted - magic;
  f32x4 r = xc - kf * splat(0.693359375f);
  r = r - kf * splat(-2.12194440e-4f);
  const f32x4 r2 = r * r;
  f32x4 p = splat(1.9875691500e-4f);
  p = p * r + splat(1.3981999507e-3f);
  p = p * r + splat(8.3334519073e-3f);
  p = p * r + splat(4.1665795894e-2f);
  p = p * r + splat(1.6666665459e-1f);
  p = p * r + splat(5.0000001201e-1f);
  p = p * r2 + r + splat(1.0f);
  const i32x4 scale_bits = (k + 127) << 23;
  const f32x4 v = p * std::bit_cast<f32x4>(scale_bits);
  return below ? splat(0.0f) : (above ? splat(std::numeric_limits<float>::infinity()) : v);
}

// weights_forward_ray() in chunks.
template <typename T>
void weights_forward_ray_chunked(const T* ts, const T* te, const T* sig, int64_t begin,
                                 int64_t end, T* w, T* tr, T* al) {
  alignas(32) T tau[kChunk], depth_before[kChunk], w_s[kChunk], tr_s[kChunk], al_s[kChunk];
  T depth = T(0);
  for (int64_t start = begin; start < end; start += kChunk) {
    const int64_t m = std::min(kChunk, end - start);
    for (int64_t j = 0; j < m; ++j) tau[j] = sig[start + j] * (te[start + j] - ts[start + j]);
    for (int64_t j = 0; j < m; ++j) {
      depth_before[j] = depth;
      depth += tau[j];
    }
    if constexpr (std::is_same_v<T, float>) {
      const int64_t padded = (m + kLanes - 1) / kLanes * kLanes;
      for (int64_t j = m; j < padded; ++j) tau[j] = depth_before[j] = 0.0f;
      for (int64_t j = 0; j < padded; j += kLanes) {
        f32x4 depth_j, tau_j;
        std::memcpy(&depth_j, depth_before + j, sizeof(f32x4));
        std::memcpy(&tau_j, tau + j, sizeof(f32x4));
        const f32x4 trans = exp_lanes(-depth_j);
        const f32x4 alpha = splat(1.0f) - exp_lanes(-tau_j);
        const f32x4 weight = trans * alpha;
        std::memcpy(w_s + j, &weight, sizeof(f32x4));
        std::memcpy(tr_s + j, &trans, sizeof(f32x4));
        std::memcpy(al_s + j, &alpha, sizeof(f32x4));
      }
    } else {
      for (int64_t j = 0; j < m; ++j) {
        tr_s[j] = exp_of(-depth_before[j]);
        al_s[j] = T(1) - exp_of(-tau[j]);
        w_s[j] = tr_s[j] * al_s[j];
      }
    }
    std::memcpy(w + start, w_s, m * sizeof(T));
    std::memcpy(tr + start, tr_s, m * sizeof(T));
    std::memcpy(al + start, al_s, m * sizeof(T));
  }
}

// weights_backward_ray(): the per-sample terms front to back into a per-thread scratch (the
// inputs then stream forwards, which the hardware prefetcher follows; back to front it stalled
// on every load), then the suffix sum back to front over the cache-resident scratch, in the same
// order as before. kGW/kGT/kGA say which gradients exist.
constexpr int64_t kMaxScratchSamples = 1 << 16;  // longer rays skip the scratch (bounded memory)

template <bool kGW, bool kGT, bool kGA, typename T>
void weights_backward_ray_scratch(const T* ts, const T* te, const T* w, const T* tr, const T* al,
                                  const T* gw, const T* gt, const T* ga, int64_t begin,
                                  int64_t end, T* gs, std::vector<T>& scratch) {
  const int64_t m = end - begin;
  if (static_cast<int64_t>(scratch.size()) < 3 * m) scratch.resize(3 * m);
  T* local = scratch.data();
  T* term = local + m;
  T* dt = term + m;
  for (int64_t j = 0; j < m; ++j) {
    const int64_t i = begin + j;
    // An absent gradient's terms are left out rather than multiplied by zero, so its saved
    // tensor is not read at all (the loop is bound by memory traffic).
    T g_local = kGW ? gw[i] * (tr[i] - w[i]) : T(0);
    if (kGA) g_local = ga[i] * (T(1) - al[i]) + g_local;
    local[j] = g_local;
    T g_term = kGW ? gw[i] * w[i] : T(0);
    if (kGT) g_term = g_term + gt[i] * tr[i];
    term[j] = g_term;
    dt[j] = te[i] - ts[i];
  }
  T suffix = T(0);
  for (int64_t j = m - 1; j >= 0; --j) {
    gs[begin + j] = (local[j] - suffix) * dt[j];
    suffix += term[j];
  }
}

// Rays differ wildly in sample count (empty space is skipped), hence dynamic scheduling.
template <typename T>
void weights_forward_impl(const T* ts, const T* te, const T* sig, const int64_t* off, int64_t n_rays,
                          T* w, T* tr, T* al) {
#pragma omp parallel for schedule(dynamic, 64)
  for (int64_t r = 0; r < n_rays; ++r)
    weights_forward_ray_chunked(ts, te, sig, off[r], off[r + 1], w, tr, al);
}

template <bool kGW, bool kGT, bool kGA, typename T>
void weights_backward_rays(const T* ts, const T* te, const T* w, const T* tr, const T* al,
                           const T* gw, const T* gt, const T* ga, const int64_t* off,
                           int64_t n_rays, T* gs) {
#pragma omp parallel
  {
    std::vector<T> scratch;
#pragma omp for schedule(dynamic, 64)
    for (int64_t r = 0; r < n_rays; ++r) {
      if (off[r + 1] - off[r] <= kMaxScratchSamples) {
        weights_backward_ray_scratch<kGW, kGT, kGA>(ts, te, w, tr, al, gw, gt, ga, off[r],
                                                    off[r + 1], gs, scratch);
      } else {  // a huge ray: the plain back-to-front body, no scratch to allocate
        weights_backward_ray(ts, te, w, tr, al, kGW ? gw : nullptr, kGT ? gt : nullptr,
                             kGA ? ga : nullptr, off[r], off[r + 1], gs);
      }
    }
  }
}

template <typename T>
void weights_backward_impl(const T* ts, const T* te, const T* w, const T* tr, const T* al,
                           const T* gw, const T* gt, const T* ga, const int64_t* off,
                           int64_t n_rays, T* gs) {
  const int which = (gw ? 4 : 0) | (gt ? 2 : 0) | (ga ? 1 : 0);
  switch (which) {
#define L2VSD_WEIGHTS_BACKWARD_CASE(BITS)                                                   \
    case BITS:                                                                              \
      weights_backward_rays<(BITS & 4) != 0, (BITS & 2) != 0, (BITS & 1) != 0>(             \
          ts, te, w, tr, al, gw, gt, ga, off, n_rays, gs);                                  \
      break;
    L2VSD_WEIGHTS_BACKWARD_CASE(0) L2VSD_WEIGHTS_BACKWARD_CASE(1)
    L2VSD_WEIGHTS_BACKWARD_CASE(2) L2VSD_WEIGHTS_BACKWARD_CASE(3)
    L2VSD_WEIGHTS_BACKWARD_CASE(4) L2VSD_WEIGHTS_BACKWARD_CASE(5)
    L2VSD_WEIGHTS_BACKWARD_CASE(6) L2VSD_WEIGHTS_BACKWARD_CASE(7)
#undef L2VSD_WEIGHTS_BACKWARD_CASE
  }
}

// kC > 0: channel count fixed at compile time; kC == 0: runtime c. values == nullptr: ones.
template <int kC, bool kValues, typename T>
void accumulate_forward_rays(const T* w, const T* v, int64_t c_runtime, const int64_t* off,
                             int64_t n_rays, T* out) {
  const int64_t c = kC > 0 ? kC : c_runtime;
#pragma omp parallel for schedule(dynamic, 64)
  for (int64_t r = 0; r < n_rays; ++r) {
    T* o = out + r * c;
    if (kC > 0) {
      T acc[kC > 0 ? kC : 1];
      for (int k = 0; k < kC; ++k) acc[k] = T(0);
      for (int64_t i = off[r]; i < off[r + 1]; ++i)
        for (int k = 0; k < kC; ++k) acc[k] += w[i] * (kValues ? v[i * kC + k] : T(1));
      for (int k = 0; k < kC; ++k) o[k] = acc[k];
    } else {
      accumulate_forward_ray(w, kValues ? v : nullptr, c, off[r], off[r + 1], o);
    }
  }
}

template <typename T>
void accumulate_forward_impl(const T* w, const T* v, int64_t c, const int64_t* off, int64_t n_rays,
                             T* out) {
  if (!v) return accumulate_forward_rays<1, false>(w, v, c, off, n_rays, out);
  switch (c) {
    case 1: return accumulate_forward_rays<1, true>(w, v, c, off, n_rays, out);
    case 3: return accumulate_forward_rays<3, true>(w, v, c, off, n_rays, out);
    case 4: return accumulate_forward_rays<4, true>(w, v, c, off, n_rays, out);
    default: return accumulate_forward_rays<0, true>(w, v, c, off, n_rays, out);
  }
}

template <int kC, bool kValues, bool kGW, bool kGV, typename T>
void accumulate_backward_samples(const T* w, const T* v, const T* g, int64_t c_runtime,
                                 const int64_t* ray, int64_t n, T* gw, T* gv) {
  const int64_t c = kC > 0 ? kC : c_runtime;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    if (ray[i] < 0) continue;
    const T* g_ray = g + ray[i] * c;
    if (kC > 0) {
      T dot = T(0);
      for (int k = 0; k < kC; ++k) {
        dot += (kValues ? v[i * kC + k] : T(1)) * g_ray[k];
        if (kGV) gv[i * kC + k] = w[i] * g_ray[k];
      }
      if (kGW) gw[i] = dot;
    } else {
      accumulate_backward_sample(w, kValues ? v : nullptr, g_ray, c, i, kGW ? gw : nullptr,
                                 kGV ? gv : nullptr);
    }
  }
}

template <int kC, bool kValues, typename T>
void accumulate_backward_by_outputs(const T* w, const T* v, const T* g, int64_t c,
                                    const int64_t* ray, int64_t n, T* gw, T* gv) {
  if (gw && gv) return accumulate_backward_samples<kC, kValues, true, true>(w, v, g, c, ray, n, gw, gv);
  if (gw) return accumulate_backward_samples<kC, kValues, true, false>(w, v, g, c, ray, n, gw, gv);
  if (gv) return accumulate_backward_samples<kC, kValues, false, true>(w, v, g, c, ray, n, gw, gv);
}

template <typename T>
void accumulate_backward_impl(const T* w, const T* v, const T* g, int64_t c, const int64_t* ray,
                              int64_t n, T* gw, T* gv) {
  if (!v) return accumulate_backward_by_outputs<1, false>(w, v, g, c, ray, n, gw, static_cast<T*>(nullptr));
  switch (c) {
    case 1: return accumulate_backward_by_outputs<1, true>(w, v, g, c, ray, n, gw, gv);
    case 3: return accumulate_backward_by_outputs<3, true>(w, v, g, c, ray, n, gw, gv);
    case 4: return accumulate_backward_by_outputs<4, true>(w, v, g, c, ray, n, gw, gv);
    default: return accumulate_backward_by_outputs<0, true>(w, v, g, c, ray, n, gw, gv);
  }
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
                             const void* grad_out, int64_t n_channels,
                             const int64_t* ray_of_sample, int64_t n_samples,
                             void* grad_weights, void* grad_values) {
  L2VSD_COMPOSITE_DISPATCH(dtype, accumulate_backward_impl<T>(
      static_cast<const T*>(weights), static_cast<const T*>(values),
      static_cast<const T*>(grad_out), n_channels, ray_of_sample, n_samples,
      static_cast<T*>(grad_weights), static_cast<T*>(grad_values)));
}

}  // namespace composite
}  // namespace l2vsd

// SIMD lanes for the CPU compositing launcher (GCC/Clang vector extensions, CPU only): vector
// types of a given byte width, partial loads/stores for the ragged ends of rays, in-register
// prefix/suffix sums (log2(lanes) shift-and-add steps), lane shuffles for the interleaved
// (n_samples, C) value layout, and a float exp. Everything is always_inline, so each per-ISA entry
// point of composite_cpu.cpp compiles it for its own instruction set.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <utility>

// Wide vectors only ever live inside always_inline functions; GCC's note that passing them by
// value would change the ABI does not apply.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"

#define L2VSD_LANES_INLINE __attribute__((always_inline)) inline
#define L2VSD_LANES_INLINE_LAMBDA __attribute__((always_inline))

namespace l2vsd {
namespace composite {
namespace lanes {

template <typename T, int Bytes> struct Vec {
  static constexpr int kLanes = Bytes / static_cast<int>(sizeof(T));
  typedef T type __attribute__((vector_size(Bytes)));
};

// __builtin_shufflevector(a, b, Map::at(0), ..., Map::at(W-1)): lanes 0..W-1 pick from a,
// W..2W-1 from b. Map::at must be constexpr, so every shuffle is a fixed permutation.
template <int W, typename Map, typename V, int... J>
L2VSD_LANES_INLINE V shuffle_seq(const V& a, const V& b, std::integer_sequence<int, J...>) {
  return __builtin_shufflevector(a, b, Map::at(J)...);
}
template <int W, typename Map, typename V>
L2VSD_LANES_INLINE V shuffle(const V& a, const V& b) {
  return shuffle_seq<W, Map>(a, b, std::make_integer_sequence<int, W>{});
}

// Lane maps. Shifting in lane W of b (b = zero vector) fills with zeros.
template <int W, int S> struct UpBy { static constexpr int at(int j) { return j >= S ? j - S : W; } };
template <int W, int S> struct DownBy {
  static constexpr int at(int j) { return j + S < W ? j + S : W; }
};
template <int I> struct Lane { static constexpr int at(int) { return I; } };

// Inclusive prefix sum over the lanes (x[j] = sum_{k<=j} x[k]), in log2(W) steps.
template <int W, typename V> L2VSD_LANES_INLINE V prefix_sum(V x) {
  const V zero{};
  if constexpr (W > 1) x += shuffle<W, UpBy<W, 1>>(x, zero);
  if constexpr (W > 2) x += shuffle<W, UpBy<W, 2>>(x, zero);
  if constexpr (W > 4) x += shuffle<W, UpBy<W, 4>>(x, zero);
  if constexpr (W > 8) x += shuffle<W, UpBy<W, 8>>(x, zero);
  static_assert(W <= 16, "up to 16 lanes");
  return x;
}

// Inclusive suffix sum over the lanes (x[j] = sum_{k>=j} x[k]).
template <int W, typename V> L2VSD_LANES_INLINE V suffix_sum(V x) {
  const V zero{};
  if constexpr (W > 1) x += shuffle<W, DownBy<W, 1>>(x, zero);
  if constexpr (W > 2) x += shuffle<W, DownBy<W, 2>>(x, zero);
  if constexpr (W > 4) x += shuffle<W, DownBy<W, 4>>(x, zero);
  if constexpr (W > 8) x += shuffle<W, DownBy<W, 8>>(x, zero);
  return x;
}

// Inclusive prefix product over the lanes (x[j] = prod_{k<=j} x[k]); shifted-in lanes are ones.
template <int W, typename V> L2VSD_LANES_INLINE V prefix_product(V x) {
  const V one = V{} + 1;
  if constexpr (W > 1) x *= shuffle<W, UpBy<W, 1>>(x, one);
  if constexpr (W > 2) x *= shuffle<W, UpBy<W, 2>>(x, one);
  if constexpr (W > 4) x *= shuffle<W, UpBy<W, 4>>(x, one);
  if constexpr (W > 8) x *= shuffle<W, UpBy<W, 8>>(x, one);
  static_assert(W <= 16, "up to 16 lanes");
  return x;
}

// x shifted up one lane, lane 0 = fill[0].
template <int W, typename V> L2VSD_LANES_INLINE V shift_up_one(const V& x, const V& fill) {
  return shuffle<W, UpBy<W, 1>>(x, fill);
}

template <int W, typename V> L2VSD_LANES_INLINE V shift_up_one(const V& x) {
  return shuffle<W, UpBy<W, 1>>(x, V{});
}
template <int W, typename V> L2VSD_LANES_INLINE V shift_down_one(const V& x) {
  return shuffle<W, DownBy<W, 1>>(x, V{});
}
template <int W, int I, typename V> L2VSD_LANES_INLINE V broadcast(const V& x) {
  return shuffle<W, Lane<I>>(x, x);
}

// The interleaved layout: W samples of C channels are C vectors; vector k holds flat elements
// [k W, (k + 1) W), i.e. sample (k W + j) / C, channel (k W + j) % C in lane j.
template <int W, int C, int K> struct SampleOfLane {
  static constexpr int at(int j) { return (K * W + j) / C; }
};

// w (one value per sample) spread to the interleaved layout's vector k.
template <int W, int C, int K, typename V> L2VSD_LANES_INLINE V spread(const V& w) {
  return shuffle<W, SampleOfLane<W, C, K>>(w, w);
}

// Loads/stores of m <= W elements (m < W only at the end of a ray): missing lanes read as zero.
template <typename V, typename T> L2VSD_LANES_INLINE V load(const T* p) {
  V v;
  std::memcpy(&v, p, sizeof(V));
  return v;
}
template <typename V, typename T> L2VSD_LANES_INLINE void store(T* p, const V& v) {
  std::memcpy(p, &v, sizeof(V));
}
template <typename V, int W, typename T> L2VSD_LANES_INLINE V load_n(const T* p, int m) {
  if (m == W) return load<V>(p);
  V v{};
  for (int j = 0; j < m; ++j) v[j] = p[j];
  return v;
}
template <typename V, int W, typename T> L2VSD_LANES_INLINE void store_n(T* p, const V& v, int m) {
  if (m == W) return store(p, v);
  for (int j = 0; j < m; ++j) p[j] = v[j];
}

// exp lane-wise. float: x = k ln2 + r with |r| <= ln2/2 (Cody-Waite split of ln2), exp(r) by
// Cephes' degree-6 polynomial (about 1 ulp), times 2^k built in the exponent bits. x is first
// clamped to [-127 ln2, ln(FLT_MAX)] by two min/max instructions (no masks or blends: the
// kernels are bound by arithmetic): at the low end k = -127 makes the exponent bits zero, so
// the result is exactly 0 below about -87.7 (results under FLT_MIN flush to zero); at the top
// k = 128 gives infinity, so x above about 88.38 gives infinity. NaN stays NaN (the compares
// keep x when it is NaN). double: libm per lane (the float64 path is for checking, not speed).
template <typename V> L2VSD_LANES_INLINE V exp_of(const V& x) {
  constexpr int W = sizeof(V) / sizeof(x[0]);
  if constexpr (sizeof(x[0]) == 8) {
    V y;
    for (int j = 0; j < W; ++j) y[j] = std::exp(x[j]);
    return y;
  } else {
    typedef int32_t VI __attribute__((vector_size(sizeof(V))));
    const V lo = V{} - 88.0296919311f, hi = V{} + 88.7228391117f;
    V xc = lo > x ? lo : x;  // max(lo, x), x when NaN
    xc = hi < xc ? hi : xc;  // min(hi, x)
    const V magic = V{} + 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
    const V shifted = xc * 1.44269504088896341f + magic;
    const VI k = __builtin_bit_cast(VI, shifted) - __builtin_bit_cast(VI, magic);
    const V kf = shifted - magic;
    V r = xc - kf * 0.693359375f;
    r = r - kf * -2.12194440e-4f;
    const V r2 = r * r;
    V p = V{} + 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r2 + r + 1.0f;
    return p * __builtin_bit_cast(V, (k + 127) << 23);
  }
}

}  // namespace lanes
}  // namespace composite
}  // namespace l2vsd

#pragma GCC diagnostic pop

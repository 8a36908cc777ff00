// Device intrinsics for the CUDA emulator. Warp intrinsics are real rendezvous of the lanes named
// in the mask (emu::warp_op); atomics are plain read-modify-writes, which is exact here because a
// fiber only yields inside a rendezvous, never in the middle of an atomic.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <source_location>
#include <type_traits>

#include "emu_core.h"
#include "emu_half.h"

namespace emu {
template <typename T> uint64_t to_bits(const T& v) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "warp values are at most 8 bytes");
  uint64_t b = 0;
  std::memcpy(&b, &v, sizeof(T));
  return b;
}
template <typename T> T from_bits(uint64_t b) {
  T v;
  std::memcpy(&v, &b, sizeof(T));
  return v;
}
template <typename T>
T shuffle(WarpOp op, unsigned mask, T v, int arg, int width, const std::source_location& site) {
  return from_bits<T>(warp_op(op, mask, to_bits(v), arg, width, site));
}
}  // namespace emu

// ---- barriers and warp intrinsics (the source location names the call site in reports)
inline void __syncthreads(std::source_location s = std::source_location::current()) {
  ::emu::block_barrier(0, 0, s);
}
inline int __syncthreads_count(int p, std::source_location s = std::source_location::current()) {
  return ::emu::block_barrier(1, p != 0, s);
}
inline int __syncthreads_and(int p, std::source_location s = std::source_location::current()) {
  return ::emu::block_barrier(2, p != 0, s);
}
inline int __syncthreads_or(int p, std::source_location s = std::source_location::current()) {
  return ::emu::block_barrier(3, p != 0, s);
}
inline void __syncwarp(unsigned mask = 0xffffffffu,
                       std::source_location s = std::source_location::current()) {
  ::emu::warp_op(::emu::WarpOp::kSync, mask, 0, 0, 32, s);
}
template <typename T>
T __shfl_sync(unsigned mask, T v, int src, int width = 32,
              std::source_location s = std::source_location::current()) {
  return ::emu::shuffle(::emu::WarpOp::kShflIdx, mask, v, src, width, s);
}
template <typename T>
T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32,
                 std::source_location s = std::source_location::current()) {
  return ::emu::shuffle(::emu::WarpOp::kShflUp, mask, v, static_cast<int>(delta), width, s);
}
template <typename T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32,
                   std::source_location s = std::source_location::current()) {
  return ::emu::shuffle(::emu::WarpOp::kShflDown, mask, v, static_cast<int>(delta), width, s);
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32,
                  std::source_location s = std::source_location::current()) {
  return ::emu::shuffle(::emu::WarpOp::kShflXor, mask, v, lane_mask, width, s);
}
inline unsigned __ballot_sync(unsigned mask, int p,
                              std::source_location s = std::source_location::current()) {
  return static_cast<unsigned>(::emu::warp_op(::emu::WarpOp::kBallot, mask, p != 0, 0, 32, s));
}
inline int __any_sync(unsigned mask, int p, std::source_location s = std::source_location::current()) {
  return static_cast<int>(::emu::warp_op(::emu::WarpOp::kAny, mask, p != 0, 0, 32, s));
}
inline int __all_sync(unsigned mask, int p, std::source_location s = std::source_location::current()) {
  return static_cast<int>(::emu::warp_op(::emu::WarpOp::kAll, mask, p != 0, 0, 32, s));
}
template <typename T>
unsigned __match_any_sync(unsigned mask, T v, std::source_location s = std::source_location::current()) {
  return static_cast<unsigned>(::emu::warp_op(::emu::WarpOp::kMatchAny, mask, ::emu::to_bits(v), 0, 32, s));
}
// arg 1: signed operands (the scheduler compares the 64-bit sign-extended values).
#define EMU_REDUCE(NAME, OP, T)                                                                   \
  inline T NAME(unsigned mask, T v, std::source_location s = std::source_location::current()) {  \
    return static_cast<T>(::emu::warp_op(::emu::WarpOp::OP, mask,                                 \
                                         static_cast<uint64_t>(static_cast<int64_t>(v)),          \
                                         std::is_signed_v<T> ? 1 : 0, 32, s));                    \
  }
EMU_REDUCE(__reduce_add_sync, kReduceAdd, unsigned)
EMU_REDUCE(__reduce_add_sync, kReduceAdd, int)
EMU_REDUCE(__reduce_min_sync, kReduceMin, unsigned)
EMU_REDUCE(__reduce_min_sync, kReduceMin, int)
EMU_REDUCE(__reduce_max_sync, kReduceMax, unsigned)
EMU_REDUCE(__reduce_max_sync, kReduceMax, int)
#undef EMU_REDUCE
inline unsigned __activemask() { return ::emu::active_mask(); }
inline void __threadfence() {}
inline void __threadfence_block() {}
inline void __threadfence_system() {}

// ---- read-only loads, bit casts, integer intrinsics
template <typename T> T __ldg(const T* p) { return *p; }
template <typename T> T __ldcs(const T* p) { return *p; }
template <typename T> T __ldcg(const T* p) { return *p; }
template <typename T> void __stcs(T* p, T v) { *p = v; }
template <typename T> void __stcg(T* p, T v) { *p = v; }
inline int __float_as_int(float f) { int i; std::memcpy(&i, &f, 4); return i; }
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline unsigned __float_as_uint(float f) { unsigned i; std::memcpy(&i, &f, 4); return i; }
inline float __uint_as_float(unsigned i) { float f; std::memcpy(&f, &i, 4); return f; }
inline long long __double_as_longlong(double d) { long long i; std::memcpy(&i, &d, 8); return i; }
inline double __longlong_as_double(long long i) { double d; std::memcpy(&d, &i, 8); return d; }
inline int __popc(unsigned v) { return __builtin_popcount(v); }
inline int __popcll(unsigned long long v) { return __builtin_popcountll(v); }
inline int __clz(int v) { return v == 0 ? 32 : __builtin_clz(static_cast<unsigned>(v)); }
inline int __clzll(long long v) { return v == 0 ? 64 : __builtin_clzll(static_cast<unsigned long long>(v)); }
inline int __ffs(int v) { return __builtin_ffs(v); }
inline int __ffsll(long long v) { return __builtin_ffsll(v); }
inline unsigned __brev(unsigned v) {
  unsigned r = 0;
  for (int i = 0; i < 32; ++i) r |= ((v >> i) & 1u) << (31 - i);
  return r;
}
inline unsigned __funnelshift_l(unsigned lo, unsigned hi, unsigned s) {
  s &= 31; return s ? (hi << s) | (lo >> (32 - s)) : hi;
}
inline unsigned __funnelshift_r(unsigned lo, unsigned hi, unsigned s) {
  s &= 31; return s ? (lo >> s) | (hi << (32 - s)) : lo;
}
inline int __mul24(int a, int b) { return a * b; }
inline unsigned __umul24(unsigned a, unsigned b) { return a * b; }
inline int __mulhi(int a, int b) { return static_cast<int>((static_cast<long long>(a) * b) >> 32); }
inline unsigned __umulhi(unsigned a, unsigned b) {
  return static_cast<unsigned>((static_cast<unsigned long long>(a) * b) >> 32);
}

// ---- float intrinsics: the fast-math ones computed accurately (emulation checks the logic, not
// the hardware approximations; see docs/emulator.md)
inline float __expf(float x) { return std::exp(x); }
inline float __exp10f(float x) { return std::pow(10.0f, x); }
inline float __logf(float x) { return std::log(x); }
inline float __log2f(float x) { return std::log2(x); }
inline float __log10f(float x) { return std::log10(x); }
inline float __sinf(float x) { return std::sin(x); }
inline float __cosf(float x) { return std::cos(x); }
inline float __tanf(float x) { return std::tan(x); }
inline void __sincosf(float x, float* s, float* c) { *s = std::sin(x); *c = std::cos(x); }
inline float __powf(float a, float b) { return std::pow(a, b); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __frcp_rn(float a) { return 1.0f / a; }
inline double __drcp_rn(double a) { return 1.0 / a; }
inline float __fsqrt_rn(float a) { return std::sqrt(a); }
inline float __frsqrt_rn(float a) { return 1.0f / std::sqrt(a); }
inline float rsqrtf(float a) { return 1.0f / std::sqrt(a); }
inline double rsqrt(double a) { return 1.0 / std::sqrt(a); }
inline float rcbrtf(float a) { return 1.0f / std::cbrt(a); }
inline float __saturatef(float a) { return a != a ? 0.0f : (a < 0.0f ? 0.0f : (a > 1.0f ? 1.0f : a)); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline double __fma_rn(double a, double b, double c) { return std::fma(a, b, c); }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline int __float2int_rn(float a) { return static_cast<int>(std::nearbyint(a)); }
inline int __float2int_rz(float a) { return static_cast<int>(a); }
inline int __float2int_rd(float a) { return static_cast<int>(std::floor(a)); }
inline int __float2int_ru(float a) { return static_cast<int>(std::ceil(a)); }
inline unsigned __float2uint_rn(float a) { return static_cast<unsigned>(std::nearbyint(a)); }
inline unsigned __float2uint_rz(float a) { return static_cast<unsigned>(a); }
inline float __int2float_rn(int a) { return static_cast<float>(a); }
inline float __uint2float_rn(unsigned a) { return static_cast<float>(a); }
inline int __double2int_rn(double a) { return static_cast<int>(std::nearbyint(a)); }
inline float __double2float_rn(double a) { return static_cast<float>(a); }
inline long long __float2ll_rn(float a) { return static_cast<long long>(std::nearbyint(a)); }
inline float normcdff(float x) { return 0.5f * std::erfc(-x * 0.70710678118654752f); }
inline float fdividef(float a, float b) { return a / b; }

// CUDA's global min/max overloads (device code calls them unqualified).
#define EMU_MINMAX(T)                                   \
  inline T min(T a, T b) { return a < b ? a : b; }      \
  inline T max(T a, T b) { return a > b ? a : b; }
EMU_MINMAX(int)
EMU_MINMAX(unsigned)
EMU_MINMAX(long)
EMU_MINMAX(unsigned long)
EMU_MINMAX(long long)
EMU_MINMAX(unsigned long long)
#undef EMU_MINMAX
inline float min(float a, float b) { return std::fmin(a, b); }
inline float max(float a, float b) { return std::fmax(a, b); }
inline double min(double a, double b) { return std::fmin(a, b); }
inline double max(double a, double b) { return std::fmax(a, b); }

// ---- atomics (return the old value, as CUDA's do)
namespace emu {
template <typename T, typename F> T atomic_rmw(T* addr, F f) {
  const T old = *addr;
  *addr = f(old);
  return old;
}
}  // namespace emu
#define EMU_ATOMIC_ADD(T) \
  inline T atomicAdd(T* a, T v) { return ::emu::atomic_rmw(a, [&](T o) { return static_cast<T>(o + v); }); } \
  inline T atomicSub(T* a, T v) { return ::emu::atomic_rmw(a, [&](T o) { return static_cast<T>(o - v); }); } \
  inline T atomicExch(T* a, T v) { return ::emu::atomic_rmw(a, [&](T) { return v; }); }
EMU_ATOMIC_ADD(int)
EMU_ATOMIC_ADD(unsigned)
EMU_ATOMIC_ADD(unsigned long long)
EMU_ATOMIC_ADD(float)
EMU_ATOMIC_ADD(double)
#undef EMU_ATOMIC_ADD
inline __half atomicAdd(__half* a, __half v) {
  return ::emu::atomic_rmw(a, [&](__half o) { return __float2half(__half2float(o) + __half2float(v)); });
}
inline __nv_bfloat16 atomicAdd(__nv_bfloat16* a, __nv_bfloat16 v) {
  return ::emu::atomic_rmw(a, [&](__nv_bfloat16 o) {
    return __float2bfloat16(__bfloat162float(o) + __bfloat162float(v));
  });
}
inline __half2 atomicAdd(__half2* a, __half2 v) {
  return ::emu::atomic_rmw(a, [&](__half2 o) { return __hadd2(o, v); });
}
#define EMU_ATOMIC_INT(T)                                                                          \
  inline T atomicMin(T* a, T v) { return ::emu::atomic_rmw(a, [&](T o) { return v < o ? v : o; }); } \
  inline T atomicMax(T* a, T v) { return ::emu::atomic_rmw(a, [&](T o) { return v > o ? v : o; }); } \
  inline T atomicAnd(T* a, T v) { return ::emu::atomic_rmw(a, [&](T o) { return static_cast<T>(o & v); }); } \
  inline T atomicOr(T* a, T v) { return ::emu::atomic_rmw(a, [&](T o) { return static_cast<T>(o | v); }); }  \
  inline T atomicXor(T* a, T v) { return ::emu::atomic_rmw(a, [&](T o) { return static_cast<T>(o ^ v); }); } \
  inline T atomicCAS(T* a, T cmp, T v) { return ::emu::atomic_rmw(a, [&](T o) { return o == cmp ? v : o; }); }
EMU_ATOMIC_INT(int)
EMU_ATOMIC_INT(unsigned)
EMU_ATOMIC_INT(long long)
EMU_ATOMIC_INT(unsigned long long)
#undef EMU_ATOMIC_INT
inline unsigned short atomicCAS(unsigned short* a, unsigned short cmp, unsigned short v) {
  return ::emu::atomic_rmw(a, [&](unsigned short o) { return o == cmp ? v : o; });
}
inline long long atomicAdd(long long* a, long long v) {
  return ::emu::atomic_rmw(a, [&](long long o) { return o + v; });
}
inline unsigned atomicInc(unsigned* a, unsigned limit) {
  return ::emu::atomic_rmw(a, [&](unsigned o) { return o >= limit ? 0u : o + 1u; });
}
inline unsigned atomicDec(unsigned* a, unsigned limit) {
  return ::emu::atomic_rmw(a, [&](unsigned o) { return (o == 0 || o > limit) ? limit : o - 1u; });
}
#define EMU_ATOMIC_SCOPED(NAME)                                                        \
  template <typename... A> auto NAME##_block(A... a) { return NAME(a...); }            \
  template <typename... A> auto NAME##_system(A... a) { return NAME(a...); }
EMU_ATOMIC_SCOPED(atomicAdd)
EMU_ATOMIC_SCOPED(atomicMax)
EMU_ATOMIC_SCOPED(atomicMin)
EMU_ATOMIC_SCOPED(atomicCAS)
EMU_ATOMIC_SCOPED(atomicExch)
#undef EMU_ATOMIC_SCOPED

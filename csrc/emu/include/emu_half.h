// __half and __nv_bfloat16 for the CUDA emulator: storage types with CUDA's conversion intrinsics.
// The conversions round to nearest even, like the hardware's cvt.rn. Implicit conversions and
// operators follow CUDA's opt-out macros (__CUDA_NO_HALF_CONVERSIONS__, __CUDA_NO_HALF_OPERATORS__,
// __CUDA_NO_BFLOAT16_CONVERSIONS__, ...): with torch's flags a kernel that relies on them fails to
// compile here as it does under nvcc. Usable from plain C++ too (the parity tests build inputs).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace emu {
inline uint32_t float_bits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }
inline float bits_float(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }

inline uint16_t float_to_half_bits(float x) {
  const uint32_t f = float_bits(x);
  const uint32_t sign = (f >> 16) & 0x8000u, a = f & 0x7fffffffu;
  if (a >= 0x7f800000u) return static_cast<uint16_t>(sign | (a > 0x7f800000u ? 0x7e00u : 0x7c00u));
  if (a >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds to infinity
  if (a < 0x38800000u) {  // half subnormal: multiples of 2^-24, rounded to nearest even
    const float scaled = bits_float(a) * 16777216.0f;  // exact: scaling by a power of two
    return static_cast<uint16_t>(sign | static_cast<uint32_t>(std::nearbyint(scaled)));
  }
  const uint32_t mant = a & 0x7fffffu;
  uint32_t h = (((a >> 23) - 112u) << 10) | (mant >> 13);
  const uint32_t rem = mant & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;
  return static_cast<uint16_t>(sign | h);
}

inline float half_bits_to_float(uint16_t h) {
  const uint32_t sign = (static_cast<uint32_t>(h) & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
  if (exp == 0) {
    const float v = static_cast<float>(mant) * 5.9604644775390625e-8f;  // mant * 2^-24
    return sign ? -v : v;
  }
  if (exp == 31) return bits_float(sign | 0x7f800000u | (mant << 13));
  return bits_float(sign | ((exp + 112u) << 23) | (mant << 13));
}

inline uint16_t float_to_bf16_bits(float x) {
  const uint32_t u = float_bits(x);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);  // quiet NaN
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
inline float bf16_bits_to_float(uint16_t b) { return bits_float(static_cast<uint32_t>(b) << 16); }
}  // namespace emu

struct __half_raw { unsigned short x; };
struct __nv_bfloat16_raw { unsigned short x; };

struct __half {
  unsigned short __x;
  __half() = default;
  constexpr __half(const __half_raw& r) : __x(r.x) {}
  operator __half_raw() const { return __half_raw{__x}; }
#if !defined(__CUDA_NO_HALF_CONVERSIONS__)
  __half(float f) : __x(emu::float_to_half_bits(f)) {}
  __half(double f) : __x(emu::float_to_half_bits(static_cast<float>(f))) {}
  __half(int i) : __x(emu::float_to_half_bits(static_cast<float>(i))) {}
  operator float() const { return emu::half_bits_to_float(__x); }
#endif
};
struct __half2 { __half x, y; };
typedef __half half;
typedef __half2 half2;

struct __nv_bfloat16 {
  unsigned short __x;
  __nv_bfloat16() = default;
  constexpr __nv_bfloat16(const __nv_bfloat16_raw& r) : __x(r.x) {}
  operator __nv_bfloat16_raw() const { return __nv_bfloat16_raw{__x}; }
#if !defined(__CUDA_NO_BFLOAT16_CONVERSIONS__)
  __nv_bfloat16(float f) : __x(emu::float_to_bf16_bits(f)) {}
  __nv_bfloat16(double f) : __x(emu::float_to_bf16_bits(static_cast<float>(f))) {}
  operator float() const { return emu::bf16_bits_to_float(__x); }
#endif
};
struct __nv_bfloat162 { __nv_bfloat16 x, y; };
typedef __nv_bfloat16 nv_bfloat16;
typedef __nv_bfloat162 nv_bfloat162;

inline __half __float2half(float f) { return __half_raw{emu::float_to_half_bits(f)}; }
inline __half __float2half_rn(float f) { return __float2half(f); }
inline __half __double2half(double d) { return __float2half(static_cast<float>(d)); }
inline float __half2float(__half h) { return emu::half_bits_to_float(h.__x); }
inline __half __ushort_as_half(unsigned short u) { return __half_raw{u}; }
inline unsigned short __half_as_ushort(__half h) { return h.__x; }
inline __half __int2half_rn(int i) { return __float2half(static_cast<float>(i)); }
inline int __half2int_rn(__half h) { return static_cast<int>(std::nearbyint(__half2float(h))); }
inline __half2 __floats2half2_rn(float a, float b) { return {__float2half(a), __float2half(b)}; }
inline __half2 __float2half2_rn(float a) { return {__float2half(a), __float2half(a)}; }
inline __half2 __halves2half2(__half a, __half b) { return {a, b}; }
inline __half2 __half2half2(__half a) { return {a, a}; }
inline __half __low2half(__half2 v) { return v.x; }
inline __half __high2half(__half2 v) { return v.y; }
inline float __low2float(__half2 v) { return __half2float(v.x); }
inline float __high2float(__half2 v) { return __half2float(v.y); }
inline __half __hadd(__half a, __half b) { return __float2half(__half2float(a) + __half2float(b)); }
inline __half __hsub(__half a, __half b) { return __float2half(__half2float(a) - __half2float(b)); }
inline __half __hmul(__half a, __half b) { return __float2half(__half2float(a) * __half2float(b)); }
inline __half __hdiv(__half a, __half b) { return __float2half(__half2float(a) / __half2float(b)); }
inline __half __hneg(__half a) { return __half_raw{static_cast<unsigned short>(a.__x ^ 0x8000u)}; }
inline __half __hfma(__half a, __half b, __half c) {
  return __float2half(std::fma(__half2float(a), __half2float(b), __half2float(c)));
}
inline bool __hisnan(__half a) { return (a.__x & 0x7fffu) > 0x7c00u; }
inline bool __hisinf(__half a) { return (a.__x & 0x7fffu) == 0x7c00u; }
inline __half2 __hadd2(__half2 a, __half2 b) { return {__hadd(a.x, b.x), __hadd(a.y, b.y)}; }
inline __half2 __hmul2(__half2 a, __half2 b) { return {__hmul(a.x, b.x), __hmul(a.y, b.y)}; }
inline __half2 __hfma2(__half2 a, __half2 b, __half2 c) {
  return {__hfma(a.x, b.x, c.x), __hfma(a.y, b.y, c.y)};
}

inline __nv_bfloat16 __float2bfloat16(float f) { return __nv_bfloat16_raw{emu::float_to_bf16_bits(f)}; }
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __float2bfloat16(f); }
inline __nv_bfloat16 __double2bfloat16(double d) { return __float2bfloat16(static_cast<float>(d)); }
inline float __bfloat162float(__nv_bfloat16 b) { return emu::bf16_bits_to_float(b.__x); }
inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short u) { return __nv_bfloat16_raw{u}; }
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 b) { return b.__x; }
inline __nv_bfloat162 __floats2bfloat162_rn(float a, float b) {
  return {__float2bfloat16(a), __float2bfloat16(b)};
}
inline float __low2float(__nv_bfloat162 v) { return __bfloat162float(v.x); }
inline float __high2float(__nv_bfloat162 v) { return __bfloat162float(v.y); }
inline __nv_bfloat16 __hadd(__nv_bfloat16 a, __nv_bfloat16 b) {
  return __float2bfloat16(__bfloat162float(a) + __bfloat162float(b));
}
inline __nv_bfloat16 __hmul(__nv_bfloat16 a, __nv_bfloat16 b) {
  return __float2bfloat16(__bfloat162float(a) * __bfloat162float(b));
}
inline __nv_bfloat16 __hfma(__nv_bfloat16 a, __nv_bfloat16 b, __nv_bfloat16 c) {
  return __float2bfloat16(std::fma(__bfloat162float(a), __bfloat162float(b), __bfloat162float(c)));
}
inline bool __hisnan(__nv_bfloat16 a) { return (a.__x & 0x7fffu) > 0x7f80u; }

#if !defined(__CUDA_NO_HALF_OPERATORS__)
#define EMU_HALF_BINOP(T, TO_F, FROM_F, OP)                                            \
  inline T operator OP(T a, T b) { return FROM_F(TO_F(a) OP TO_F(b)); }                \
  inline T& operator OP##=(T& a, T b) { a = FROM_F(TO_F(a) OP TO_F(b)); return a; }
#define EMU_HALF_CMP(T, TO_F, OP) \
  inline bool operator OP(T a, T b) { return TO_F(a) OP TO_F(b); }
#define EMU_HALF_OPS(T, TO_F, FROM_F)                                                       \
  EMU_HALF_BINOP(T, TO_F, FROM_F, +) EMU_HALF_BINOP(T, TO_F, FROM_F, -)                    \
  EMU_HALF_BINOP(T, TO_F, FROM_F, *) EMU_HALF_BINOP(T, TO_F, FROM_F, /)                    \
  EMU_HALF_CMP(T, TO_F, <) EMU_HALF_CMP(T, TO_F, >) EMU_HALF_CMP(T, TO_F, <=)              \
  EMU_HALF_CMP(T, TO_F, >=) EMU_HALF_CMP(T, TO_F, ==) EMU_HALF_CMP(T, TO_F, !=)            \
  inline T operator-(T a) { return FROM_F(-TO_F(a)); }
EMU_HALF_OPS(__half, __half2float, __float2half)
#if !defined(__CUDA_NO_BFLOAT16_OPERATORS__)
EMU_HALF_OPS(__nv_bfloat16, __bfloat162float, __float2bfloat16)
#endif
#undef EMU_HALF_OPS
#undef EMU_HALF_CMP
#undef EMU_HALF_BINOP
#endif

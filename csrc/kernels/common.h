// Shared by every kernel: the HD macro (inline for g++, __host__ __device__ for nvcc) and the one
// atomic_add helper used by scatter-adds in backward passes. No torch headers here.
#pragma once

#include <cstdint>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

#if !defined(__CUDACC__)
// Same declaration as CUDA's driver_types.h, so launcher prototypes compile without CUDA headers.
struct CUstream_st;
typedef struct CUstream_st* cudaStream_t;
#endif

#if defined(__CUDACC__)
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#define HD __host__ __device__ __forceinline__
#define L2VSD_UNROLL _Pragma("unroll")
#else
#define HD inline
#define L2VSD_UNROLL
#endif

namespace l2vsd {

// Arithmetic type for a storage type: half-precision values are accumulated in float.
template <typename T> struct AccType { using type = T; };
#if defined(__CUDACC__)
template <> struct AccType<__half> { using type = float; };
template <> struct AccType<__nv_bfloat16> { using type = float; };
#endif
template <typename T> using acc_t = typename AccType<T>::type;

// The one conversion between element types. torch's CUDA build passes -D__CUDA_NO_HALF_CONVERSIONS__
// and -D__CUDA_NO_BFLOAT16_CONVERSIONS__, so __half / __nv_bfloat16 have no implicit or
// static_cast conversions: every kernel converts through cast_to, which routes them through the
// intrinsics (host and device) and is a plain static_cast for everything else.
template <typename To, typename From> struct Convert {
  static HD To apply(From v) { return static_cast<To>(v); }
};
#if defined(__CUDACC__)
template <typename To> struct Convert<To, __half> {
  static HD To apply(__half v) { return static_cast<To>(__half2float(v)); }
};
template <typename From> struct Convert<__half, From> {
  static HD __half apply(From v) { return __float2half(static_cast<float>(v)); }
};
template <> struct Convert<__half, __half> {
  static HD __half apply(__half v) { return v; }
};
template <typename To> struct Convert<To, __nv_bfloat16> {
  static HD To apply(__nv_bfloat16 v) { return static_cast<To>(__bfloat162float(v)); }
};
template <typename From> struct Convert<__nv_bfloat16, From> {
  static HD __nv_bfloat16 apply(From v) { return __float2bfloat16(static_cast<float>(v)); }
};
template <> struct Convert<__nv_bfloat16, __nv_bfloat16> {
  static HD __nv_bfloat16 apply(__nv_bfloat16 v) { return v; }
};
template <> struct Convert<__half, __nv_bfloat16> {
  static HD __half apply(__nv_bfloat16 v) { return __float2half(__bfloat162float(v)); }
};
template <> struct Convert<__nv_bfloat16, __half> {
  static HD __nv_bfloat16 apply(__half v) { return __float2bfloat16(__half2float(v)); }
};
#endif
template <typename To, typename From> HD To cast_to(From v) { return Convert<To, From>::apply(v); }

// Overloads that resolve the same way under g++ and nvcc (host and device).
HD float floor_of(float v) { return floorf(v); }
HD double floor_of(double v) { return ::floor(v); }
HD float fused_multiply_add(float a, float b, float c) { return fmaf(a, b, c); }
HD double fused_multiply_add(double a, double b, double c) { return ::fma(a, b, c); }

// Element types the launchers accept; the ATen glue maps torch dtypes onto these so that kernel
// files never see torch headers.
// Each launcher says which of these it takes and throws std::invalid_argument for the rest.
enum class DType { kFloat32, kFloat64, kFloat16, kBFloat16 };

#if !defined(__CUDA_ARCH__)
// Host fallback: a compare-and-swap loop on the value's bit pattern (GCC has no atomic float add).
template <typename T, typename Bits>
inline void host_atomic_add_bits(T* addr, T val) {
  static_assert(sizeof(T) == sizeof(Bits), "bit type must match");
  Bits* bits_addr = reinterpret_cast<Bits*>(addr);
  Bits expected = __atomic_load_n(bits_addr, __ATOMIC_RELAXED);
  while (true) {
    T current;
    std::memcpy(&current, &expected, sizeof(T));
    T updated = current + val;
    Bits desired;
    std::memcpy(&desired, &updated, sizeof(T));
    if (__atomic_compare_exchange_n(bits_addr, &expected, desired, true, __ATOMIC_RELAXED,
                                    __ATOMIC_RELAXED))
      return;
  }
}
#endif

HD void atomic_add(float* addr, float val) {
#if defined(__CUDA_ARCH__)
  atomicAdd(addr, val);
#else
  host_atomic_add_bits<float, uint32_t>(addr, val);
#endif
}

HD void atomic_add(double* addr, double val) {
#if defined(__CUDA_ARCH__)
  atomicAdd(addr, val);
#else
  host_atomic_add_bits<double, uint64_t>(addr, val);
#endif
}

#if defined(__CUDACC__)
__device__ __forceinline__ void atomic_add(__half* addr, float val) {
  atomicAdd(addr, __float2half(val));
}
__device__ __forceinline__ void atomic_add(__nv_bfloat16* addr, float val) {
  atomicAdd(addr, __float2bfloat16(val));
}
#endif

// Runs CALL with `T` bound to the element type of a float32/float64 DType; any other dtype throws
// std::invalid_argument naming the op and backend. For launchers whose kernels take both types.
#define L2VSD_DISPATCH_FLOAT_DOUBLE(dtype, OP, BACKEND, CALL)                                 \
  switch (dtype) {                                                                            \
    case ::l2vsd::DType::kFloat32: { using T = float; CALL; break; }                          \
    case ::l2vsd::DType::kFloat64: { using T = double; CALL; break; }                         \
    default:                                                                                  \
      throw std::invalid_argument(std::string(OP) + ": the " BACKEND                          \
                                  " kernels support float32 and float64");                    \
  }

// Plain (non-atomic) accumulation, for launchers where each output slot has a single owner.
template <typename T, typename V> HD void plain_add(T* addr, V val) {
  *addr = cast_to<T>(cast_to<acc_t<T>>(*addr) + val);
}

}  // namespace l2vsd

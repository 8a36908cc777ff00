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

template <typename To, typename From> HD To cast_to(From v) { return static_cast<To>(v); }

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

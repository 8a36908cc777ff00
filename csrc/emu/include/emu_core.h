// Core of the CUDA emulator: vector/launch types, the runtime API subset, and the launch entry
// point the build-time rewrite of `kernel<<<grid, block, smem, stream>>>(args)` calls.
#pragma once

#include <cstddef>
#include <cstdint>
#include <source_location>
#include <tuple>
#include <type_traits>
#include <utility>

// ---- execution-space keywords: kernels and device functions are ordinary host functions here.
#define __global__
#define __device__
#define __host__
#define __constant__
#define __managed__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
// Block-scope `__shared__` becomes a static (blocks run one at a time); the build-time rewrite adds
// a registration after each declaration so that the emulator poisons it once per block.
#define __shared__ static

// ---- vector types
struct uint3 { unsigned int x, y, z; };
struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1) : x(vx), y(vy), z(vz) {}
  constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
};
#define EMU_VEC2(T, N) struct alignas(sizeof(T) * 2) N##2 { T x, y; }; \
  inline N##2 make_##N##2(T a, T b) { return {a, b}; }
#define EMU_VEC3(T, N) struct N##3 { T x, y, z; }; \
  inline N##3 make_##N##3(T a, T b, T c) { return {a, b, c}; }
#define EMU_VEC4(T, N) struct alignas(sizeof(T) * 4 <= 16 ? sizeof(T) * 4 : 16) N##4 { T x, y, z, w; }; \
  inline N##4 make_##N##4(T a, T b, T c, T d) { return {a, b, c, d}; }
EMU_VEC2(float, float) EMU_VEC3(float, float) EMU_VEC4(float, float)
EMU_VEC2(double, double) EMU_VEC3(double, double) EMU_VEC4(double, double)
EMU_VEC2(int, int) EMU_VEC3(int, int) EMU_VEC4(int, int)
EMU_VEC2(unsigned int, uint) EMU_VEC4(unsigned int, uint)
inline uint3 make_uint3(unsigned a, unsigned b, unsigned c) { return {a, b, c}; }
#undef EMU_VEC2
#undef EMU_VEC3
#undef EMU_VEC4

// ---- runtime API subset
struct CUstream_st;
typedef struct CUstream_st* cudaStream_t;
struct CUevent_st;
typedef struct CUevent_st* cudaEvent_t;

enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInvalidDevice = 101,
  cudaErrorInvalidDeviceFunction = 98,
  cudaErrorNoKernelImageForDevice = 209,
  cudaErrorIllegalAddress = 700,
  cudaErrorLaunchFailure = 719,
};
typedef cudaError_t cudaError;

enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0, cudaMemcpyHostToDevice = 1, cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3, cudaMemcpyDefault = 4
};
enum cudaDeviceAttr {
  cudaDevAttrMaxThreadsPerBlock = 1,
  cudaDevAttrMaxSharedMemoryPerBlock = 8,
  cudaDevAttrWarpSize = 10,
  cudaDevAttrMultiProcessorCount = 16,
  cudaDevAttrComputeCapabilityMajor = 75,
  cudaDevAttrComputeCapabilityMinor = 76,
  cudaDevAttrMaxSharedMemoryPerBlockOptin = 97,
};
enum cudaFuncAttribute {
  cudaFuncAttributeMaxDynamicSharedMemorySize = 8,
  cudaFuncAttributePreferredSharedMemoryCarveout = 9,
};
struct cudaFuncAttributes {
  size_t sharedSizeBytes, constSizeBytes, localSizeBytes;
  int maxThreadsPerBlock, numRegs, ptxVersion, binaryVersion, cacheModeCA;
  int maxDynamicSharedSizeBytes, preferredShmemCarveout;
};

const char* cudaGetErrorString(cudaError_t err);
const char* cudaGetErrorName(cudaError_t err);
cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
cudaError_t cudaGetDevice(int* device);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaGetDeviceCount(int* count);
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device);
cudaError_t cudaDeviceSynchronize();
cudaError_t cudaStreamSynchronize(cudaStream_t stream);
cudaError_t cudaMalloc(void** ptr, size_t bytes);
cudaError_t cudaFree(void* ptr);
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t stream = nullptr);
cudaError_t cudaMemset(void* dst, int value, size_t bytes);
cudaError_t cudaMemsetAsync(void* dst, int value, size_t bytes, cudaStream_t stream = nullptr);
template <typename T>
cudaError_t cudaMalloc(T** ptr, size_t bytes) { return cudaMalloc(reinterpret_cast<void**>(ptr), bytes); }

namespace emu {

enum class Order { kForward, kReverse, kRandom };

struct LaunchConfig {
  dim3 grid, block;
  size_t shared_bytes;
  cudaStream_t stream;
};
inline LaunchConfig config(dim3 grid, dim3 block, size_t shared_bytes = 0,
                           cudaStream_t stream = nullptr) {
  return {grid, block, shared_bytes, stream};
}

// Runs `body(ctx)` once per CUDA thread of every block of the launch (validated first, as the
// driver does); a failure becomes the pending error of cudaGetLastError/cudaPeekAtLastError.
void run_launch(const char* name, const void* kernel, const LaunchConfig& cfg,
                void (*body)(void*), void* ctx);

// The rewritten `kernel<<<cfg>>>(args)`: arguments are converted to the kernel's parameter types
// once, at launch, like CUDA's parameter buffer; every thread calls the kernel with copies.
template <typename... P, typename... A>
void launch(const char* name, void (*kernel)(P...), const LaunchConfig& cfg, A&&... args) {
  static_assert(sizeof...(P) == sizeof...(A), "kernel launched with the wrong number of arguments");
  struct Ctx {
    void (*kernel)(P...);
    std::tuple<std::decay_t<P>...> params;
  } ctx{kernel, std::tuple<std::decay_t<P>...>(static_cast<std::decay_t<P>>(std::forward<A>(args))...)};
  run_launch(name, reinterpret_cast<const void*>(kernel), cfg, [](void* p) {
    Ctx* c = static_cast<Ctx*>(p);
    std::apply(c->kernel, c->params);
  }, &ctx);
}

// Poisons a block-scope __shared__ variable the first time a thread of each block declares it,
// and counts it against the block's shared-memory limit (inserted by the build-time rewrite).
void shared_declared(void* address, size_t bytes);
// The block's dynamic shared memory (`extern __shared__ T name[];` is rewritten to call this).
void* dynamic_shared_bytes();
template <typename T> T* dynamic_shared() { return static_cast<T*>(dynamic_shared_bytes()); }

// Settings and results for tests.
void set_order(Order order, uint64_t seed = 1);
Order order();
const char* order_name(Order order);
bool parse_order(const char* text, Order* out);
// Number of kernel faults (divergence, bad masks, deadlock, shared-memory limit) since start, and
// the last fault's message.
int fault_count();
const char* last_fault();
// Launches and fiber switches since start (for the run summary).
uint64_t launch_count();
uint64_t switch_count();

// Current thread / block state, read by the threadIdx/blockIdx/blockDim/gridDim macros.
extern uint3 cur_thread_idx, cur_block_idx;
extern dim3 cur_block_dim, cur_grid_dim;

// Warp-level and block-level rendezvous (emu_device.h wraps these in CUDA's names).
enum class WarpOp { kShflIdx, kShflUp, kShflDown, kShflXor, kBallot, kAny, kAll, kSync,
                    kReduceAdd, kReduceMin, kReduceMax, kMatchAny };
uint64_t warp_op(WarpOp op, unsigned mask, uint64_t value, int arg, int width,
                 const std::source_location& site);
int block_barrier(int predicate_kind, int predicate, const std::source_location& site);
unsigned active_mask();
int lane_id();

}  // namespace emu

#define threadIdx (::emu::cur_thread_idx)
#define blockIdx (::emu::cur_block_idx)
#define blockDim (::emu::cur_block_dim)
#define gridDim (::emu::cur_grid_dim)
#define warpSize 32

template <typename F>
cudaError_t cudaFuncGetAttributes(cudaFuncAttributes* attr, F* func) {
  cudaError_t emu_func_get_attributes(cudaFuncAttributes*, const void*);
  return emu_func_get_attributes(attr, reinterpret_cast<const void*>(func));
}
template <typename F>
cudaError_t cudaFuncSetAttribute(F* func, cudaFuncAttribute attr, int value) {
  cudaError_t emu_func_set_attribute(const void*, cudaFuncAttribute, int);
  return emu_func_set_attribute(reinterpret_cast<const void*>(func), attr, value);
}

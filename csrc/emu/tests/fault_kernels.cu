// Kernels for the emulator's own tests; see fault_kernels.h. Built only into emu_faults.
#include "fault_kernels.h"

#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>

namespace emu_test {
namespace {

__global__ void shuffle_after_return_kernel(float* out) {
  float v = threadIdx.x;
  if (threadIdx.x >= 20) return;
  v += __shfl_down_sync(0xffffffffu, v, 1);
  out[threadIdx.x] = v;
}

__global__ void barrier_in_branch_kernel(float* out) {
  if (threadIdx.x < 32) __syncthreads();
  out[threadIdx.x] = 1.0f;
}

__global__ void two_barriers_kernel(float* out) {
  if (threadIdx.x % 2) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  out[threadIdx.x] = 1.0f;
}

__global__ void missing_lanes_kernel(float* out) {
  out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, static_cast<float>(threadIdx.x), 1);
}

__global__ void uninitialised_shared_kernel(float* out) {
  __shared__ float s[64];
  if (threadIdx.x < 63) s[threadIdx.x] = 1.0f;  // the last slot is never written
  __syncthreads();
  out[threadIdx.x] = s[threadIdx.x];
}

__global__ void uninitialised_dynamic_kernel(float* out) {
  extern __shared__ float dyn[];
  if (threadIdx.x != 5) dyn[threadIdx.x] = 2.0f;
  __syncthreads();
  out[threadIdx.x] = dyn[threadIdx.x];
}

__global__ void trivial_kernel(int* ran) { atomicAdd(ran, 1); }

__global__ void big_static_kernel(float* out) {
  __shared__ float big[10 * 1024];
  big[threadIdx.x] = 1.0f;
  __syncthreads();
  out[threadIdx.x] = big[threadIdx.x];
}

struct Totals {
  float f;
  double d;
  int i;
  unsigned long long cas_count, min64, max64;
};

__global__ void self_test_kernel(int* ok, Totals* totals) {
  extern __shared__ __align__(16) unsigned char smem[];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  int* big = reinterpret_cast<int*>(smem);
  // Dynamic shared memory beyond 48 KiB (opt-in): every thread writes and reads across the end.
  const int words = 60 * 1024 / 4;
  for (int k = threadIdx.x; k < words; k += blockDim.x) big[k] = k;
  __syncthreads();
  bool dyn_ok = true;
  for (int k = threadIdx.x; k < words; k += blockDim.x) dyn_ok &= big[words - 1 - k] == words - 1 - k;
  const int all_dyn = __syncthreads_and(dyn_ok);
  // Shuffles
  const int idx = __shfl_sync(0xffffffffu, lane * 10, 3);
  const int up = __shfl_up_sync(0xffffffffu, lane, 2);
  const int down = __shfl_down_sync(0xffffffffu, lane, 5, 16);
  const double x = __shfl_xor_sync(0xffffffffu, static_cast<double>(lane), 7);
  float sum = lane;
  for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
  // Votes and reductions
  const unsigned ballot = __ballot_sync(0xffffffffu, lane % 3 == 0);
  const int any = __any_sync(0xffffffffu, lane == 31), all = __all_sync(0xffffffffu, lane < 31);
  const int red = __reduce_add_sync(0xffffffffu, lane);
  // Half of the warp syncs on its own mask.
  if (lane < 16) __syncwarp(0x0000ffffu);
  __syncwarp();
  // Atomics
  atomicAdd(&totals->f, 0.5f);
  atomicAdd(&totals->d, 0.25);
  atomicAdd(&totals->i, 1);
  unsigned long long seen = totals->cas_count, assumed;
  do {
    assumed = seen;
    seen = atomicCAS(&totals->cas_count, assumed, assumed + 1);
  } while (seen != assumed);
  atomicMin(&totals->min64, 1000ull + threadIdx.x);
  atomicMax(&totals->max64, 1000ull + threadIdx.x);
  __syncthreads();
  if (threadIdx.x == 0) {
    const __half h = __float2half(1.0f / 3.0f);
    const __nv_bfloat16 b = __float2bfloat16(1.0f / 3.0f);
    ok[0] = all_dyn;
    ok[5] = __half2float(h) == 0.333251953125f && __bfloat162float(b) == 0.333984375f;
    ok[6] = __half2float(__float2half(70000.0f)) == INFINITY &&
            __half2float(__float2half(5.96e-8f)) == 5.9604644775390625e-8f;
  }
  if (warp == 1 && lane == 4) {
    ok[1] = idx == 30 && up == 2 && down == 9 && x == 3.0 && sum == 496.0f;
    ok[2] = ballot == 0x49249249u && any == 1 && all == 0 && red == 496;
  }
  if (warp == 1 && lane == 14) ok[3] = down == 14;  // past the 16-wide segment: own value
  if (warp == 1 && lane == 1) ok[4] = up == 1;       // below the start: own value
}

__global__ void check_totals_kernel(int* ok, const Totals* t, int n_threads) {
  ok[7] = t->f == 0.5f * n_threads && t->d == 0.25 * n_threads && t->i == n_threads &&
          t->cas_count == static_cast<unsigned long long>(n_threads) && t->min64 == 1000ull &&
          t->max64 == 1000ull + n_threads - 1;
}

}  // namespace

int shuffle_after_early_return(float* out) {
  shuffle_after_return_kernel<<<1, 32>>>(out);
  return cudaGetLastError();
}
int barrier_in_branch(float* out) {
  barrier_in_branch_kernel<<<1, 64>>>(out);
  return cudaGetLastError();
}
int two_different_barriers(float* out) {
  two_barriers_kernel<<<1, 64>>>(out);
  return cudaGetLastError();
}
int shuffle_mask_names_missing_lanes(float* out) {
  missing_lanes_kernel<<<1, 48>>>(out);
  return cudaGetLastError();
}
int uninitialised_shared_read(float* out) {
  uninitialised_shared_kernel<<<2, 64>>>(out);
  return cudaGetLastError();
}
int uninitialised_dynamic_shared_read(float* out) {
  uninitialised_dynamic_kernel<<<1, 64, 64 * sizeof(float)>>>(out);
  return cudaGetLastError();
}
int launch_config(unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                  size_t smem, int* ran) {
  trivial_kernel<<<dim3(gx, gy, gz), dim3(bx, by, bz), smem>>>(ran);
  return cudaGetLastError();
}
int too_much_static_shared(float* out) {
  big_static_kernel<<<1, 32, 16 * 1024>>>(out);
  return cudaGetLastError();
}
int intrinsics_self_test(int* ok, int n) {
  for (int k = 0; k < n; ++k) ok[k] = 0;
  Totals* totals = nullptr;
  cudaMalloc(&totals, sizeof(Totals));
  *totals = Totals{0.0f, 0.0, 0, 0, ~0ull, 0};
  const int smem = 60 * 1024;
  if (cudaFuncSetAttribute(self_test_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem) !=
      cudaSuccess)
    return cudaGetLastError();
  self_test_kernel<<<1, 96, smem>>>(ok, totals);
  int err = cudaGetLastError();
  if (err == cudaSuccess) {
    check_totals_kernel<<<1, 1>>>(ok, totals, 96);
    err = cudaGetLastError();
  }
  cudaFree(totals);
  return err;
}

}  // namespace emu_test

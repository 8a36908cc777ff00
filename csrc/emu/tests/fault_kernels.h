// Small kernels for the emulator's own tests (fault_kernels.cu): each planted fault the emulator
// must report, and a positive control using every supported intrinsic with a known answer.
#pragma once

#include <cstdint>

namespace emu_test {

// Each returns the cudaGetLastError() after its launch (and the outputs it wrote).
int shuffle_after_early_return(float* out);          // 32 threads; lanes >= 20 return first
int barrier_in_branch(float* out);                   // 64 threads; half skip __syncthreads
int two_different_barriers(float* out);              // odd and even threads at different barriers
int shuffle_mask_names_missing_lanes(float* out);    // 48 threads: warp 1 has 16 lanes, full mask
int uninitialised_shared_read(float* out);           // 64 threads read __shared__ before writing
int uninitialised_dynamic_shared_read(float* out);   // same with extern __shared__
int launch_config(unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                  size_t smem, int* ran);            // trivial kernel with the given launch shape
int too_much_static_shared(float* out);              // 40 KiB static + 16 KiB dynamic
// Positive control: warp shuffles (idx/up/down/xor, width 16), votes, __syncwarp, reductions,
// atomics (float, double, int, 64-bit CAS/min/max), dynamic shared memory above 48 KiB with the
// opt-in attribute, half/bfloat16 conversions. Writes `n` checks into ok[] (1 = passed).
int intrinsics_self_test(int* ok, int n);

}  // namespace emu_test

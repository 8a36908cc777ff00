// Launch helpers shared by the CUDA launchers (nvcc only): grid sizing and the error check after
// every kernel launch, which turns a failed launch into an exception naming the op and kernel.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

namespace l2vsd {

inline unsigned blocks_for(int64_t n, int threads) {
  return static_cast<unsigned>((n + threads - 1) / threads);
}

inline void check_cuda_launch(const char* op, const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess)
    throw std::runtime_error(std::string(op) + ": " + what + " failed: " + cudaGetErrorString(err));
}

}  // namespace l2vsd

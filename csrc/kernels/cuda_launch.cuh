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

// Reads and clears the runtime's last error right after a launch, as torch's
// C10_CUDA_KERNEL_LAUNCH_CHECK does. Clearing is safe because the error is raised, never dropped;
// but the slot also holds errors that earlier unchecked calls left pending (an asynchronous fault
// of an earlier kernel surfaces at the next call), so the message does not claim it as this
// launch's own cause.
inline void check_cuda_launch(const char* op, const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess)
    throw std::runtime_error(std::string(op) + ": " + what + " failed: " + cudaGetErrorString(err) +
                             " (reported at this launch; it may come from an earlier CUDA call)");
}

}  // namespace l2vsd

// Probe for device_check.h. Every .cu is compiled with the same -gencode list, so if this
// kernel has an image for the device, so do all the others.
#include "device_check.h"

#include <cuda_runtime.h>

#include <string>

namespace l2vsd {
namespace device_check {
namespace {

__global__ void probe_kernel(int* out) {
  if (out) *out = 1;
}

}  // namespace

DeviceReport probe_device(int device) {
  DeviceReport report{false, 0, 0, ""};
  // An error some earlier call left pending (a failed launch nobody checked) is not this probe's:
  // peek at it without clearing it, so that whoever checks next still sees it.
  const cudaError_t pending = cudaPeekAtLastError();
  int previous = 0;
  cudaGetDevice(&previous);
  cudaError_t err = cudaSetDevice(device);
  if (err == cudaSuccess) {
    cudaDeviceGetAttribute(&report.major, cudaDevAttrComputeCapabilityMajor, device);
    cudaDeviceGetAttribute(&report.minor, cudaDevAttrComputeCapabilityMinor, device);
    cudaFuncAttributes attrs;
    err = cudaFuncGetAttributes(&attrs, probe_kernel);
  }
  if (err != cudaSuccess) {
    report.error = cudaGetErrorString(err);
    // The probe's failure replaced the pending error in the runtime's last-error slot: clear it
    // (later launches then report their own errors), but only after naming the earlier error in
    // the report, which the caller raises, so that neither is lost.
    if (pending != cudaSuccess)
      report.error += std::string("; a CUDA error from an earlier call was pending: ") +
                      cudaGetErrorString(pending);
    cudaGetLastError();
  } else {
    report.runnable = true;
  }
  cudaSetDevice(previous);
  return report;
}

}  // namespace device_check
}  // namespace l2vsd

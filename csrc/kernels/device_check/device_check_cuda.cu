// Probe for device_check.h. Every .cu is compiled with the same -gencode list, so if this
// kernel has an image for the device, so do all the others.
#include "device_check.h"

#include <cuda_runtime.h>

namespace l2vsd {
namespace device_check {
namespace {

__global__ void probe_kernel(int* out) {
  if (out) *out = 1;
}

}  // namespace

DeviceReport probe_device(int device) {
  DeviceReport report{false, 0, 0, ""};
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
    cudaGetLastError();  // clear the sticky-free error so later launches report their own
  } else {
    report.runnable = true;
  }
  cudaSetDevice(previous);
  return report;
}

}  // namespace device_check
}  // namespace l2vsd

// The CUDA runtime API subset for the emulator: the pending-error state that launchers read
// through cudaGetLastError / cudaPeekAtLastError, host memory standing in for device memory, and
// one device whose compute capability is the lowest architecture the build targets.
#include "emu_core.h"

#include <cstdlib>
#include <cstring>
#include <unordered_map>

#ifndef EMU_ARCH
#define EMU_ARCH 800
#endif
#ifndef EMU_SHARED_OPTIN_BYTES
#define EMU_SHARED_OPTIN_BYTES (99 * 1024)
#endif

namespace emu {
namespace {
cudaError_t g_last_error = cudaSuccess;
int g_device = 0;
std::unordered_map<const void*, size_t> g_dynamic_limit;  // cudaFuncSetAttribute values
}  // namespace

void set_last_error(cudaError_t err) {
  if (g_last_error == cudaSuccess) g_last_error = err;
}
size_t shared_optin_limit() { return EMU_SHARED_OPTIN_BYTES; }
size_t dynamic_shared_limit(const void* kernel) {
  const auto it = g_dynamic_limit.find(kernel);
  return it == g_dynamic_limit.end() ? 48 * 1024 : it->second;
}
}  // namespace emu

const char* cudaGetErrorName(cudaError_t err) {
  switch (err) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorInvalidDeviceFunction: return "cudaErrorInvalidDeviceFunction";
    case cudaErrorNoKernelImageForDevice: return "cudaErrorNoKernelImageForDevice";
    case cudaErrorIllegalAddress: return "cudaErrorIllegalAddress";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
  }
  return "cudaErrorUnknown";
}

const char* cudaGetErrorString(cudaError_t err) {
  switch (err) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorInvalidDeviceFunction: return "invalid device function";
    case cudaErrorNoKernelImageForDevice: return "no kernel image is available for execution on the device";
    case cudaErrorIllegalAddress: return "an illegal memory access was encountered";
    case cudaErrorLaunchFailure: return "unspecified launch failure (emulator: see the report above)";
  }
  return "unknown error";
}

cudaError_t cudaGetLastError() {
  const cudaError_t err = emu::g_last_error;
  emu::g_last_error = cudaSuccess;
  return err;
}
cudaError_t cudaPeekAtLastError() { return emu::g_last_error; }

static cudaError_t fail_with(cudaError_t err) {
  emu::set_last_error(err);
  return err;
}

cudaError_t cudaGetDevice(int* device) { *device = emu::g_device; return cudaSuccess; }
cudaError_t cudaSetDevice(int device) {
  if (device != 0) return fail_with(cudaErrorInvalidDevice);
  emu::g_device = device;
  return cudaSuccess;
}
cudaError_t cudaGetDeviceCount(int* count) { *count = 1; return cudaSuccess; }
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  if (device != 0) return fail_with(cudaErrorInvalidDevice);
  switch (attr) {
    case cudaDevAttrMaxThreadsPerBlock: *value = 1024; break;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = 48 * 1024; break;
    case cudaDevAttrWarpSize: *value = 32; break;
    case cudaDevAttrMultiProcessorCount: *value = 1; break;
    case cudaDevAttrComputeCapabilityMajor: *value = EMU_ARCH / 100; break;
    case cudaDevAttrComputeCapabilityMinor: *value = EMU_ARCH / 10 % 10; break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = EMU_SHARED_OPTIN_BYTES; break;
    default: return fail_with(cudaErrorInvalidValue);
  }
  return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }  // launches are synchronous
cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }

cudaError_t cudaMalloc(void** ptr, size_t bytes) {
  *ptr = std::aligned_alloc(256, (bytes + 255) / 256 * 256 + 256);
  return *ptr ? cudaSuccess : fail_with(cudaErrorMemoryAllocation);
}
cudaError_t cudaFree(void* ptr) { std::free(ptr); return cudaSuccess; }
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind) {
  if (bytes) std::memmove(dst, src, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t) {
  return cudaMemcpy(dst, src, bytes, kind);
}
cudaError_t cudaMemset(void* dst, int value, size_t bytes) {
  if (bytes) std::memset(dst, value, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void* dst, int value, size_t bytes, cudaStream_t) {
  return cudaMemset(dst, value, bytes);
}

cudaError_t emu_func_get_attributes(cudaFuncAttributes* attr, const void* func) {
  if (!func) return fail_with(cudaErrorInvalidDeviceFunction);
  std::memset(attr, 0, sizeof *attr);
  attr->maxThreadsPerBlock = 1024;
  attr->ptxVersion = attr->binaryVersion = EMU_ARCH / 10;
  attr->maxDynamicSharedSizeBytes = static_cast<int>(emu::dynamic_shared_limit(func));
  return cudaSuccess;
}
cudaError_t emu_func_set_attribute(const void* func, cudaFuncAttribute attr, int value) {
  if (!func) return fail_with(cudaErrorInvalidDeviceFunction);
  if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) {
    if (value < 0 || static_cast<size_t>(value) > EMU_SHARED_OPTIN_BYTES)
      return fail_with(cudaErrorInvalidValue);
    emu::g_dynamic_limit[func] = static_cast<size_t>(value);
  }
  return cudaSuccess;
}

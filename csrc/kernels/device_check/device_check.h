// Whether this build's CUDA kernels can run on a device: asks the CUDA runtime for a probe
// kernel's attributes, which fails exactly when the .so holds neither SASS for the device's
// architecture nor PTX that the driver can JIT for it ("no kernel image is available").
#pragma once

#include <string>

namespace l2vsd {
namespace device_check {

struct DeviceReport {
  bool runnable;
  int major, minor;     // the device's compute capability
  std::string error;    // the runtime's message when not runnable
};

DeviceReport probe_device(int device);

}  // namespace device_check
}  // namespace l2vsd

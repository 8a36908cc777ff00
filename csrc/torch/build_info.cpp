// What the extension was built with, so users can tell a CPU-only build from a CUDA one.
#include "registry.h"
#include "checks.h"

#ifdef _OPENMP
#include <omp.h>
#endif

#ifdef WITH_CUDA
#include "../kernels/device_check/device_check.h"
#endif

#include "../kernels/cpu_isa.h"

#include <array>
#include <atomic>

#ifndef L2VSD_TORCH_VERSION
#define L2VSD_TORCH_VERSION "unknown"
#endif
#ifndef L2VSD_CUDA_ARCHS
#define L2VSD_CUDA_ARCHS "cpu"
#endif

namespace l2vsd {

// Verdict per device index: 0 = not probed yet, 1 = runnable, 2 = refused.
static std::array<std::atomic<int>, 64> g_device_verdict{};

void check_cuda_arch(int device, const char* op) {
#ifdef WITH_CUDA
  if (device < 0 || device >= static_cast<int>(g_device_verdict.size())) return;
  int verdict = g_device_verdict[device].load(std::memory_order_relaxed);
  if (verdict == 0) {
    const device_check::DeviceReport report = device_check::probe_device(device);
    verdict = report.runnable ? 1 : 2;
    g_device_verdict[device].store(verdict, std::memory_order_relaxed);
    TORCH_CHECK(report.runnable, op, ": l2vsd_ext has no CUDA kernels for cuda:", device,
                " (compute capability ", report.major, ".", report.minor,
                "); this build was compiled for TORCH_CUDA_ARCH_LIST=\"", L2VSD_CUDA_ARCHS,
                "\" (CUDA runtime: ", report.error, "). Rebuild with TORCH_CUDA_ARCH_LIST=\"",
                report.major, ".", report.minor, "\" (or a list including it) set: "
                "pip install --no-build-isolation .");
  }
  TORCH_CHECK(verdict == 1, op, ": l2vsd_ext has no CUDA kernels for cuda:", device,
              "; this build was compiled for TORCH_CUDA_ARCH_LIST=\"", L2VSD_CUDA_ARCHS,
              "\". Rebuild with TORCH_CUDA_ARCH_LIST set to include this device's capability "
              "(torch.cuda.get_device_capability()).");
#else
  (void)device;
  (void)op;
#endif
}

// "8.0;8.6;9.0+PTX" -> ["8.0", "8.6", "9.0+PTX"].
static pybind11::list arch_list(const std::string& archs) {
  pybind11::list out;
  std::string item;
  for (char c : archs + ";") {
    if (c == ';' || c == ' ') {
      if (!item.empty()) out.append(item);
      item.clear();
    } else {
      item += c;
    }
  }
  return out;
}

static pybind11::dict build_info() {
  pybind11::dict info;
  info["torch_version"] = L2VSD_TORCH_VERSION;
  info["cuda"] = built_with_cuda();
  info["cuda_archs"] = built_with_cuda() ? L2VSD_CUDA_ARCHS : "cpu";
  // The same list as a Python list (empty for a CPU build): what the first CUDA call checks against.
  info["cuda_arch_list"] = built_with_cuda() ? arch_list(L2VSD_CUDA_ARCHS) : pybind11::list();
#ifdef _OPENMP
  info["openmp"] = true;
  info["omp_threads"] = omp_get_max_threads();
#else
  info["openmp"] = false;
  info["omp_threads"] = 1;
#endif
  // The instruction set the vectorised CPU kernels run (detected; L2VSD_CPU_ISA caps it).
  const cpu_isa::Isa isa = cpu_isa::current();
  info["cpu_isa"] = isa == cpu_isa::Isa::kAvx512 ? "avx512" : isa == cpu_isa::Isa::kAvx2 ? "avx2" : "base";
#if defined(__clang__)
  info["compiler"] = std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
  info["compiler"] = std::string("gcc ") + __VERSION__;
#else
  info["compiler"] = "unknown";
#endif
  return info;
}

void register_build_info(pybind11::module& m) {
  m.def("build_info", &build_info, "Build configuration of the compiled extension.");
}

}  // namespace l2vsd

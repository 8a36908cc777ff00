// What the extension was built with, so users can tell a CPU-only build from a CUDA one.
#include "registry.h"
#include "checks.h"

#ifdef _OPENMP
#include <omp.h>
#endif

#ifndef L2VSD_TORCH_VERSION
#define L2VSD_TORCH_VERSION "unknown"
#endif
#ifndef L2VSD_CUDA_ARCHS
#define L2VSD_CUDA_ARCHS "cpu"
#endif

namespace l2vsd {

static pybind11::dict build_info() {
  pybind11::dict info;
  info["torch_version"] = L2VSD_TORCH_VERSION;
  info["cuda"] = built_with_cuda();
  info["cuda_archs"] = built_with_cuda() ? L2VSD_CUDA_ARCHS : "cpu";
#ifdef _OPENMP
  info["openmp"] = true;
  info["omp_threads"] = omp_get_max_threads();
#else
  info["openmp"] = false;
  info["omp_threads"] = 1;
#endif
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

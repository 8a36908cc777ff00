// Argument checks shared by every op's ATen glue. Each failure raises a Python ValueError or
// TypeError (TORCH_CHECK_VALUE / TORCH_CHECK_TYPE) whose message names the op and the argument.
#pragma once

#include <torch/extension.h>

#include <initializer_list>
#include <string>

#include "../kernels/common.h"

namespace l2vsd {

inline bool built_with_cuda() {
#ifdef WITH_CUDA
  return true;
#else
  return false;
#endif
}

inline void check_defined(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK_VALUE(t.defined(), op, ": argument '", name, "' is missing (got None)");
}

inline void check_dim(const at::Tensor& t, const char* op, const char* name, int64_t ndim,
                      const char* shape_hint) {
  check_defined(t, op, name);
  TORCH_CHECK_VALUE(t.dim() == ndim, op, ": argument '", name, "' must have shape ", shape_hint,
                    ", got ", t.sizes());
}

inline void check_size(const at::Tensor& t, const char* op, const char* name, int64_t dim,
                       int64_t expected, const char* shape_hint) {
  TORCH_CHECK_VALUE(t.size(dim) == expected, op, ": argument '", name, "' must have shape ",
                    shape_hint, " with size ", expected, " in dimension ", dim, ", got ",
                    t.sizes());
}

inline void check_contiguous(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK_VALUE(t.is_contiguous(), op, ": argument '", name,
                    "' must be contiguous (call .contiguous() first)");
}

inline void check_dtype(const at::Tensor& t, const char* op, const char* name,
                        std::initializer_list<at::ScalarType> allowed) {
  bool ok = false;
  std::string names;
  for (auto dt : allowed) {
    ok = ok || t.scalar_type() == dt;
    if (!names.empty()) names += ", ";
    names += c10::toString(dt);
  }
  TORCH_CHECK_TYPE(ok, op, ": argument '", name, "' must have dtype in {", names, "}, got ",
                   t.scalar_type());
}

inline void check_same_dtype(const at::Tensor& a, const char* a_name, const at::Tensor& b,
                             const char* b_name, const char* op) {
  TORCH_CHECK_TYPE(a.scalar_type() == b.scalar_type(), op, ": argument '", b_name,
                   "' must have the same dtype as '", a_name, "' (", a.scalar_type(), "), got ",
                   b.scalar_type());
}

// Raises, once per device and at its first CUDA call, when the build holds no kernel image the
// device can run (its capability was not in TORCH_CUDA_ARCH_LIST at build time). Defined in
// build_info.cpp, next to the compiled architecture list it names.
void check_cuda_arch(int device, const char* op);

// CPU or, in a CUDA build, CUDA; anything else is refused with the reason.
inline void check_device_supported(const at::Tensor& t, const char* op, const char* name) {
  if (t.is_cuda()) {
    TORCH_CHECK_VALUE(built_with_cuda(), op, ": argument '", name,
                      "' is a CUDA tensor, but l2vsd_ext was built without CUDA kernels "
                      "(see l2vsd_ext.build_info()); rebuild with a CUDA build of torch and nvcc");
    check_cuda_arch(t.get_device(), op);
    return;
  }
  TORCH_CHECK_VALUE(t.device().is_cpu(), op, ": argument '", name, "' is on ", t.device(),
                    "; only CPU and CUDA tensors are supported");
}

inline void check_same_device(const at::Tensor& a, const char* a_name, const at::Tensor& b,
                              const char* b_name, const char* op) {
  TORCH_CHECK_VALUE(a.device() == b.device(), op, ": argument '", b_name, "' is on ", b.device(),
                    " but '", a_name, "' is on ", a.device(), "; move them to one device");
}

inline DType kernel_dtype(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return DType::kFloat32;
    case at::kDouble: return DType::kFloat64;
    case at::kHalf: return DType::kFloat16;
    case at::kBFloat16: return DType::kBFloat16;
    default: break;
  }
  TORCH_CHECK_TYPE(false, "unsupported dtype ", t.scalar_type());
  return DType::kFloat32;
}

}  // namespace l2vsd

// Shared by the JVP-engine ops' glue: the dtype rule (float32 and
// float64 on CPU; float16, bfloat16, float32, float64 on CUDA).
#pragma once

#include "checks.h"

namespace l2vsd {

inline void check_jvp_dtype(const at::Tensor& t, const char* op, const char* name) {
  if (t.is_cuda()) {
    check_dtype(t, op, name, {at::kFloat, at::kDouble, at::kHalf, at::kBFloat16});
  } else {
    check_dtype(t, op, name, {at::kFloat, at::kDouble});
  }
}

// Checks that `t` is defined, on a supported device, of a supported dtype and, for every argument
// after the first, on the first one's device with its dtype.
inline void check_jvp_tensor(const at::Tensor& t, const char* op, const char* name,
                             const at::Tensor& first, const char* first_name) {
  check_defined(t, op, name);
  check_device_supported(t, op, name);
  check_jvp_dtype(t, op, name);
  if (&t != &first) {
    check_same_device(first, first_name, t, name, op);
    check_same_dtype(first, first_name, t, name, op);
  }
}

inline void check_same_shape(const at::Tensor& a, const char* a_name, const at::Tensor& b,
                             const char* b_name, const char* op) {
  TORCH_CHECK_VALUE(a.sizes() == b.sizes(), op, ": argument '", b_name, "' must have the shape of '",
                    a_name, "' ", a.sizes(), ", got ", b.sizes());
}

}  // namespace l2vsd

// ATen glue for group norm and layer norm with tangent.
#include "registry.h"
#include "jvp_dispatch.h"

#include "../kernels/norm_jvp/norm_jvp.h"

#ifdef WITH_CUDA
// c10 only: ATen/cuda/CUDAContext.h pulls in cuBLAS/cuSPARSE headers that a bare toolkit lacks.
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#endif

#include <optional>
#include <tuple>

namespace l2vsd {
namespace {

// Checks the common arguments and runs the kernel; the callers only describe the grouping.
std::tuple<at::Tensor, at::Tensor> run_norm(const char* op, const at::Tensor& x,
                                            const std::optional<at::Tensor>& x_dot_opt,
                                            const std::optional<at::Tensor>& weight_opt,
                                            const std::optional<at::Tensor>& bias_opt,
                                            int64_t n_affine, norm_jvp::NormShape shape,
                                            double eps) {
  const at::Tensor xc = x.contiguous();
  at::Tensor xd;
  if (x_dot_opt.has_value() && x_dot_opt->defined()) {
    check_jvp_tensor(*x_dot_opt, op, "x_dot", x, "x");
    check_same_shape(x, "x", *x_dot_opt, "x_dot", op);
    xd = x_dot_opt->contiguous();
  } else {
    xd = at::zeros_like(xc);
  }
  at::Tensor weight, bias;
  if (weight_opt.has_value() && weight_opt->defined()) {
    weight = weight_opt->contiguous();
    check_jvp_tensor(weight, op, "weight", x, "x");
    TORCH_CHECK_VALUE(weight.numel() == n_affine, op, ": argument 'weight' must have ", n_affine,
                      " elements, got ", weight.sizes());
  }
  if (bias_opt.has_value() && bias_opt->defined()) {
    bias = bias_opt->contiguous();
    check_jvp_tensor(bias, op, "bias", x, "x");
    TORCH_CHECK_VALUE(bias.numel() == n_affine, op, ": argument 'bias' must have ", n_affine,
                      " elements, got ", bias.sizes());
  }
  TORCH_CHECK_VALUE(eps >= 0, op, ": argument 'eps' must be >= 0, got ", eps);
  at::Tensor y = at::empty_like(xc), y_dot = at::empty_like(xc);
  if (shape.n_groups == 0 || shape.group_size == 0) return {y, y_dot};
  const void* w = weight.defined() ? weight.data_ptr() : nullptr;
  const void* b = bias.defined() ? bias.data_ptr() : nullptr;
  if (x.is_cuda()) {
#ifdef WITH_CUDA
    const c10::cuda::CUDAGuard guard(x.device());
    const at::Tensor workspace = at::empty({norm_jvp::cuda_workspace_elements(shape)},
                                           x.options().dtype(x.scalar_type() == at::kDouble
                                                                 ? at::kDouble : at::kFloat));
    norm_jvp::forward_cuda(kernel_dtype(x), xc.data_ptr(), xd.data_ptr(), w, b, y.data_ptr(),
                           y_dot.data_ptr(), shape, eps, workspace.data_ptr(),
                           c10::cuda::getCurrentCUDAStream());
#endif
  } else {
    norm_jvp::forward_cpu(kernel_dtype(x), xc.data_ptr(), xd.data_ptr(), w, b, y.data_ptr(),
                          y_dot.data_ptr(), shape, eps);
  }
  return {y, y_dot};
}

std::tuple<at::Tensor, at::Tensor> group_norm_jvp(const at::Tensor& x,
                                                  const std::optional<at::Tensor>& x_dot,
                                                  int64_t num_groups,
                                                  const std::optional<at::Tensor>& weight,
                                                  const std::optional<at::Tensor>& bias,
                                                  double eps) {
  constexpr const char* kOp = "group_norm_jvp";
  check_jvp_tensor(x, kOp, "x", x, "x");
  TORCH_CHECK_VALUE(x.dim() >= 2, kOp, ": argument 'x' must have shape (N, C, ...), got ",
                    x.sizes());
  const int64_t c = x.size(1);
  TORCH_CHECK_VALUE(num_groups >= 1 && c % num_groups == 0, kOp,
                    ": argument 'num_groups' must divide the channels (", c, "), got ",
                    num_groups);
  // The product of the trailing sizes, not numel / (N * C): N or C may be 0 (no division by zero).
  int64_t spatial = 1;
  for (int64_t d = 2; d < x.dim(); ++d) spatial *= x.size(d);
  norm_jvp::NormShape shape;
  shape.n_groups = x.size(0) * num_groups;
  shape.group_size = c / num_groups * spatial;
  shape.groups_per_sample = num_groups;
  shape.affine_per_group = c / num_groups;
  shape.affine_stride = spatial > 0 ? spatial : 1;
  return run_norm(kOp, x, x_dot, weight, bias, c, shape, eps);
}

std::tuple<at::Tensor, at::Tensor> layer_norm_jvp(const at::Tensor& x,
                                                  const std::optional<at::Tensor>& x_dot,
                                                  int64_t normalized_numel,
                                                  const std::optional<at::Tensor>& weight,
                                                  const std::optional<at::Tensor>& bias,
                                                  double eps) {
  constexpr const char* kOp = "layer_norm_jvp";
  check_jvp_tensor(x, kOp, "x", x, "x");
  TORCH_CHECK_VALUE(normalized_numel >= 1 && x.numel() % normalized_numel == 0, kOp,
                    ": argument 'normalized_numel' must divide x.numel() (", x.numel(), "), got ",
                    normalized_numel);
  norm_jvp::NormShape shape;
  shape.n_groups = x.numel() / normalized_numel;
  shape.group_size = normalized_numel;
  shape.groups_per_sample = 1;
  shape.affine_per_group = 0;
  shape.affine_stride = 1;
  return run_norm(kOp, x, x_dot, weight, bias, normalized_numel, shape, eps);
}

}  // namespace

void register_norm_jvp(pybind11::module& m) {
  m.def("group_norm_jvp", &group_norm_jvp, "Group norm with its tangent; returns (y, y_dot).",
        pybind11::arg("x"), pybind11::arg("x_dot"), pybind11::arg("num_groups"),
        pybind11::arg("weight"), pybind11::arg("bias"), pybind11::arg("eps"));
  m.def("layer_norm_jvp", &layer_norm_jvp,
        "Layer norm over the trailing normalized_numel values with its tangent; returns (y, y_dot).",
        pybind11::arg("x"), pybind11::arg("x_dot"), pybind11::arg("normalized_numel"),
        pybind11::arg("weight"), pybind11::arg("bias"), pybind11::arg("eps"));
}

}  // namespace l2vsd

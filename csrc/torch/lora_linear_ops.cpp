// ATen glue for the LoRA linear layer with tangent: the base GEMM once on the stacked [x; x_dot]
// (MKL / cuBLAS through at::mm), then the fused rank-r kernel adds the low-rank part in place.
#include "registry.h"
#include "jvp_dispatch.h"

#include "../kernels/lora_linear/lora_linear.h"

#ifdef WITH_CUDA
// c10 only: ATen/cuda/CUDAContext.h pulls in cuBLAS/cuSPARSE headers that a bare toolkit lacks.
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#endif

#include <optional>
#include <tuple>

namespace l2vsd {
namespace {

constexpr const char* kOp = "lora_linear_jvp";

// Defined, on ref's device, with ref's dtype (ref itself was checked in full).
void check_like(const at::Tensor& t, const char* name, const at::Tensor& ref,
                const char* ref_name) {
  check_defined(t, kOp, name);
  check_same_device(ref, ref_name, t, name, kOp);
  check_same_dtype(ref, ref_name, t, name, kOp);
}

std::tuple<at::Tensor, at::Tensor> lora_linear_jvp(
    const at::Tensor& x, const std::optional<at::Tensor>& x_dot_opt, const at::Tensor& weight,
    const std::optional<at::Tensor>& bias_opt, const at::Tensor& lora_a,
    const at::Tensor& lora_a_dot, const at::Tensor& lora_b, const at::Tensor& lora_b_dot,
    double scale) {
  // x, x_dot, weight, bias share the activation dtype; the LoRA factors and their tangents share
  // theirs, which is the activation's or, with a float16/bfloat16 activation, float32 (mixed
  // precision: what peft computes, the rank-r part in float32 and the sum rounded once).
  check_defined(x, kOp, "x");
  check_device_supported(x, kOp, "x");
  check_defined(lora_a, kOp, "lora_a");
  const bool low_precision = x.scalar_type() == at::kHalf || x.scalar_type() == at::kBFloat16;
  const bool mixed = low_precision && lora_a.scalar_type() == at::kFloat;
  if (!mixed) check_jvp_dtype(x, kOp, "x");
  check_dtype(x, kOp, "x", {at::kFloat, at::kDouble, at::kHalf, at::kBFloat16});
  TORCH_CHECK_VALUE(x.dim() >= 1, kOp, ": argument 'x' must have shape (..., in_features), got ",
                    x.sizes());
  check_like(weight, "weight", x, "x");
  check_dim(weight, kOp, "weight", 2, "(out_features, in_features)");
  const int64_t in = weight.size(1), out = weight.size(0);
  // Rows are counted as x.numel() / in_features below: zero would be a division by zero.
  TORCH_CHECK_VALUE(in >= 1, kOp, ": argument 'weight' must have in_features >= 1, got shape ",
                    weight.sizes());
  check_size(x, kOp, "x", x.dim() - 1, in, "(..., in_features)");
  // The factors: on x's device, with x's dtype unless mixed (then float32, checked just above).
  check_device_supported(lora_a, kOp, "lora_a");
  check_same_device(x, "x", lora_a, "lora_a", kOp);
  if (!mixed) check_same_dtype(x, "x", lora_a, "lora_a", kOp);
  check_dim(lora_a, kOp, "lora_a", 2, "(rank, in_features)");
  check_size(lora_a, kOp, "lora_a", 1, in, "(rank, in_features)");
  const int64_t r = lora_a.size(0);
  TORCH_CHECK_VALUE(r >= 1, kOp, ": argument 'lora_a' must have rank >= 1, got ", lora_a.sizes());
  check_like(lora_b, "lora_b", lora_a, "lora_a");
  check_dim(lora_b, kOp, "lora_b", 2, "(out_features, rank)");
  check_size(lora_b, kOp, "lora_b", 0, out, "(out_features, rank)");
  check_size(lora_b, kOp, "lora_b", 1, r, "(out_features, rank)");
  check_like(lora_a_dot, "lora_a_dot", lora_a, "lora_a");
  check_same_shape(lora_a, "lora_a", lora_a_dot, "lora_a_dot", kOp);
  check_like(lora_b_dot, "lora_b_dot", lora_a, "lora_a");
  check_same_shape(lora_b, "lora_b", lora_b_dot, "lora_b_dot", kOp);
  at::Tensor bias;
  if (bias_opt.has_value() && bias_opt->defined()) {
    bias = *bias_opt;
    check_like(bias, "bias", x, "x");
    check_dim(bias, kOp, "bias", 1, "(out_features,)");
    check_size(bias, kOp, "bias", 0, out, "(out_features,)");
  }
  const bool has_x_dot = x_dot_opt.has_value() && x_dot_opt->defined();
  if (has_x_dot) {
    check_like(*x_dot_opt, "x_dot", x, "x");
    check_same_shape(x, "x", *x_dot_opt, "x_dot", kOp);
  }

  const int64_t m = x.numel() / in;
  const at::Tensor x2 = x.reshape({m, in});
  // Base GEMM once: on [x; x_dot] when x carries a tangent, on x alone otherwise.
  at::Tensor y, y_dot;
  if (has_x_dot) {
    const at::Tensor stacked = at::cat({x2, x_dot_opt->reshape({m, in})}, 0);
    const at::Tensor base = at::mm(stacked, weight.t());
    y = base.narrow(0, 0, m);
    y_dot = base.narrow(0, m, m);
  } else {
    y = at::mm(x2, weight.t());
    y_dot = at::zeros({m, out}, y.options());
  }
  if (bias.defined()) y.add_(bias);
  if (m > 0) {
    const at::Tensor xc = x2.contiguous();
    const at::Tensor xdc = has_x_dot ? x_dot_opt->reshape({m, in}).contiguous() : at::zeros_like(xc);
    const at::Tensor a = lora_a.contiguous(), ad = lora_a_dot.contiguous();
    const at::Tensor b = lora_b.contiguous(), bd = lora_b_dot.contiguous();
    if (r > lora_linear::kMaxRank || (mixed && !x.is_cuda())) {
      // Ranks beyond the kernel's register budget, and mixed precision on CPU (whose kernel is
      // float32/float64 only): the same formula through ATen GEMMs in the factors' dtype, added
      // into y (computed in the wider type, rounded once, as peft does).
      const at::Tensor xl = xc.to(a.scalar_type()), xdl = xdc.to(a.scalar_type());
      const at::Tensor u = at::mm(xl, a.t());
      const at::Tensor u_dot = at::mm(xl, ad.t()).add_(at::mm(xdl, a.t()));
      y.add_(at::mm(u, b.t()), scale);
      y_dot.add_(at::mm(u, bd.t()).add_(at::mm(u_dot, b.t())), scale);
    } else if (x.is_cuda()) {
#ifdef WITH_CUDA
      const c10::cuda::CUDAGuard guard(x.device());
      lora_linear::add_lora_cuda(kernel_dtype(x), kernel_dtype(a), xc.data_ptr(), xdc.data_ptr(), a.data_ptr(),
                                 ad.data_ptr(), b.data_ptr(), bd.data_ptr(), y.data_ptr(),
                                 y_dot.data_ptr(), m, in, out, static_cast<int>(r), scale,
                                 c10::cuda::getCurrentCUDAStream());
#endif
    } else {
      lora_linear::add_lora_cpu(kernel_dtype(x), xc.data_ptr(), xdc.data_ptr(), a.data_ptr(),
                                ad.data_ptr(), b.data_ptr(), bd.data_ptr(), y.data_ptr(),
                                y_dot.data_ptr(), m, in, out, static_cast<int>(r), scale);
    }
  }
  std::vector<int64_t> out_shape(x.sizes().begin(), x.sizes().end());
  out_shape.back() = out;
  return {y.view(out_shape), y_dot.view(out_shape)};
}

}  // namespace

void register_lora_linear(pybind11::module& m) {
  m.def("lora_linear_jvp", &lora_linear_jvp,
        "LoRA linear layer y = x W^T + b + s (x A^T) B^T with its tangent; returns (y, y_dot).",
        pybind11::arg("x"), pybind11::arg("x_dot"), pybind11::arg("weight"), pybind11::arg("bias"),
        pybind11::arg("lora_a"), pybind11::arg("lora_a_dot"), pybind11::arg("lora_b"),
        pybind11::arg("lora_b_dot"), pybind11::arg("scale"));
}

}  // namespace l2vsd

// ATen glue for softmax attention with tangent (online-softmax kernels, CPU and CUDA).
#include "registry.h"
#include "jvp_dispatch.h"

#include "../kernels/attention_jvp/attention_jvp.h"

#ifdef WITH_CUDA
// c10 only: ATen/cuda/CUDAContext.h pulls in cuBLAS/cuSPARSE headers that a bare toolkit lacks.
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#endif

#include <optional>
#include <tuple>

namespace l2vsd {
namespace {

constexpr const char* kOp = "attention_jvp";

// An absent tangent is a zero tangent; the kernels read it like any other.
at::Tensor tangent_or_zeros(const std::optional<at::Tensor>& t, const at::Tensor& primal,
                            const char* name, const char* primal_name) {
  if (!t.has_value() || !t->defined()) return at::zeros_like(primal);
  check_jvp_tensor(*t, kOp, name, primal, primal_name);
  check_same_shape(primal, primal_name, *t, name, kOp);
  return t->contiguous();
}

std::tuple<at::Tensor, at::Tensor> attention_jvp_op(
    const at::Tensor& q, const std::optional<at::Tensor>& q_dot, const at::Tensor& k,
    const std::optional<at::Tensor>& k_dot, const at::Tensor& v,
    const std::optional<at::Tensor>& v_dot, double scale) {
  check_jvp_tensor(q, kOp, "q", q, "q");
  check_dim(q, kOp, "q", 3, "(batch*heads, N, head_dim)");
  check_jvp_tensor(k, kOp, "k", q, "q");
  check_dim(k, kOp, "k", 3, "(batch*heads, M, head_dim)");
  check_jvp_tensor(v, kOp, "v", q, "q");
  check_dim(v, kOp, "v", 3, "(batch*heads, M, head_dim)");
  const int64_t bh = q.size(0), n = q.size(1), d = q.size(2), m = k.size(1);
  check_size(k, kOp, "k", 0, bh, "(batch*heads, M, head_dim)");
  check_size(k, kOp, "k", 2, d, "(batch*heads, M, head_dim)");
  check_same_shape(k, "k", v, "v", kOp);
  TORCH_CHECK_VALUE(d >= 1 && d <= attention_jvp::kMaxHeadDim, kOp,
                    ": head_dim must be in [1, ", attention_jvp::kMaxHeadDim, "], got ", d);
  TORCH_CHECK_VALUE(m >= 1, kOp, ": argument 'k' must have at least one key, got ", k.sizes());
  const at::Tensor qc = q.contiguous(), kc = k.contiguous(), vc = v.contiguous();
  const at::Tensor qd = tangent_or_zeros(q_dot, q, "q_dot", "q");
  const at::Tensor kd = tangent_or_zeros(k_dot, k, "k_dot", "k");
  const at::Tensor vd = tangent_or_zeros(v_dot, v, "v_dot", "v");
  at::Tensor out = at::empty_like(qc), out_dot = at::empty_like(qc);
  if (bh == 0 || n == 0) return {out, out_dot};
  if (q.is_cuda()) {
#ifdef WITH_CUDA
    const c10::cuda::CUDAGuard guard(q.device());
    attention_jvp::forward_cuda(kernel_dtype(q), qc.data_ptr(), qd.data_ptr(), kc.data_ptr(),
                                kd.data_ptr(), vc.data_ptr(), vd.data_ptr(), out.data_ptr(),
                                out_dot.data_ptr(), bh, n, m, static_cast<int>(d), scale,
                                c10::cuda::getCurrentCUDAStream());
#endif
  } else {
    attention_jvp::forward_cpu(kernel_dtype(q), qc.data_ptr(), qd.data_ptr(), kc.data_ptr(),
                               kd.data_ptr(), vc.data_ptr(), vd.data_ptr(), out.data_ptr(),
                               out_dot.data_ptr(), bh, n, m, static_cast<int>(d), scale);
  }
  return {out, out_dot};
}

}  // namespace

void register_attention_jvp(pybind11::module& m) {
  m.def("attention_jvp", &attention_jvp_op,
        "softmax(scale q k^T) v with its tangent in one online-softmax pass; returns (out, out_dot).",
        pybind11::arg("q"), pybind11::arg("q_dot"), pybind11::arg("k"), pybind11::arg("k_dot"),
        pybind11::arg("v"), pybind11::arg("v_dot"), pybind11::arg("scale"));
}

}  // namespace l2vsd

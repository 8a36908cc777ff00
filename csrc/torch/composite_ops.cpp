// ATen glue for compositing (render_weight_from_density, accumulate_along_rays and the fused
// composite_along_rays): argument checks, per-ray offsets, dispatch to the CPU/CUDA launchers.
#include "registry.h"
#include "checks.h"
#include "packed_checks.h"

#include "../kernels/composite/composite.h"

#ifdef WITH_CUDA
// c10 only: ATen/cuda/CUDAContext.h pulls in cuBLAS/cuSPARSE headers that a bare toolkit lacks.
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#endif

#include <optional>
#include <string>
#include <tuple>

namespace l2vsd {
namespace {

constexpr const char* kWeightsOp = "render_weight_from_density";
constexpr const char* kAccumulateOp = "accumulate_along_rays";
constexpr const char* kCompositeOp = "composite_along_rays";

void check_sample_tensor(const at::Tensor& t, const at::Tensor& like, const char* op,
                         const char* name, const char* like_name) {
  check_dim(t, op, name, 1, "(n_samples,)");
  check_size(t, op, name, 0, like.size(0), "(n_samples,)");
  check_same_device(like, like_name, t, name, op);
  check_same_dtype(like, like_name, t, name, op);
}

void check_float_tensor(const at::Tensor& t, const char* op, const char* name) {
  check_defined(t, op, name);
  check_device_supported(t, op, name);
  check_dtype(t, op, name, {at::kFloat, at::kDouble});
}

const void* ptr_or_null(const at::Tensor& t) { return t.defined() ? t.data_ptr() : nullptr; }

at::Tensor optional_grad(const std::optional<at::Tensor>& g, const at::Tensor& like,
                         const char* name) {
  if (!g.has_value() || !g->defined()) return at::Tensor();
  check_sample_tensor(*g, like, kWeightsOp, name, "sigmas");
  return g->contiguous();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> weights_forward(
    const at::Tensor& t_starts, const at::Tensor& t_ends, const at::Tensor& sigmas,
    const at::Tensor& ray_indices, int64_t n_rays, bool validate,
    const std::optional<at::Tensor>& layout) {
  check_float_tensor(sigmas, kWeightsOp, "sigmas");
  check_dim(sigmas, kWeightsOp, "sigmas", 1, "(n_samples,)");
  check_sample_tensor(t_starts, sigmas, kWeightsOp, "t_starts", "sigmas");
  check_sample_tensor(t_ends, sigmas, kWeightsOp, "t_ends", "sigmas");
  check_same_device(sigmas, "sigmas", ray_indices, "ray_indices", kWeightsOp);
  const int64_t n = sigmas.size(0);
  const at::Tensor offsets = layout_offsets(ray_indices, n_rays, n, layout, sigmas, "sigmas",
                                            kWeightsOp, validate);
  const at::Tensor ts = t_starts.contiguous(), te = t_ends.contiguous(), sg = sigmas.contiguous();
  // Validated indices put every sample in exactly one ray, so the kernel writes every slot.
  auto weights = at::empty_like(sg), trans = at::empty_like(sg), alphas = at::empty_like(sg);
  if (n == 0 || n_rays == 0) return {weights, trans, alphas};
  if (sg.is_cuda()) {
#ifdef WITH_CUDA
    const c10::cuda::CUDAGuard guard(sg.device());
    composite::weights_forward_cuda(kernel_dtype(sg), ts.data_ptr(), te.data_ptr(), sg.data_ptr(),
                                    offsets.data_ptr<int64_t>(), n_rays, weights.data_ptr(),
                                    trans.data_ptr(), alphas.data_ptr(),
                                    c10::cuda::getCurrentCUDAStream());
#endif
  } else {
    composite::weights_forward_cpu(kernel_dtype(sg), ts.data_ptr(), te.data_ptr(), sg.data_ptr(),
                                   offsets.data_ptr<int64_t>(), n_rays, weights.data_ptr(),
                                   trans.data_ptr(), alphas.data_ptr());
  }
  return {weights, trans, alphas};
}

at::Tensor weights_backward(const std::optional<at::Tensor>& grad_weights,
                            const std::optional<at::Tensor>& grad_transmittance,
                            const std::optional<at::Tensor>& grad_alphas,
                            const at::Tensor& t_starts, const at::Tensor& t_ends,
                            const at::Tensor& ray_indices, int64_t n_rays,
                            const at::Tensor& weights, const at::Tensor& transmittance,
                            const at::Tensor& alphas, const std::optional<at::Tensor>& layout) {
  check_float_tensor(weights, kWeightsOp, "weights");
  check_dim(weights, kWeightsOp, "weights", 1, "(n_samples,)");
  for (auto* pair : {&t_starts, &t_ends, &transmittance, &alphas})
    check_sample_tensor(*pair, weights, kWeightsOp, "saved tensor", "weights");
  check_same_device(weights, "weights", ray_indices, "ray_indices", kWeightsOp);
  const int64_t n = weights.size(0);
  // The forward pass validated these very indices (or they were valid by construction).
  const at::Tensor offsets = layout_offsets(ray_indices, n_rays, n, layout, weights, "weights",
                                            kWeightsOp, /*validate=*/false);
  const at::Tensor gw = optional_grad(grad_weights, weights, "grad_weights");
  const at::Tensor gt = optional_grad(grad_transmittance, weights, "grad_transmittance");
  const at::Tensor ga = optional_grad(grad_alphas, weights, "grad_alphas");
  const at::Tensor ts = t_starts.contiguous(), te = t_ends.contiguous();
  const at::Tensor w = weights.contiguous(), tr = transmittance.contiguous(), al = alphas.contiguous();
  auto grad_sigmas = at::empty_like(w);  // every slot written (see weights_forward)
  if (n == 0 || n_rays == 0) return grad_sigmas;
  if (w.is_cuda()) {
#ifdef WITH_CUDA
    const c10::cuda::CUDAGuard guard(w.device());
    composite::weights_backward_cuda(kernel_dtype(w), ts.data_ptr(), te.data_ptr(), w.data_ptr(),
                                     tr.data_ptr(), al.data_ptr(), ptr_or_null(gw),
                                     ptr_or_null(gt), ptr_or_null(ga),
                                     offsets.data_ptr<int64_t>(), n_rays, grad_sigmas.data_ptr(),
                                     c10::cuda::getCurrentCUDAStream());
#endif
  } else {
    composite::weights_backward_cpu(kernel_dtype(w), ts.data_ptr(), te.data_ptr(), w.data_ptr(),
                                    tr.data_ptr(), al.data_ptr(), ptr_or_null(gw),
                                    ptr_or_null(gt), ptr_or_null(ga),
                                    offsets.data_ptr<int64_t>(), n_rays, grad_sigmas.data_ptr());
  }
  return grad_sigmas;
}

// values: (n_samples, C) or undefined (accumulate the weights themselves, C = 1).
int64_t check_values(const at::Tensor& weights, const std::optional<at::Tensor>& values) {
  if (!values.has_value() || !values->defined()) return 1;
  check_dim(*values, kAccumulateOp, "values", 2, "(n_samples, C)");
  check_size(*values, kAccumulateOp, "values", 0, weights.size(0), "(n_samples, C)");
  check_same_device(weights, "weights", *values, "values", kAccumulateOp);
  check_same_dtype(weights, "weights", *values, "values", kAccumulateOp);
  return values->size(1);
}

at::Tensor accumulate_forward(const at::Tensor& weights, const std::optional<at::Tensor>& values,
                              const at::Tensor& ray_indices, int64_t n_rays, bool validate,
                              const std::optional<at::Tensor>& layout) {
  check_float_tensor(weights, kAccumulateOp, "weights");
  check_dim(weights, kAccumulateOp, "weights", 1, "(n_samples,)");
  check_same_device(weights, "weights", ray_indices, "ray_indices", kAccumulateOp);
  const int64_t c = check_values(weights, values);
  const int64_t n = weights.size(0);
  const at::Tensor offsets = layout_offsets(ray_indices, n_rays, n, layout, weights, "weights",
                                            kAccumulateOp, validate);
  const at::Tensor w = weights.contiguous();
  const at::Tensor v = (values.has_value() && values->defined()) ? values->contiguous() : at::Tensor();
  // Each ray's row is written by its thread, zero for rays without samples.
  if (n == 0) return at::zeros({n_rays, c}, w.options());
  auto out = at::empty({n_rays, c}, w.options());
  if (n_rays == 0 || c == 0) return out;
  if (w.is_cuda()) {
#ifdef WITH_CUDA
    const c10::cuda::CUDAGuard guard(w.device());
    composite::accumulate_forward_cuda(kernel_dtype(w), w.data_ptr(), ptr_or_null(v), c,
                                       offsets.data_ptr<int64_t>(), n_rays, out.data_ptr(),
                                       c10::cuda::getCurrentCUDAStream());
#endif
  } else {
    composite::accumulate_forward_cpu(kernel_dtype(w), w.data_ptr(), ptr_or_null(v), c,
                                      offsets.data_ptr<int64_t>(), n_rays, out.data_ptr());
  }
  return out;
}

std::tuple<at::Tensor, at::Tensor> accumulate_backward(
    const at::Tensor& grad_out, const at::Tensor& weights, const std::optional<at::Tensor>& values,
    const at::Tensor& ray_indices, int64_t n_rays, bool need_weights, bool need_values,
    const std::optional<at::Tensor>& layout) {
  check_float_tensor(weights, kAccumulateOp, "weights");
  check_dim(weights, kAccumulateOp, "weights", 1, "(n_samples,)");
  check_same_device(weights, "weights", ray_indices, "ray_indices", kAccumulateOp);
  const int64_t c = check_values(weights, values);
  const int64_t n = weights.size(0);
  // The forward pass validated these very indices (or they were valid by construction).
  const at::Tensor offsets = layout_offsets(ray_indices, n_rays, n, layout, weights, "weights",
                                            kAccumulateOp, /*validate=*/false);
  check_dim(grad_out, kAccumulateOp, "grad_out", 2, "(n_rays, C)");
  check_size(grad_out, kAccumulateOp, "grad_out", 0, n_rays, "(n_rays, C)");
  check_size(grad_out, kAccumulateOp, "grad_out", 1, c, "(n_rays, C)");
  check_same_device(weights, "weights", grad_out, "grad_out", kAccumulateOp);
  check_same_dtype(weights, "weights", grad_out, "grad_out", kAccumulateOp);
  const bool has_values = values.has_value() && values->defined();
  const at::Tensor w = weights.contiguous(), g = grad_out.contiguous();
  const at::Tensor v = has_values ? values->contiguous() : at::Tensor();
  at::Tensor gw, gv;
  if (need_weights) gw = at::empty_like(w);  // every sample has a ray: every slot written
  if (need_values && has_values) gv = at::empty_like(v);
  if (n == 0 || (!gw.defined() && !gv.defined())) return {gw, gv};
  if (w.is_cuda()) {
#ifdef WITH_CUDA
    const c10::cuda::CUDAGuard guard(w.device());
    // One thread per sample on the GPU: it needs each sample's ray.
    const at::Tensor ri = ray_indices.to(at::kLong).contiguous();
    composite::accumulate_backward_cuda(kernel_dtype(w), w.data_ptr(), ptr_or_null(v),
                                        g.data_ptr(), c, ri.data_ptr<int64_t>(), n, n_rays,
                                        ptr_or_null(gw) ? gw.data_ptr() : nullptr,
                                        gv.defined() ? gv.data_ptr() : nullptr,
                                        c10::cuda::getCurrentCUDAStream());
#endif
  } else {
    composite::accumulate_backward_cpu(kernel_dtype(w), w.data_ptr(), ptr_or_null(v),
                                       g.data_ptr(), c, offsets.data_ptr<int64_t>(), n_rays,
                                       gw.defined() ? gw.data_ptr() : nullptr,
                                       gv.defined() ? gv.data_ptr() : nullptr);
  }
  return {gw, gv};
}

// The fused op: values (n_samples, C), the other per-sample tensors (n_samples,).
int64_t check_fused_inputs(const at::Tensor& t_starts, const at::Tensor& t_ends,
                           const at::Tensor& sigmas, const at::Tensor& values,
                           const at::Tensor& ray_indices) {
  check_float_tensor(sigmas, kCompositeOp, "sigmas");
  check_dim(sigmas, kCompositeOp, "sigmas", 1, "(n_samples,)");
  check_sample_tensor(t_starts, sigmas, kCompositeOp, "t_starts", "sigmas");
  check_sample_tensor(t_ends, sigmas, kCompositeOp, "t_ends", "sigmas");
  check_defined(values, kCompositeOp, "values");
  check_dim(values, kCompositeOp, "values", 2, "(n_samples, C)");
  check_size(values, kCompositeOp, "values", 0, sigmas.size(0), "(n_samples, C)");
  check_same_device(sigmas, "sigmas", values, "values", kCompositeOp);
  check_same_dtype(sigmas, "sigmas", values, "values", kCompositeOp);
  check_same_device(sigmas, "sigmas", ray_indices, "ray_indices", kCompositeOp);
  return values.size(1);
}

// The per-ray tensors (n_rays, cols) the backward takes back: checked against the samples.
void check_ray_tensor(const at::Tensor& t, const at::Tensor& sigmas, int64_t n_rays, int64_t cols,
                      const char* name, const char* shape) {
  check_defined(t, kCompositeOp, name);
  check_dim(t, kCompositeOp, name, 2, shape);
  check_size(t, kCompositeOp, name, 0, n_rays, shape);
  check_size(t, kCompositeOp, name, 1, cols, shape);
  check_same_device(sigmas, "sigmas", t, name, kCompositeOp);
  check_same_dtype(sigmas, "sigmas", t, name, kCompositeOp);
}

// Returns (out (n_rays, C), depth_stats (n_rays, 3) or undefined unless with_depth_stats).
std::tuple<at::Tensor, at::Tensor> composite_forward(
    const at::Tensor& t_starts, const at::Tensor& t_ends, const at::Tensor& sigmas,
    const at::Tensor& values, const at::Tensor& ray_indices, int64_t n_rays, bool validate,
    const std::optional<at::Tensor>& layout, bool with_depth_stats) {
  const int64_t c = check_fused_inputs(t_starts, t_ends, sigmas, values, ray_indices);
  const int64_t n = sigmas.size(0);
  const at::Tensor offsets = layout_offsets(ray_indices, n_rays, n, layout, sigmas, "sigmas",
                                            kCompositeOp, validate);
  const at::Tensor ts = t_starts.contiguous(), te = t_ends.contiguous(), sg = sigmas.contiguous();
  const at::Tensor v = values.contiguous();
  // Each ray's row is written by its task, zero for rays without samples.
  if (n == 0) {
    return {at::zeros({n_rays, c}, sg.options()),
            with_depth_stats ? at::zeros({n_rays, composite::kDepthStats}, sg.options())
                             : at::Tensor()};
  }
  auto out = at::empty({n_rays, c}, sg.options());
  at::Tensor stats;
  if (with_depth_stats) stats = at::empty({n_rays, composite::kDepthStats}, sg.options());
  if (n_rays == 0) return {out, stats};
  // C == 0 only happens with the depth spread wanted (otherwise there is nothing to compute).
  if (c == 0 && !with_depth_stats) return {out, stats};
  if (sg.is_cuda()) {
#ifdef WITH_CUDA
    const c10::cuda::CUDAGuard guard(sg.device());
    composite::composite_forward_cuda(kernel_dtype(sg), ts.data_ptr(), te.data_ptr(),
                                      sg.data_ptr(), v.data_ptr(), c,
                                      offsets.data_ptr<int64_t>(), n_rays, out.data_ptr(),
                                      stats.defined() ? stats.data_ptr() : nullptr,
                                      c10::cuda::getCurrentCUDAStream());
#endif
  } else {
    composite::composite_forward_cpu(kernel_dtype(sg), ts.data_ptr(), te.data_ptr(),
                                     sg.data_ptr(), v.data_ptr(), c, offsets.data_ptr<int64_t>(),
                                     n_rays, out.data_ptr(),
                                     stats.defined() ? stats.data_ptr() : nullptr);
  }
  return {out, stats};
}

std::tuple<at::Tensor, at::Tensor> composite_backward(
    const at::Tensor& grad_out, const at::Tensor& out, const at::Tensor& t_starts,
    const at::Tensor& t_ends, const at::Tensor& sigmas, const at::Tensor& values,
    const at::Tensor& ray_indices, int64_t n_rays, bool need_sigmas, bool need_values,
    const std::optional<at::Tensor>& layout, const std::optional<at::Tensor>& depth_stats,
    const std::optional<at::Tensor>& grad_depth_stats) {
  const int64_t c = check_fused_inputs(t_starts, t_ends, sigmas, values, ray_indices);
  for (auto [t, name] : {std::pair{&grad_out, "grad_out"}, std::pair{&out, "out"}})
    check_ray_tensor(*t, sigmas, n_rays, c, name, "(n_rays, C)");
  // The depth spread's gradient: both tensors or neither.
  const bool has_stats = depth_stats.has_value() && depth_stats->defined();
  const bool has_grad_stats = grad_depth_stats.has_value() && grad_depth_stats->defined();
  TORCH_CHECK_VALUE(has_stats == has_grad_stats, kCompositeOp,
                    ": 'depth_stats' and 'grad_depth_stats' go together, got only one of them");
  at::Tensor zs, gzs;
  if (has_stats) {
    check_ray_tensor(*depth_stats, sigmas, n_rays, composite::kDepthStats, "depth_stats",
                     "(n_rays, 3)");
    check_ray_tensor(*grad_depth_stats, sigmas, n_rays, composite::kDepthStats,
                     "grad_depth_stats", "(n_rays, 3)");
    zs = depth_stats->contiguous();
    gzs = grad_depth_stats->contiguous();
  }
  const int64_t n = sigmas.size(0);
  // The forward pass validated these very indices (or they were valid by construction).
  const at::Tensor offsets = layout_offsets(ray_indices, n_rays, n, layout, sigmas, "sigmas",
                                            kCompositeOp, /*validate=*/false);
  const at::Tensor ts = t_starts.contiguous(), te = t_ends.contiguous(), sg = sigmas.contiguous();
  const at::Tensor v = values.contiguous(), g = grad_out.contiguous(), o = out.contiguous();
  at::Tensor gs, gv;
  if (need_sigmas) gs = at::empty_like(sg);  // every sample has a ray: every slot written
  if (need_values) gv = at::empty_like(v);
  if (n == 0 || n_rays == 0 || (c == 0 && !has_stats) || (!need_sigmas && !need_values)) {
    if (gs.defined()) gs.zero_();
    if (gv.defined()) gv.zero_();
    return {gs, gv};
  }
  const void* zs_ptr = has_stats ? zs.data_ptr() : nullptr;
  const void* gzs_ptr = has_stats ? gzs.data_ptr() : nullptr;
  if (sg.is_cuda()) {
#ifdef WITH_CUDA
    const c10::cuda::CUDAGuard guard(sg.device());
    composite::composite_backward_cuda(kernel_dtype(sg), ts.data_ptr(), te.data_ptr(),
                                       sg.data_ptr(), v.data_ptr(), g.data_ptr(), o.data_ptr(),
                                       zs_ptr, gzs_ptr, c, offsets.data_ptr<int64_t>(), n_rays,
                                       gs.defined() ? gs.data_ptr() : nullptr,
                                       gv.defined() ? gv.data_ptr() : nullptr,
                                       c10::cuda::getCurrentCUDAStream());
#endif
  } else {
    composite::composite_backward_cpu(kernel_dtype(sg), ts.data_ptr(), te.data_ptr(),
                                      sg.data_ptr(), v.data_ptr(), g.data_ptr(), o.data_ptr(),
                                      zs_ptr, gzs_ptr, c, offsets.data_ptr<int64_t>(), n_rays,
                                      gs.defined() ? gs.data_ptr() : nullptr,
                                      gv.defined() ? gv.data_ptr() : nullptr);
  }
  return {gs, gv};
}

}  // namespace

void register_composite(pybind11::module& m) {
  namespace py = pybind11;
  m.def("packed_offsets",
        [](const at::Tensor& ray_indices, int64_t n_rays, bool validate, const std::string& op) {
          return packed_offsets(ray_indices, n_rays, ray_indices.dim() == 1 ? ray_indices.size(0) : -1,
                                op.c_str(), validate);
        },
        "Per-ray offsets (n_rays + 1,) of sorted ray_indices, checked (range, order) on CPU and, "
        "with validate=True, on CUDA (host syncs). Errors name `op`. The ops take them back as "
        "`offsets=`, so one layout is checked once.",
        py::arg("ray_indices"), py::arg("n_rays"), py::arg("validate") = true,
        py::arg("op") = "packed_offsets");
  m.def("render_weights_forward", &weights_forward,
        "Packed compositing: (weights, transmittance, alphas) from densities. validate=False skips "
        "the CUDA range/order check of ray_indices (a host sync) for layouts valid by construction; "
        "offsets (from packed_offsets) skip the layout pass altogether.",
        py::arg("t_starts"), py::arg("t_ends"), py::arg("sigmas"), py::arg("ray_indices"),
        py::arg("n_rays"), py::arg("validate") = true, py::arg("offsets") = py::none());
  m.def("render_weights_backward", &weights_backward,
        "Gradient w.r.t. sigmas from the gradients of (weights, transmittance, alphas).",
        py::arg("grad_weights"), py::arg("grad_transmittance"), py::arg("grad_alphas"),
        py::arg("t_starts"), py::arg("t_ends"), py::arg("ray_indices"), py::arg("n_rays"),
        py::arg("weights"), py::arg("transmittance"), py::arg("alphas"),
        py::arg("offsets") = py::none());
  m.def("accumulate_forward", &accumulate_forward,
        "Per-ray weighted sum of per-sample values (validate, offsets: as for "
        "render_weights_forward).",
        py::arg("weights"), py::arg("values"), py::arg("ray_indices"), py::arg("n_rays"),
        py::arg("validate") = true, py::arg("offsets") = py::none());
  m.def("accumulate_backward", &accumulate_backward,
        "Gradients of accumulate_forward w.r.t. (weights, values).", py::arg("grad_out"),
        py::arg("weights"), py::arg("values"), py::arg("ray_indices"), py::arg("n_rays"),
        py::arg("need_weights"), py::arg("need_values"), py::arg("offsets") = py::none());
  m.def("composite_forward", &composite_forward,
        "Fused compositing: (out, depth_stats): per-ray sums (n_rays, C) of w_i * values_i with "
        "the weights of render_weights_forward, in one sweep, nothing stored per sample; with "
        "depth_stats=True also (n_rays, 3) = (sum w, mean of t_mid - t_ref, variance of t_mid) "
        "under the normalised weights (t_ref: the ray's first midpoint), else None.",
        py::arg("t_starts"), py::arg("t_ends"), py::arg("sigmas"), py::arg("values"),
        py::arg("ray_indices"), py::arg("n_rays"), py::arg("validate") = true,
        py::arg("offsets") = py::none(), py::arg("depth_stats") = false);
  m.def("composite_backward", &composite_backward,
        "Gradients of composite_forward w.r.t. (sigmas, values), recomputing the weights; `out` "
        "is composite_forward's result, depth_stats (with grad_depth_stats) its depth spread.",
        py::arg("grad_out"), py::arg("out"), py::arg("t_starts"), py::arg("t_ends"),
        py::arg("sigmas"), py::arg("values"), py::arg("ray_indices"), py::arg("n_rays"),
        py::arg("need_sigmas"), py::arg("need_values"), py::arg("offsets") = py::none(),
        py::arg("depth_stats") = py::none(), py::arg("grad_depth_stats") = py::none());
}

}  // namespace l2vsd

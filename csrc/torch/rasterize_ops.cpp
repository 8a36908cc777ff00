// ATen glue for rasterize / interpolate / antialias: argument checks (each failure names the
// argument), contiguity, dispatch to the CPU/CUDA launchers. The autograd wrappers and the
// documentation of the conventions are in l2vsd_ext/ops/rasterize.py.
#include "registry.h"
#include "checks.h"

#include "../kernels/rasterize/rasterize.h"

#ifdef WITH_CUDA
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#endif

#include <cmath>
#include <optional>
#include <tuple>

namespace l2vsd {
namespace {

constexpr const char* kRasterOp = "rasterize";
constexpr const char* kInterpOp = "interpolate";
constexpr const char* kAaOp = "antialias";
constexpr int64_t kMaxSide = 16384;

void check_float(const at::Tensor& t, const char* op, const char* name) {
  check_defined(t, op, name);
  check_device_supported(t, op, name);
  check_dtype(t, op, name, {at::kFloat, at::kDouble});
}

// pos (B, V, 4) and tris (F, 3) int32 with every index in [0, V).
void check_mesh(const at::Tensor& pos, const at::Tensor& tris, const char* op) {
  check_float(pos, op, "pos");
  check_dim(pos, op, "pos", 3, "(batch, n_vertices, 4)");
  check_size(pos, op, "pos", 2, 4, "(batch, n_vertices, 4)");
  check_dim(tris, op, "tri", 2, "(n_triangles, 3)");
  check_size(tris, op, "tri", 1, 3, "(n_triangles, 3)");
  check_dtype(tris, op, "tri", {at::kInt});
  check_same_device(pos, "pos", tris, "tri", op);
  TORCH_CHECK_VALUE(tris.size(0) < (int64_t(1) << 31) - 1, op, ": argument 'tri' has too many "
                    "triangles for int32 ids");
  if (tris.numel() > 0) {
    const int64_t lo = tris.min().item<int64_t>(), hi = tris.max().item<int64_t>();
    TORCH_CHECK_VALUE(lo >= 0 && hi < pos.size(1), op, ": argument 'tri' has vertex indices in [",
                      lo, ", ", hi, "], which must lie in [0, ", pos.size(1), ")");
  }
}

void check_near(double near_w, const char* op) {
  TORCH_CHECK_VALUE(std::isfinite(near_w) && near_w >= 0, op,
                    ": argument 'near_w' must be finite and >= 0, got ", near_w);
}

// tri_id (B, H, W) int32 and depth/bary of the rasterizer output.
void check_rast(const at::Tensor& tri_id, const at::Tensor& like, const char* op, int64_t batch) {
  check_dim(tri_id, op, "tri_id", 3, "(batch, height, width)");
  check_dtype(tri_id, op, "tri_id", {at::kInt});
  check_same_device(like, "pos", tri_id, "tri_id", op);
  check_size(tri_id, op, "tri_id", 0, batch, "(batch, height, width)");
}

rasterize::RasterArgs make_args(const at::Tensor& pos, const at::Tensor& tris, int64_t height,
                                int64_t width, double near_w) {
  rasterize::RasterArgs a;
  a.batch = pos.size(0);
  a.n_vertices = pos.size(1);
  a.n_triangles = tris.size(0);
  a.height = height;
  a.width = width;
  a.pos_stride = pos.size(1) * 4;
  a.near_w = near_w;
  return a;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> rasterize_forward(const at::Tensor& pos_in,
                                                                 const at::Tensor& tris_in,
                                                                 int64_t height, int64_t width,
                                                                 double near_w) {
  check_mesh(pos_in, tris_in, kRasterOp);
  check_near(near_w, kRasterOp);
  TORCH_CHECK_VALUE(height >= 1 && height <= kMaxSide, kRasterOp, ": argument 'height' must be in [1, ",
                    kMaxSide, "], got ", height);
  TORCH_CHECK_VALUE(width >= 1 && width <= kMaxSide, kRasterOp, ": argument 'width' must be in [1, ",
                    kMaxSide, "], got ", width);
  const at::Tensor pos = pos_in.contiguous(), tris = tris_in.contiguous();
  const auto a = make_args(pos, tris, height, width, near_w);
  auto opts = pos.options();
  auto tri_id = at::empty({a.batch, height, width}, opts.dtype(at::kInt));
  auto bary = at::empty({a.batch, height, width, 3}, opts);
  auto depth = at::empty({a.batch, height, width}, opts);
  auto keys = at::empty({a.batch, height, width}, opts.dtype(at::kLong));
  if (a.batch == 0) return {tri_id, bary, depth};
  auto* key_ptr = reinterpret_cast<uint64_t*>(keys.data_ptr<int64_t>());
  if (pos.is_cuda()) {
#ifdef WITH_CUDA
    const c10::cuda::CUDAGuard guard(pos.device());
    rasterize::rasterize_forward_cuda(kernel_dtype(pos), a, pos.data_ptr(), tris.data_ptr<int32_t>(),
                                      key_ptr, tri_id.data_ptr<int32_t>(), bary.data_ptr(),
                                      depth.data_ptr(), c10::cuda::getCurrentCUDAStream());
#endif
  } else {
    rasterize::rasterize_forward_cpu(kernel_dtype(pos), a, pos.data_ptr(), tris.data_ptr<int32_t>(),
                                     key_ptr, tri_id.data_ptr<int32_t>(), bary.data_ptr(),
                                     depth.data_ptr());
  }
  return {tri_id, bary, depth};
}

at::Tensor rasterize_backward(const at::Tensor& pos_in, const at::Tensor& tris_in,
                              const at::Tensor& tri_id_in, const at::Tensor& g_bary_in,
                              const std::optional<at::Tensor>& g_depth_in, double near_w) {
  check_mesh(pos_in, tris_in, kRasterOp);
  check_rast(tri_id_in, pos_in, kRasterOp, pos_in.size(0));
  const int64_t H = tri_id_in.size(1), W = tri_id_in.size(2);
  check_dim(g_bary_in, kRasterOp, "grad_bary", 4, "(batch, height, width, 3)");
  TORCH_CHECK_VALUE(g_bary_in.sizes() == at::IntArrayRef({pos_in.size(0), H, W, 3}), kRasterOp,
                    ": argument 'grad_bary' must have shape (batch, height, width, 3)");
  check_same_dtype(pos_in, "pos", g_bary_in, "grad_bary", kRasterOp);
  at::Tensor g_depth;
  if (g_depth_in.has_value() && g_depth_in->defined()) {
    TORCH_CHECK_VALUE(g_depth_in->sizes() == tri_id_in.sizes(), kRasterOp,
                      ": argument 'grad_depth' must have shape (batch, height, width)");
    check_same_dtype(pos_in, "pos", *g_depth_in, "grad_depth", kRasterOp);
    g_depth = g_depth_in->contiguous();
  }
  const at::Tensor pos = pos_in.contiguous(), tris = tris_in.contiguous();
  const at::Tensor tri_id = tri_id_in.contiguous(), g_bary = g_bary_in.contiguous();
  const auto a = make_args(pos, tris, H, W, near_w);
  auto grad_pos = at::zeros_like(pos);
  const void* gd = g_depth.defined() ? g_depth.data_ptr() : nullptr;
  if (pos.is_cuda()) {
#ifdef WITH_CUDA
    const c10::cuda::CUDAGuard guard(pos.device());
    rasterize::rasterize_backward_cuda(kernel_dtype(pos), a, pos.data_ptr(), tris.data_ptr<int32_t>(),
                                       tri_id.data_ptr<int32_t>(), g_bary.data_ptr(), gd,
                                       grad_pos.data_ptr(), c10::cuda::getCurrentCUDAStream());
#endif
  } else {
    rasterize::rasterize_backward_cpu(kernel_dtype(pos), a, pos.data_ptr(), tris.data_ptr<int32_t>(),
                                      tri_id.data_ptr<int32_t>(), g_bary.data_ptr(), gd,
                                      grad_pos.data_ptr());
  }
  return grad_pos;
}

// attr (B or 1, V, C); tri_id (B, H, W); bary (B, H, W, 3).
void check_interp(const at::Tensor& attr, const at::Tensor& tris, const at::Tensor& tri_id,
                  const at::Tensor& bary) {
  check_float(attr, kInterpOp, "attr");
  check_dim(attr, kInterpOp, "attr", 3, "(batch or 1, n_vertices, channels)");
  check_dim(tris, kInterpOp, "tri", 2, "(n_triangles, 3)");
  check_size(tris, kInterpOp, "tri", 1, 3, "(n_triangles, 3)");
  check_dtype(tris, kInterpOp, "tri", {at::kInt});
  check_same_device(attr, "attr", tris, "tri", kInterpOp);
  check_dim(tri_id, kInterpOp, "tri_id", 3, "(batch, height, width)");
  check_dtype(tri_id, kInterpOp, "tri_id", {at::kInt});
  check_same_device(attr, "attr", tri_id, "tri_id", kInterpOp);
  TORCH_CHECK_VALUE(attr.size(0) == 1 || attr.size(0) == tri_id.size(0), kInterpOp,
                    ": argument 'attr' must have batch size 1 or ", tri_id.size(0), ", got ",
                    attr.size(0));
  check_dim(bary, kInterpOp, "bary", 4, "(batch, height, width, 3)");
  TORCH_CHECK_VALUE(bary.size(0) == tri_id.size(0) && bary.size(1) == tri_id.size(1) &&
                    bary.size(2) == tri_id.size(2) && bary.size(3) == 3, kInterpOp,
                    ": argument 'bary' must have shape (batch, height, width, 3) matching 'tri_id'");
  check_same_dtype(attr, "attr", bary, "bary", kInterpOp);
  check_same_device(attr, "attr", bary, "bary", kInterpOp);
  if (tris.numel() > 0) {
    const int64_t lo = tris.min().item<int64_t>(), hi = tris.max().item<int64_t>();
    TORCH_CHECK_VALUE(lo >= 0 && hi < attr.size(1), kInterpOp, ": argument 'tri' has vertex "
                      "indices in [", lo, ", ", hi, "], which must lie in [0, ", attr.size(1), ")");
  }
  if (tri_id.numel() > 0) {
    const int64_t hi = tri_id.max().item<int64_t>(), lo = tri_id.min().item<int64_t>();
    TORCH_CHECK_VALUE(lo >= -1 && hi < tris.size(0), kInterpOp, ": argument 'tri_id' has ids in [",
                      lo, ", ", hi, "], which must lie in [-1, ", tris.size(0), ")");
  }
}

at::Tensor interpolate_forward(const at::Tensor& attr_in, const at::Tensor& tris_in,
                               const at::Tensor& tri_id_in, const at::Tensor& bary_in) {
  check_interp(attr_in, tris_in, tri_id_in, bary_in);
  const at::Tensor attr = attr_in.contiguous(), tris = tris_in.contiguous();
  const at::Tensor tri_id = tri_id_in.contiguous(), bary = bary_in.contiguous();
  const int64_t B = tri_id.size(0), hw = tri_id.size(1) * tri_id.size(2), C = attr.size(2);
  const int64_t stride = attr.size(0) == 1 ? 0 : attr.size(1) * C;
  auto out = at::empty({B, tri_id.size(1), tri_id.size(2), C}, attr.options());
  if (attr.is_cuda()) {
#ifdef WITH_CUDA
    const c10::cuda::CUDAGuard guard(attr.device());
    rasterize::interpolate_forward_cuda(kernel_dtype(attr), hw, B, C, stride, attr.data_ptr(),
                                        tris.data_ptr<int32_t>(), tri_id.data_ptr<int32_t>(),
                                        bary.data_ptr(), out.data_ptr(),
                                        c10::cuda::getCurrentCUDAStream());
#endif
  } else {
    rasterize::interpolate_forward_cpu(kernel_dtype(attr), hw, B, C, stride, attr.data_ptr(),
                                       tris.data_ptr<int32_t>(), tri_id.data_ptr<int32_t>(),
                                       bary.data_ptr(), out.data_ptr());
  }
  return out;
}

std::tuple<at::Tensor, at::Tensor> interpolate_backward(const at::Tensor& attr_in,
                                                        const at::Tensor& tris_in,
                                                        const at::Tensor& tri_id_in,
                                                        const at::Tensor& bary_in,
                                                        const at::Tensor& g_out_in,
                                                        bool need_attr_grad) {
  check_interp(attr_in, tris_in, tri_id_in, bary_in);
  const int64_t B = tri_id_in.size(0), C = attr_in.size(2);
  TORCH_CHECK_VALUE(g_out_in.sizes() == at::IntArrayRef({B, tri_id_in.size(1), tri_id_in.size(2), C}),
                    kInterpOp, ": argument 'grad_out' must have shape (batch, height, width, channels)");
  check_same_dtype(attr_in, "attr", g_out_in, "grad_out", kInterpOp);
  const at::Tensor attr = attr_in.contiguous(), tris = tris_in.contiguous();
  const at::Tensor tri_id = tri_id_in.contiguous(), bary = bary_in.contiguous();
  const at::Tensor g_out = g_out_in.contiguous();
  const int64_t hw = tri_id.size(1) * tri_id.size(2);
  const int64_t stride = attr.size(0) == 1 ? 0 : attr.size(1) * C;
  at::Tensor grad_attr = need_attr_grad ? at::zeros_like(attr) : at::Tensor();
  auto grad_bary = at::empty_like(bary);
  void* ga = grad_attr.defined() ? grad_attr.data_ptr() : nullptr;
  if (attr.is_cuda()) {
#ifdef WITH_CUDA
    const c10::cuda::CUDAGuard guard(attr.device());
    rasterize::interpolate_backward_cuda(kernel_dtype(attr), hw, B, C, stride, attr.data_ptr(),
                                         tris.data_ptr<int32_t>(), tri_id.data_ptr<int32_t>(),
                                         bary.data_ptr(), g_out.data_ptr(), ga,
                                         grad_bary.data_ptr(), c10::cuda::getCurrentCUDAStream());
#endif
  } else {
    rasterize::interpolate_backward_cpu(kernel_dtype(attr), hw, B, C, stride, attr.data_ptr(),
                                        tris.data_ptr<int32_t>(), tri_id.data_ptr<int32_t>(),
                                        bary.data_ptr(), g_out.data_ptr(), ga, grad_bary.data_ptr());
  }
  return {grad_attr, grad_bary};
}

void check_aa(const at::Tensor& color, const at::Tensor& pos, const at::Tensor& tris,
              const at::Tensor& nbrs, const at::Tensor& tri_id, const at::Tensor& depth,
              double near_w) {
  check_mesh(pos, tris, kAaOp);
  check_near(near_w, kAaOp);
  check_float(color, kAaOp, "color");
  check_dim(color, kAaOp, "color", 4, "(batch, height, width, channels)");
  check_same_dtype(pos, "pos", color, "color", kAaOp);
  check_same_device(pos, "pos", color, "color", kAaOp);
  check_rast(tri_id, pos, kAaOp, pos.size(0));
  TORCH_CHECK_VALUE(color.size(0) == tri_id.size(0) && color.size(1) == tri_id.size(1) &&
                    color.size(2) == tri_id.size(2), kAaOp,
                    ": argument 'color' must have shape (batch, height, width, channels) matching "
                    "the rasterizer output ", tri_id.sizes());
  TORCH_CHECK_VALUE(depth.sizes() == tri_id.sizes(), kAaOp,
                    ": argument 'depth' must have the shape of 'tri_id'");
  check_same_dtype(pos, "pos", depth, "depth", kAaOp);
  check_same_device(pos, "pos", depth, "depth", kAaOp);
  TORCH_CHECK_VALUE(nbrs.sizes() == tris.sizes(), kAaOp,
                    ": argument 'neighbors' must have the shape of 'tri' (n_triangles, 3)");
  check_dtype(nbrs, kAaOp, "neighbors", {at::kInt});
  check_same_device(pos, "pos", nbrs, "neighbors", kAaOp);
  if (tri_id.numel() > 0) {
    const int64_t hi = tri_id.max().item<int64_t>(), lo = tri_id.min().item<int64_t>();
    TORCH_CHECK_VALUE(lo >= -1 && hi < tris.size(0), kAaOp, ": argument 'tri_id' has ids in [", lo,
                      ", ", hi, "], which must lie in [-1, ", tris.size(0), ")");
  }
  if (nbrs.numel() > 0) {
    const int64_t hi = nbrs.max().item<int64_t>(), lo = nbrs.min().item<int64_t>();
    TORCH_CHECK_VALUE(lo >= -1 && hi < tris.size(0), kAaOp, ": argument 'neighbors' has ids in [",
                      lo, ", ", hi, "], which must lie in [-1, ", tris.size(0), ")");
  }
}

at::Tensor antialias_forward(const at::Tensor& color_in, const at::Tensor& pos_in,
                             const at::Tensor& tris_in, const at::Tensor& nbrs_in,
                             const at::Tensor& tri_id_in, const at::Tensor& depth_in,
                             double near_w) {
  check_aa(color_in, pos_in, tris_in, nbrs_in, tri_id_in, depth_in, near_w);
  const at::Tensor color = color_in.contiguous(), pos = pos_in.contiguous();
  const at::Tensor tris = tris_in.contiguous(), nbrs = nbrs_in.contiguous();
  const at::Tensor tri_id = tri_id_in.contiguous(), depth = depth_in.contiguous();
  const auto a = make_args(pos, tris, tri_id.size(1), tri_id.size(2), near_w);
  auto out = at::empty_like(color);
  if (color.numel() == 0) return out;
  if (pos.is_cuda()) {
#ifdef WITH_CUDA
    const c10::cuda::CUDAGuard guard(pos.device());
    rasterize::antialias_forward_cuda(kernel_dtype(pos), a, color.size(3), color.data_ptr(),
                                      pos.data_ptr(), tris.data_ptr<int32_t>(),
                                      nbrs.data_ptr<int32_t>(), tri_id.data_ptr<int32_t>(),
                                      depth.data_ptr(), out.data_ptr(),
                                      c10::cuda::getCurrentCUDAStream());
#endif
  } else {
    rasterize::antialias_forward_cpu(kernel_dtype(pos), a, color.size(3), color.data_ptr(),
                                     pos.data_ptr(), tris.data_ptr<int32_t>(),
                                     nbrs.data_ptr<int32_t>(), tri_id.data_ptr<int32_t>(),
                                     depth.data_ptr(), out.data_ptr());
  }
  return out;
}

std::tuple<at::Tensor, at::Tensor> antialias_backward(
    const at::Tensor& color_in, const at::Tensor& pos_in, const at::Tensor& tris_in,
    const at::Tensor& nbrs_in, const at::Tensor& tri_id_in, const at::Tensor& depth_in,
    const at::Tensor& g_out_in, double near_w, bool need_pos_grad) {
  check_aa(color_in, pos_in, tris_in, nbrs_in, tri_id_in, depth_in, near_w);
  TORCH_CHECK_VALUE(g_out_in.sizes() == color_in.sizes(), kAaOp,
                    ": argument 'grad_out' must have the shape of 'color'");
  check_same_dtype(pos_in, "pos", g_out_in, "grad_out", kAaOp);
  const at::Tensor color = color_in.contiguous(), pos = pos_in.contiguous();
  const at::Tensor tris = tris_in.contiguous(), nbrs = nbrs_in.contiguous();
  const at::Tensor tri_id = tri_id_in.contiguous(), depth = depth_in.contiguous();
  const at::Tensor g_out = g_out_in.contiguous();
  const auto a = make_args(pos, tris, tri_id.size(1), tri_id.size(2), near_w);
  auto grad_color = g_out.clone();
  at::Tensor grad_pos = need_pos_grad ? at::zeros_like(pos) : at::Tensor();
  void* gp = grad_pos.defined() ? grad_pos.data_ptr() : nullptr;
  if (color.numel() == 0) return {grad_color, grad_pos};
  if (pos.is_cuda()) {
#ifdef WITH_CUDA
    const c10::cuda::CUDAGuard guard(pos.device());
    rasterize::antialias_backward_cuda(kernel_dtype(pos), a, color.size(3), color.data_ptr(),
                                       pos.data_ptr(), tris.data_ptr<int32_t>(),
                                       nbrs.data_ptr<int32_t>(), tri_id.data_ptr<int32_t>(),
                                       depth.data_ptr(), g_out.data_ptr(), grad_color.data_ptr(),
                                       gp, c10::cuda::getCurrentCUDAStream());
#endif
  } else {
    rasterize::antialias_backward_cpu(kernel_dtype(pos), a, color.size(3), color.data_ptr(),
                                      pos.data_ptr(), tris.data_ptr<int32_t>(),
                                      nbrs.data_ptr<int32_t>(), tri_id.data_ptr<int32_t>(),
                                      depth.data_ptr(), g_out.data_ptr(), grad_color.data_ptr(),
                                      gp);
  }
  return {grad_color, grad_pos};
}

}  // namespace

void register_rasterize(pybind11::module& m) {
  m.def("rasterize_forward", &rasterize_forward,
        "Triangle rasterization: (tri_id, perspective-correct barycentrics, depth z/w).");
  m.def("rasterize_backward", &rasterize_backward,
        "Gradient of barycentrics and depth w.r.t. clip-space positions.");
  m.def("interpolate_forward", &interpolate_forward, "Vertex attributes at pixels.");
  m.def("interpolate_backward", &interpolate_backward,
        "Gradients of interpolate w.r.t. attributes and barycentrics.");
  m.def("antialias_forward", &antialias_forward, "Analytic silhouette antialiasing.");
  m.def("antialias_backward", &antialias_backward,
        "Gradients of antialias w.r.t. colour and edge vertex positions.");
}

}  // namespace l2vsd

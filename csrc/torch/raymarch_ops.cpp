// ATen glue for ray/box intersection and occupancy-grid marching: argument checks, the count /
// prefix-sum / fill sequence, dispatch to the CPU/CUDA launchers.
#include "registry.h"
#include "checks.h"

#include "../kernels/raymarch/raymarch.h"

#ifdef WITH_CUDA
// c10 only: ATen/cuda/CUDAContext.h pulls in cuBLAS/cuSPARSE headers that a bare toolkit lacks.
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#endif

#include <cmath>
#include <optional>
#include <tuple>
#include <vector>

namespace l2vsd {
namespace {

constexpr const char* kAabbOp = "ray_aabb_intersect";
constexpr const char* kMarchOp = "OccupancyGrid.sampling";

void check_rays(const at::Tensor& rays_o, const at::Tensor& rays_d, const char* op) {
  check_dim(rays_o, op, "rays_o", 2, "(n_rays, 3)");
  check_size(rays_o, op, "rays_o", 1, 3, "(n_rays, 3)");
  check_device_supported(rays_o, op, "rays_o");
  check_dtype(rays_o, op, "rays_o", {at::kFloat, at::kDouble});
  check_dim(rays_d, op, "rays_d", 2, "(n_rays, 3)");
  check_size(rays_d, op, "rays_d", 1, 3, "(n_rays, 3)");
  check_size(rays_d, op, "rays_d", 0, rays_o.size(0), "(n_rays, 3)");
  check_same_device(rays_o, "rays_o", rays_d, "rays_d", op);
  check_same_dtype(rays_o, "rays_o", rays_d, "rays_d", op);
}

void check_per_ray(const at::Tensor& t, const at::Tensor& rays_o, const char* name) {
  check_dim(t, kMarchOp, name, 1, "(n_rays,)");
  check_size(t, kMarchOp, name, 0, rays_o.size(0), "(n_rays,)");
  check_same_device(rays_o, "rays_o", t, name, kMarchOp);
  check_same_dtype(rays_o, "rays_o", t, name, kMarchOp);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ray_aabb_intersect(const at::Tensor& rays_o,
                                                                   const at::Tensor& rays_d,
                                                                   const at::Tensor& aabb) {
  check_rays(rays_o, rays_d, kAabbOp);
  check_defined(aabb, kAabbOp, "aabb");
  TORCH_CHECK_VALUE(aabb.numel() == 6, kAabbOp, ": argument 'aabb' must have 6 values "
                    "(xmin, ymin, zmin, xmax, ymax, zmax), got shape ", aabb.sizes());
  const at::Tensor box = aabb.reshape({6}).to(rays_o.device(), rays_o.scalar_type()).contiguous();
  const at::Tensor o = rays_o.contiguous(), d = rays_d.contiguous();
  const int64_t n = o.size(0);
  auto t_near = at::empty({n}, o.options()), t_far = at::empty({n}, o.options());
  auto hit = at::empty({n}, o.options().dtype(at::kBool));
  if (n == 0) return {t_near, t_far, hit};
  static_assert(sizeof(bool) == sizeof(uint8_t), "bool tensors are written as bytes");
  auto* hit_ptr = reinterpret_cast<uint8_t*>(hit.data_ptr<bool>());
  if (o.is_cuda()) {
#ifdef WITH_CUDA
    const c10::cuda::CUDAGuard guard(o.device());
    raymarch::ray_aabb_cuda(kernel_dtype(o), o.data_ptr(), d.data_ptr(), box.data_ptr(), n,
                            t_near.data_ptr(), t_far.data_ptr(), hit_ptr,
                            c10::cuda::getCurrentCUDAStream());
#endif
  } else {
    raymarch::ray_aabb_cpu(kernel_dtype(o), o.data_ptr(), d.data_ptr(), box.data_ptr(), n,
                           t_near.data_ptr(), t_far.data_ptr(), hit_ptr);
  }
  return {t_near, t_far, hit};
}

raymarch::Grid make_grid(const std::vector<double>& aabb, const std::vector<int64_t>& resolution,
                         const at::Tensor& bits) {
  TORCH_CHECK_VALUE(aabb.size() == 6, kMarchOp, ": argument 'aabb' must have 6 values");
  TORCH_CHECK_VALUE(resolution.size() == 3, kMarchOp, ": argument 'resolution' must have 3 values");
  raymarch::Grid g;
  int64_t cells = 1;
  for (int k = 0; k < 3; ++k) {
    TORCH_CHECK_VALUE(std::isfinite(aabb[k]) && std::isfinite(aabb[k + 3]) && aabb[k] < aabb[k + 3],
                      kMarchOp, ": argument 'aabb' must be finite with min < max on every axis");
    TORCH_CHECK_VALUE(resolution[k] >= 1 && resolution[k] <= 4096, kMarchOp,
                      ": argument 'resolution' must be in [1, 4096] on every axis, got ",
                      resolution[k]);
    g.aabb[k] = static_cast<float>(aabb[k]);
    g.aabb[k + 3] = static_cast<float>(aabb[k + 3]);
    g.res[k] = static_cast<int32_t>(resolution[k]);
    cells *= resolution[k];
  }
  check_dim(bits, kMarchOp, "bitfield", 1, "(ceil(cells / 8),)");
  check_dtype(bits, kMarchOp, "bitfield", {at::kByte});
  check_size(bits, kMarchOp, "bitfield", 0, (cells + 7) / 8, "(ceil(cells / 8),)");
  return g;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> march_rays(
    const at::Tensor& rays_o, const at::Tensor& rays_d, const at::Tensor& t_min,
    const at::Tensor& t_max, const std::optional<at::Tensor>& offset, const at::Tensor& bitfield,
    const std::vector<double>& aabb, const std::vector<int64_t>& resolution, double step_size,
    double cone_angle, int64_t max_samples) {
  check_rays(rays_o, rays_d, kMarchOp);
  check_per_ray(t_min, rays_o, "t_min");
  check_per_ray(t_max, rays_o, "t_max");
  const raymarch::Grid grid = make_grid(aabb, resolution, bitfield);
  check_same_device(rays_o, "rays_o", bitfield, "bitfield", kMarchOp);
  TORCH_CHECK_VALUE(std::isfinite(step_size) && step_size > 0, kMarchOp,
                    ": argument 'render_step_size' must be finite and > 0, got ", step_size);
  TORCH_CHECK_VALUE(std::isfinite(cone_angle) && cone_angle >= 0, kMarchOp,
                    ": argument 'cone_angle' must be finite and >= 0, got ", cone_angle);
  TORCH_CHECK_VALUE(max_samples >= 1 && max_samples <= (1 << 30), kMarchOp,
                    ": argument 'max_samples_per_ray' must be in [1, 2^30], got ", max_samples);
  at::Tensor jitter;
  if (offset.has_value() && offset->defined()) {
    check_per_ray(*offset, rays_o, "offset");
    jitter = offset->contiguous();
  }
  const raymarch::MarchOptions opt{static_cast<float>(step_size), static_cast<float>(cone_angle),
                                   static_cast<int32_t>(max_samples)};
  const at::Tensor o = rays_o.contiguous(), d = rays_d.contiguous();
  const at::Tensor lo = t_min.contiguous(), hi = t_max.contiguous(), bits = bitfield.contiguous();
  const int64_t n = o.size(0);
  const void* jit = jitter.defined() ? jitter.data_ptr() : nullptr;
  const auto dtype = kernel_dtype(o);
  auto counts = at::zeros({n}, o.options().dtype(at::kLong));
  if (n > 0) {
    if (o.is_cuda()) {
#ifdef WITH_CUDA
      const c10::cuda::CUDAGuard guard(o.device());
      raymarch::march_count_cuda(dtype, o.data_ptr(), d.data_ptr(), lo.data_ptr(), hi.data_ptr(),
                                 jit, n, grid, bits.data_ptr<uint8_t>(), opt,
                                 counts.data_ptr<int64_t>(), c10::cuda::getCurrentCUDAStream());
#endif
    } else {
      raymarch::march_count_cpu(dtype, o.data_ptr(), d.data_ptr(), lo.data_ptr(), hi.data_ptr(),
                                jit, n, grid, bits.data_ptr<uint8_t>(), opt,
                                counts.data_ptr<int64_t>());
    }
  }
  auto offsets = at::zeros({n + 1}, counts.options());
  if (n > 0) offsets.slice(0, 1).copy_(at::cumsum(counts, 0));
  const int64_t total = offsets[n].item<int64_t>();
  auto ray_indices = at::empty({total}, counts.options());
  auto t_starts = at::empty({total}, o.options()), t_ends = at::empty({total}, o.options());
  if (total > 0) {
    if (o.is_cuda()) {
#ifdef WITH_CUDA
      const c10::cuda::CUDAGuard guard(o.device());
      raymarch::march_fill_cuda(dtype, o.data_ptr(), d.data_ptr(), lo.data_ptr(), hi.data_ptr(),
                                jit, n, grid, bits.data_ptr<uint8_t>(), opt,
                                offsets.data_ptr<int64_t>(), ray_indices.data_ptr<int64_t>(),
                                t_starts.data_ptr(), t_ends.data_ptr(),
                                c10::cuda::getCurrentCUDAStream());
#endif
    } else {
      raymarch::march_fill_cpu(dtype, o.data_ptr(), d.data_ptr(), lo.data_ptr(), hi.data_ptr(),
                               jit, n, grid, bits.data_ptr<uint8_t>(), opt,
                               offsets.data_ptr<int64_t>(), ray_indices.data_ptr<int64_t>(),
                               t_starts.data_ptr(), t_ends.data_ptr());
    }
  }
  return {ray_indices, t_starts, t_ends};
}

}  // namespace

void register_raymarch(pybind11::module& m) {
  m.def("ray_aabb_intersect", &ray_aabb_intersect, "Ray/box slab test: (t_near, t_far, hit).");
  m.def("march_rays", &march_rays,
        "Occupancy-grid ray marching: packed (ray_indices, t_starts, t_ends).");
}

}  // namespace l2vsd

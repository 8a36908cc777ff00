// Checks and per-ray offsets for nerfacc's packed sample layout, shared by the ops that read it.
#pragma once

#include "checks.h"

namespace l2vsd {

// ray_indices (n_samples) int32/int64, each in [0, n_rays), sorted (non-decreasing). Returns them
// as int64 and, in *offsets, the (n_rays + 1) start of each ray's segment (searchsorted).
inline at::Tensor checked_ray_indices(const at::Tensor& ray_indices, int64_t n_rays,
                                      int64_t n_samples, const char* op, at::Tensor* offsets) {
  check_dim(ray_indices, op, "ray_indices", 1, "(n_samples,)");
  check_size(ray_indices, op, "ray_indices", 0, n_samples, "(n_samples,)");
  check_dtype(ray_indices, op, "ray_indices", {at::kLong, at::kInt});
  TORCH_CHECK_VALUE(n_rays >= 0, op, ": argument 'n_rays' must be >= 0, got ", n_rays);
  at::Tensor ri = ray_indices.to(at::kLong).contiguous();
  if (n_samples > 0) {
    const auto [lo, hi] = at::aminmax(ri);
    TORCH_CHECK_VALUE(lo.item<int64_t>() >= 0 && hi.item<int64_t>() < n_rays, op,
                      ": argument 'ray_indices' must lie in [0, n_rays=", n_rays, "), got [",
                      lo.item<int64_t>(), ", ", hi.item<int64_t>(), "]");
    if (n_samples > 1) {
      const bool sorted = (ri.slice(0, 1) >= ri.slice(0, 0, n_samples - 1)).all().item<bool>();
      TORCH_CHECK_VALUE(sorted, op, ": argument 'ray_indices' must be sorted (samples grouped "
                        "by ray, as the sampler returns them)");
    }
  }
  *offsets = at::searchsorted(ri, at::arange(n_rays + 1, ri.options())).contiguous();
  return ri;
}

}  // namespace l2vsd

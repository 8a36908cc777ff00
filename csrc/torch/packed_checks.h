// Checks and per-ray offsets for nerfacc's packed sample layout, shared by the ops that read it.
#pragma once

#include "checks.h"

namespace l2vsd {

namespace detail {

// Exact search for the first bad sample; runs only once the fast pass below has found one.
inline int64_t first_bad_ray_index(const int64_t* ri, int64_t n_samples, int64_t n_rays,
                                   bool* out_of_range) {
  for (int64_t i = 0; i < n_samples; ++i) {
    if (ri[i] < 0 || ri[i] >= n_rays) { *out_of_range = true; return i; }
    if (i > 0 && ri[i] < ri[i - 1]) { *out_of_range = false; return i; }
  }
  return -1;
}

// On the host: range, order and offsets (the separate tensor reductions cost more than the
// compositing kernels themselves at 2^20 samples). Two cheap passes: a branch-free one the
// compiler vectorises (the sign bit of `bad` collects r < 0, r > n_rays - 1 and r_i < r_{i-1};
// a wrapped difference only arises with an out-of-range index, which sets it anyway), then the
// offsets from the ray changes alone, skipping blocks that lie on rays already opened.
// Returns the first bad index (*out_of_range says which check failed), or -1.
inline int64_t host_offsets(const int64_t* ri, int64_t n_samples, int64_t n_rays,
                            int64_t* offsets, bool* out_of_range) {
  const uint64_t last_ray = static_cast<uint64_t>(n_rays - 1);
  uint64_t bad = 0;
  if (n_samples > 0) bad = static_cast<uint64_t>(ri[0]) | (last_ray - static_cast<uint64_t>(ri[0]));
  for (int64_t i = 1; i < n_samples; ++i) {
    const uint64_t r = static_cast<uint64_t>(ri[i]);
    bad |= r | (last_ray - r) | (r - static_cast<uint64_t>(ri[i - 1]));
  }
  if (bad >> 63) return first_bad_ray_index(ri, n_samples, n_rays, out_of_range);
  int64_t next_ray = 0;  // offsets[0..next_ray) are written
  constexpr int64_t kBlock = 32;
  for (int64_t start = 0; start < n_samples; start += kBlock) {
    const int64_t stop = start + kBlock < n_samples ? start + kBlock : n_samples;
    if (ri[stop - 1] < next_ray) continue;  // sorted: the whole block is on opened rays
    for (int64_t i = start; i < stop; ++i)
      while (next_ray <= ri[i]) offsets[next_ray++] = i;
  }
  while (next_ray <= n_rays) offsets[next_ray++] = n_samples;
  return -1;
}

}  // namespace detail

// ray_indices (n_samples) int32/int64, each in [0, n_rays), sorted (non-decreasing). Returns them
// as int64 and, in *offsets, the (n_rays + 1) start of each ray's segment (searchsorted). Every
// sample then belongs to exactly one ray, so kernels write every output slot.
//
// validate=false skips the range and order checks on CUDA, where they cost host syncs on every
// call: for layouts that are valid by construction (the sampler's output, the batched layout, a
// backward pass over what its forward validated). On CPU the one host pass always runs.
inline at::Tensor checked_ray_indices(const at::Tensor& ray_indices, int64_t n_rays,
                                      int64_t n_samples, const char* op, at::Tensor* offsets,
                                      bool validate = true) {
  check_dim(ray_indices, op, "ray_indices", 1, "(n_samples,)");
  check_size(ray_indices, op, "ray_indices", 0, n_samples, "(n_samples,)");
  check_dtype(ray_indices, op, "ray_indices", {at::kLong, at::kInt});
  TORCH_CHECK_VALUE(n_rays >= 0, op, ": argument 'n_rays' must be >= 0, got ", n_rays);
  at::Tensor ri = ray_indices.to(at::kLong).contiguous();
  if (ri.device().is_cpu()) {
    *offsets = at::empty({n_rays + 1}, ri.options());
    bool out_of_range = false;
    const int64_t bad = detail::host_offsets(ri.data_ptr<int64_t>(), n_samples, n_rays,
                                             offsets->data_ptr<int64_t>(), &out_of_range);
    TORCH_CHECK_VALUE(bad < 0 || !out_of_range, op, ": argument 'ray_indices' must lie in [0, "
                      "n_rays=", n_rays, "), got ", (bad < 0 ? 0 : ri[bad].item<int64_t>()),
                      " at sample ", bad);
    TORCH_CHECK_VALUE(bad < 0, op, ": argument 'ray_indices' must be sorted (samples grouped "
                      "by ray, as the sampler returns them); sample ", bad, " breaks the order");
    return ri;
  }
  if (validate && n_samples > 0) {
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

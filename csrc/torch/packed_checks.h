// Checks and per-ray offsets for nerfacc's packed sample layout, shared by the ops that read it.
// The ops compute the offsets once per layout (packed_offsets, which validates ray_indices) and
// hand them to every later call on the same layout, the backward passes included
// (checked_offsets: shape checks, and on CPU an O(n_rays) check that they partition the samples).
#pragma once

#include "checks.h"

#include <atomic>
#include <optional>

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace l2vsd {

namespace detail {

// Exact search for the first bad sample; runs only once the fast pass below has found one.
template <typename Index>
int64_t first_bad_ray_index(const Index* ri, int64_t n_samples, int64_t n_rays,
                            bool* out_of_range) {
  for (int64_t i = 0; i < n_samples; ++i) {
    if (ri[i] < 0 || ri[i] >= n_rays) { *out_of_range = true; return i; }
    if (i > 0 && ri[i] < ri[i - 1]) { *out_of_range = false; return i; }
  }
  return -1;
}

// Samples [begin, end) of a valid layout: offsets[r] = i for every ray r that starts at sample i
// (ri[i - 1] < r <= ri[i], with ri[-1] = -1), so each offset is written by exactly one range.
// Blocks lying on one ray (sorted: first == last) are skipped after a single compare.
// Needs every index in [0, n_rays) and sorted, which each block checks before it writes.
template <typename Index>
bool offsets_of_range(const Index* ri, int64_t begin, int64_t end, int64_t n_rays,
                      int64_t* offsets) {
  constexpr int64_t kBlock = 64;
  const uint64_t last_ray = static_cast<uint64_t>(n_rays - 1);
  const auto as_u64 = [](Index v) { return static_cast<uint64_t>(static_cast<int64_t>(v)); };
  int64_t prev = -1;  // the ray of sample begin - 1 (checked here too: it bounds the writes)
  if (begin > 0) {
    prev = static_cast<int64_t>(ri[begin - 1]);
    if (prev < 0 || prev >= n_rays) return false;
  }
  for (int64_t start = begin; start < end; start += kBlock) {
    const int64_t stop = start + kBlock < end ? start + kBlock : end;
    // Sign bit of `bad`: r < 0, r > n_rays - 1 or r_i < r_{i-1} (a wrapped difference only
    // arises with an out-of-range index, which sets it anyway). Branch-free: it vectorises.
    const uint64_t first = as_u64(ri[start]);
    uint64_t bad = first | (last_ray - first) | (first - static_cast<uint64_t>(prev < 0 ? 0 : prev));
    for (int64_t i = start + 1; i < stop; ++i) {
      const uint64_t r = as_u64(ri[i]);
      bad |= r | (last_ray - r) | (r - as_u64(ri[i - 1]));
    }
    if (bad >> 63) return false;
    const int64_t last = static_cast<int64_t>(ri[stop - 1]);
    if (last == prev) continue;  // the whole block is on ray `prev`
    // Rays prev + 1 .. last start in this (sorted) block: a binary search each, not a scalar
    // walk over every sample.
    int64_t from = start;
    for (int64_t open = prev + 1; open <= last; ++open) {
      int64_t lo = from, hi = stop - 1;  // ri[stop - 1] = last >= open: the answer is <= hi
      while (lo < hi) {
        const int64_t mid = lo + (hi - lo) / 2;
        if (static_cast<int64_t>(ri[mid]) < open) lo = mid + 1; else hi = mid;
      }
      offsets[open] = from = lo;
    }
    prev = last;
  }
  return true;
}

// On the host, in one parallel pass: range, order and offsets (separate tensor reductions cost
// more than the compositing kernels themselves at 2^20 samples). Returns the first bad index
// (*out_of_range says which check failed), or -1.
template <typename Index>
int64_t host_offsets(const Index* ri, int64_t n_samples, int64_t n_rays, int64_t* offsets,
                     bool* out_of_range) {
  if (n_samples == 0) {
    for (int64_t r = 0; r <= n_rays; ++r) offsets[r] = 0;
    return -1;
  }
  if (n_rays == 0) return first_bad_ray_index(ri, n_samples, n_rays, out_of_range);
  std::atomic<bool> valid{true};
  constexpr int64_t kSamplesPerThread = 1 << 16;
#pragma omp parallel if (n_samples > 2 * kSamplesPerThread)
  {
#if defined(_OPENMP)
    const int64_t threads = omp_get_num_threads(), t = omp_get_thread_num();
#else
    const int64_t threads = 1, t = 0;
#endif
    const int64_t begin = n_samples * t / threads, end = n_samples * (t + 1) / threads;
    if (begin < end && !offsets_of_range(ri, begin, end, n_rays, offsets))
      valid.store(false, std::memory_order_relaxed);
  }
  if (!valid.load()) return first_bad_ray_index(ri, n_samples, n_rays, out_of_range);
  for (int64_t r = static_cast<int64_t>(ri[n_samples - 1]) + 1; r <= n_rays; ++r)
    offsets[r] = n_samples;
  return -1;
}

}  // namespace detail

// ray_indices (n_samples) int32/int64, each in [0, n_rays), sorted (non-decreasing). Returns the
// (n_rays + 1) int64 start of each ray's segment (searchsorted). Every sample then belongs to
// exactly one ray, so kernels write every output slot.
//
// validate=false skips the range and order checks on CUDA, where they cost host syncs: for
// layouts that are valid by construction (the sampler's output). On CPU the one host pass that
// finds the offsets checks them anyway.
inline at::Tensor packed_offsets(const at::Tensor& ray_indices, int64_t n_rays, int64_t n_samples,
                                 const char* op, bool validate = true) {
  check_dim(ray_indices, op, "ray_indices", 1, "(n_samples,)");
  check_size(ray_indices, op, "ray_indices", 0, n_samples, "(n_samples,)");
  check_dtype(ray_indices, op, "ray_indices", {at::kLong, at::kInt});
  TORCH_CHECK_VALUE(n_rays >= 0, op, ": argument 'n_rays' must be >= 0, got ", n_rays);
  if (ray_indices.device().is_cpu()) {
    const at::Tensor ri = ray_indices.contiguous();
    at::Tensor offsets = at::empty({n_rays + 1}, ri.options().dtype(at::kLong));
    bool out_of_range = false;
    int64_t bad = -1, bad_value = 0;
    AT_DISPATCH_INDEX_TYPES(ri.scalar_type(), "packed_offsets", [&] {
      const index_t* p = ri.data_ptr<index_t>();
      bad = detail::host_offsets(p, n_samples, n_rays, offsets.data_ptr<int64_t>(),
                                 &out_of_range);
      if (bad >= 0) bad_value = static_cast<int64_t>(p[bad]);
    });
    TORCH_CHECK_VALUE(bad < 0 || !out_of_range, op, ": argument 'ray_indices' must lie in [0, "
                      "n_rays=", n_rays, "), got ", bad_value, " at sample ", bad);
    TORCH_CHECK_VALUE(bad < 0, op, ": argument 'ray_indices' must be sorted (samples grouped "
                      "by ray, as the sampler returns them); sample ", bad, " breaks the order");
    return offsets;
  }
  const at::Tensor ri = ray_indices.to(at::kLong).contiguous();
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
  return at::searchsorted(ri, at::arange(n_rays + 1, ri.options())).contiguous();
}

// Offsets handed back by the caller (from packed_offsets on the same layout): (n_rays + 1)
// int64 on the samples' device. On CPU also an O(n_rays) check that they partition
// [0, n_samples), which is all the kernels rely on for memory safety; on CUDA that would cost a
// sync, and the ops only pass offsets they computed themselves.
inline at::Tensor checked_offsets(const at::Tensor& offsets, int64_t n_rays, int64_t n_samples,
                                  const at::Tensor& like, const char* like_name, const char* op) {
  TORCH_CHECK_VALUE(n_rays >= 0, op, ": argument 'n_rays' must be >= 0, got ", n_rays);
  check_dim(offsets, op, "offsets", 1, "(n_rays + 1,)");
  check_size(offsets, op, "offsets", 0, n_rays + 1, "(n_rays + 1,)");
  check_dtype(offsets, op, "offsets", {at::kLong});
  check_same_device(like, like_name, offsets, "offsets", op);
  const at::Tensor off = offsets.contiguous();
  if (off.device().is_cpu()) {
    const int64_t* o = off.data_ptr<int64_t>();
    bool ok = o[0] == 0 && o[n_rays] == n_samples;
    for (int64_t r = 0; r < n_rays && ok; ++r) ok = o[r] <= o[r + 1];
    TORCH_CHECK_VALUE(ok, op, ": argument 'offsets' must be non-decreasing from 0 to n_samples=",
                      n_samples, " (as packed_offsets returns them)");
  }
  return off;
}

// The layout of a call: the given offsets (checked), or those of ray_indices (validated).
inline at::Tensor layout_offsets(const at::Tensor& ray_indices, int64_t n_rays, int64_t n_samples,
                                 const std::optional<at::Tensor>& offsets, const at::Tensor& like,
                                 const char* like_name, const char* op, bool validate) {
  if (offsets.has_value() && offsets->defined()) {
    check_dim(ray_indices, op, "ray_indices", 1, "(n_samples,)");
    check_size(ray_indices, op, "ray_indices", 0, n_samples, "(n_samples,)");
    check_dtype(ray_indices, op, "ray_indices", {at::kLong, at::kInt});
    return checked_offsets(*offsets, n_rays, n_samples, like, like_name, op);
  }
  return packed_offsets(ray_indices, n_rays, n_samples, op, validate);
}

}  // namespace l2vsd

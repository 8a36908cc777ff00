// ATen glue for the hash-grid encoding: argument checks, layout, dispatch to the CPU/CUDA launchers.
#include "registry.h"
#include "checks.h"

#include "../kernels/hashgrid/hashgrid.h"

#ifdef WITH_CUDA
// c10 only: ATen/cuda/CUDAContext.h pulls in cuBLAS/cuSPARSE headers that a bare toolkit lacks.
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#endif

#include <cmath>
#include <tuple>

namespace l2vsd {
namespace {

constexpr const char* kOp = "hashgrid_encode";

hashgrid::GridLayout make_checked_layout(int64_t n_dims, int64_t n_levels, int64_t n_features,
                                         int64_t log2_hashmap_size, int64_t base_resolution,
                                         double per_level_scale) {
  TORCH_CHECK_VALUE(n_dims >= 1 && n_dims <= hashgrid::kMaxDims, kOp,
                    ": argument 'n_input_dims' must be 1, 2 or 3, got ", n_dims);
  TORCH_CHECK_VALUE(n_levels >= 1 && n_levels <= hashgrid::kMaxLevels, kOp,
                    ": argument 'n_levels' must be in [1, ", hashgrid::kMaxLevels, "], got ",
                    n_levels);
  TORCH_CHECK_VALUE(n_features >= 1 && n_features <= 64, kOp,
                    ": argument 'n_features_per_level' must be in [1, 64], got ", n_features);
  TORCH_CHECK_VALUE(log2_hashmap_size >= 3 && log2_hashmap_size <= 30, kOp,
                    ": argument 'log2_hashmap_size' must be in [3, 30], got ", log2_hashmap_size);
  TORCH_CHECK_VALUE(base_resolution >= 1, kOp,
                    ": argument 'base_resolution' must be >= 1, got ", base_resolution);
  TORCH_CHECK_VALUE(std::isfinite(per_level_scale) && per_level_scale >= 1.0, kOp,
                    ": argument 'per_level_scale' must be finite and >= 1, got ", per_level_scale);
  // The finest level's scale bounds every float-to-integer conversion in the kernels (and the
  // uint32 base_resolution below); checked here with the arguments named, make_layout refuses it too.
  TORCH_CHECK_VALUE(base_resolution <= static_cast<int64_t>(hashgrid::kMaxScale), kOp,
                    ": argument 'base_resolution' must be <= 2^24, got ", base_resolution);
  const double finest = hashgrid::max_level_scale(static_cast<int>(n_levels), per_level_scale,
                                                  static_cast<uint32_t>(base_resolution));
  TORCH_CHECK_VALUE(finest <= hashgrid::kMaxScale, kOp,
                    ": the finest level's scale base_resolution * per_level_scale^(n_levels - 1) - 1"
                    " = ", finest, " exceeds 2^24 cells per side (base_resolution=", base_resolution,
                    ", per_level_scale=", per_level_scale, ", n_levels=", n_levels,
                    "); lower per_level_scale or n_levels");
  hashgrid::GridLayout layout;
  const bool made = hashgrid::make_layout(static_cast<int>(n_dims), static_cast<int>(n_levels),
                        static_cast<int>(n_features), static_cast<int>(log2_hashmap_size),
                        static_cast<uint32_t>(base_resolution), per_level_scale,
                        &layout);
  TORCH_CHECK_VALUE(made, kOp, ": invalid hash-grid configuration");
  // Level offsets are uint32 in the kernels; refuse tables that would overflow them.
  double total = 0;
  for (int l = 0; l < layout.n_levels; ++l) total += layout.levels[l].size;
  TORCH_CHECK_VALUE(total * n_features < 4294967295.0, kOp,
                    ": the table would exceed 2^32 values; lower log2_hashmap_size or n_levels");
  return layout;
}

void check_inputs(const at::Tensor& x, const at::Tensor& table, const hashgrid::GridLayout& layout) {
  check_dim(x, kOp, "x", 2, "(N, n_input_dims)");
  check_size(x, kOp, "x", 1, layout.n_dims, "(N, n_input_dims)");
  check_contiguous(x, kOp, "x");
  check_device_supported(x, kOp, "x");
  check_dim(table, kOp, "params", 1, "(n_params,)");
  check_size(table, kOp, "params", 0, static_cast<int64_t>(layout.n_entries) * layout.n_features,
             "(n_params,)");
  check_contiguous(table, kOp, "params");
  check_same_device(x, "x", table, "params", kOp);
  if (table.is_cuda()) {
    check_dtype(table, kOp, "params", {at::kFloat, at::kDouble, at::kHalf});
  } else {
    check_dtype(table, kOp, "params", {at::kFloat, at::kDouble});
  }
  if (table.scalar_type() == at::kHalf) {
    check_dtype(x, kOp, "x", {at::kFloat});
  } else {
    check_same_dtype(table, "params", x, "x", kOp);
  }
}

at::Tensor hashgrid_forward(const at::Tensor& x, const at::Tensor& table, int64_t n_dims,
                            int64_t n_levels,
                            int64_t n_features, int64_t log2_hashmap_size,
                            int64_t base_resolution, double per_level_scale, bool clamp) {
  const auto layout = make_checked_layout(n_dims, n_levels, n_features,
                                          log2_hashmap_size, base_resolution, per_level_scale);
  check_inputs(x, table, layout);
  const int64_t n = x.size(0);
  auto out = at::empty({n, n_levels * n_features}, table.options());
  if (n == 0) return out;
  if (x.is_cuda()) {
#ifdef WITH_CUDA
    const c10::cuda::CUDAGuard guard(x.device());
    hashgrid::forward_cuda(kernel_dtype(table), x.data_ptr(), table.data_ptr(), out.data_ptr(), n,
                           layout, clamp, c10::cuda::getCurrentCUDAStream());
#endif
  } else {
    hashgrid::forward_cpu(kernel_dtype(table), x.data_ptr(), table.data_ptr(), out.data_ptr(), n,
                          layout, clamp);
  }
  return out;
}

std::tuple<at::Tensor, at::Tensor> hashgrid_backward(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& table, int64_t n_dims,
    int64_t n_levels,
    int64_t n_features, int64_t log2_hashmap_size, int64_t base_resolution,
    double per_level_scale, bool clamp, bool need_table_grad, bool need_input_grad) {
  const auto layout = make_checked_layout(n_dims, n_levels, n_features,
                                          log2_hashmap_size, base_resolution, per_level_scale);
  check_inputs(x, table, layout);
  const int64_t n = x.size(0);
  check_dim(grad_out, kOp, "grad_out", 2, "(N, n_levels * n_features_per_level)");
  check_size(grad_out, kOp, "grad_out", 0, n, "(N, n_levels * n_features_per_level)");
  check_size(grad_out, kOp, "grad_out", 1, n_levels * n_features,
             "(N, n_levels * n_features_per_level)");
  check_same_device(x, "x", grad_out, "grad_out", kOp);
  check_same_dtype(table, "params", grad_out, "grad_out", kOp);
  const at::Tensor dy = grad_out.contiguous();

  at::Tensor grad_table, grad_x;
  // On CUDA the table gradient is accumulated in a wider buffer where that matters, rounded once
  // at the end: float32 for float16 tables; float64 under torch.use_deterministic_algorithms(True)
  // (the float atomics then give the same float32 sums whatever order they land in).
  at::ScalarType grad_type = table.scalar_type();
  if (x.is_cuda() && at::globalContext().deterministicAlgorithms()) grad_type = at::kDouble;
  else if (table.scalar_type() == at::kHalf) grad_type = at::kFloat;
  const bool widened = grad_type != table.scalar_type();
  // The CPU launcher zeroes the table gradient itself, one level slice at a time, while that
  // slice is about to be in cache; a separate 50 MB zero-fill would cost as much as the scatter.
  const bool kernel_zeroes = !x.is_cuda() && n > 0;
  if (need_table_grad) {
    const auto options = table.options().dtype(grad_type);
    grad_table = kernel_zeroes ? at::empty(table.sizes(), options) : at::zeros(table.sizes(), options);
  }
  if (need_input_grad) grad_x = at::zeros_like(x);
  if (n == 0 || (!need_table_grad && !need_input_grad)) {
    if (widened && grad_table.defined()) grad_table = grad_table.to(table.scalar_type());
    return {grad_table, grad_x};
  }
  void* gt = need_table_grad ? grad_table.data_ptr() : nullptr;
  void* gx = need_input_grad ? grad_x.data_ptr() : nullptr;
  if (x.is_cuda()) {
#ifdef WITH_CUDA
    const c10::cuda::CUDAGuard guard(x.device());
    const DType grad_dtype = kernel_dtype(grad_table.defined() ? grad_table : table);
    hashgrid::backward_cuda(kernel_dtype(table), grad_dtype, x.data_ptr(), dy.data_ptr(),
                            table.data_ptr(), gt, gx, n, layout, clamp,
                            c10::cuda::getCurrentCUDAStream());
#endif
  } else {
    hashgrid::backward_cpu(kernel_dtype(table), x.data_ptr(), dy.data_ptr(), table.data_ptr(), gt,
                           gx, n, layout, clamp);
  }
  if (widened && grad_table.defined()) grad_table = grad_table.to(table.scalar_type());
  return {grad_table, grad_x};
}

// (scale, resolution, offset, size) per level, for tests and for sizing the parameter table.
std::vector<std::tuple<double, int64_t, int64_t, int64_t>> hashgrid_layout(
    int64_t n_dims, int64_t n_levels, int64_t n_features, int64_t log2_hashmap_size,
    int64_t base_resolution, double per_level_scale) {
  const auto layout = make_checked_layout(n_dims, n_levels, n_features, log2_hashmap_size,
                                          base_resolution, per_level_scale);
  std::vector<std::tuple<double, int64_t, int64_t, int64_t>> levels;
  for (int l = 0; l < layout.n_levels; ++l) {
    const auto& lv = layout.levels[l];
    levels.emplace_back(lv.scale, lv.resolution, lv.offset, lv.size);
  }
  return levels;
}

}  // namespace

void register_hashgrid(pybind11::module& m) {
  m.def("hashgrid_forward", &hashgrid_forward, "Hash-grid encoding forward.");
  m.def("hashgrid_backward", &hashgrid_backward, "Hash-grid encoding backward (table, input).");
  m.def("hashgrid_layout", &hashgrid_layout, "Per-level (scale, resolution, offset, size).");
}

}  // namespace l2vsd

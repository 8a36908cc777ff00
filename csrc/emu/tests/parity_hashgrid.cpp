// hashgrid: forward_cuda / backward_cuda vs forward_cpu / backward_cpu in the same precision (the
// cell a point falls in is a floor, so a float64 twin could pick another cell at a boundary);
// float16 tables against the float32 twin on the rounded table. 1-3 input dims, 1, 2 and 12
// features (12 > 8 takes the generic body), hashed and dense levels, clamp on and off with points
// outside [0, 1], the float64 gradient of the deterministic mode, 1000 points (a partial block).
#include "kernels/hashgrid/hashgrid.h"
#include "parity.h"

namespace {
using namespace parity;
using l2vsd::hashgrid::GridLayout;

// T: device table type; C: the CPU twin's type (float for float16 tables); G: gradient type.
template <typename T, typename C, typename G>
void run(Context& ctx, int dims, int features, int64_t n, bool clamp, bool backward) {
  GridLayout layout;
  if (!l2vsd::hashgrid::make_layout(dims, 6, features, 12, 4, 1.9, &layout)) return ctx.fail("layout");
  using X = std::conditional_t<std::is_same_v<T, __half>, float, T>;
  std::vector<double> xs, ts;
  auto x = ctx.random<X>(n * dims, -0.1, 1.1, &xs);
  auto table = ctx.random<T>(static_cast<size_t>(layout.n_entries) * features, -1, 1, &ts);
  std::vector<C> xc(xs.begin(), xs.end()), tc(ts.begin(), ts.end());
  const size_t n_out = n * layout.n_levels * features;
  std::vector<C> out_cpu(n_out);
  Buffer<T> out(n_out);
  l2vsd::hashgrid::forward_cpu(dtype_of<C>(), xc.data(), tc.data(), out_cpu.data(), n, layout, clamp);
  l2vsd::hashgrid::forward_cuda(dtype_of<T>(), x.data(), table.data(), out.data(), n, layout, clamp, nullptr);
  ctx.compare("encoding", out, out_cpu, tol_of<T>());
  if (!backward) return;
  std::vector<double> dys;
  auto dy = ctx.random<T>(n_out, -1, 1, &dys);
  std::vector<C> dyc(dys.begin(), dys.end());
  std::vector<C> grad_cpu(tc.size()), dx_cpu(n * dims);
  Buffer<G> grad(tc.size());
  std::memset(grad.data(), 0, grad.n * sizeof(G));  // the CUDA launcher accumulates into zeros
  Buffer<X> dx(n * dims);
  l2vsd::hashgrid::backward_cpu(dtype_of<C>(), xc.data(), dyc.data(), tc.data(), grad_cpu.data(),
                                dx_cpu.data(), n, layout, clamp);
  l2vsd::hashgrid::backward_cuda(dtype_of<T>(), dtype_of<G>(), x.data(), dy.data(), table.data(),
                                 grad.data(), dx.data(), n, layout, clamp, nullptr);
  // Sums of up to ~n/8 atomics per entry, in another order than the CPU's.
  ctx.compare("grad_table", grad, grad_cpu, std::is_same_v<C, double> ? 1e-9 : 2e-4);
  ctx.compare("dx", dx, dx_cpu, std::is_same_v<C, double> ? 1e-9 : 2e-3);
}

template <typename T, typename C, typename G> void shapes(Context& ctx) {
  for (int dims = 1; dims <= 3; ++dims) run<T, C, G>(ctx, dims, 2, 1000, dims == 2, true);
  run<T, C, G>(ctx, 3, 12, 300, true, true);   // more than 8 features
  run<T, C, G>(ctx, 3, 1, 257, false, true);   // one feature, 257 points
  run<T, C, G>(ctx, 3, 2, 0, false, true);     // no points
}
}  // namespace

PARITY_CASE("hashgrid/f32") { shapes<float, float, float>(ctx); }
PARITY_CASE("hashgrid/f64") { shapes<double, double, double>(ctx); }
PARITY_CASE("hashgrid/f16 table, f32 gradient") { shapes<__half, float, float>(ctx); }
// Wide levels (> 8 features) accumulate in float32 for float16 tables.
PARITY_CASE("hashgrid/f16 table, F = 9, 12, 16") {
  for (int f : {9, 12, 16}) run<__half, float, float>(ctx, 3, f, 131, true, true);
  run<__half, float, float>(ctx, 2, 16, 70, false, true);
}
PARITY_CASE("hashgrid/f32, f64 gradient (deterministic)") { shapes<float, float, double>(ctx); }
PARITY_CASE("hashgrid/f16 table, f64 gradient (deterministic)") { shapes<__half, float, double>(ctx); }

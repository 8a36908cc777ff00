// norm_jvp: forward_cuda vs forward_cpu (float64 on the device-rounded inputs). Group norm with
// odd group sizes, layer norm, groups split over several blocks (the three-pass chunked
// reduction), with and without the affine parameters, and no groups.
#include "kernels/norm_jvp/norm_jvp.h"
#include "parity.h"

namespace {
using namespace parity;
using l2vsd::norm_jvp::NormShape;

template <typename T>
void run(Context& ctx, NormShape s, bool affine) {
  const size_t n = s.n_groups * s.group_size, n_affine = s.groups_per_sample * s.affine_per_group;
  std::vector<double> x, xd, g, b;
  auto X = ctx.random<T>(n, -2, 3, &x), XD = ctx.random<T>(n, -1, 1, &xd);
  auto G = ctx.random<T>(n_affine, 0.5, 1.5, &g), B = ctx.random<T>(n_affine, -1, 1, &b);
  std::vector<double> y(n, NAN), yd(n, NAN);
  Buffer<T> Y(n), YD(n);
  using Acc = std::conditional_t<std::is_same_v<T, double>, double, float>;
  Buffer<Acc> work(l2vsd::norm_jvp::cuda_workspace_elements(s));
  const double eps = 1e-5;
  l2vsd::norm_jvp::forward_cpu(DType::kFloat64, x.data(), xd.data(), affine ? g.data() : nullptr,
                               affine ? b.data() : nullptr, y.data(), yd.data(), s, eps);
  l2vsd::norm_jvp::forward_cuda(dtype_of<T>(), X.data(), XD.data(), affine ? G.data() : nullptr,
                                affine ? B.data() : nullptr, Y.data(), YD.data(), s, eps,
                                work.data(), nullptr);
  ctx.compare("y", Y, y, tol_of<T>() * 4);
  ctx.compare("y_dot", YD, yd, tol_of<T>() * 8);
  ctx.expect(work.guards_intact(), "workspace: write outside the buffer");
}

template <typename T> void shapes(Context& ctx) {
  // {n_groups, group_size, groups_per_sample, affine_per_group, affine_stride}
  run<T>(ctx, {8, 111, 4, 3, 37}, true);      // group norm: 2 samples x 4 groups x 3 ch x 37 px
  run<T>(ctx, {8, 111, 4, 3, 37}, false);
  run<T>(ctx, {5, 77, 1, 77, 1}, true);       // layer norm over 77 features
  run<T>(ctx, {2, 5003, 2, 1, 5003}, true);   // 5 chunks per group: the chunked reduction
  run<T>(ctx, {0, 64, 1, 64, 1}, true);       // no groups
}
}  // namespace

PARITY_CASE("norm_jvp/f32") { shapes<float>(ctx); }
PARITY_CASE("norm_jvp/f64") { shapes<double>(ctx); }
PARITY_CASE("norm_jvp/f16") { shapes<__half>(ctx); }
PARITY_CASE("norm_jvp/bf16") { shapes<__nv_bfloat16>(ctx); }

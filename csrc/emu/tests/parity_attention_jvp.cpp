// attention_jvp: forward_cuda vs forward_cpu (float64 on the device-rounded inputs). Query counts
// not divisible by the 4 warps of a block, head dims of every per-lane width (1..8 entries per
// lane, d = 1..256), no queries, and more than 65535 heads (the grid.y stride loop).
#include "kernels/attention_jvp/attention_jvp.h"
#include "parity.h"

namespace {
using namespace parity;

template <typename T>
void run(Context& ctx, int64_t bh, int64_t n, int64_t m, int d) {
  std::vector<double> q, qd, k, kd, v, vd;
  auto Q = ctx.random<T>(bh * n * d, -1, 1, &q), QD = ctx.random<T>(bh * n * d, -1, 1, &qd);
  auto K = ctx.random<T>(bh * m * d, -1, 1, &k), KD = ctx.random<T>(bh * m * d, -1, 1, &kd);
  auto V = ctx.random<T>(bh * m * d, -1, 1, &v), VD = ctx.random<T>(bh * m * d, -1, 1, &vd);
  Buffer<T> O(bh * n * d), OD(bh * n * d);
  std::vector<double> o(bh * n * d, NAN), od(bh * n * d, NAN);
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  l2vsd::attention_jvp::forward_cpu(DType::kFloat64, q.data(), qd.data(), k.data(), kd.data(),
                                    v.data(), vd.data(), o.data(), od.data(), bh, n, m, d, scale);
  l2vsd::attention_jvp::forward_cuda(dtype_of<T>(), Q.data(), QD.data(), K.data(), KD.data(),
                                     V.data(), VD.data(), O.data(), OD.data(), bh, n, m, d, scale,
                                     nullptr);
  ctx.compare("out", O, o, tol_of<T>() * 4);
  ctx.compare("out_dot", OD, od, tol_of<T>() * 8);
}

template <typename T> void shapes(Context& ctx) {
  run<T>(ctx, 3, 7, 9, 40);    // 2 per lane with a ragged last lane; 7 queries: a partial block
  run<T>(ctx, 2, 5, 3, 64);
  run<T>(ctx, 1, 3, 5, 1);     // one active lane
  run<T>(ctx, 1, 2, 4, 80);    // 3 per lane
  run<T>(ctx, 1, 1, 3, 160);   // 5 per lane
  run<T>(ctx, 1, 2, 2, 200);   // 7 per lane -> the 8-wide kernel
  run<T>(ctx, 1, 1, 2, 256);   // the largest head dim
  run<T>(ctx, 2, 0, 3, 16);    // no queries
}
}  // namespace

PARITY_CASE("attention_jvp/f32") { shapes<float>(ctx); }
PARITY_CASE("attention_jvp/f64") { shapes<double>(ctx); }
PARITY_CASE("attention_jvp/f16") { shapes<__half>(ctx); }
PARITY_CASE("attention_jvp/bf16") { shapes<__nv_bfloat16>(ctx); }
// The tiled kernel (d <= 128, float32/16/bf16): query and key counts that leave partial tiles,
// head dims off the tile widths; the old kernel takes float64 and d = 160 (in shapes above too).
template <typename T> void tiled(Context& ctx) {
  run<T>(ctx, 3, 70, 45, 64);
  run<T>(ctx, 5, 33, 77, 40);
  run<T>(ctx, 2, 67, 50, 17);
  run<T>(ctx, 2, 34, 41, 128);
}
PARITY_CASE("attention_jvp/tiled f32") { tiled<float>(ctx); }
PARITY_CASE("attention_jvp/tiled f16") { tiled<__half>(ctx); }
PARITY_CASE("attention_jvp/tiled bf16") { tiled<__nv_bfloat16>(ctx); }
PARITY_CASE("attention_jvp/fallback f64 and d=160") {
  run<double>(ctx, 3, 70, 45, 64);
  run<double>(ctx, 2, 19, 23, 160);
  run<float>(ctx, 2, 19, 23, 160);
}
// float64 runs the old kernel: the tiled kernel's stride loop over 65537 heads costs the emulator
// minutes (hundreds of barrier rendezvous per head), so its grid.y path is not run here.
PARITY_CASE("attention_jvp/65537 heads (grid.y stride)") { run<double>(ctx, 65537, 1, 1, 1); }
PARITY_CASE("attention_jvp/bad head dim throws") {
  Buffer<float> z(4);
  bool threw = false;
  try {
    l2vsd::attention_jvp::forward_cuda(DType::kFloat32, z.data(), z.data(), z.data(), z.data(),
                                       z.data(), z.data(), z.data(), z.data(), 1, 1, 1, 257, 1.0,
                                       nullptr);
  } catch (const std::invalid_argument&) { threw = true; }
  ctx.expect(threw, "head dim 257 must throw std::invalid_argument");
}

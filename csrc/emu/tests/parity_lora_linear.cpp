// lora_linear: add_lora_cuda vs add_lora_cpu (float64 on the device-rounded inputs). Shapes with
// rows, in/out features and ranks that are not multiples of the block, the warp or 4; the largest
// rank; float16/bfloat16 activations with their own or float32 factors; no rows.
#include "kernels/lora_linear/lora_linear.h"
#include "parity.h"

namespace {
using namespace parity;

template <typename T, typename L>
void run(Context& ctx, int64_t m, int64_t in, int64_t out, int r) {
  std::vector<double> x, xd, a, ad, b, bd, y, yd;
  auto X = ctx.random<T>(m * in, -1, 1, &x), XD = ctx.random<T>(m * in, -1, 1, &xd);
  auto A = ctx.random<L>(r * in, -0.5, 0.5, &a), AD = ctx.random<L>(r * in, -0.5, 0.5, &ad);
  auto B = ctx.random<L>(out * r, -0.5, 0.5, &b), BD = ctx.random<L>(out * r, -0.5, 0.5, &bd);
  auto Y = ctx.random<T>(m * out, -1, 1, &y), YD = ctx.random<T>(m * out, -1, 1, &yd);
  const double scale = 0.75;
  l2vsd::lora_linear::add_lora_cpu(DType::kFloat64, x.data(), xd.data(), a.data(), ad.data(),
                                   b.data(), bd.data(), y.data(), yd.data(), m, in, out, r, scale);
  l2vsd::lora_linear::add_lora_cuda(dtype_of<T>(), dtype_of<L>(), X.data(), XD.data(), A.data(),
                                    AD.data(), B.data(), BD.data(), Y.data(), YD.data(), m, in, out,
                                    r, scale, nullptr);
  // The sum over `in` has ~sqrt(in) terms of size 1: scale the tolerance with it.
  const double tol = tol_of<T>() * (1 + std::sqrt(static_cast<double>(in)) / 4);
  ctx.compare("y", Y, y, tol);
  ctx.compare("y_dot", YD, yd, tol);
}

template <typename T, typename L> void shapes(Context& ctx) {
  run<T, L>(ctx, 5, 37, 45, 3);      // tails everywhere, rank < warps per block
  run<T, L>(ctx, 3, 70, 130, 5);     // out > block size, rank not divisible by 4
  run<T, L>(ctx, 2, 33, 17, 64);     // the largest rank kept on the GPU path
  run<T, L>(ctx, 0, 16, 16, 4);      // no rows
}
}  // namespace

PARITY_CASE("lora_linear/f32") { shapes<float, float>(ctx); }
PARITY_CASE("lora_linear/f64") { shapes<double, double>(ctx); }
PARITY_CASE("lora_linear/f16") { shapes<__half, __half>(ctx); }
PARITY_CASE("lora_linear/f16+f32 factors") { shapes<__half, float>(ctx); }
PARITY_CASE("lora_linear/bf16") { shapes<__nv_bfloat16, __nv_bfloat16>(ctx); }
PARITY_CASE("lora_linear/bf16+f32 factors") { shapes<__nv_bfloat16, float>(ctx); }
PARITY_CASE("lora_linear/bad rank throws") {
  Buffer<float> z(64);
  bool threw = false;
  try {
    l2vsd::lora_linear::add_lora_cuda(DType::kFloat32, DType::kFloat32, z.data(), z.data(), z.data(),
                                      z.data(), z.data(), z.data(), z.data(), z.data(), 1, 1, 1, 65,
                                      1.0, nullptr);
  } catch (const std::invalid_argument&) { threw = true; }
  ctx.expect(threw, "rank 65 must throw std::invalid_argument");
}

// The harness can fail: planted faults must be reported in every thread order. Copies of real
// kernels with a fault (fixtures/: a deleted barrier, an off-by-one bound) go through the same
// comparison as the parity suite; small kernels (fault_kernels.cu) plant each kind of divergence,
// uninitialised shared memory and bad launch shapes; a positive control checks every supported
// intrinsic against known answers. Exit code 1 when any planted fault goes unreported.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "emu_core.h"
#include "fault_kernels.h"
#include "kernels/lora_linear/lora_linear.h"
#include "kernels/raymarch/raymarch.h"
#include "parity.h"

namespace parity {
std::vector<Case>& registry() {
  static std::vector<Case> cases;
  return cases;
}
}  // namespace parity

namespace {
int g_checks = 0, g_missed = 0;

void expect(bool caught, const std::string& what) {
  ++g_checks;
  if (!caught) {
    ++g_missed;
    std::fprintf(stderr, "NOT CAUGHT (%s order): %s\n", emu::order_name(emu::order()), what.c_str());
  }
}

// Runs `f`; true when it threw, reported a CUDA error, or the emulator logged a fault.
template <typename F> bool reported(F f) {
  const int before = emu::fault_count();
  bool threw = false;
  try {
    f();
  } catch (const std::exception&) {
    threw = true;
  }
  const bool pending = cudaGetLastError() != cudaSuccess;
  return threw || pending || emu::fault_count() != before;
}

// The LoRA kernel without its barrier: compared with the CPU twin as the parity suite does.
void lora_without_barrier() {
  parity::Context ctx;
  ctx.name = "lora_linear without __syncthreads";
  const int64_t m = 4, in = 40, out = 50;
  const int r = 3;
  std::vector<double> x, xd, a, ad, b, bd, y, yd;
  auto X = ctx.random<float>(m * in, -1, 1, &x), XD = ctx.random<float>(m * in, -1, 1, &xd);
  auto A = ctx.random<float>(r * in, -1, 1, &a), AD = ctx.random<float>(r * in, -1, 1, &ad);
  auto B = ctx.random<float>(out * r, -1, 1, &b), BD = ctx.random<float>(out * r, -1, 1, &bd);
  auto Y = ctx.random<float>(m * out, -1, 1, &y), YD = ctx.random<float>(m * out, -1, 1, &yd);
  l2vsd::lora_linear::add_lora_cpu(l2vsd::DType::kFloat64, x.data(), xd.data(), a.data(),
                                   ad.data(), b.data(), bd.data(), y.data(), yd.data(), m, in, out,
                                   r, 1.0);
  const bool errored = reported([&] {
    l2vsd::lora_linear::add_lora_cuda(l2vsd::DType::kFloat32, l2vsd::DType::kFloat32, X.data(),
                                      XD.data(), A.data(), AD.data(), B.data(), BD.data(),
                                      Y.data(), YD.data(), m, in, out, r, 1.0, nullptr);
  });
  ctx.compare("y", Y, y, 1e-4);
  ctx.compare("y_dot", YD, yd, 1e-4);
  expect(errored || ctx.failures > 0, "race from the deleted barrier in lora_linear");
}

// The ray/box kernel whose bound is off by one: one thread past the end writes into the guards.
void raymarch_off_by_one() {
  parity::Context ctx;
  ctx.name = "ray_aabb with r > n";
  const int64_t n = 300;
  auto o = ctx.random<float>(3 * n, -2, 2, nullptr), d = ctx.random<float>(3 * n, -1, 1, nullptr);
  parity::Buffer<float> box(6), tn(n), tf(n);
  const float aabb[6] = {-1, -1, -1, 1, 1, 1};
  std::memcpy(box.data(), aabb, sizeof aabb);
  parity::Buffer<uint8_t> hit(n);
  const bool errored = reported([&] {
    l2vsd::raymarch::ray_aabb_cuda(l2vsd::DType::kFloat32, o.data(), d.data(), box.data(), n,
                                   tn.data(), tf.data(), hit.data(), nullptr);
  });
  const bool guards = tn.guards_intact() && tf.guards_intact() && hit.guards_intact();
  expect(errored || !guards, "off-by-one bound in the ray/box kernel");
}

void small_kernels() {
  std::vector<float> out(256, 0.0f);
  expect(reported([&] { emu_test::shuffle_after_early_return(out.data()); }),
         "shuffle with a full mask after 12 lanes returned");
  expect(reported([&] { emu_test::barrier_in_branch(out.data()); }),
         "__syncthreads inside a branch half the block skips");
  expect(reported([&] { emu_test::two_different_barriers(out.data()); }),
         "odd and even threads at different __syncthreads");
  expect(reported([&] { emu_test::shuffle_mask_names_missing_lanes(out.data()); }),
         "full-warp mask in a 16-lane warp");
  expect(reported([&] { emu_test::too_much_static_shared(out.data()); }),
         "40 KiB static + 16 KiB dynamic shared memory without the opt-in");

  std::fill(out.begin(), out.end(), 0.0f);
  const bool err = reported([&] { emu_test::uninitialised_shared_read(out.data()); });
  expect(!err && std::isnan(out[63]) && out[0] == 1.0f,
         "read of a never-written __shared__ slot comes back NaN");
  std::fill(out.begin(), out.end(), 0.0f);
  const bool err2 = reported([&] { emu_test::uninitialised_dynamic_shared_read(out.data()); });
  expect(!err2 && std::isnan(out[5]) && out[4] == 2.0f,
         "read of a never-written extern __shared__ slot comes back NaN");

  struct Shape { unsigned g[3], b[3]; size_t smem; bool valid; const char* what; };
  const Shape shapes[] = {
      {{0, 1, 1}, {32, 1, 1}, 0, false, "zero grid"},
      {{1, 1, 1}, {0, 1, 1}, 0, false, "zero block"},
      {{1, 65536, 1}, {1, 1, 1}, 0, false, "grid.y = 65536"},
      {{1, 1, 65536}, {1, 1, 1}, 0, false, "grid.z = 65536"},
      {{1, 1, 1}, {1025, 1, 1}, 0, false, "1025 threads"},
      {{1, 1, 1}, {32, 32, 2}, 0, false, "32 x 32 x 2 threads"},
      {{1, 1, 1}, {1, 1, 65}, 0, false, "block.z = 65"},
      {{1, 1, 1}, {32, 1, 1}, 48 * 1024 + 1, false, "48 KiB + 1 dynamic shared memory"},
      {{2, 65535, 1}, {1, 1, 1}, 0, true, "grid.y = 65535 (valid)"},
      {{1, 1, 1}, {32, 32, 1}, 48 * 1024, true, "1024 threads, 48 KiB (valid)"},
  };
  for (const Shape& s : shapes) {
    int ran = 0;
    const int err3 = emu_test::launch_config(s.g[0], s.g[1], s.g[2], s.b[0], s.b[1], s.b[2], s.smem, &ran);
    const long expected = static_cast<long>(s.g[0]) * s.g[1] * s.g[2] * s.b[0] * s.b[1] * s.b[2];
    if (s.valid)
      expect(err3 == cudaSuccess && ran == expected, std::string("valid launch runs: ") + s.what);
    else
      expect(err3 != cudaSuccess && ran == 0, std::string("launch error: ") + s.what);
  }

  int ok[8];
  const int err4 = emu_test::intrinsics_self_test(ok, 8);
  expect(err4 == cudaSuccess, "positive control runs without a report");
  const char* names[8] = {"dynamic shared memory above 48 KiB", "shuffles idx/up/down/xor, width 16",
                          "ballot/any/all/reduce", "shfl_down past the segment", "shfl_up below 0",
                          "half/bfloat16 rounding", "half overflow and subnormals",
                          "atomics float/double/int/64-bit CAS/min/max"};
  for (int k = 0; k < 8; ++k) expect(ok[k] == 1, std::string("positive control: ") + names[k]);
}
}  // namespace

int main() {
  const emu::Order orders[] = {emu::Order::kForward, emu::Order::kReverse, emu::Order::kRandom};
  for (emu::Order o : orders) {
    emu::set_order(o, 7);
    lora_without_barrier();
    raymarch_off_by_one();
    small_kernels();
  }
  std::printf("emu_faults: %d checks over 3 thread orders, %d planted faults or controls missed\n",
              g_checks, g_missed);
  return g_missed == 0 ? 0 : 1;
}

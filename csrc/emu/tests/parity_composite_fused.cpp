// composite (fused op composite_along_rays): composite_forward_cuda / composite_backward_cuda (a
// warp-wide tile per ray with shuffle scans) vs the CPU fused launchers in the same precision.
// Packed rays of 0, 1, 31, 32, 33, 65 and 700 samples (tile edges, several tile blocks, more rays
// than the 8 warps of a block) and a batched layout (equal lengths); C in {0, 1, 3, 8, 9} (register
// path up to 8 channels, per-block reduction above); with and without the depth stats.
#include "kernels/composite/composite.h"
#include "parity.h"

namespace {
using namespace parity;
namespace cp = l2vsd::composite;

template <typename T> Buffer<T> copy_of(const std::vector<T>& v) {
  Buffer<T> b(v.size());
  copy_bytes(b.data(), v.data(), v.size() * sizeof(T));
  return b;
}

template <typename T>
void run(Context& ctx, const std::vector<int64_t>& lengths, int64_t c, bool depth) {
  const int64_t n_rays = static_cast<int64_t>(lengths.size());
  std::vector<int64_t> offsets(n_rays + 1, 0);
  for (int64_t r = 0; r < n_rays; ++r) offsets[r + 1] = offsets[r] + lengths[r];
  const int64_t n = offsets[n_rays];
  std::vector<T> ts(n), te(n), sig(n), v(n * c);
  for (int64_t r = 0; r < n_rays; ++r) {
    T t = static_cast<T>(ctx.uniform(0, 1));
    for (int64_t i = offsets[r]; i < offsets[r + 1]; ++i) {
      ts[i] = t;
      t += static_cast<T>(ctx.uniform(0.001, 0.05));
      te[i] = t;
    }
  }
  // Small densities on long rays keep weights non-negligible far down the ray.
  for (int64_t r = 0; r < n_rays; ++r)
    for (int64_t i = offsets[r]; i < offsets[r + 1]; ++i)
      sig[i] = static_cast<T>(ctx.uniform(0, lengths[r] > 100 ? 0.5 : 20));
  for (auto& x : v) x = static_cast<T>(ctx.uniform(-1, 1));
  auto TS = copy_of(ts), TE = copy_of(te), SIG = copy_of(sig), V = copy_of(v), OFF = copy_of(offsets);
  const double tol = tol_of<T>();
  const DType dt = dtype_of<T>();
  const char* what = depth ? "with depth stats" : "no depth stats";

  std::vector<T> out(n_rays * c), zs(depth ? n_rays * cp::kDepthStats : 0);
  Buffer<T> OUT(out.size()), ZS(zs.size());
  cp::composite_forward_cpu(dt, ts.data(), te.data(), sig.data(), v.data(), c, offsets.data(),
                            n_rays, out.data(), depth ? zs.data() : nullptr);
  cp::composite_forward_cuda(dt, TS.data(), TE.data(), SIG.data(), V.data(), c, OFF.data(), n_rays,
                             OUT.data(), depth ? ZS.data() : nullptr, nullptr);
  ctx.compare((std::string("fused out, ") + what).c_str(), OUT, out, tol);
  if (depth) ctx.compare("fused depth_stats", ZS, zs, tol);

  std::vector<T> g(n_rays * c), gz(zs.size());
  for (auto& x : g) x = static_cast<T>(ctx.uniform(-1, 1));
  for (auto& x : gz) x = static_cast<T>(ctx.uniform(-1, 1));
  auto G = copy_of(g), GZ = copy_of(gz);
  // Both gradients, then each alone (the kernel branches on null outputs).
  for (int mode = 0; mode < 3; ++mode) {
    const bool want_s = mode != 2, want_v = mode != 1;
    std::vector<T> gs(n), gv(n * c);
    Buffer<T> GS(n), GV(n * c);
    cp::composite_backward_cpu(dt, ts.data(), te.data(), sig.data(), v.data(), g.data(), out.data(),
                               depth ? zs.data() : nullptr, depth ? gz.data() : nullptr, c,
                               offsets.data(), n_rays, want_s ? gs.data() : nullptr,
                               want_v ? gv.data() : nullptr);
    cp::composite_backward_cuda(dt, TS.data(), TE.data(), SIG.data(), V.data(), G.data(), OUT.data(),
                                depth ? ZS.data() : nullptr, depth ? GZ.data() : nullptr, c,
                                OFF.data(), n_rays, want_s ? GS.data() : nullptr,
                                want_v ? GV.data() : nullptr, nullptr);
    if (want_s) ctx.compare((std::string("fused grad_sigmas, ") + what).c_str(), GS, gs, tol * 10);
    if (want_v) ctx.compare("fused grad_values", GV, gv, tol);
    // An output not asked for stays untouched (poisoned).
    if (!want_s) ctx.expect(std::isnan(n ? to_double(GS[0]) : NAN), "grad_sigmas untouched");
    if (!want_v) ctx.expect(n * c == 0 || std::isnan(to_double(GV[0])), "grad_values untouched");
  }
}

template <typename T> void all(Context& ctx) {
  const std::vector<int64_t> packed = {0, 1, 31, 32, 33, 65, 700, 0, 5, 2};  // 10 rays: 2 blocks
  const std::vector<int64_t> batched(11, 33);
  for (int64_t c : {0, 1, 3, 8, 9})
    for (bool depth : {false, true}) {
      run<T>(ctx, packed, c, depth);
      run<T>(ctx, batched, c, depth);
    }
  run<T>(ctx, {}, 3, true);  // no rays
}
}  // namespace

PARITY_CASE("composite/fused/f32") { all<float>(ctx); }
PARITY_CASE("composite/fused/f64") { all<double>(ctx); }

// composite: the four CUDA launchers vs their CPU twins in the same precision on packed rays with
// random lengths (empty rays included, 300 rays: a partial last block), with and without values.
#include "kernels/composite/composite.h"
#include "parity.h"

namespace {
using namespace parity;
namespace cp = l2vsd::composite;

template <typename T> Buffer<T> copy_of(const std::vector<T>& v) {
  Buffer<T> b(v.size());
  if (!v.empty()) std::memcpy(b.data(), v.data(), v.size() * sizeof(T));
  return b;
}

template <typename T>
void run(Context& ctx, int64_t n_rays, int64_t channels, bool with_values) {
  std::vector<int64_t> offsets(n_rays + 1, 0), ray;
  for (int64_t r = 0; r < n_rays; ++r) {
    const int64_t len = ctx.integer(0, 4) == 0 ? 0 : ctx.integer(1, 40);
    offsets[r + 1] = offsets[r] + len;
    for (int64_t k = 0; k < len; ++k) ray.push_back(r);
  }
  const int64_t n = offsets[n_rays];
  std::vector<T> ts(n), te(n), sig(n), v(n * channels);
  for (int64_t r = 0; r < n_rays; ++r) {
    T t = static_cast<T>(ctx.uniform(0, 1));
    for (int64_t i = offsets[r]; i < offsets[r + 1]; ++i) {
      ts[i] = t;
      t += static_cast<T>(ctx.uniform(0.01, 0.1));
      te[i] = t;
    }
  }
  for (auto& s : sig) s = static_cast<T>(ctx.uniform(0, 20));
  for (auto& c : v) c = static_cast<T>(ctx.uniform(0, 1));
  auto TS = copy_of(ts), TE = copy_of(te), SIG = copy_of(sig), V = copy_of(v);
  auto OFF = copy_of(offsets), RAY = copy_of(ray);
  const double tol = std::is_same_v<T, double> ? 1e-12 : 1e-5;
  const DType dt = dtype_of<T>();

  std::vector<T> w(n), tr(n), al(n);
  Buffer<T> W(n), TR(n), AL(n);
  cp::weights_forward_cpu(dt, ts.data(), te.data(), sig.data(), offsets.data(), n_rays, w.data(), tr.data(), al.data());
  cp::weights_forward_cuda(dt, TS.data(), TE.data(), SIG.data(), OFF.data(), n_rays, W.data(), TR.data(), AL.data(), nullptr);
  ctx.compare("weights", W, w, tol);
  ctx.compare("transmittance", TR, tr, tol);
  ctx.compare("alphas", AL, al, tol);

  std::vector<T> gw(n), gt(n), ga(n);
  for (auto* g : {&gw, &gt, &ga}) for (auto& x : *g) x = static_cast<T>(ctx.uniform(-1, 1));
  auto GW = copy_of(gw), GT = copy_of(gt), GA = copy_of(ga);
  std::vector<T> gs(n);
  Buffer<T> GS(n);
  cp::weights_backward_cpu(dt, ts.data(), te.data(), w.data(), tr.data(), al.data(), gw.data(), gt.data(), ga.data(), offsets.data(), n_rays, gs.data());
  cp::weights_backward_cuda(dt, TS.data(), TE.data(), W.data(), TR.data(), AL.data(), GW.data(), GT.data(), GA.data(), OFF.data(), n_rays, GS.data(), nullptr);
  ctx.compare("grad_sigmas", GS, gs, tol * 10);

  std::vector<T> out(n_rays * channels);
  Buffer<T> OUT(n_rays * channels);
  cp::accumulate_forward_cpu(dt, w.data(), with_values ? v.data() : nullptr, channels, offsets.data(), n_rays, out.data());
  cp::accumulate_forward_cuda(dt, W.data(), with_values ? V.data() : nullptr, channels, OFF.data(), n_rays, OUT.data(), nullptr);
  ctx.compare("accumulated", OUT, out, tol);

  std::vector<T> g(n_rays * channels);
  for (auto& x : g) x = static_cast<T>(ctx.uniform(-1, 1));
  auto G = copy_of(g);
  std::vector<T> agw(n), agv(n * channels);
  Buffer<T> AGW(n), AGV(n * channels);
  cp::accumulate_backward_cpu(dt, w.data(), with_values ? v.data() : nullptr, g.data(), channels, offsets.data(), n_rays, agw.data(), with_values ? agv.data() : nullptr);
  cp::accumulate_backward_cuda(dt, W.data(), with_values ? V.data() : nullptr, G.data(), channels, RAY.data(), n, n_rays, AGW.data(), with_values ? AGV.data() : nullptr, nullptr);
  ctx.compare("accumulate grad_weights", AGW, agw, tol);
  if (with_values) ctx.compare("accumulate grad_values", AGV, agv, tol);

  // Samples naming a ray outside [0, n_rays) (-1, n_rays, n_rays + 5) get zero gradients; the
  // others keep the CPU twin's. Needs three samples.
  if (n >= 3) {
    std::vector<int64_t> bad = ray;
    const int64_t wrong[3] = {-1, n_rays, n_rays + 5};
    for (int k = 0; k < 3; ++k) {
      const int64_t i = (k * (n - 1)) / 2;  // first, middle, last sample
      bad[i] = wrong[k];
      agw[i] = T(0);
      for (int64_t c = 0; c < channels && with_values; ++c) agv[i * channels + c] = T(0);
    }
    auto BAD = copy_of(bad);
    AGW.poison();
    AGV.poison();
    cp::accumulate_backward_cuda(dt, W.data(), with_values ? V.data() : nullptr, G.data(), channels, BAD.data(), n, n_rays, AGW.data(), with_values ? AGV.data() : nullptr, nullptr);
    ctx.compare("accumulate grad_weights, rays out of range", AGW, agw, tol);
    if (with_values) ctx.compare("accumulate grad_values, rays out of range", AGV, agv, tol);
  }
}
}  // namespace

PARITY_CASE("composite/f32") { run<float>(ctx, 300, 3, true); run<float>(ctx, 37, 1, false); run<float>(ctx, 0, 3, true); }
PARITY_CASE("composite/f64") { run<double>(ctx, 300, 3, true); run<double>(ctx, 37, 1, false); run<double>(ctx, 0, 3, true); }

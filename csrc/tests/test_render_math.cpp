// Standalone checks of the volume-rendering HD math (no torch): the compositing backward against
// central finite differences of the forward, the slab test on hand-made rays, and marching against
// a brute-force walk of the step lattice. Returns non-zero on failure.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "../kernels/composite/composite.h"
#include "../kernels/raymarch/raymarch.h"

using namespace l2vsd;

static int failures = 0;

static void expect(bool ok, const char* what, double got = 0, double want = 0) {
  if (!ok) {
    std::printf("FAIL %s (got %.12g, want %.12g)\n", what, got, want);
    ++failures;
  }
}

// One ray of n contiguous random intervals starting at 0, with positive densities (never zero).
template <typename Rng, typename Dist>
static void random_ray(Rng& rng, Dist& u, int64_t n, std::vector<double>& ts,
                       std::vector<double>& te, std::vector<double>& sig) {
  ts.resize(n);
  te.resize(n);
  sig.resize(n);
  double t = 0;
  for (int64_t i = 0; i < n; ++i) {
    ts[i] = t;
    t += 0.3 * u(rng);
    te[i] = t;
    sig[i] = 3 * u(rng);
  }
}

// d f / d x[i] by central differences with step h.
template <typename F>
static double central_difference(F f, std::vector<double> x, int64_t i, double h = 1e-6) {
  x[i] += h;
  const double plus = f(x);
  x[i] -= 2 * h;
  return (plus - f(x)) / (2 * h);
}

// L = sum_i (a_i w_i + b_i T_i + c_i alpha_i) for fixed random a, b, c.
static double loss(const std::vector<double>& ts, const std::vector<double>& te,
                   const std::vector<double>& sig, const std::vector<double>& a,
                   const std::vector<double>& b, const std::vector<double>& c) {
  const int64_t n = static_cast<int64_t>(sig.size());
  std::vector<double> w(n), t(n), al(n);
  composite::weights_forward_ray(ts.data(), te.data(), sig.data(), 0, n, w.data(), t.data(),
                                 al.data());
  double l = 0;
  for (int64_t i = 0; i < n; ++i) l += a[i] * w[i] + b[i] * t[i] + c[i] * al[i];
  return l;
}

static void test_weights_backward() {
  std::mt19937 rng(0);
  std::uniform_real_distribution<double> u(0.05, 1.0);
  const int64_t n = 9;
  std::vector<double> ts, te, sig, a(n), b(n), c(n);
  random_ray(rng, u, n, ts, te, sig);
  for (int64_t i = 0; i < n; ++i) {
    a[i] = u(rng) - 0.5;
    b[i] = u(rng) - 0.5;
    c[i] = u(rng) - 0.5;
  }
  std::vector<double> w(n), tr(n), al(n), grad(n);
  composite::weights_forward_ray(ts.data(), te.data(), sig.data(), 0, n, w.data(), tr.data(),
                                 al.data());
  // Forward identities: T_0 = 1, T_{i+1} = T_i (1 - alpha_i), w = T alpha.
  expect(tr[0] == 1.0, "T_0 == 1", tr[0], 1.0);
  for (int64_t i = 0; i + 1 < n; ++i)
    expect(std::fabs(tr[i + 1] - tr[i] * (1 - al[i])) < 1e-14, "T recursion", tr[i + 1],
           tr[i] * (1 - al[i]));
  composite::weights_backward_ray(ts.data(), te.data(), w.data(), tr.data(), al.data(), a.data(),
                                  b.data(), c.data(), 0, n, grad.data());
  auto loss_of_sigmas = [&](const std::vector<double>& s) { return loss(ts, te, s, a, b, c); };
  for (int64_t i = 0; i < n; ++i) {
    const double fd = central_difference(loss_of_sigmas, sig, i);
    expect(std::fabs(fd - grad[i]) < 1e-7, "d loss / d sigma vs finite differences", grad[i], fd);
  }
}

static void test_accumulate() {
  const double w[4] = {0.1, 0.2, 0.3, 0.4};
  const double v[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  double out[2];
  composite::accumulate_forward_ray(w, v, 2, 1, 4, out);
  expect(std::fabs(out[0] - (0.2 * 3 + 0.3 * 5 + 0.4 * 7)) < 1e-14, "accumulate channel 0", out[0]);
  double opacity;
  composite::accumulate_forward_ray<double>(w, nullptr, 1, 0, 4, &opacity);
  expect(std::fabs(opacity - 1.0) < 1e-14, "accumulate without values", opacity, 1.0);
}

// The fused op: its sums equal the two ops composed, and its backward (which recomputes the
// weights and takes the suffix sum as total minus prefix) matches finite differences w.r.t. both
// sigmas and values. L = sum_c g_c out_c.
static void test_fused_composite() {
  std::mt19937 rng(1);
  std::uniform_real_distribution<double> u(0.05, 1.0);
  const int64_t n = 11, c = 3;
  std::vector<double> ts, te, sig, v(n * c), g(c);
  random_ray(rng, u, n, ts, te, sig);
  for (auto& x : v) x = u(rng);
  for (auto& x : g) x = u(rng) - 0.5;
  auto fused_loss = [&](const std::vector<double>& s, const std::vector<double>& vals) {
    double out[3];
    composite::composite_forward_ray(ts.data(), te.data(), s.data(), vals.data(), c, 0, n, out);
    return g[0] * out[0] + g[1] * out[1] + g[2] * out[2];
  };
  std::vector<double> w(n), tr(n), al(n);
  composite::weights_forward_ray(ts.data(), te.data(), sig.data(), 0, n, w.data(), tr.data(),
                                 al.data());
  double two_ops[3], fused[3];
  composite::accumulate_forward_ray(w.data(), v.data(), c, 0, n, two_ops);
  composite::composite_forward_ray(ts.data(), te.data(), sig.data(), v.data(), c, 0, n, fused);
  for (int k = 0; k < 3; ++k)
    expect(std::fabs(fused[k] - two_ops[k]) < 1e-14, "fused sums == two ops", fused[k], two_ops[k]);
  std::vector<double> grad_s(n), grad_v(n * c);
  composite::composite_backward_ray(ts.data(), te.data(), sig.data(), v.data(), g.data(), fused, c,
                                    0, n, grad_s.data(), grad_v.data());
  auto loss_of_sigmas = [&](const std::vector<double>& s) { return fused_loss(s, v); };
  auto loss_of_values = [&](const std::vector<double>& vals) { return fused_loss(sig, vals); };
  for (int64_t i = 0; i < n; ++i) {
    const double fd = central_difference(loss_of_sigmas, sig, i);
    expect(std::fabs(fd - grad_s[i]) < 1e-7, "fused d loss / d sigma vs finite differences",
           grad_s[i], fd);
  }
  for (int64_t e = 0; e < n * c; ++e) {
    const double fd = central_difference(loss_of_values, v, e);
    expect(std::fabs(fd - grad_v[e]) < 1e-7, "fused d loss / d values vs finite differences",
           grad_v[e], fd);
  }
}

static void test_ray_aabb() {
  const double box[6] = {-1, -1, -1, 1, 1, 1};
  double tn = 0, tf = 0;
  const double o1[3] = {-3, 0, 0}, d1[3] = {1, 0, 0};
  const bool hit = raymarch::ray_aabb(o1, d1, box, &tn, &tf);
  expect(hit && tn == 2 && tf == 4, "axis hit", tn, 2);
  const double o2[3] = {0, 0, 0}, d2[3] = {0, 0, 0};
  expect(!raymarch::ray_aabb(o2, d2, box, &tn, &tf) && tn == raymarch::kMissT, "zero direction");
  const double o3[3] = {NAN, 0, 0};
  expect(!raymarch::ray_aabb(o3, d1, box, &tn, &tf), "NaN origin");
  const double o4[3] = {3, 0, 0};
  expect(!raymarch::ray_aabb(o4, d1, box, &tn, &tf), "box behind the ray");
  const double o5[3] = {0, 2, 0};
  expect(!raymarch::ray_aabb(o5, d1, box, &tn, &tf), "parallel outside the slab");
}

static void test_march_matches_lattice() {
  raymarch::Grid g{{-1, -1, -1, 1, 1, 1}, {4, 3, 5}};
  std::mt19937 rng(1);
  std::vector<uint8_t> bits((4 * 3 * 5 + 7) / 8);
  for (auto& b : bits) b = static_cast<uint8_t>(rng());
  const raymarch::MarchOptions opt{0.0625f, 0.0f, 1 << 20};
  std::normal_distribution<double> n01;
  for (int trial = 0; trial < 200; ++trial) {
    double o[3], d[3], len = 0;
    for (int k = 0; k < 3; ++k) { o[k] = 2.5 * n01(rng); d[k] = -o[k] + 0.5 * n01(rng); len += d[k] * d[k]; }
    for (double& x : d) x /= std::sqrt(len);
    const double box[6] = {-1, -1, -1, 1, 1, 1};
    double tn, tf;
    if (!raymarch::ray_aabb(o, d, box, &tn, &tf)) continue;
    tn = std::max(tn, 0.0);
    std::vector<double> got;
    raymarch::march_ray(g, bits.data(), opt, o, d, tn, tf, 0.37, true,
                        [&](int32_t, double t0, double) { got.push_back(t0); });
    std::vector<double> want;
    for (int64_t k = 0;; ++k) {
      const double t0 = tn + (0.37 + k) * 0.0625;
      if (!(t0 < tf)) break;
      const double t1 = std::min(t0 + 0.0625, tf), mid = 0.5 * (t0 + t1);
      double p[3];
      for (int a = 0; a < 3; ++a) p[a] = o[a] + mid * d[a];
      int32_t ijk[3];
      if (raymarch::occupied(bits.data(), raymarch::cell_of(g, p, ijk))) want.push_back(t0);
    }
    expect(got.size() == want.size(), "march sample count", got.size(), want.size());
    for (size_t i = 0; i < std::min(got.size(), want.size()); ++i)
      expect(std::fabs(got[i] - want[i]) < 1e-9, "march t_start", got[i], want[i]);
  }
}

// The fill pass writes a ray only inside its slot [begin, end) (issue 23, defect 4): a slot shorter
// than the ray's samples (a count pass that disagreed) is filled with the first samples and the
// next ray's slot keeps its contents; a longer slot is padded with zero-length samples at the
// last t, never left uninitialised.
static void test_fill_stays_in_slot() {
  raymarch::Grid g{{-1, -1, -1, 1, 1, 1}, {2, 2, 2}};
  const std::vector<uint8_t> bits(1, 0xff);  // every cell occupied
  const raymarch::MarchOptions opt{0.1f, 0.0f, 1 << 20};
  const double o[3] = {-2, 0.1, 0.2}, d[3] = {1, 0, 0};
  const double t_min = 1.0, t_max = 3.0;  // the ray crosses the box along x
  std::vector<double> want;
  raymarch::march_ray(g, bits.data(), opt, o, d, t_min, t_max, 0.25, true,
                      [&](int32_t, double t0, double) { want.push_back(t0); });
  const int64_t n = static_cast<int64_t>(want.size());
  expect(n >= 10, "fill test ray has samples", double(n), 10);
  const double sentinel = -777.0;
  for (const int64_t slot : {n - 3, n, n + 4, int64_t(0)}) {
    const int64_t begin = 5, end = begin + slot, size = end + 6;  // 5 slots before, 6 after
    std::vector<int64_t> ri(size, -9);
    std::vector<double> ts(size, sentinel), te(size, sentinel);
    raymarch::fill_ray(g, bits.data(), opt, o, d, t_min, t_max, 0.25, 7, begin, end, ri.data(),
                       ts.data(), te.data());
    for (int64_t i = 0; i < size; ++i) {
      const bool inside = i >= begin && i < end;
      if (!inside) {
        expect(ri[i] == -9 && ts[i] == sentinel && te[i] == sentinel, "fill wrote outside its slot",
               double(i), double(slot));
        continue;
      }
      expect(ri[i] == 7, "fill ray index", double(ri[i]), 7);
      const int64_t k = i - begin;
      if (k < n) {
        expect(ts[i] == want[k], "fill t_start", ts[i], want[k]);
      } else {  // padding: zero length, at the end of the last real sample
        expect(ts[i] == te[i] && te[i] == te[begin + n - 1], "fill padding", ts[i], te[begin + n - 1]);
      }
    }
  }
}

// The CUDA backward of accumulate (one thread per sample) bounds the sample's ray index on both
// sides (issue 23, defect 5): out-of-range samples get zero gradients and read nothing.
static void test_accumulate_backward_ray_bounds() {
  const int64_t n_rays = 2, c = 3;
  const double w[2] = {0.25, 0.5}, v[6] = {1, 2, 3, 4, 5, 6};
  const double g[6] = {0.5, -1, 2, 3, 0.25, -0.5};  // grad_out (n_rays, C): nothing past it
  for (const int64_t ray : {int64_t(-1), int64_t(0), int64_t(1), int64_t(2), int64_t(1) << 40}) {
    double gw[2] = {-5, -5}, gv[6] = {-5, -5, -5, -5, -5, -5};
    const bool in = composite::accumulate_backward_sample_of_ray(w, v, g, c, ray, n_rays, 1, gw, gv);
    expect(in == (ray >= 0 && ray < n_rays), "ray bound verdict", double(in), double(ray));
    expect(gw[0] == -5 && gv[0] == -5 && gv[1] == -5 && gv[2] == -5, "other sample untouched");
    if (!in) {
      expect(gw[1] == 0 && gv[3] == 0 && gv[4] == 0 && gv[5] == 0, "out-of-range sample zeroed");
      continue;
    }
    double want_gw = 0;
    for (int64_t k = 0; k < c; ++k) {
      want_gw += v[3 + k] * g[ray * c + k];
      expect(gv[3 + k] == w[1] * g[ray * c + k], "in-range grad_values", gv[3 + k], w[1] * g[ray * c + k]);
    }
    expect(gw[1] == want_gw, "in-range grad_weights", gw[1], want_gw);
  }
}

// The depth spread (HiFA's z-variance) of the fused op: the one-sweep shifted moments give the
// two-pass definition (mean first, then squared deviations), and the backward with the stats'
// gradient matches finite differences of L = sum_c g_c out_c + sum_k h_k stats_k w.r.t. sigmas.
static void test_depth_spread() {
  std::mt19937 rng(2);
  std::uniform_real_distribution<double> u(0.05, 1.0);
  const int64_t n = 13, c = 2;
  std::vector<double> ts, te, sig, v(n * c), g(c), h(composite::kDepthStats);
  random_ray(rng, u, n, ts, te, sig);
  for (auto& x : ts) x += 5.0;  // away from 0: the per-ray t_ref must matter, not the origin
  for (auto& x : te) x += 5.0;
  for (auto& x : v) x = u(rng);
  for (auto& x : g) x = u(rng) - 0.5;
  for (auto& x : h) x = u(rng) - 0.5;
  double out[2], stats[3];
  composite::composite_forward_ray(ts.data(), te.data(), sig.data(), v.data(), c, 0, n, out, stats);
  std::vector<double> w(n), tr(n), al(n);
  composite::weights_forward_ray(ts.data(), te.data(), sig.data(), 0, n, w.data(), tr.data(),
                                 al.data());
  double sum_w = 0, mean = 0, var = 0;
  for (int64_t i = 0; i < n; ++i) sum_w += w[i];
  for (int64_t i = 0; i < n; ++i) mean += w[i] / sum_w * 0.5 * (ts[i] + te[i]);
  for (int64_t i = 0; i < n; ++i) {
    const double d = 0.5 * (ts[i] + te[i]) - mean;
    var += w[i] / sum_w * d * d;
  }
  const double t_ref = 0.5 * (ts[0] + te[0]);
  expect(std::fabs(stats[0] - sum_w) < 1e-14, "depth stats: sum of weights", stats[0], sum_w);
  expect(std::fabs(stats[1] - (mean - t_ref)) < 1e-13, "depth stats: mean", stats[1], mean - t_ref);
  expect(std::fabs(stats[2] - var) < 1e-13, "depth stats: variance", stats[2], var);
  auto loss_of_sigmas = [&](const std::vector<double>& s) {
    double o[2], z[3];
    composite::composite_forward_ray(ts.data(), te.data(), s.data(), v.data(), c, 0, n, o, z);
    return g[0] * o[0] + g[1] * o[1] + h[0] * z[0] + h[1] * z[1] + h[2] * z[2];
  };
  std::vector<double> grad_s(n);
  composite::composite_backward_ray(ts.data(), te.data(), sig.data(), v.data(), g.data(), out, c,
                                    0, n, grad_s.data(), static_cast<double*>(nullptr), stats,
                                    h.data());
  for (int64_t i = 0; i < n; ++i) {
    const double fd = central_difference(loss_of_sigmas, sig, i);
    expect(std::fabs(fd - grad_s[i]) < 1e-7, "depth spread d loss / d sigma vs finite differences",
           grad_s[i], fd);
  }
  // A ray without weight (all densities zero) has zero stats and a finite gradient.
  std::vector<double> zero(n, 0.0);
  composite::composite_forward_ray(ts.data(), te.data(), zero.data(), v.data(), c, 0, n, out, stats);
  expect(stats[0] == 0 && stats[1] == 0 && stats[2] == 0, "depth stats of an empty ray");
  composite::composite_backward_ray(ts.data(), te.data(), zero.data(), v.data(), g.data(), out, c,
                                    0, n, grad_s.data(), static_cast<double*>(nullptr), stats,
                                    h.data());
  for (int64_t i = 0; i < n; ++i) expect(std::isfinite(grad_s[i]), "finite gradient, empty ray");
}

int main() {
  test_weights_backward();
  test_accumulate();
  test_fused_composite();
  test_depth_spread();
  test_ray_aabb();
  test_march_matches_lattice();
  test_fill_stays_in_slot();
  test_accumulate_backward_ray_bounds();
  if (failures) {
    std::printf("%d failure(s)\n", failures);
    return 1;
  }
  std::printf("render math: all checks passed\n");
  return 0;
}

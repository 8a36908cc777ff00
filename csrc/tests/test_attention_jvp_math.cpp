// Standalone test of the attention-with-tangent CPU kernel against a direct double-precision
// evaluation of O = P v and O_dot = sum_j P_j (s_dot_j v_j + v_dot_j) - (sum_j P_j s_dot_j) O.
// Build: g++ -O2 -std=c++20 -fopenmp test_attention_jvp_math.cpp ../kernels/attention_jvp/attention_jvp_cpu.cpp
// Returns non-zero on failure; with --bench also prints the kernel's time on a 4096-token case.
#include "../kernels/attention_jvp/attention_jvp.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <random>
#include <vector>

using l2vsd::DType;

namespace {

struct Case {
  int64_t bh, n, m;
  int d;
};

// Direct evaluation for one (head, row) in double.
void reference_row(const std::vector<double>& q, const std::vector<double>& qd,
                   const std::vector<double>& k, const std::vector<double>& kd,
                   const std::vector<double>& v, const std::vector<double>& vd, const Case& c,
                   int64_t h, int64_t i, double scale, double* o, double* od) {
  std::vector<double> s(c.m), sdot(c.m);
  double mx = -INFINITY;
  for (int64_t j = 0; j < c.m; ++j) {
    double a = 0, b = 0;
    for (int x = 0; x < c.d; ++x) {
      const double qv = q[(h * c.n + i) * c.d + x], qdv = qd[(h * c.n + i) * c.d + x];
      a += qv * k[(h * c.m + j) * c.d + x];
      b += qdv * k[(h * c.m + j) * c.d + x] + qv * kd[(h * c.m + j) * c.d + x];
    }
    s[j] = a * scale;
    sdot[j] = b * scale;
    mx = std::max(mx, s[j]);
  }
  double sum = 0;
  for (int64_t j = 0; j < c.m; ++j) sum += std::exp(s[j] - mx);
  double psd = 0;
  for (int64_t j = 0; j < c.m; ++j) psd += std::exp(s[j] - mx) / sum * sdot[j];
  for (int x = 0; x < c.d; ++x) {
    double ox = 0, odx = 0;
    for (int64_t j = 0; j < c.m; ++j) {
      const double p = std::exp(s[j] - mx) / sum;
      ox += p * v[(h * c.m + j) * c.d + x];
      odx += p * (sdot[j] * v[(h * c.m + j) * c.d + x] + vd[(h * c.m + j) * c.d + x]);
    }
    o[x] = ox;
    od[x] = odx - psd * ox;
  }
}

template <typename T>
double max_rel_error(const Case& c, DType dtype, std::mt19937& rng) {
  std::normal_distribution<double> normal;
  auto rand_vec = [&](int64_t size) {
    std::vector<double> x(size);
    for (auto& e : x) e = normal(rng);
    return x;
  };
  const auto q = rand_vec(c.bh * c.n * c.d), qd = rand_vec(c.bh * c.n * c.d);
  const auto k = rand_vec(c.bh * c.m * c.d), kd = rand_vec(c.bh * c.m * c.d);
  const auto v = rand_vec(c.bh * c.m * c.d), vd = rand_vec(c.bh * c.m * c.d);
  auto cast = [](const std::vector<double>& x) { return std::vector<T>(x.begin(), x.end()); };
  const auto qT = cast(q), qdT = cast(qd), kT = cast(k), kdT = cast(kd), vT = cast(v), vdT = cast(vd);
  std::vector<T> out(q.size()), out_dot(q.size());
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.d));
  l2vsd::attention_jvp::forward_cpu(dtype, qT.data(), qdT.data(), kT.data(), kdT.data(), vT.data(),
                                    vdT.data(), out.data(), out_dot.data(), c.bh, c.n, c.m, c.d,
                                    scale);
  double worst = 0, norm_o = 1e-30, norm_od = 1e-30;
  std::vector<double> o(c.d), od(c.d);
  for (int64_t h = 0; h < c.bh; ++h)
    for (int64_t i = 0; i < c.n; ++i) {
      reference_row(q, qd, k, kd, v, vd, c, h, i, scale, o.data(), od.data());
      for (int x = 0; x < c.d; ++x) {
        norm_o = std::max(norm_o, std::fabs(o[x]));
        norm_od = std::max(norm_od, std::fabs(od[x]));
      }
    }
  for (int64_t h = 0; h < c.bh; ++h)
    for (int64_t i = 0; i < c.n; ++i) {
      reference_row(q, qd, k, kd, v, vd, c, h, i, scale, o.data(), od.data());
      for (int x = 0; x < c.d; ++x) {
        const int64_t at = (h * c.n + i) * c.d + x;
        worst = std::max(worst, std::fabs(out[at] - o[x]) / norm_o);
        worst = std::max(worst, std::fabs(out_dot[at] - od[x]) / norm_od);
      }
    }
  return worst;
}

}  // namespace

int main(int argc, char** argv) {
  std::mt19937 rng(1234);
  const Case cases[] = {{1, 1, 1, 1}, {2, 5, 3, 8}, {3, 17, 300, 40}, {1, 9, 129, 64},
                        {2, 4, 257, 80}, {1, 3, 77, 160}, {2, 33, 130, 5}, {1, 20, 1, 3},
                        {1, 16, 129, 16}, {1, 2, 5, 256}, {1, 9, 200, 7}};
  int failures = 0;
  for (const Case& c : cases) {
    const double e64 = max_rel_error<double>(c, DType::kFloat64, rng);
    const double e32 = max_rel_error<float>(c, DType::kFloat32, rng);
    const bool ok = e64 < 1e-12 && e32 < 1e-4;
    failures += ok ? 0 : 1;
    std::printf("%s bh=%lld n=%lld m=%lld d=%d: float64 %.2e, float32 %.2e\n", ok ? "ok  " : "FAIL",
                static_cast<long long>(c.bh), static_cast<long long>(c.n),
                static_cast<long long>(c.m), c.d, e64, e32);
  }
  if (argc > 1 && std::strcmp(argv[1], "--bench") == 0) {
    const int64_t bh = 8, n = 4096, m = 4096;
    const int d = 8;
    std::vector<float> q(bh * n * d, 0.1f), k(bh * m * d, 0.2f), out(bh * n * d), od(bh * n * d);
    for (int rep = 0; rep < 3; ++rep) {
      const auto t0 = std::chrono::steady_clock::now();
      const std::clock_t c0 = std::clock();
      l2vsd::attention_jvp::forward_cpu(DType::kFloat32, q.data(), q.data(), k.data(), k.data(),
                                        k.data(), k.data(), out.data(), od.data(), bh, n, m, d,
                                        0.35);
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      const double cpu = static_cast<double>(std::clock() - c0) / CLOCKS_PER_SEC;
      std::printf("bench bh=8 n=m=4096 d=8: %.3f s wall, %.3f s CPU (all threads)\n", s, cpu);
    }
  }
  return failures == 0 ? 0 : 1;
}

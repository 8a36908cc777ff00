// Sequential simulation of the tiled CUDA attention-with-tangent kernel (attention_jvp_cuda.cu),
// run against a double-precision evaluation and against the CPU launcher (its parity partner).
// It walks the kernel's loops in the kernel's order, one barrier-separated phase at a time over
// the 128 threads of a block, through the same geometry (attention_jvp_tiled.h): thread-to-row /
// key / column maps, the swizzled shared-memory addresses, the zero padding, the xor-shuffle
// reductions over a row's 8 lanes (read-all-then-write, as a shuffle does) and the lane-to-lane
// broadcast of P. Shared memory starts as NaN and every read is checked against a written-map,
// so a stale or unwritten shared read fails. It also checks that the swizzle makes the score
// step's float4 reads and the staging stores bank-conflict free.
// This proves the algorithm and the index maps on any machine; nvcc code generation and the
// barriers themselves are left to the CUDA emulator and a GPU.
#include "../kernels/attention_jvp/attention_jvp.h"
#include "../kernels/attention_jvp/attention_jvp_tiled.h"
#include "test_kernel_harness.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <random>
#include <set>
#include <vector>

namespace tiled = l2vsd::attention_jvp::tiled;
using l2vsd::DType;

namespace {

struct Case {
  int64_t bh, n, m;
  int d;
  int64_t max_grid_y;  // the launcher uses 65535; small values exercise the head-folding loop
};

// Block shared memory with a written-map: reading an entry no phase wrote is a test failure.
struct Shared {
  std::vector<float> data;
  std::vector<char> written;
  bool bad_read = false;
  explicit Shared(int floats)
      : data(floats, std::numeric_limits<float>::quiet_NaN()), written(floats, 0) {}
  void store(int pos, float x) {
    data[pos] = x;
    written[pos] = 1;
  }
  float load(int pos) {
    if (!written[pos]) bad_read = true;
    return data[pos];
  }
};

// Per-thread registers of the kernel.
template <typename C>
struct Thread {
  float o[C::TM][C::D / 8], od[C::TM][C::D / 8];
  float run_max[C::TM], sum[C::TM], sum_dot[C::TM];
  float s[C::TM][C::TN], sd[C::TM][C::TN];
};

// __shfl_xor_sync over the row's 8 lanes: every lane reads its partner's value before any writes.
template <typename Get, typename Combine>
void xor_reduce(int warp_base, Get get, Combine combine) {
  for (int offset = 1; offset < tiled::kLanesPerRow; offset <<= 1) {
    float before[32];
    for (int lane = 0; lane < 32; ++lane) before[lane] = *get(warp_base + lane);
    for (int lane = 0; lane < 32; ++lane)
      *get(warp_base + lane) = combine(before[lane], before[lane ^ offset]);
  }
}

template <typename C>
void stage_tile(Shared& sh, int sa, int sb, const float* a, const float* b, int64_t base,
                int rows, int d) {
  for (int tid = 0; tid < tiled::kThreads; ++tid)
    for (int idx = tid; idx < C::BC * C::D; idx += tiled::kThreads) {
      const int j = idx / C::D, c = idx % C::D;
      float x = 0.0f, y = 0.0f;
      if (j < rows && c < d) {
        x = a[base + static_cast<int64_t>(j) * d + c];
        y = b[base + static_cast<int64_t>(j) * d + c];
      }
      const int pos = tiled::swizzled<C::D>(j, c);
      sh.store(sa + pos, x);
      sh.store(sb + pos, y);
    }
}

// One kernel launch: grid (ceil(n / BR), min(bh, max_grid_y)), blocks one after another.
template <typename C>
bool simulate(const Case& cs, const std::vector<float>& q, const std::vector<float>& qd,
              const std::vector<float>& k, const std::vector<float>& kd,
              const std::vector<float>& v, const std::vector<float>& vd, float scale,
              std::vector<float>& out, std::vector<float>& out_dot) {
  constexpr int D = C::D, TM = C::TM, TN = C::TN, BR = C::BR, BC = C::BC, kCols = D / 8;
  const int d = cs.d;
  const int64_t n = cs.n, m = cs.m, bh = cs.bh;
  const int64_t grid_x = (n + BR - 1) / BR, grid_y = std::min(bh, cs.max_grid_y);
  bool ok = true;
  std::vector<Thread<C>> th(tiled::kThreads);
  for (int64_t by = 0; by < grid_y; ++by)
    for (int64_t bx = 0; bx < grid_x; ++bx) {
      Shared sh(C::kSmemFloats);
      const int sq = 0, sqd = BR * D, sa = 2 * BR * D, sb = sa + BC * D;
      const int64_t row0 = bx * BR;
      for (int64_t h = by; h < bh; h += grid_y) {
        for (int tid = 0; tid < tiled::kThreads; ++tid) {
          for (int idx = tid; idx < BR * D; idx += tiled::kThreads) {
            const int r = idx / D, c = idx % D;
            const int64_t i = row0 + r;
            float a = 0.0f, b = 0.0f;
            if (i < n && c < d) {
              a = q[(h * n + i) * d + c] * scale;
              b = qd[(h * n + i) * d + c] * scale;
            }
            sh.store(sq + idx, a);
            sh.store(sqd + idx, b);
          }
          Thread<C>& t = th[tid];
          for (int i = 0; i < TM; ++i) {
            t.run_max[i] = -INFINITY;
            t.sum[i] = t.sum_dot[i] = 0.0f;
            for (int c = 0; c < kCols; ++c) t.o[i][c] = t.od[i][c] = 0.0f;
          }
        }
        for (int64_t j0 = 0; j0 < m; j0 += BC) {
          const int rows = static_cast<int>(std::min<int64_t>(m - j0, BC));
          // barrier; stage k, k_dot; barrier
          stage_tile<C>(sh, sa, sb, k.data(), kd.data(), (h * m + j0) * d, rows, d);
          for (int tid = 0; tid < tiled::kThreads; ++tid) {
            const int warp = tid / 32, lane = tid % 32, rg = lane / 8, cg = lane % 8;
            Thread<C>& t = th[tid];
            for (int i = 0; i < TM; ++i)
              for (int u = 0; u < TN; ++u) t.s[i][u] = t.sd[i][u] = 0.0f;
            for (int c4 = 0; c4 < C::kChunks; ++c4)
              for (int i = 0; i < TM; ++i) {
                const int r = tiled::thread_row<C>(warp, rg, i);
                for (int u = 0; u < TN; ++u) {
                  const int pos = tiled::swizzled<D>(tiled::thread_key(cg, u), 4 * c4);
                  for (int e = 0; e < 4; ++e) {
                    const float qv = sh.load(sq + r * D + 4 * c4 + e);
                    const float qdv = sh.load(sqd + r * D + 4 * c4 + e);
                    const float kv = sh.load(sa + pos + e), kdv = sh.load(sb + pos + e);
                    t.s[i][u] = std::fma(qv, kv, t.s[i][u]);
                    t.sd[i][u] = std::fma(qdv, kv, t.sd[i][u]);
                    t.sd[i][u] = std::fma(qv, kdv, t.sd[i][u]);
                  }
                }
              }
          }
          // online softmax
          for (int i = 0; i < TM; ++i) {
            std::vector<float> tile_max(tiled::kThreads);
            for (int tid = 0; tid < tiled::kThreads; ++tid) {
              const int cg = tid % 8;
              float mx = -INFINITY;
              for (int u = 0; u < TN; ++u) {
                if (tiled::thread_key(cg, u) >= rows) th[tid].s[i][u] = -INFINITY;
                mx = std::max(mx, th[tid].s[i][u]);
              }
              tile_max[tid] = mx;
            }
            for (int w = 0; w < tiled::kWarps; ++w)
              xor_reduce(w * 32, [&](int tid) { return &tile_max[tid]; },
                         [](float a, float b) { return std::max(a, b); });
            for (int tid = 0; tid < tiled::kThreads; ++tid) {
              Thread<C>& t = th[tid];
              const float new_max = std::max(t.run_max[i], tile_max[tid]);
              const float alpha = std::exp(t.run_max[i] - new_max);
              t.run_max[i] = new_max;
              t.sum[i] *= alpha;
              t.sum_dot[i] *= alpha;
              for (int c = 0; c < kCols; ++c) t.o[i][c] *= alpha, t.od[i][c] *= alpha;
              for (int u = 0; u < TN; ++u) {
                const float p = std::exp(t.s[i][u] - new_max);
                t.s[i][u] = p;
                t.sd[i][u] *= p;
                t.sum[i] += p;
                t.sum_dot[i] += t.sd[i][u];
              }
            }
          }
          // barrier; stage v, v_dot; barrier
          stage_tile<C>(sh, sa, sb, v.data(), vd.data(), (h * m + j0) * d, rows, d);
          for (int tid = 0; tid < tiled::kThreads; ++tid) {
            const int warp = tid / 32, lane = tid % 32, rg = lane / 8, cg = lane % 8;
            Thread<C>& t = th[tid];
            for (int u = 0; u < TN; ++u)
              for (int g = 0; g < 8; ++g) {
                const int j = tiled::thread_key(g, u);
                const Thread<C>& src = th[warp * 32 + rg * 8 + g];  // __shfl_sync source lane
                for (int cu = 0; cu < C::kColChunks; ++cu) {
                  const int pos = tiled::swizzled<D>(j, tiled::thread_col(cg, cu));
                  for (int i = 0; i < TM; ++i)
                    for (int e = 0; e < 4; ++e) {
                      const float ve = sh.load(sa + pos + e), vde = sh.load(sb + pos + e);
                      float& oo = t.o[i][4 * cu + e];
                      float& ood = t.od[i][4 * cu + e];
                      oo = std::fma(src.s[i][u], ve, oo);
                      ood = std::fma(src.sd[i][u], ve, std::fma(src.s[i][u], vde, ood));
                    }
                }
              }
          }
        }
        // finalize
        for (int i = 0; i < TM; ++i) {
          for (int w = 0; w < tiled::kWarps; ++w) {
            xor_reduce(w * 32, [&](int tid) { return &th[tid].sum[i]; },
                       [](float a, float b) { return a + b; });
            xor_reduce(w * 32, [&](int tid) { return &th[tid].sum_dot[i]; },
                       [](float a, float b) { return a + b; });
          }
          for (int tid = 0; tid < tiled::kThreads; ++tid) {
            const int warp = tid / 32, lane = tid % 32, rg = lane / 8, cg = lane % 8;
            const Thread<C>& t = th[tid];
            const int64_t row = row0 + tiled::thread_row<C>(warp, rg, i);
            if (row >= n) continue;
            l2vsd::attention_jvp::OnlineState<float> st;
            st.max = t.run_max[i];
            st.sum = t.sum[i];
            st.sum_dot = t.sum_dot[i];
            for (int cu = 0; cu < C::kColChunks; ++cu)
              for (int e = 0; e < 4; ++e) {
                const int c = tiled::thread_col(cg, cu) + e;
                if (c >= d) continue;
                float r, rd;
                l2vsd::attention_jvp::finalize<float>(st, t.o[i][4 * cu + e],
                                                      t.od[i][4 * cu + e], &r, &rd);
                out[(h * n + row) * d + c] = r;
                out_dot[(h * n + row) * d + c] = rd;
              }
          }
        }
      }
      ok = ok && !sh.bad_read;
    }
  return ok;
}

// O and O_dot in double, straight from the definition (full softmax, no online rescaling).
void reference(const Case& cs, const std::vector<float>& q, const std::vector<float>& qd,
               const std::vector<float>& k, const std::vector<float>& kd,
               const std::vector<float>& v, const std::vector<float>& vd, double scale,
               std::vector<double>& out, std::vector<double>& out_dot) {
  const int d = cs.d;
  std::vector<double> s(cs.m), sdot(cs.m);
  for (int64_t h = 0; h < cs.bh; ++h)
    for (int64_t i = 0; i < cs.n; ++i) {
      const int64_t qi = (h * cs.n + i) * d;
      double mx = -INFINITY;
      for (int64_t j = 0; j < cs.m; ++j) {
        const int64_t kj = (h * cs.m + j) * d;
        double a = 0, b = 0;
        for (int c = 0; c < d; ++c) {
          a += double(q[qi + c]) * k[kj + c];
          b += double(qd[qi + c]) * k[kj + c] + double(q[qi + c]) * kd[kj + c];
        }
        s[j] = a * scale;
        sdot[j] = b * scale;
        mx = std::max(mx, s[j]);
      }
      double sum = 0, mean_sd = 0;
      for (int64_t j = 0; j < cs.m; ++j) sum += std::exp(s[j] - mx);
      for (int64_t j = 0; j < cs.m; ++j) mean_sd += std::exp(s[j] - mx) / sum * sdot[j];
      for (int c = 0; c < d; ++c) {
        double o = 0, od = 0;
        for (int64_t j = 0; j < cs.m; ++j) {
          const int64_t kj = (h * cs.m + j) * d;
          const double p = std::exp(s[j] - mx) / sum;
          o += p * v[kj + c];
          od += p * (sdot[j] * v[kj + c] + vd[kj + c]);
        }
        out[qi + c] = o;
        out_dot[qi + c] = od - mean_sd * o;
      }
    }
}

double max_scaled_error(const std::vector<float>& got, const std::vector<double>& want) {
  double norm = 1e-30, worst = 0;
  for (double w : want) norm = std::max(norm, std::fabs(w));
  for (size_t i = 0; i < got.size(); ++i)
    worst = std::max(worst, std::isfinite(got[i]) ? std::fabs(got[i] - want[i]) / norm : 1e30);
  return worst;
}

template <typename C>
void run_case(const Case& cs, std::mt19937& rng, double logit_spread) {
  std::normal_distribution<float> normal;
  auto rand_vec = [&](int64_t size, float sd) {
    std::vector<float> x(size);
    for (auto& e : x) e = sd * normal(rng);
    return x;
  };
  // logit_spread > 1 makes the running max move between tiles (large rescales, tiny p's).
  const float spread = static_cast<float>(logit_spread);
  const auto q = rand_vec(cs.bh * cs.n * cs.d, spread), qd = rand_vec(cs.bh * cs.n * cs.d, 1);
  const auto k = rand_vec(cs.bh * cs.m * cs.d, 1), kd = rand_vec(cs.bh * cs.m * cs.d, 1);
  const auto v = rand_vec(cs.bh * cs.m * cs.d, 1), vd = rand_vec(cs.bh * cs.m * cs.d, 1);
  const double scale = 1.0 / std::sqrt(static_cast<double>(cs.d));
  const size_t size = q.size();
  std::vector<float> out(size, std::nanf("")), out_dot(size, std::nanf(""));
  const bool clean = simulate<C>(cs, q, qd, k, kd, v, vd, static_cast<float>(scale), out, out_dot);
  std::vector<double> ref(size), ref_dot(size);
  reference(cs, q, qd, k, kd, v, vd, scale, ref, ref_dot);
  std::vector<float> cpu(size, std::nanf("")), cpu_dot(size, std::nanf(""));
  l2vsd::attention_jvp::forward_cpu(DType::kFloat32, q.data(), qd.data(), k.data(), kd.data(),
                                    v.data(), vd.data(), cpu.data(), cpu_dot.data(), cs.bh, cs.n,
                                    cs.m, cs.d, scale);
  const double e = max_scaled_error(out, ref), ed = max_scaled_error(out_dot, ref_dot);
  const double ec = max_scaled_error(cpu, ref), ecd = max_scaled_error(cpu_dot, ref_dot);
  std::printf("D=%3d bh=%lld n=%4lld m=%4lld d=%3d grid_y<=%lld spread=%g: sim err %.2e / %.2e, "
              "cpu err %.2e / %.2e%s\n",
              C::D, (long long)cs.bh, (long long)cs.n, (long long)cs.m, cs.d,
              (long long)cs.max_grid_y, logit_spread, e, ed, ec, ecd,
              clean ? "" : "  UNWRITTEN SHARED READ");
  CHECK(clean);
  CHECK(e < 2e-5);
  CHECK(ed < 5e-5);
  // The simulated kernel and the CPU launcher agree as closely as each agrees with the truth.
  CHECK(max_scaled_error(out, std::vector<double>(cpu.begin(), cpu.end())) < 5e-5);
  CHECK(max_scaled_error(out_dot, std::vector<double>(cpu_dot.begin(), cpu_dot.end())) < 1e-4);
}

// Score step: the 8 lanes of each quarter warp read float4s of 8 keys' chunk c4; staging: the 32
// lanes of a warp store 32 consecutive entries of one row. Both must hit distinct banks.
template <typename C>
void check_banks() {
  bool reads_ok = true, stores_ok = true;
  for (int c4 = 0; c4 < C::kChunks; ++c4)
    for (int t = 0; t < C::TN; ++t)
      for (int quarter = 0; quarter < 4; ++quarter) {
        std::set<int> groups;
        for (int cg = 0; cg < 8; ++cg)
          groups.insert((tiled::swizzled<C::D>(tiled::thread_key(cg, t), 4 * c4) / 4) % 8);
        reads_ok = reads_ok && groups.size() == 8;
      }
  for (int base = 0; base < C::BC * C::D; base += 32) {
    std::set<int> banks;
    for (int lane = 0; lane < 32; ++lane) {
      const int idx = base + lane;
      banks.insert(tiled::swizzled<C::D>(idx / C::D, idx % C::D) % 32);
    }
    stores_ok = stores_ok && banks.size() == 32;
  }
  // Value step: one key, the 8 lanes' column chunks.
  for (int j = 0; j < C::BC; ++j)
    for (int u = 0; u < C::kColChunks; ++u) {
      std::set<int> groups;
      for (int cg = 0; cg < 8; ++cg)
        groups.insert((tiled::swizzled<C::D>(j, tiled::thread_col(cg, u)) / 4) % 8);
      reads_ok = reads_ok && groups.size() == 8;
    }
  CHECK(reads_ok);
  CHECK(stores_ok);
}

}  // namespace

int main() {
  std::mt19937 rng(20261205);
  check_banks<tiled::Config32>();
  check_banks<tiled::Config64>();
  check_banks<tiled::Config96>();
  check_banks<tiled::Config128>();
  // Tails: n not a multiple of BR (nor of 4), m not a multiple of BC, d below the padded D,
  // a single key, a single row, more heads than grid.y (folded).
  run_case<tiled::Config64>({3, 70, 45, 64, 65535}, rng, 1.0);
  run_case<tiled::Config64>({5, 33, 77, 40, 2}, rng, 1.0);
  run_case<tiled::Config64>({2, 1, 1, 64, 65535}, rng, 1.0);
  run_case<tiled::Config64>({1, 65, 130, 64, 65535}, rng, 4.0);  // max moves across tiles
  run_case<tiled::Config32>({2, 67, 50, 17, 65535}, rng, 1.0);
  run_case<tiled::Config32>({4, 5, 33, 32, 3}, rng, 3.0);
  run_case<tiled::Config96>({2, 35, 70, 80, 65535}, rng, 1.0);
  run_case<tiled::Config96>({1, 31, 29, 96, 65535}, rng, 3.0);
  run_case<tiled::Config128>({2, 34, 41, 128, 65535}, rng, 1.0);
  run_case<tiled::Config128>({3, 3, 17, 100, 2}, rng, 3.0);
  return l2vsd_test::summary("test_attention_jvp_tiled");
}

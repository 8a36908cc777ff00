// Unit tests of the hash-grid HD math: hash, dense index, level layout, trilinear weights, and the
// CPU launcher against a direct evaluation of the same definitions.
#include <cstdint>
#include <random>
#include <vector>

#include "kernels/hashgrid/hashgrid.h"
#include "test_kernel_harness.h"

using namespace l2vsd::hashgrid;
using l2vsd_test::near;

static void test_hash() {
  const uint32_t pos[3] = {3, 5, 7};
  const uint32_t expected = (3u * 1u) ^ (5u * 2654435761u) ^ (7u * 805459861u);
  CHECK(coherent_hash<3>(pos) == expected);
  const uint32_t origin[3] = {0, 0, 0};
  CHECK(coherent_hash<3>(origin) == 0u);
}

static void test_dense_and_hashed_index() {
  const uint32_t pos[3] = {2, 3, 4};
  // 10^3 = 1000 <= 1000 entries: dense, x + y*res + z*res^2.
  CHECK(grid_index<3>(pos, 10, 1000) == 2u + 3u * 10u + 4u * 100u);
  // 10^3 > 512 entries: hashed, modulo the level size.
  CHECK(grid_index<3>(pos, 10, 512) == coherent_hash<3>(pos) % 512u);
  // The finest default level (res 4096): the stride test stops before uint32 overflow.
  const uint32_t far[3] = {4095, 4095, 4095};
  CHECK(grid_index<3>(far, 4096, 1u << 19) == coherent_hash<3>(far) % (1u << 19));
}

static void test_default_layout() {
  GridLayout layout;
  CHECK(make_layout(3, 16, 2, 19, 16, 1.447269237440378, &layout));
  CHECK(layout.levels[0].resolution == 16u);
  CHECK(layout.levels[0].size == 4096u);  // 16^3, dense
  CHECK(layout.levels[1].resolution == 24u);
  CHECK(layout.levels[1].size == 13824u);  // 24^3, dense
  CHECK(layout.levels[1].offset == 4096u);
  CHECK(layout.levels[15].size == (1u << 19));  // hashed, capped
  CHECK(near(layout.levels[15].scale, 16.0 * std::pow(1.447269237440378, 15) - 1.0, 1e-6));
  uint32_t offset = 0;
  for (int l = 0; l < layout.n_levels; ++l) {
    CHECK(layout.levels[l].offset == offset);
    CHECK(layout.levels[l].size % 8u == 0u);
    offset += layout.levels[l].size;
  }
  CHECK(layout.n_entries == offset);
  CHECK(!make_layout(3, kMaxLevels + 1, 2, 19, 16, 1.5, &layout));
  // Rounded up to a multiple of 8: res 3 in 2D -> 9 -> 16 entries.
  CHECK(level_size(3, 2, 19) == 16u);
}

static void test_weights() {
  std::mt19937 rng(1);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  for (int trial = 0; trial < 100; ++trial) {
    double frac[3] = {u(rng), u(rng), u(rng)};
    double sum = 0;
    for (int c = 0; c < 8; ++c) sum += corner_weight<3, double>(frac, c);
    CHECK(near(sum, 1.0, 1e-12));
    // Analytic derivative vs central difference.
    const int corner = trial % 8, dim = trial % 3;
    const double h = 1e-6;
    double plus[3] = {frac[0], frac[1], frac[2]}, minus[3] = {frac[0], frac[1], frac[2]};
    plus[dim] += h;
    minus[dim] -= h;
    const double fd = (corner_weight<3, double>(plus, corner) - corner_weight<3, double>(minus, corner)) / (2 * h);
    CHECK(near(corner_weight_dfrac<3, double>(frac, corner, dim), fd, 1e-6));
  }
  uint32_t cell;
  double frac;
  bool inside;
  cell_and_fraction<double>(0.25, 15.0f, false, &cell, &frac, &inside);  // 0.25*15+0.5 = 4.25
  CHECK(cell == 4u && near(frac, 0.25, 1e-12) && inside);
  cell_and_fraction<double>(1.5, 15.0f, true, &cell, &frac, &inside);  // clamped to 1 -> 15.5
  CHECK(cell == 15u && near(frac, 0.5, 1e-12) && !inside);
}

static void test_cpu_launcher_matches_definition() {
  GridLayout layout;
  make_layout(3, 4, 2, 10, 4, 2.0, &layout);
  const int F = 2, L = 4, N = 50;
  std::mt19937 rng(7);
  std::uniform_real_distribution<double> u(0.0, 1.0), v(-1.0, 1.0);
  std::vector<double> table(static_cast<size_t>(layout.n_entries) * F), x(N * 3), out(N * L * F);
  for (auto& t : table) t = v(rng);
  for (auto& p : x) p = u(rng);
  forward_cpu(l2vsd::DType::kFloat64, x.data(), table.data(), out.data(), N, layout, false);
  for (int i = 0; i < N; ++i) {
    for (int l = 0; l < L; ++l) {
      const LevelLayout& lv = layout.levels[l];
      uint32_t cell[3];
      double frac[3];
      bool inside;
      for (int d = 0; d < 3; ++d) cell_and_fraction<double>(x[i * 3 + d], lv.scale, false, &cell[d], &frac[d], &inside);
      for (int f = 0; f < F; ++f) {
        double expected = 0;
        for (int c = 0; c < 8; ++c)
          expected += corner_weight<3, double>(frac, c) * table[corner_entry<3>(cell, c, lv) * F + f];
        CHECK(near(out[(i * L + l) * F + f], expected, 1e-12));
      }
    }
  }
  // Table gradient of sum(out * dy) with dy = 1 puts each point's weights into its corners:
  // the gradient sums to N * L * F (weights sum to one per level).
  std::vector<double> dy(N * L * F, 1.0), grad(table.size(), 0.0), dx(N * 3, 0.0);
  backward_cpu(l2vsd::DType::kFloat64, x.data(), dy.data(), table.data(), grad.data(), dx.data(), N,
               layout, false);
  double total = 0;
  for (double g : grad) total += g;
  CHECK(near(total, static_cast<double>(N * L * F), 1e-9));
}

// Wide levels (more features than the CUDA register path keeps) sum each feature's corners in the
// arithmetic type and round to the output type once (issue 23, defect 6: float16 tables summed
// in float16). Here A = double and the output float stands in for float16 against float32.
static void test_wide_levels_round_once() {
  GridLayout layout;
  CHECK(make_layout(3, 2, 12, 12, 8, 2.0, &layout));
  const int F = 12;
  std::mt19937 rng(11);
  std::uniform_real_distribution<double> u(0.0, 1.0), v(-1.0, 1.0);
  std::vector<double> table(static_cast<size_t>(layout.n_entries) * F);
  for (auto& t : table) t = v(rng) * (1 + 1e-3 * u(rng));
  int checked = 0;
  for (int trial = 0; trial < 200; ++trial) {
    const double x[3] = {u(rng), u(rng), u(rng)};
    const LevelLayout& lv = layout.levels[trial % 2];
    float out[F];
    encode_point_level<3, double>(x, table.data(), lv, F, false, out);
    uint32_t cell[3];
    double frac[3];
    bool inside;
    for (int d = 0; d < 3; ++d) cell_and_fraction<double>(x[d], lv.scale, false, &cell[d], &frac[d], &inside);
    for (int f = 0; f < F; ++f) {
      double acc = 0;
      for (int c = 0; c < 8; ++c)
        acc += corner_weight<3, double>(frac, c) * table[corner_entry<3>(cell, c, lv) * F + f];
      CHECK(out[f] == static_cast<float>(acc));
      ++checked;
    }
  }
  CHECK(checked == 200 * F);
}

// Huge scales and far-away coordinates never reach an undefined float-to-integer conversion.
static void test_conversions_are_bounded() {
  CHECK(cell_coordinate(3.0) == 3u);
  CHECK(cell_coordinate(-2.0f) == static_cast<uint32_t>(-2));
  CHECK(cell_coordinate(std::nan("")) == 0u);
  CHECK(cell_coordinate(1e20) == 0x7fffffffu);
  CHECK(cell_coordinate(3e9f) == 0x7fffffffu);
  CHECK(cell_coordinate(-1e20f) == 0x80000000u);
  uint32_t cell;
  float frac;
  bool inside;
  cell_and_fraction<float>(1e12f, 4096.0f, false, &cell, &frac, &inside);  // unclamped, far out
  CHECK(cell == 0x7fffffffu && !inside);
  CHECK(level_resolution(15.0f) == 16u);
  CHECK(level_resolution(1e30f) == (1u << 24) + 1u);
  CHECK(level_resolution(std::nanf("")) == 1u);
  CHECK(level_resolution(-5.0f) == 1u);
  GridLayout layout;
  // 16 * 2^31 cells per side at the finest level: refused. 2^24 - 1: accepted.
  CHECK(!make_layout(3, 32, 2, 19, 16, 2.0, &layout));
  CHECK(make_layout(3, 4, 2, 19, 1u << 24, 1.0, &layout));
  CHECK(layout.levels[3].resolution == (1u << 24));
  CHECK(!make_layout(3, 4, 2, 19, 16, std::nan(""), &layout));
}

int main() {
  test_hash();
  test_dense_and_hashed_index();
  test_default_layout();
  test_weights();
  test_cpu_launcher_matches_definition();
  test_wide_levels_round_once();
  test_conversions_are_bounded();
  return l2vsd_test::summary("test_hashgrid_math");
}

// Rasterize HD math without torch: the packed depth key orders like (depth, id), a triangle
// covering the whole image hands every pixel to the nearer of two, barycentrics reproduce the
// pixel, and the barycentric/depth backward matches central finite differences.
#include "../kernels/rasterize/rasterize.h"
#include "test_kernel_harness.h"

#include <vector>

using namespace l2vsd::rasterize;

static void test_key_order() {
  const float depths[] = {-1e30f, -2.f, -0.5f, -0.f, 0.f, 1e-7f, 0.5f, 3.f, 1e30f};
  for (int i = 0; i + 1 < 9; ++i) {
    CHECK(pack_key(depths[i], 7) <= pack_key(depths[i + 1], 0) || depths[i] == depths[i + 1]);
    CHECK(pack_key(depths[i], 3) < pack_key(depths[i], 4));
  }
  CHECK(key_triangle(pack_key(0.25f, 123)) == 123);
  CHECK(key_triangle(kEmptyKey) == -1);
}

static void test_nearer_wins_and_bary_reproduce_pixel() {
  // Two large triangles covering the image, the second nearer.
  const double pos[] = {-3, -3, 0.5, 1, 3, -3, 0.5, 1, 0, 3, 0.5, 1,
                        -6, -6, -0.2, 2, 6, -6, -0.2, 2, 0, 6, -0.2, 2};
  const int32_t tris[] = {0, 1, 2, 3, 4, 5};
  const int64_t H = 5, W = 7;
  std::vector<uint64_t> keys(H * W, kEmptyKey);
  for (int32_t t = 0; t < 2; ++t) raster_triangle(pos, tris, 6, t, H, W, 1e-4, keys.data());
  for (int64_t p = 0; p < H * W; ++p) {
    int32_t id;
    double b[3], d;
    resolve_pixel(pos, tris, 6, H, W, 1e-4, p, keys[p], &id, b, &d);
    CHECK(id == 1);
    CHECK(l2vsd_test::near(d, -0.1, 1e-12));
    // the barycentric combination of clip (x, y) over w is the pixel's NDC position
    double x = 0, y = 0, w = 0;
    for (int i = 0; i < 3; ++i) {
      x += b[i] * pos[4 * (3 + i)];
      y += b[i] * pos[4 * (3 + i) + 1];
      w += b[i] * pos[4 * (3 + i) + 3];
    }
    CHECK(l2vsd_test::near(x / w, pixel_to_ndc<double>(p % W, W), 1e-12));
    CHECK(l2vsd_test::near(y / w, pixel_to_ndc<double>(p / W, H), 1e-12));
  }
}

static double loss_at(const double* pos, const int32_t* tris, int64_t p, const double* gb, double gd) {
  int32_t id;
  double b[3], d;
  resolve_pixel(pos, tris, 3, 4, 4, 1e-4, p, pack_key(0.f, 0), &id, b, &d);
  return gb[0] * b[0] + gb[1] * b[1] + gb[2] * b[2] + gd * d;
}

static void test_backward_matches_finite_differences() {
  double pos[] = {-0.9, -0.8, 0.3, 1.2, 1.1, -0.7, -0.2, 1.9, 0.1, 1.3, 0.6, 1.5};
  const int32_t tris[] = {0, 1, 2};
  const double gb[3] = {0.7, -1.3, 0.4}, gd = 0.9;
  const int64_t p = 6;  // an interior pixel of the 4x4 image
  double grad[12] = {0};
  resolve_backward_pixel(pos, tris, 3, 4, 4, 1e-4, p, 0, gb, gd, grad);
  for (int k = 0; k < 12; ++k) {
    const double h = 1e-6, keep = pos[k];
    pos[k] = keep + h;
    const double up = loss_at(pos, tris, p, gb, gd);
    pos[k] = keep - h;
    const double down = loss_at(pos, tris, p, gb, gd);
    pos[k] = keep;
    CHECK(l2vsd_test::near(grad[k], (up - down) / (2 * h), 1e-6));
  }
}

int main() {
  test_key_order();
  test_nearer_wins_and_bary_reproduce_pixel();
  test_backward_matches_finite_differences();
  return l2vsd_test::summary("rasterize math");
}

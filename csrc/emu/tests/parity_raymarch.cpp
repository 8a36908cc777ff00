// raymarch: ray_aabb / march_count / march_fill on the device vs the CPU twin in the same
// precision (sample positions are discrete decisions). Rays from outside and inside the box, some
// missing it, with and without jitter, uniform and cone-grown steps, a partial last block.
#include "kernels/raymarch/raymarch.h"
#include "parity.h"

namespace {
using namespace parity;
namespace rm = l2vsd::raymarch;

template <typename T>
void run(Context& ctx, int64_t n, bool jitter, float cone) {
  std::vector<T> o(3 * n), d(3 * n);
  for (int64_t r = 0; r < n; ++r) {
    double len = 0;
    for (int k = 0; k < 3; ++k) {
      o[3 * r + k] = static_cast<T>(ctx.uniform(-2.5, 2.5));
      d[3 * r + k] = static_cast<T>(ctx.uniform(-1, 1));
      len += static_cast<double>(d[3 * r + k]) * d[3 * r + k];
    }
    for (int k = 0; k < 3; ++k) d[3 * r + k] = static_cast<T>(d[3 * r + k] / std::sqrt(len));
  }
  const std::vector<T> aabb = {T(-1), T(-1), T(-1), T(1), T(1), T(1)};
  Buffer<T> O(3 * n), D(3 * n), box(6);
  copy_bytes(O.data(), o.data(), o.size() * sizeof(T));
  copy_bytes(D.data(), d.data(), d.size() * sizeof(T));
  copy_bytes(box.data(), aabb.data(), 6 * sizeof(T));
  std::vector<T> tn(n), tf(n);
  std::vector<uint8_t> hit(n);
  Buffer<T> TN(n), TF(n);
  Buffer<uint8_t> HIT(n);
  rm::ray_aabb_cpu(dtype_of<T>(), o.data(), d.data(), aabb.data(), n, tn.data(), tf.data(), hit.data());
  rm::ray_aabb_cuda(dtype_of<T>(), O.data(), D.data(), box.data(), n, TN.data(), TF.data(), HIT.data(), nullptr);
  ctx.compare("t_near", TN, tn, 0);
  ctx.compare("t_far", TF, tf, 0);
  ctx.compare("hit", HIT, hit, 0);

  rm::Grid grid{{-1, -1, -1, 1, 1, 1}, {16, 12, 8}};
  std::vector<uint8_t> bits((16 * 12 * 8 + 7) / 8);
  for (auto& b : bits) b = static_cast<uint8_t>(ctx.integer(0, 255) & ctx.integer(0, 255));
  Buffer<uint8_t> BITS(bits.size());
  copy_bytes(BITS.data(), bits.data(), bits.size());
  std::vector<T> off(n);
  for (auto& v : off) v = static_cast<T>(ctx.uniform(0, 1));
  Buffer<T> OFF(n), TMIN(n), TMAX(n);
  copy_bytes(OFF.data(), off.data(), n * sizeof(T));
  for (int64_t r = 0; r < n; ++r) {
    tn[r] = std::max(tn[r], T(0));
    TMIN[r] = tn[r];
    TMAX[r] = tf[r];
  }
  const rm::MarchOptions opt{0.05f, cone, 64};
  std::vector<int64_t> counts(n);
  Buffer<int64_t> COUNTS(n);
  rm::march_count_cpu(dtype_of<T>(), o.data(), d.data(), tn.data(), tf.data(),
                      jitter ? off.data() : nullptr, n, grid, bits.data(), opt, counts.data());
  rm::march_count_cuda(dtype_of<T>(), O.data(), D.data(), TMIN.data(), TMAX.data(),
                       jitter ? OFF.data() : nullptr, n, grid, BITS.data(), opt, COUNTS.data(), nullptr);
  ctx.compare("counts", COUNTS, counts, 0);
  std::vector<int64_t> offsets(n + 1, 0);
  for (int64_t r = 0; r < n; ++r) offsets[r + 1] = offsets[r] + counts[r];
  const int64_t total = offsets[n];
  Buffer<int64_t> OFFSETS(n + 1);
  copy_bytes(OFFSETS.data(), offsets.data(), (n + 1) * sizeof(int64_t));
  std::vector<int64_t> ri(total);
  std::vector<T> ts(total), te(total);
  Buffer<int64_t> RI(total);
  Buffer<T> TS(total), TE(total);
  rm::march_fill_cpu(dtype_of<T>(), o.data(), d.data(), tn.data(), tf.data(),
                     jitter ? off.data() : nullptr, n, grid, bits.data(), opt, offsets.data(),
                     ri.data(), ts.data(), te.data());
  rm::march_fill_cuda(dtype_of<T>(), O.data(), D.data(), TMIN.data(), TMAX.data(),
                      jitter ? OFF.data() : nullptr, n, grid, BITS.data(), opt, OFFSETS.data(),
                      RI.data(), TS.data(), TE.data(), nullptr);
  ctx.compare("ray_indices", RI, ri, 0);
  ctx.compare("t_starts", TS, ts, 0);
  ctx.compare("t_ends", TE, te, 0);

  // Tampered slots (offsets that disagree with the counts): ray `a` gets 2 slots fewer than its
  // samples, ray `b` 3 more. The fill stays inside each ray's slot and pads a long slot; the
  // device must do exactly what the CPU does.
  int64_t a = -1, b = -1;
  for (int64_t r = 0; r < n && a < 0; ++r)
    if (counts[r] >= 3) a = r;
  if (a < 0) return;
  b = (a + 7) % n == a ? -1 : (a + 7) % n;
  std::vector<int64_t> tampered(n + 1, 0);
  for (int64_t r = 0; r < n; ++r)
    tampered[r + 1] = tampered[r] + counts[r] - (r == a ? 2 : 0) + (r == b ? 3 : 0);
  const int64_t t_total = tampered[n];
  Buffer<int64_t> TAMPERED(n + 1);
  copy_bytes(TAMPERED.data(), tampered.data(), (n + 1) * sizeof(int64_t));
  std::vector<int64_t> ri2(t_total);
  std::vector<T> ts2(t_total), te2(t_total);
  Buffer<int64_t> RI2(t_total);
  Buffer<T> TS2(t_total), TE2(t_total);
  rm::march_fill_cpu(dtype_of<T>(), o.data(), d.data(), tn.data(), tf.data(),
                     jitter ? off.data() : nullptr, n, grid, bits.data(), opt, tampered.data(),
                     ri2.data(), ts2.data(), te2.data());
  rm::march_fill_cuda(dtype_of<T>(), O.data(), D.data(), TMIN.data(), TMAX.data(),
                      jitter ? OFF.data() : nullptr, n, grid, BITS.data(), opt, TAMPERED.data(),
                      RI2.data(), TS2.data(), TE2.data(), nullptr);
  ctx.compare("tampered ray_indices", RI2, ri2, 0);
  ctx.compare("tampered t_starts", TS2, ts2, 0);
  ctx.compare("tampered t_ends", TE2, te2, 0);
}
}  // namespace

PARITY_CASE("raymarch/f32") { run<float>(ctx, 300, true, 0.0f); run<float>(ctx, 45, false, 0.004f); run<float>(ctx, 0, true, 0.0f); }
PARITY_CASE("raymarch/f64") { run<double>(ctx, 300, true, 0.0f); run<double>(ctx, 45, false, 0.004f); run<double>(ctx, 0, true, 0.0f); }

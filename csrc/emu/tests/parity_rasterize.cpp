// rasterize / interpolate / antialias: the CUDA launchers vs the CPU twins in the same precision.
// A jittered two-layer grid mesh (shared edges for antialias, overlapping layers for the depth
// test) plus a triangle with a vertex at w == near and one behind it (culled), and two identical
// triangles (the tie goes to the smaller id), on a 23x31 image with two images of positions; also
// no triangles at all. Keys and ids compare exactly; floats to rounding (the backward passes add
// with atomics, in another order than the CPU).
#include <map>
#include <utility>

#include "kernels/rasterize/rasterize.h"
#include "parity.h"

namespace {
using namespace parity;
namespace rz = l2vsd::rasterize;

template <typename T> Buffer<T> copy_of(const std::vector<T>& v) {
  Buffer<T> b(v.size());
  copy_bytes(b.data(), v.data(), v.size() * sizeof(T));
  return b;
}
template <typename T> void zero(Buffer<T>& b) { std::memset(b.data(), 0, b.n * sizeof(T)); }
template <typename T> bool same_bits(const Buffer<T>& got, const std::vector<T>& want) {
  return got.guards_intact() && got.n == want.size() &&
         (want.empty() || std::memcmp(got.data(), want.data(), want.size() * sizeof(T)) == 0);
}

// As l2vsd_ext.ops.rasterize.triangle_neighbors: equal edges paired two by two in index order.
std::vector<int32_t> neighbors_of(const std::vector<int32_t>& tris) {
  const int64_t f = static_cast<int64_t>(tris.size()) / 3;
  std::map<std::pair<int32_t, int32_t>, std::vector<int64_t>> edges;
  for (int64_t e = 0; e < 3 * f; ++e) {
    const int32_t a = tris[e], b = tris[(e / 3) * 3 + (e % 3 + 1) % 3];
    edges[{std::min(a, b), std::max(a, b)}].push_back(e);
  }
  std::vector<int32_t> out(3 * f, -1);
  for (auto& kv : edges)
    for (size_t k = 0; k + 1 < kv.second.size(); k += 2) {
      out[kv.second[k]] = static_cast<int32_t>(kv.second[k + 1] / 3);
      out[kv.second[k + 1]] = static_cast<int32_t>(kv.second[k] / 3);
    }
  return out;
}

template <typename T> void run(Context& ctx, bool empty_mesh) {
  const int64_t B = 2, H = 23, W = 31, n = 4;  // n x n vertices per layer
  const double near_w = 0.1;
  std::vector<T> pos;
  std::vector<int32_t> tris;
  int64_t V = 0;
  for (int64_t b = 0; b < B; ++b) {
    std::vector<T> p;
    for (int layer = 0; layer < 2; ++layer)
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < n; ++j) {
          const double w = ctx.uniform(1, 3);
          const double x = -1.2 + 2.4 * j / (n - 1) + ctx.uniform(-0.15, 0.15) + 0.3 * layer;
          const double y = -1.2 + 2.4 * i / (n - 1) + ctx.uniform(-0.15, 0.15);
          const double z = ctx.uniform(-0.5, 0.5) + 0.2 * layer;
          for (double c : {x * w, y * w, z * w, w}) p.push_back(static_cast<T>(c));
        }
    // Near-plane vertices: one at w == near, one behind the camera.
    for (double c : {0.0, 0.0, 0.0, near_w, 0.2, 0.3, 0.1, -0.5}) p.push_back(static_cast<T>(c));
    pos.insert(pos.end(), p.begin(), p.end());
    V = static_cast<int64_t>(p.size()) / 4;
  }
  if (!empty_mesh) {
    for (int layer = 0; layer < 2; ++layer)
      for (int64_t i = 0; i + 1 < n; ++i)
        for (int64_t j = 0; j + 1 < n; ++j) {
          const int32_t v0 = static_cast<int32_t>(layer * n * n + i * n + j);
          for (int32_t v : {v0, v0 + 1, static_cast<int32_t>(v0 + n + 1)}) tris.push_back(v);
          for (int32_t v : {v0, static_cast<int32_t>(v0 + n + 1), static_cast<int32_t>(v0 + n)}) tris.push_back(v);
        }
    const int32_t a = static_cast<int32_t>(2 * n * n);
    for (int32_t v : {a, 5, 6, a + 1, 9, 10}) tris.push_back(v);       // culled by the near plane
    for (int32_t v : {3, 9, 14, 3, 9, 14}) tris.push_back(v);          // two identical triangles
  }
  const int64_t F = static_cast<int64_t>(tris.size()) / 3;
  const rz::RasterArgs a{B, V, F, H, W, V * 4, near_w};
  const int64_t P = B * H * W;
  const DType dt = dtype_of<T>();
  const double tol = tol_of<T>();
  auto POS = copy_of(pos);
  auto TRIS = copy_of(tris);

  std::vector<uint64_t> keys(P);
  std::vector<int32_t> id(P);
  std::vector<T> bary(P * 3), depth(P);
  Buffer<uint64_t> KEYS(P);
  Buffer<int32_t> ID(P);
  Buffer<T> BARY(P * 3), DEPTH(P);
  rz::rasterize_forward_cpu(dt, a, pos.data(), tris.data(), keys.data(), id.data(), bary.data(), depth.data());
  rz::rasterize_forward_cuda(dt, a, POS.data(), TRIS.data(), KEYS.data(), ID.data(), BARY.data(), DEPTH.data(), nullptr);
  ctx.expect(same_bits(KEYS, keys), "rasterize keys bit-identical");
  ctx.expect(same_bits(ID, id), "rasterize tri_id identical");
  ctx.compare("rasterize bary", BARY, bary, tol);
  ctx.compare("rasterize depth", DEPTH, depth, tol);
  if (!empty_mesh) {  // the mesh must actually exercise the rules it is meant to
    bool covered = false, dup = false, culled = false;
    for (int64_t p = 0; p < P; ++p) {
      covered |= id[p] >= 0;
      dup |= id[p] == F - 1;
      culled |= id[p] == F - 4 || id[p] == F - 3;
    }
    ctx.expect(covered && !dup && !culled, "mesh covers pixels; duplicate and culled never win");
  }

  std::vector<T> gb(P * 3), gd(P);
  for (auto& x : gb) x = static_cast<T>(ctx.uniform(-1, 1));
  for (auto& x : gd) x = static_cast<T>(ctx.uniform(-1, 1));
  auto GB = copy_of(gb), GD = copy_of(gd);
  for (bool with_depth : {true, false}) {
    std::vector<T> gp(pos.size(), T(0));
    Buffer<T> GP(pos.size());
    zero(GP);
    rz::rasterize_backward_cpu(dt, a, pos.data(), tris.data(), id.data(), gb.data(), with_depth ? gd.data() : nullptr, gp.data());
    rz::rasterize_backward_cuda(dt, a, POS.data(), TRIS.data(), ID.data(), GB.data(), with_depth ? GD.data() : nullptr, GP.data(), nullptr);
    ctx.compare("rasterize grad_pos", GP, gp, tol * 10);
  }

  // interpolate: one shared set of attributes (stride 0) and one per image.
  auto IDB = copy_of(id);
  auto BARYB = copy_of(bary);
  for (int64_t C : {int64_t(3), int64_t(5)})
    for (bool shared : {true, false}) {
      const int64_t stride = shared ? 0 : V * C;
      std::vector<double> attr_d;
      auto ATTR = ctx.random<T>((shared ? 1 : B) * V * C, -1, 1, nullptr);
      std::vector<T> attr(ATTR.data(), ATTR.data() + ATTR.n);
      std::vector<T> out(P * C);
      Buffer<T> OUT(P * C);
      rz::interpolate_forward_cpu(dt, H * W, B, C, stride, attr.data(), tris.data(), id.data(), bary.data(), out.data());
      rz::interpolate_forward_cuda(dt, H * W, B, C, stride, ATTR.data(), TRIS.data(), IDB.data(), BARYB.data(), OUT.data(), nullptr);
      ctx.compare("interpolate out", OUT, out, tol);
      std::vector<T> go(P * C);
      for (auto& x : go) x = static_cast<T>(ctx.uniform(-1, 1));
      auto GO = copy_of(go);
      std::vector<T> ga(attr.size(), T(0)), gbar(P * 3);
      Buffer<T> GA(attr.size()), GBAR(P * 3);
      zero(GA);
      rz::interpolate_backward_cpu(dt, H * W, B, C, stride, attr.data(), tris.data(), id.data(), bary.data(), go.data(), ga.data(), gbar.data());
      rz::interpolate_backward_cuda(dt, H * W, B, C, stride, ATTR.data(), TRIS.data(), IDB.data(), BARYB.data(), GO.data(), GA.data(), GBAR.data(), nullptr);
      ctx.compare("interpolate grad_attr", GA, ga, tol * 10);
      ctx.compare("interpolate grad_bary", GBAR, gbar, tol);
    }

  // antialias on the forward's tri_id / depth.
  const auto nb = neighbors_of(tris);
  auto NB = copy_of(nb);
  auto DEPTHB = copy_of(depth);
  for (int64_t C : {int64_t(1), int64_t(3)}) {
    auto COLOR = ctx.random<T>(P * C, 0, 1, nullptr);
    std::vector<T> color(COLOR.data(), COLOR.data() + COLOR.n);
    std::vector<T> out(P * C);
    Buffer<T> OUT(P * C);
    rz::antialias_forward_cpu(dt, a, C, color.data(), pos.data(), tris.data(), nb.data(), id.data(), depth.data(), out.data());
    rz::antialias_forward_cuda(dt, a, C, COLOR.data(), POS.data(), TRIS.data(), NB.data(), IDB.data(), DEPTHB.data(), OUT.data(), nullptr);
    ctx.compare("antialias out", OUT, out, tol);
    std::vector<T> go(P * C);
    for (auto& x : go) x = static_cast<T>(ctx.uniform(-1, 1));
    auto GO = copy_of(go);
    for (bool with_pos : {true, false}) {
      std::vector<T> gc = go, gp(pos.size(), T(0));
      auto GC = copy_of(go);
      Buffer<T> GP(pos.size());
      zero(GP);
      rz::antialias_backward_cpu(dt, a, C, color.data(), pos.data(), tris.data(), nb.data(), id.data(), depth.data(), go.data(), gc.data(), with_pos ? gp.data() : nullptr);
      rz::antialias_backward_cuda(dt, a, C, COLOR.data(), POS.data(), TRIS.data(), NB.data(), IDB.data(), DEPTHB.data(), GO.data(), GC.data(), with_pos ? GP.data() : nullptr, nullptr);
      ctx.compare("antialias grad_color", GC, gc, tol * 10);
      if (with_pos) ctx.compare("antialias grad_pos", GP, gp, tol * 10);
    }
  }
}
}  // namespace

PARITY_CASE("rasterize/f32") { run<float>(ctx, false); run<float>(ctx, true); }
PARITY_CASE("rasterize/f64") { run<double>(ctx, false); run<double>(ctx, true); }

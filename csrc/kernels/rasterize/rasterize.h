// Differentiable triangle rasterization (rasterize, interpolate, antialias): the per-triangle,
// per-pixel and per-pixel-pair math shared by the CPU and CUDA launchers.
//
// Conventions (documented in l2vsd_ext/ops/rasterize.py too):
//  * positions are clip-space (x, y, z, w); pixel (px, py) has its centre at NDC
//    ((2 px + 1) / W - 1, (2 py + 1) / H - 1), so row 0 is at y = -1 (OpenGL / nvdiffrast order).
//  * near plane: a triangle with any vertex at w <= near_w is culled whole (not clipped).
//  * visibility: per pixel the smallest (depth, triangle id) wins, where depth = z / w at the pixel
//    rounded to float32 for the comparison; exact ties go to the smaller id. Both launchers pack
//    (order-preserving depth bits, id) into one uint64 and take an atomic minimum, then a resolve
//    pass recomputes barycentrics and depth of the winner in the input precision.
//  * barycentrics are perspective-correct: with c_i = (x_i, y_i, w_i) and p = (X, Y, 1),
//    u_i = p . (c_j x c_k) for (i, j, k) cyclic and b_i = u_i / sum(u). A pixel is inside when
//    every b_i >= 0 (pixel centres on an edge belong to both triangles; the tie rule decides).
#pragma once

#include <cmath>
#include <cstdint>

#include "../common.h"

namespace l2vsd {
namespace rasterize {

constexpr uint64_t kEmptyKey = ~0ull;

template <typename T> HD bool finite_value(T v) { return v - v == T(0); }

// Float bits mapped so that unsigned order equals float order (negatives flipped).
HD uint32_t ordered_bits(float v) {
  uint32_t bits;
#if defined(__CUDA_ARCH__)
  bits = __float_as_uint(v);
#else
  std::memcpy(&bits, &v, sizeof(bits));
#endif
  return (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
}

HD uint64_t pack_key(float depth, int32_t tri) {
  return (static_cast<uint64_t>(ordered_bits(depth)) << 32) | static_cast<uint32_t>(tri);
}

HD int32_t key_triangle(uint64_t key) {
  return key == kEmptyKey ? -1 : static_cast<int32_t>(key & 0xffffffffu);
}

HD void atomic_min_u64(uint64_t* addr, uint64_t v) {
#if defined(__CUDA_ARCH__)
  atomicMin(reinterpret_cast<unsigned long long*>(addr), static_cast<unsigned long long>(v));
#else
  uint64_t cur = __atomic_load_n(addr, __ATOMIC_RELAXED);
  while (v < cur &&
         !__atomic_compare_exchange_n(addr, &cur, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
  }
#endif
}

// NDC coordinate of a pixel centre along an axis with n pixels, and its inverse.
template <typename T> HD T pixel_to_ndc(int64_t i, int64_t n) { return T(2 * i + 1) / T(n) - T(1); }
template <typename T> HD T ndc_to_pixel(T v, int64_t n) { return ((v + T(1)) * T(n) - T(1)) / T(2); }

template <typename T> HD void cross3(const T* a, const T* b, T* out) {
  out[0] = a[1] * b[2] - a[2] * b[1];
  out[1] = a[2] * b[0] - a[0] * b[2];
  out[2] = a[0] * b[1] - a[1] * b[0];
}

// One triangle in clip space: c[i] = (x, y, w), z[i]; e[i] = c_j x c_k, the coefficients of the
// homogeneous edge function u_i(p) = e_i . p.
template <typename T> struct TriSetup {
  T c[3][3];
  T z[3];
  T e[3][3];
  bool valid;
};

template <typename T>
HD TriSetup<T> setup_triangle(const T* pos, const int32_t* tri, int64_t n_vertices, T near_w) {
  TriSetup<T> s;
  s.valid = true;
  for (int i = 0; i < 3; ++i) {
    const int32_t v = tri[i];
    if (v < 0 || v >= n_vertices) { s.valid = false; return s; }
    const T* p = pos + 4 * static_cast<int64_t>(v);
    s.c[i][0] = p[0];
    s.c[i][1] = p[1];
    s.c[i][2] = p[3];
    s.z[i] = p[2];
    if (!(p[3] > near_w) || !finite_value(p[0]) || !finite_value(p[1]) || !finite_value(p[2]) ||
        !finite_value(p[3]))
      s.valid = false;
  }
  for (int i = 0; i < 3; ++i) cross3(s.c[(i + 1) % 3], s.c[(i + 2) % 3], s.e[i]);
  // det(c0, c1, c2) = 0: the triangle is seen edge-on and covers no area.
  const T det = s.e[0][0] * s.c[0][0] + s.e[0][1] * s.c[0][1] + s.e[0][2] * s.c[0][2];
  if (!(det != T(0))) s.valid = false;
  return s;
}

// Perspective-correct barycentrics and depth at NDC (X, Y); false when outside.
template <typename T>
HD bool eval_pixel(const TriSetup<T>& s, T X, T Y, T* b, T* depth) {
  T u[3], sum = T(0);
  for (int i = 0; i < 3; ++i) {
    u[i] = s.e[i][0] * X + s.e[i][1] * Y + s.e[i][2];
    sum += u[i];
  }
  if (!(sum != T(0))) return false;
  for (int i = 0; i < 3; ++i) {
    b[i] = u[i] / sum;
    if (!(b[i] >= T(0))) return false;
  }
  T zc = T(0), wc = T(0);
  for (int i = 0; i < 3; ++i) {
    zc += b[i] * s.z[i];
    wc += b[i] * s.c[i][2];
  }
  *depth = zc / wc;
  return finite_value(*depth);
}

// Pixel bounding box of a valid triangle, clipped to the image; false when empty. Conservative by
// one pixel: eval_pixel makes the exact decision.
template <typename T>
HD bool pixel_bounds(const TriSetup<T>& s, int64_t H, int64_t W, int64_t* x0, int64_t* x1,
                     int64_t* y0, int64_t* y1) {
  T lo[2] = {T(INFINITY), T(INFINITY)}, hi[2] = {T(-INFINITY), T(-INFINITY)};
  for (int i = 0; i < 3; ++i) {
    const T px = ndc_to_pixel(s.c[i][0] / s.c[i][2], W), py = ndc_to_pixel(s.c[i][1] / s.c[i][2], H);
    lo[0] = px < lo[0] ? px : lo[0];
    hi[0] = px > hi[0] ? px : hi[0];
    lo[1] = py < lo[1] ? py : lo[1];
    hi[1] = py > hi[1] ? py : hi[1];
  }
  if (!(hi[0] >= T(-1)) || !(lo[0] <= T(W)) || !(hi[1] >= T(-1)) || !(lo[1] <= T(H))) return false;
  const T fx0 = floor_of(lo[0]), fx1 = floor_of(hi[0]) + T(1);
  const T fy0 = floor_of(lo[1]), fy1 = floor_of(hi[1]) + T(1);
  *x0 = fx0 < T(0) ? 0 : static_cast<int64_t>(fx0);
  *y0 = fy0 < T(0) ? 0 : static_cast<int64_t>(fy0);
  *x1 = fx1 > T(W - 1) ? W - 1 : static_cast<int64_t>(fx1);
  *y1 = fy1 > T(H - 1) ? H - 1 : static_cast<int64_t>(fy1);
  return *x0 <= *x1 && *y0 <= *y1;
}

// Coverage pass for one triangle of one image: atomic minimum of (depth, id) per covered pixel.
template <typename T>
HD void raster_triangle(const T* pos, const int32_t* tris, int64_t n_vertices, int32_t t,
                        int64_t H, int64_t W, T near_w, uint64_t* keys) {
  const TriSetup<T> s = setup_triangle(pos, tris + 3 * static_cast<int64_t>(t), n_vertices, near_w);
  if (!s.valid) return;
  int64_t x0, x1, y0, y1;
  if (!pixel_bounds(s, H, W, &x0, &x1, &y0, &y1)) return;
  for (int64_t y = y0; y <= y1; ++y) {
    const T Y = pixel_to_ndc<T>(y, H);
    for (int64_t x = x0; x <= x1; ++x) {
      T b[3], depth;
      if (!eval_pixel(s, pixel_to_ndc<T>(x, W), Y, b, &depth)) continue;
      atomic_min_u64(keys + y * W + x, pack_key(static_cast<float>(depth), t));
    }
  }
}

// Resolve pass for one pixel: triangle id (-1: none), barycentrics, depth (0 where empty).
template <typename T>
HD void resolve_pixel(const T* pos, const int32_t* tris, int64_t n_vertices, int64_t H, int64_t W,
                      T near_w, int64_t pixel, uint64_t key, int32_t* tri_id, T* bary, T* depth) {
  int32_t t = key_triangle(key);
  T b[3] = {T(0), T(0), T(0)}, d = T(0);
  if (t >= 0) {
    const TriSetup<T> s = setup_triangle(pos, tris + 3 * static_cast<int64_t>(t), n_vertices, near_w);
    eval_pixel(s, pixel_to_ndc<T>(pixel % W, W), pixel_to_ndc<T>(pixel / W, H), b, &d);
  }
  *tri_id = t;
  for (int i = 0; i < 3; ++i) bary[i] = b[i];
  *depth = d;
}

// Backward of resolve_pixel: gradients of (bary, depth) at one pixel into the clip positions of
// its triangle's vertices (scatter with atomic_add into grad_pos).
template <typename T>
HD void resolve_backward_pixel(const T* pos, const int32_t* tris, int64_t n_vertices, int64_t H,
                               int64_t W, T near_w, int64_t pixel, int32_t t, const T* g_bary,
                               T g_depth, T* grad_pos) {
  if (t < 0) return;
  const int32_t* tri = tris + 3 * static_cast<int64_t>(t);
  const TriSetup<T> s = setup_triangle(pos, tri, n_vertices, near_w);
  if (!s.valid) return;
  const T p[3] = {pixel_to_ndc<T>(pixel % W, W), pixel_to_ndc<T>(pixel / W, H), T(1)};
  T u[3], sum = T(0);
  for (int i = 0; i < 3; ++i) {
    u[i] = s.e[i][0] * p[0] + s.e[i][1] * p[1] + s.e[i][2];
    sum += u[i];
  }
  T b[3], zc = T(0), wc = T(0);
  for (int i = 0; i < 3; ++i) {
    b[i] = u[i] / sum;
    zc += b[i] * s.z[i];
    wc += b[i] * s.c[i][2];
  }
  const T depth = zc / wc;
  // depth = sum(b z) / sum(b w): through b, and directly through z_i and w_i.
  T gb[3], gz[3], gw_direct[3], dot = T(0);
  for (int i = 0; i < 3; ++i) {
    gb[i] = g_bary[i] + g_depth * (s.z[i] - depth * s.c[i][2]) / wc;
    gz[i] = g_depth * b[i] / wc;
    gw_direct[i] = -g_depth * depth * b[i] / wc;
    dot += gb[i] * b[i];
  }
  // b_i = u_i / sum(u)  =>  dL/du_m = (gb_m - sum_i gb_i b_i) / sum(u).
  T gc[3][3] = {{T(0), T(0), T(0)}, {T(0), T(0), T(0)}, {T(0), T(0), T(0)}};
  for (int i = 0; i < 3; ++i) {
    const T gu = (gb[i] - dot) / sum;
    const int j = (i + 1) % 3, k = (i + 2) % 3;
    // u_i = p . (c_j x c_k) = c_j . (c_k x p) = c_k . (p x c_j)
    T cj[3], ck[3];
    cross3(s.c[k], p, cj);
    cross3(p, s.c[j], ck);
    for (int a = 0; a < 3; ++a) {
      gc[j][a] += gu * cj[a];
      gc[k][a] += gu * ck[a];
    }
  }
  for (int i = 0; i < 3; ++i) {
    T* g = grad_pos + 4 * static_cast<int64_t>(tri[i]);
    atomic_add(g + 0, gc[i][0]);
    atomic_add(g + 1, gc[i][1]);
    atomic_add(g + 2, gz[i]);
    atomic_add(g + 3, gc[i][2] + gw_direct[i]);
  }
}

// ---- interpolate -------------------------------------------------------------------------------

template <typename T>
HD void interpolate_pixel(const T* attr, const int32_t* tris, int32_t t, const T* bary, int64_t C,
                          T* out) {
  if (t < 0) {
    for (int64_t c = 0; c < C; ++c) out[c] = T(0);
    return;
  }
  const int32_t* tri = tris + 3 * static_cast<int64_t>(t);
  const T* a0 = attr + C * tri[0];
  const T* a1 = attr + C * tri[1];
  const T* a2 = attr + C * tri[2];
  for (int64_t c = 0; c < C; ++c) out[c] = bary[0] * a0[c] + bary[1] * a1[c] + bary[2] * a2[c];
}

template <typename T>
HD void interpolate_backward_pixel(const T* attr, const int32_t* tris, int32_t t, const T* bary,
                                   int64_t C, const T* g_out, T* grad_attr, T* grad_bary) {
  T gb[3] = {T(0), T(0), T(0)};
  if (t >= 0) {
    const int32_t* tri = tris + 3 * static_cast<int64_t>(t);
    for (int i = 0; i < 3; ++i) {
      const T* a = attr + C * tri[i];
      for (int64_t c = 0; c < C; ++c) {
        gb[i] += g_out[c] * a[c];
        if (grad_attr) atomic_add(grad_attr + C * tri[i] + c, bary[i] * g_out[c]);
      }
    }
  }
  for (int i = 0; i < 3; ++i) grad_bary[i] = gb[i];
}

// ---- antialias (Laine et al. 2020, analytic silhouette antialiasing) ---------------------------
//
// For each pair of horizontally or vertically adjacent pixels p, q with different triangles, the
// front one f (the covered one, or the one with smaller depth) owns triangle T. If a silhouette
// edge of T (no neighbour across it, or the neighbour faces the other way in screen space, or the
// neighbour is culled) crosses the segment between the two pixel centres at fraction s from f, and
// the edge is more perpendicular to the segment than parallel (horizontal pairs take edges with
// |dy| >= |dx|, vertical pairs the rest, so each edge is handled once), the box filter is
// approximated by moving colour across the pixel boundary at the midpoint:
//   s > 1/2: out[o] += (s - 1/2) (c[f] - c[o])     (T reaches into the other pixel)
//   s < 1/2: out[f] += (1/2 - s) (c[o] - c[f])     (the background reaches into f)
// s depends on the edge's screen positions, which gives gradients to the edge vertices.

// Screen position (pixel-centre units) of vertex v and its derivative w.r.t. (x, y, w).
template <typename T> struct Screen {
  T x, y;
  T dx_dx, dx_dw, dy_dy, dy_dw;
};

template <typename T>
HD Screen<T> to_screen(const T* p, int64_t H, int64_t W) {
  Screen<T> s;
  const T inv = T(1) / p[3];
  s.x = ndc_to_pixel(p[0] * inv, W);
  s.y = ndc_to_pixel(p[1] * inv, H);
  s.dx_dx = T(W) / T(2) * inv;
  s.dx_dw = -T(W) / T(2) * p[0] * inv * inv;
  s.dy_dy = T(H) / T(2) * inv;
  s.dy_dw = -T(H) / T(2) * p[1] * inv * inv;
  return s;
}

template <typename T>
HD bool all_in_front(const T* pos, const int32_t* tri, T near_w) {
  for (int i = 0; i < 3; ++i)
    if (!(pos[4 * static_cast<int64_t>(tri[i]) + 3] > near_w)) return false;
  return true;
}

// Twice the signed screen area of triangle t (sign = facing).
template <typename T>
HD T screen_orientation(const T* pos, const int32_t* tri, int64_t H, int64_t W) {
  const Screen<T> a = to_screen(pos + 4 * static_cast<int64_t>(tri[0]), H, W);
  const Screen<T> b = to_screen(pos + 4 * static_cast<int64_t>(tri[1]), H, W);
  const Screen<T> c = to_screen(pos + 4 * static_cast<int64_t>(tri[2]), H, W);
  return (b.x - a.x) * (c.y - a.y) - (b.y - a.y) * (c.x - a.x);
}

// The result of analysing one pixel pair.
template <typename T> struct PairEdge {
  bool active;
  int64_t front, other;   // pixel indices
  T s;                    // crossing fraction from front's centre towards other's
  int32_t va, vb;         // edge vertices
  // ds / d(clip x, y, w) of va and vb
  T dva[3], dvb[3];
};

// Pixel pair (p, q = p + one step along `axis`: 0 horizontal, 1 vertical).
template <typename T>
HD PairEdge<T> analyse_pair(const T* pos, const int32_t* tris, const int32_t* neighbors,
                            int64_t n_vertices, const int32_t* tri_id, const T* depth, int64_t H,
                            int64_t W, T near_w, int64_t p, int axis) {
  PairEdge<T> r;
  r.active = false;
  const int64_t q = axis == 0 ? p + 1 : p + W;
  const int32_t tp = tri_id[p], tq = tri_id[q];
  if (tp == tq) return r;
  bool p_front;
  if (tq < 0) p_front = true;
  else if (tp < 0) p_front = false;
  else p_front = depth[p] < depth[q] || (depth[p] == depth[q] && tp < tq);
  r.front = p_front ? p : q;
  r.other = p_front ? q : p;
  const int32_t t = p_front ? tp : tq;
  const int32_t* tri = tris + 3 * static_cast<int64_t>(t);
  for (int i = 0; i < 3; ++i)
    if (tri[i] < 0 || tri[i] >= n_vertices) return r;
  const T orient = screen_orientation(pos, tri, H, W);
  // Pixel-centre coordinates of the pair: the fixed coordinate (row for horizontal pairs) and the
  // front pixel's coordinate along the pair axis, with dir = +-1 towards the other pixel.
  const T fixed = axis == 0 ? T(p / W) : T(p % W);
  const T start = axis == 0 ? T(r.front % W) : T(r.front / W);
  const T dir = p_front ? T(1) : T(-1);
  for (int k = 0; k < 3; ++k) {
    const int32_t va = tri[k], vb = tri[(k + 1) % 3];
    const int32_t nb = neighbors[3 * static_cast<int64_t>(t) + k];
    bool silhouette = nb < 0;
    if (!silhouette) {
      const int32_t* ntri = tris + 3 * static_cast<int64_t>(nb);
      silhouette = !all_in_front(pos, ntri, near_w) ||
                   (screen_orientation(pos, ntri, H, W) > T(0)) != (orient > T(0));
    }
    if (!silhouette) continue;
    const Screen<T> a = to_screen(pos + 4 * static_cast<int64_t>(va), H, W);
    const Screen<T> b = to_screen(pos + 4 * static_cast<int64_t>(vb), H, W);
    // Along = coordinate on the pair axis, across = the fixed one.
    const T a_al = axis == 0 ? a.x : a.y, b_al = axis == 0 ? b.x : b.y;
    const T a_ac = axis == 0 ? a.y : a.x, b_ac = axis == 0 ? b.y : b.x;
    const T d_ac = b_ac - a_ac, d_al = b_al - a_al;
    const T abs_ac = d_ac < T(0) ? -d_ac : d_ac, abs_al = d_al < T(0) ? -d_al : d_al;
    if (axis == 0 ? !(abs_ac >= abs_al) : !(abs_ac > abs_al)) continue;
    const T lo = a_ac < b_ac ? a_ac : b_ac, hi = a_ac < b_ac ? b_ac : a_ac;
    if (!(fixed >= lo && fixed <= hi)) continue;
    const T tt = (fixed - a_ac) / d_ac;
    const T k_slope = d_al / d_ac;
    const T cross = a_al + (fixed - a_ac) * k_slope;
    const T s = (cross - start) * dir;
    if (!(s >= T(0) && s <= T(1))) continue;
    // d cross / d(a_al, b_al, a_ac, b_ac)
    const T dc_a_al = T(1) - tt, dc_b_al = tt;
    const T dc_a_ac = -k_slope * (T(1) - tt), dc_b_ac = -k_slope * tt;
    // Map (along, across) back to screen (x, y), then to clip (x, y, w).
    const T dsx_a = dir * (axis == 0 ? dc_a_al : dc_a_ac), dsy_a = dir * (axis == 0 ? dc_a_ac : dc_a_al);
    const T dsx_b = dir * (axis == 0 ? dc_b_al : dc_b_ac), dsy_b = dir * (axis == 0 ? dc_b_ac : dc_b_al);
    r.dva[0] = dsx_a * a.dx_dx;
    r.dva[1] = dsy_a * a.dy_dy;
    r.dva[2] = dsx_a * a.dx_dw + dsy_a * a.dy_dw;
    r.dvb[0] = dsx_b * b.dx_dx;
    r.dvb[1] = dsy_b * b.dy_dy;
    r.dvb[2] = dsx_b * b.dx_dw + dsy_b * b.dy_dw;
    r.s = s;
    r.va = va;
    r.vb = vb;
    r.active = true;
    return r;
  }
  return r;
}

// Forward for one pixel: its colour plus the contributions of its (up to four) pairs, gathered
// in a fixed order so that the result is deterministic without atomics.
template <typename T>
HD void antialias_pixel(const T* color, const T* pos, const int32_t* tris, const int32_t* neighbors,
                        int64_t n_vertices, const int32_t* tri_id, const T* depth, int64_t H,
                        int64_t W, int64_t C, T near_w, int64_t pixel, T* out) {
  for (int64_t c = 0; c < C; ++c) out[c] = color[pixel * C + c];
  const int64_t x = pixel % W, y = pixel / W;
  // (first pixel of the pair, axis): left, right, below, above. Computed per k rather than read
  // from small local arrays: nvcc keeps a dynamically indexed array in a stack frame.
  for (int k = 0; k < 4; ++k) {
    const bool exists = k == 0 ? x > 0 : k == 1 ? x + 1 < W : k == 2 ? y > 0 : y + 1 < H;
    if (!exists) continue;
    const int64_t first = k == 0 ? pixel - 1 : k == 2 ? pixel - W : pixel;
    const PairEdge<T> e = analyse_pair(pos, tris, neighbors, n_vertices, tri_id, depth, H, W,
                                       near_w, first, k < 2 ? 0 : 1);
    if (!e.active) continue;
    const int64_t target = e.s > T(0.5) ? e.other : e.front;
    if (target != pixel) continue;
    const int64_t source = target == e.front ? e.other : e.front;
    const T weight = e.s > T(0.5) ? e.s - T(0.5) : T(0.5) - e.s;
    for (int64_t c = 0; c < C; ++c)
      out[c] += weight * (color[source * C + c] - color[target * C + c]);
  }
}

// Backward for one pair: grad_color gets the pair's share (it was initialised with grad_out), and
// the crossing's gradient goes to the edge's two vertices.
template <typename T>
HD void antialias_backward_pair(const T* color, const T* pos, const int32_t* tris,
                                const int32_t* neighbors, int64_t n_vertices,
                                const int32_t* tri_id, const T* depth, int64_t H, int64_t W,
                                int64_t C, T near_w, int64_t p, int axis, const T* g_out,
                                T* grad_color, T* grad_pos) {
  const PairEdge<T> e = analyse_pair(pos, tris, neighbors, n_vertices, tri_id, depth, H, W,
                                     near_w, p, axis);
  if (!e.active) return;
  const bool past = e.s > T(0.5);
  const int64_t target = past ? e.other : e.front;
  const int64_t source = past ? e.front : e.other;
  const T weight = past ? e.s - T(0.5) : T(0.5) - e.s;
  T g_weight = T(0);
  for (int64_t c = 0; c < C; ++c) {
    const T g = g_out[target * C + c];
    g_weight += g * (color[source * C + c] - color[target * C + c]);
    atomic_add(grad_color + source * C + c, weight * g);
    atomic_add(grad_color + target * C + c, -weight * g);
  }
  const T g_s = past ? g_weight : -g_weight;
  if (!grad_pos || g_s == T(0)) return;
  T* ga = grad_pos + 4 * static_cast<int64_t>(e.va);
  T* gb = grad_pos + 4 * static_cast<int64_t>(e.vb);
  atomic_add(ga + 0, g_s * e.dva[0]);
  atomic_add(ga + 1, g_s * e.dva[1]);
  atomic_add(ga + 3, g_s * e.dva[2]);
  atomic_add(gb + 0, g_s * e.dvb[0]);
  atomic_add(gb + 1, g_s * e.dvb[1]);
  atomic_add(gb + 3, g_s * e.dvb[2]);
}

// ---- launchers ---------------------------------------------------------------------------------
// Shapes: pos (B, V, 4) with batch stride pos_stride (0: one set of positions for every image);
// tris (F, 3) int32; outputs per image (H, W). float32 / float64.

struct RasterArgs {
  int64_t batch, n_vertices, n_triangles, height, width, pos_stride;
  double near_w;
};

// keys: (B, H, W) scratch; outputs tri_id (B, H, W) int32, bary (B, H, W, 3), depth (B, H, W).
void rasterize_forward_cpu(DType dtype, const RasterArgs& a, const void* pos, const int32_t* tris,
                           uint64_t* keys, int32_t* tri_id, void* bary, void* depth);
void rasterize_forward_cuda(DType dtype, const RasterArgs& a, const void* pos,
                            const int32_t* tris, uint64_t* keys, int32_t* tri_id, void* bary,
                            void* depth, cudaStream_t stream);
// grad_pos (B or 1, V, 4) zero-initialised, accumulated with atomics.
void rasterize_backward_cpu(DType dtype, const RasterArgs& a, const void* pos, const int32_t* tris,
                            const int32_t* tri_id, const void* g_bary, const void* g_depth,
                            void* grad_pos);
void rasterize_backward_cuda(DType dtype, const RasterArgs& a, const void* pos,
                             const int32_t* tris, const int32_t* tri_id, const void* g_bary,
                             const void* g_depth, void* grad_pos, cudaStream_t stream);

// attr (B or 1, V, C) with batch stride attr_stride; out (B, H, W, C).
void interpolate_forward_cpu(DType dtype, int64_t n_pixels_per_image, int64_t batch, int64_t C,
                             int64_t attr_stride, const void* attr, const int32_t* tris,
                             const int32_t* tri_id, const void* bary, void* out);
void interpolate_forward_cuda(DType dtype, int64_t n_pixels_per_image, int64_t batch, int64_t C,
                              int64_t attr_stride, const void* attr, const int32_t* tris,
                              const int32_t* tri_id, const void* bary, void* out,
                              cudaStream_t stream);
// grad_attr (zeroed; may be null), grad_bary (B, H, W, 3) written.
void interpolate_backward_cpu(DType dtype, int64_t n_pixels_per_image, int64_t batch, int64_t C,
                              int64_t attr_stride, const void* attr, const int32_t* tris,
                              const int32_t* tri_id, const void* bary, const void* g_out,
                              void* grad_attr, void* grad_bary);
void interpolate_backward_cuda(DType dtype, int64_t n_pixels_per_image, int64_t batch, int64_t C,
                               int64_t attr_stride, const void* attr, const int32_t* tris,
                               const int32_t* tri_id, const void* bary, const void* g_out,
                               void* grad_attr, void* grad_bary, cudaStream_t stream);

// color/out (B, H, W, C); neighbors (F, 3) int32: the triangle across edge (v_k, v_k+1), -1 none.
void antialias_forward_cpu(DType dtype, const RasterArgs& a, int64_t C, const void* color,
                           const void* pos, const int32_t* tris, const int32_t* neighbors,
                           const int32_t* tri_id, const void* depth, void* out);
void antialias_forward_cuda(DType dtype, const RasterArgs& a, int64_t C, const void* color,
                            const void* pos, const int32_t* tris, const int32_t* neighbors,
                            const int32_t* tri_id, const void* depth, void* out,
                            cudaStream_t stream);
// grad_color initialised with g_out by the caller; grad_pos zeroed (may be null).
void antialias_backward_cpu(DType dtype, const RasterArgs& a, int64_t C, const void* color,
                            const void* pos, const int32_t* tris, const int32_t* neighbors,
                            const int32_t* tri_id, const void* depth, const void* g_out,
                            void* grad_color, void* grad_pos);
void antialias_backward_cuda(DType dtype, const RasterArgs& a, int64_t C, const void* color,
                             const void* pos, const int32_t* tris, const int32_t* neighbors,
                             const int32_t* tri_id, const void* depth, const void* g_out,
                             void* grad_color, void* grad_pos, cudaStream_t stream);

}  // namespace rasterize
}  // namespace l2vsd

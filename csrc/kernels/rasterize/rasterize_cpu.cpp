// CPU launcher for rasterize / interpolate / antialias (OpenMP). Coverage runs one triangle per
// iteration over its pixel bounding box with the same packed (depth, id) atomic minimum as the
// CUDA launcher, so the winner per pixel is the same whatever the thread order.
#include "rasterize.h"

#include <stdexcept>

namespace l2vsd {
namespace rasterize {
namespace {

template <typename T>
void forward_impl(const RasterArgs& a, const T* pos, const int32_t* tris, uint64_t* keys,
                  int32_t* tri_id, T* bary, T* depth) {
  const int64_t hw = a.height * a.width;
  const T near_w = static_cast<T>(a.near_w);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < a.batch * hw; ++i) keys[i] = kEmptyKey;
#pragma omp parallel for collapse(2) schedule(dynamic, 256)
  for (int64_t b = 0; b < a.batch; ++b)
    for (int64_t t = 0; t < a.n_triangles; ++t)
      raster_triangle(pos + b * a.pos_stride, tris, a.n_vertices, static_cast<int32_t>(t),
                      a.height, a.width, near_w, keys + b * hw);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < a.batch * hw; ++i) {
    const int64_t b = i / hw;
    resolve_pixel(pos + b * a.pos_stride, tris, a.n_vertices, a.height, a.width, near_w, i % hw,
                  keys[i], tri_id + i, bary + 3 * i, depth + i);
  }
}

template <typename T>
void backward_impl(const RasterArgs& a, const T* pos, const int32_t* tris, const int32_t* tri_id,
                   const T* g_bary, const T* g_depth, T* grad_pos) {
  const int64_t hw = a.height * a.width;
  const T near_w = static_cast<T>(a.near_w);
  // One thread: the scatter-adds below then sum in a fixed order, so the CPU backward is
  // bit-deterministic (atomics from several threads made gradcheck see a non-reentrant backward).
  for (int64_t i = 0; i < a.batch * hw; ++i) {
    const int64_t b = i / hw;
    resolve_backward_pixel(pos + b * a.pos_stride, tris, a.n_vertices, a.height, a.width, near_w,
                           i % hw, tri_id[i], g_bary + 3 * i, g_depth ? g_depth[i] : T(0),
                           grad_pos + b * a.pos_stride);
  }
}

template <typename T>
void interp_forward_impl(int64_t hw, int64_t batch, int64_t C, int64_t stride, const T* attr,
                         const int32_t* tris, const int32_t* tri_id, const T* bary, T* out) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < batch * hw; ++i)
    interpolate_pixel(attr + (i / hw) * stride, tris, tri_id[i], bary + 3 * i, C, out + C * i);
}

template <typename T>
void interp_backward_impl(int64_t hw, int64_t batch, int64_t C, int64_t stride, const T* attr,
                          const int32_t* tris, const int32_t* tri_id, const T* bary,
                          const T* g_out, T* grad_attr, T* grad_bary) {
  // One thread: the scatter-adds below then sum in a fixed order, so the CPU backward is
  // bit-deterministic (atomics from several threads made gradcheck see a non-reentrant backward).
  for (int64_t i = 0; i < batch * hw; ++i) {
    const int64_t b = i / hw;
    interpolate_backward_pixel(attr + b * stride, tris, tri_id[i], bary + 3 * i, C, g_out + C * i,
                               grad_attr ? grad_attr + b * stride : nullptr, grad_bary + 3 * i);
  }
}

template <typename T>
void aa_forward_impl(const RasterArgs& a, int64_t C, const T* color, const T* pos,
                     const int32_t* tris, const int32_t* nbrs, const int32_t* tri_id,
                     const T* depth, T* out) {
  const int64_t hw = a.height * a.width;
  const T near_w = static_cast<T>(a.near_w);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < a.batch * hw; ++i) {
    const int64_t b = i / hw;
    antialias_pixel(color + b * hw * C, pos + b * a.pos_stride, tris, nbrs, a.n_vertices,
                    tri_id + b * hw, depth + b * hw, a.height, a.width, C, near_w, i % hw,
                    out + C * i);
  }
}

template <typename T>
void aa_backward_impl(const RasterArgs& a, int64_t C, const T* color, const T* pos,
                      const int32_t* tris, const int32_t* nbrs, const int32_t* tri_id,
                      const T* depth, const T* g_out, T* grad_color, T* grad_pos) {
  const int64_t hw = a.height * a.width, H = a.height, W = a.width;
  const T near_w = static_cast<T>(a.near_w);
  // Two pair directions per pixel: k = 2 i + axis.
  // One thread: the scatter-adds below then sum in a fixed order, so the CPU backward is
  // bit-deterministic (atomics from several threads made gradcheck see a non-reentrant backward).
  for (int64_t k = 0; k < 2 * a.batch * hw; ++k) {
    const int64_t i = k / 2, b = i / hw, p = i % hw;
    const int axis = static_cast<int>(k % 2);
    if (axis == 0 ? (p % W) + 1 >= W : (p / W) + 1 >= H) continue;
    antialias_backward_pair(color + b * hw * C, pos + b * a.pos_stride, tris, nbrs, a.n_vertices,
                            tri_id + b * hw, depth + b * hw, H, W, C, near_w, p, axis,
                            g_out + b * hw * C, grad_color + b * hw * C,
                            grad_pos ? grad_pos + b * a.pos_stride : nullptr);
  }
}

}  // namespace

#define L2VSD_RASTER_DISPATCH(dtype, CALL) \
  L2VSD_DISPATCH_FLOAT_DOUBLE(dtype, "rasterize", "CPU", CALL)

void rasterize_forward_cpu(DType dtype, const RasterArgs& a, const void* pos, const int32_t* tris,
                           uint64_t* keys, int32_t* tri_id, void* bary, void* depth) {
  L2VSD_RASTER_DISPATCH(dtype, forward_impl<T>(a, static_cast<const T*>(pos), tris, keys, tri_id,
                                               static_cast<T*>(bary), static_cast<T*>(depth)));
}

void rasterize_backward_cpu(DType dtype, const RasterArgs& a, const void* pos, const int32_t* tris,
                            const int32_t* tri_id, const void* g_bary, const void* g_depth,
                            void* grad_pos) {
  L2VSD_RASTER_DISPATCH(dtype, backward_impl<T>(a, static_cast<const T*>(pos), tris, tri_id,
                                                static_cast<const T*>(g_bary),
                                                static_cast<const T*>(g_depth),
                                                static_cast<T*>(grad_pos)));
}

void interpolate_forward_cpu(DType dtype, int64_t hw, int64_t batch, int64_t C, int64_t stride,
                             const void* attr, const int32_t* tris, const int32_t* tri_id,
                             const void* bary, void* out) {
  L2VSD_RASTER_DISPATCH(dtype, interp_forward_impl<T>(hw, batch, C, stride,
                                                      static_cast<const T*>(attr), tris, tri_id,
                                                      static_cast<const T*>(bary),
                                                      static_cast<T*>(out)));
}

void interpolate_backward_cpu(DType dtype, int64_t hw, int64_t batch, int64_t C, int64_t stride,
                              const void* attr, const int32_t* tris, const int32_t* tri_id,
                              const void* bary, const void* g_out, void* grad_attr,
                              void* grad_bary) {
  L2VSD_RASTER_DISPATCH(dtype, interp_backward_impl<T>(hw, batch, C, stride,
                                                       static_cast<const T*>(attr), tris, tri_id,
                                                       static_cast<const T*>(bary),
                                                       static_cast<const T*>(g_out),
                                                       static_cast<T*>(grad_attr),
                                                       static_cast<T*>(grad_bary)));
}

void antialias_forward_cpu(DType dtype, const RasterArgs& a, int64_t C, const void* color,
                           const void* pos, const int32_t* tris, const int32_t* neighbors,
                           const int32_t* tri_id, const void* depth, void* out) {
  L2VSD_RASTER_DISPATCH(dtype, aa_forward_impl<T>(a, C, static_cast<const T*>(color),
                                                  static_cast<const T*>(pos), tris, neighbors,
                                                  tri_id, static_cast<const T*>(depth),
                                                  static_cast<T*>(out)));
}

void antialias_backward_cpu(DType dtype, const RasterArgs& a, int64_t C, const void* color,
                            const void* pos, const int32_t* tris, const int32_t* neighbors,
                            const int32_t* tri_id, const void* depth, const void* g_out,
                            void* grad_color, void* grad_pos) {
  L2VSD_RASTER_DISPATCH(dtype, aa_backward_impl<T>(a, C, static_cast<const T*>(color),
                                                   static_cast<const T*>(pos), tris, neighbors,
                                                   tri_id, static_cast<const T*>(depth),
                                                   static_cast<const T*>(g_out),
                                                   static_cast<T*>(grad_color),
                                                   static_cast<T*>(grad_pos)));
}

}  // namespace rasterize
}  // namespace l2vsd

// Geometry of the tiled CUDA attention-with-tangent kernel (attention_jvp_cuda.cu), kept apart so
// the sequential simulation in csrc/tests/test_attention_jvp_tiled.cpp walks the same tiles,
// thread-to-data maps and shared-memory addresses as the kernel.
//
// A block of 128 threads (4 warps) owns BR = 16 * TM query rows of one head and walks the keys in
// tiles of BC = 8 * TN. Lane = 8 * rg + cg: the 4 row groups rg of a warp each own TM rows, and the
// 8 lanes of a row group (consecutive lanes, so xor-shuffles 1, 2, 4 reduce across them) split the
// tile's keys (key t * 8 + cg, t < TN) for s and s_dot, and the head dim (entries u * 32 + cg * 4 + e,
// u < D / 32, e < 4) for the O and O_dot accumulators.
//
// Shared memory holds fp32 copies, zero-padded to D (a multiple of 32) so every dot product runs
// over whole float4 chunks: q and q_dot (BR x D, pre-multiplied by the scale), and one BC x D
// buffer pair that holds k and k_dot for the score step, then v and v_dot for the value step.
// Rows are stored as D / 4 float4 chunks, chunk c4 of row j at position c4 ^ (j % 8): the 8 lanes
// of a quarter warp read 8 different keys' chunk c4 in the score step (key % 8 = cg), and the XOR
// puts those 8 float4s in 8 different bank groups, without padding (which would not fit 48 KiB).
#pragma once

#include "../common.h"

namespace l2vsd {
namespace attention_jvp {
namespace tiled {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
constexpr int kRowGroups = 4;  // per warp
constexpr int kLanesPerRow = 8;

// Tiled configurations: padded head dim D, rows per thread TM, keys per thread and tile TN.
// Each fits the 48 KiB of shared memory a block gets without an opt-in, and keeps the per-thread
// accumulators (2 * TM * D / 8 floats) at 64 or fewer.
template <int D_, int TM_, int TN_>
struct Config {
  static constexpr int D = D_;
  static constexpr int TM = TM_;
  static constexpr int TN = TN_;
  static constexpr int BR = kWarps * kRowGroups * TM;  // query rows per block
  static constexpr int BC = kLanesPerRow * TN;         // keys per tile
  static constexpr int kChunks = D / 4;                // float4 chunks per row
  static constexpr int kColChunks = D / 32;            // per-thread float4 column chunks (u)
  static constexpr int kSmemFloats = 2 * BR * D + 2 * BC * D;
  static constexpr int kSmemBytes = kSmemFloats * 4;
  static_assert(D % 32 == 0, "head dim tiles are whole 32-wide column stripes");
  static_assert(kSmemBytes <= 48 * 1024, "tile must fit the default shared memory of a block");
};

using Config32 = Config<32, 4, 4>;
using Config64 = Config<64, 4, 4>;
using Config96 = Config<96, 2, 4>;
using Config128 = Config<128, 2, 2>;
constexpr int kMaxTiledHeadDim = 128;

// Offset (in floats) of entry c of row j in a swizzled row-major D-wide tile.
template <int D>
HD int swizzled(int j, int c) {
  return j * D + (((c >> 2) ^ (j & 7)) << 2) + (c & 3);
}

// Row of the block's tile owned by (warp, rg) in slot i < TM.
template <typename C>
HD int thread_row(int warp, int rg, int i) {
  return (warp * kRowGroups + rg) * C::TM + i;
}
// Key of the tile handled by lane group member cg in slot t < TN.
HD int thread_key(int cg, int t) { return t * kLanesPerRow + cg; }
// First head-dim entry of column chunk u of lane group member cg (4 entries follow).
HD int thread_col(int cg, int u) { return u * 32 + cg * 4; }

}  // namespace tiled
}  // namespace attention_jvp
}  // namespace l2vsd

"""Roofline model of the CUDA attention-with-tangent kernels on Stable Diffusion 2.1's attention calls.

A model, not a measurement: no GPU was available to this project. It counts, per attention call of
SD 2.1's UNet at a 64x64 latent (classifier-free guidance batch 2, fp16 tensors), the FLOPs, the
exps, the DRAM and L2 bytes and (for the two CUDA kernels) the warp instructions issued, and turns
them into times with each GPU's peak rates:

- forward: PyTorch's SDPA forward modelled as FlashAttention (tensor cores, fp32 accumulation): two
  matmuls (4 N M d FLOPs), N M exps, Q, K, V, O each read/written once;
- old: attention_jvp_cuda.cu before issue 23 (one warp per query row, no tiling): every row reads all
  of K, K_dot, V, V_dot; every lane computes every exp; two 5-step shuffle reductions per key;
- new: the tiled kernel (attention_jvp_tiled.h): SIMT fp32 FMAs (no tensor cores, so that the CPU
  emulator can run it), 12 N M d FLOPs (six matmul-shaped products), K/V tiles re-read once per
  block of BR query rows; timed by its instruction issue (one warp instruction per scheduler and
  cycle, which is also the fp32 FMA rate on GA102 and H100), per-tile counts read off the code.

The attention block adds the q/k/v/out projections (cuBLAS, tensor cores; their JVP is the same
GEMMs again on the tangent: 2x). Run: python benchmarks/roofline_attention.py [--batch 2]
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Gpu:
    name: str
    dram: float        # bytes/s
    l2: float          # bytes/s, assumed (only the old kernel is L2-bound)
    tensor: float      # fp16/bf16 tensor FLOP/s with fp32 accumulation, dense
    simt: float        # fp32 FMA FLOP/s, non-tensor
    sms: int
    clock: float       # Hz, boost, consistent with `simt` = sms * 128 lanes * 2 * clock
    blocks_per_sm: int  # resident tiled-kernel blocks (48 KiB smem, 224 regs x 128 threads)

    @property
    def issue(self) -> float:  # warp instructions per second, 4 schedulers per SM
        return self.sms * 4 * self.clock

    @property
    def sfu(self) -> float:  # exps per second, 16 MUFU lanes per SM and cycle
        return self.sms * 16 * self.clock


GPUS = [
    Gpu("RTX 3090", dram=936e9, l2=2.0e12, tensor=71e12, simt=35.6e12, sms=82, clock=1.695e9,
        blocks_per_sm=2),
    Gpu("H100 SXM", dram=3.35e12, l2=5.5e12, tensor=989e12, simt=67e12, sms=132, clock=1.98e9,
        blocks_per_sm=2),
]


@dataclass(frozen=True)
class Call:
    name: str
    count: int   # calls of this shape per UNet evaluation
    n: int       # query tokens
    m: int       # key tokens
    heads: int
    d: int       # head dim
    c: int       # channels (heads * d)
    c_kv: int    # width of the key/value source (c for self-attention, 1024 for text)


def sd21_calls() -> list[Call]:
    """SD 2.1 at a 64x64 latent: levels 64/32/16 have 2 down + 3 up transformer blocks, the 8x8
    level the mid block only; each block has self- and cross-attention (77 text tokens of width
    1024); 5/10/20/20 heads of 64 channels."""
    calls = []
    for side, c, blocks in ((64, 320, 5), (32, 640, 5), (16, 1280, 5), (8, 1280, 1)):
        n = side * side
        calls.append(Call(f"self {n}x{n}", blocks, n, n, c // 64, 64, c, c))
        calls.append(Call(f"cross {n}x77", blocks, n, 77, c // 64, 64, c, 1024))
    return calls


ELEM = 2  # fp16 bytes


def forward_time(call: Call, b: int, gpu: Gpu) -> float:
    bh = b * call.heads
    flops = 4 * bh * call.n * call.m * call.d
    exps = bh * call.n * call.m
    dram = ELEM * bh * call.d * (2 * call.n + 2 * call.m)
    return max(flops / gpu.tensor, exps / gpu.sfu, dram / gpu.dram)


# Tiled kernel geometry (attention_jvp_tiled.h): padded D -> (TM, TN).
TILED = {32: (4, 4), 64: (4, 4), 96: (2, 4), 128: (2, 2)}


def new_kernel(call: Call, b: int, gpu: Gpu) -> dict:
    D = 32 * math.ceil(call.d / 32)
    tm, tn = TILED[D]
    br, bc, cols = 16 * tm, 8 * tn, D // 8
    # Per thread and key tile (= per warp, all lanes run the same instructions):
    score = (D // 4) * (2 * tm + 2 * tn + 12 * tm * tn)                  # LDS.128 + FFMA
    softmax = tm * (2 * tn + 6 + 6 + 2 + 2 * cols + tn * 7)               # mask/max, shuffles,
    #                                   alpha exp, sums, rescale, p = exp(s - max) and p * s_dot
    values = bc * (2 * tm + 2 * (D // 32) + 3 * tm * cols)                # SHFL + LDS.128 + FFMA
    staging = 2 * math.ceil(bc * D / 128) * 12                           # LDG, cvt, STS, index
    per_warp_tile = score + softmax + values + staging + 4               # + barriers
    fma_per_warp_tile = (D // 4) * 12 * tm * tn + bc * 3 * tm * cols
    row_blocks, tiles = math.ceil(call.n / br), math.ceil(call.m / bc)
    blocks = row_blocks * b * call.heads
    # Each resident block gets its share of the SM's 4 issue slots per cycle; whole waves.
    waves = math.ceil(blocks / (gpu.sms * gpu.blocks_per_sm))
    block_time = 4 * per_warp_tile * tiles / (4 / gpu.blocks_per_sm) / gpu.clock
    issue_time = waves * block_time
    bh = b * call.heads
    dram = ELEM * bh * call.d * (4 * call.n + 4 * call.m)
    l2 = ELEM * bh * (row_blocks * 4 * call.m * call.d + 4 * call.n * call.d)
    exps = bh * call.n * call.m
    time = max(issue_time, dram / gpu.dram, l2 / gpu.l2, exps / gpu.sfu)
    return dict(time=time, flops=12 * bh * call.n * call.m * call.d, dram=dram, l2=l2,
                fma_share=fma_per_warp_tile / per_warp_tile)


def old_kernel(call: Call, b: int, gpu: Gpu) -> dict:
    vpl = math.ceil(call.d / 32)
    # Per (row, key), per warp: 4 loads and 4 conversions per lane entry, 3 + 3 FMAs per entry,
    # two 5-step butterflies (SHFL + FADD), scale, admit_key (~8), index arithmetic (~4).
    per_pair = 8 * vpl + 6 * vpl + 20 + 2 + 8 + 4
    bh = b * call.heads
    pairs = bh * call.n * call.m
    issue_time = pairs * per_pair / gpu.issue
    sfu_time = pairs * 32 / gpu.sfu   # every lane computes p = exp(s - max)
    l2 = ELEM * bh * call.n * 4 * call.m * call.d
    # L1 can serve the 4 warps of a block that walk the same keys at about the same time.
    l2_time = l2 / 4 / gpu.l2
    dram = ELEM * bh * call.d * (4 * call.n + 4 * call.m)
    time = max(issue_time, sfu_time, l2_time, dram / gpu.dram)
    return dict(time=time, l2=l2, dram=dram)


def projection_time(call: Call, b: int, gpu: Gpu) -> float:
    """to_q, to_out (n x c x c) and to_k, to_v (m x c_kv x c) GEMMs, forward."""
    flops = 2 * b * (2 * call.n * call.c * call.c + 2 * call.m * call.c_kv * call.c)
    weights = ELEM * (2 * call.c * call.c + 2 * call.c_kv * call.c)
    acts = ELEM * b * (4 * call.n * call.c + 2 * call.m * call.c_kv + 2 * call.m * call.c)
    return max(flops / gpu.tensor, (weights + acts) / gpu.dram)


def ms(t: float) -> str:
    return f"{t * 1e3:.3f}"


def table(b: int) -> str:
    lines = []
    calls = sd21_calls()
    lines.append(f"Per call, batch {b}, fp16, head dim 64 (bytes in GB, FLOPs in GFLOP):\n")
    lines.append("| call | × per UNet | fwd GFLOP | JVP GFLOP | old L2 GB | new L2 GB | new DRAM GB |")
    lines.append("|---|---|---|---|---|---|---|")
    for call in calls:
        g = GPUS[0]
        nk, ok = new_kernel(call, b, g), old_kernel(call, b, g)
        fwd_flops = 4 * b * call.heads * call.n * call.m * call.d
        lines.append(f"| {call.name} | {call.count} | {fwd_flops / 1e9:.2f} | "
                     f"{nk['flops'] / 1e9:.2f} | {ok['l2'] / 1e9:.2f} | {nk['l2'] / 1e9:.3f} | "
                     f"{nk['dram'] / 1e9:.4f} |")
    for gpu in GPUS:
        lines.append(f"\n{gpu.name} (DRAM {gpu.dram / 1e12:.3g} TB/s, L2 {gpu.l2 / 1e12:.3g} TB/s "
                     f"assumed, tensor fp16/fp32-acc {gpu.tensor / 1e12:.0f} TFLOPS used by SDPA, "
                     f"SIMT fp32 {gpu.simt / 1e12:.1f} TFLOPS used by both JVP kernels), "
                     f"predicted ms per call:\n")
        lines.append("| call | SDPA fwd | old JVP | new JVP | new/fwd (core) | "
                     "projections fwd | block fwd | block JVP (new) | block JVP/fwd |")
        lines.append("|---|---|---|---|---|---|---|---|---|")
        tot = dict(fwd=0.0, old=0.0, new=0.0, proj=0.0)
        for call in calls:
            f = forward_time(call, b, gpu)
            o = old_kernel(call, b, gpu)["time"]
            n = new_kernel(call, b, gpu)["time"]
            p = projection_time(call, b, gpu)
            for key, val in (("fwd", f), ("old", o), ("new", n), ("proj", p)):
                tot[key] += call.count * val
            lines.append(f"| {call.name} | {ms(f)} | {ms(o)} | {ms(n)} | {n / f:.1f} | {ms(p)} | "
                         f"{ms(f + p)} | {ms(n + 2 * p)} | {(n + 2 * p) / (f + p):.1f} |")
        lines.append(f"| **all 32 calls** | {ms(tot['fwd'])} | {ms(tot['old'])} | {ms(tot['new'])} "
                     f"| {tot['new'] / tot['fwd']:.1f} | {ms(tot['proj'])} | "
                     f"{ms(tot['fwd'] + tot['proj'])} | {ms(tot['new'] + 2 * tot['proj'])} | "
                     f"{(tot['new'] + 2 * tot['proj']) / (tot['fwd'] + tot['proj']):.1f} |")
        # What a tensor-core version of the same kernel would give: 12 N M d at the tensor rate.
        tc = sum(call.count * max(12 * b * call.heads * call.n * call.m * call.d / gpu.tensor,
                                  b * call.heads * call.n * call.m / gpu.sfu)
                 for call in calls)
        lines.append(f"\nTensor-core variant (same algorithm, the six products on mma): "
                     f"{ms(tc)} ms, core {tc / tot['fwd']:.1f}× fwd, block "
                     f"{(tc + 2 * tot['proj']) / (tot['fwd'] + tot['proj']):.1f}× fwd.")
    share = new_kernel(calls[0], b, GPUS[0])["fma_share"]
    lines.append(f"\nNew kernel instruction mix (d = 64): {share:.0%} of issued instructions are "
                 f"FMAs, so its compute bound is {share:.0%} of the SIMT peak.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2, help="UNet batch (2: classifier-free guidance)")
    args = parser.parse_args()
    if args.batch < 1:
        parser.error("--batch must be >= 1")
    print(table(args.batch))


if __name__ == "__main__":
    main()

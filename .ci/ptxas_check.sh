#!/usr/bin/env bash
# ptxas resource check: compiles every csrc/kernels/*/*_cuda.cu with `nvcc -Xptxas -v` for each
# architecture in csrc/cuda_archs.txt (torch's nvcc flags) and fails on any spill store/load or a
# non-zero stack frame (per-thread local memory: slow on every GPU and invisible to the emulator).
# Usage: .ci/ptxas_check.sh [nvcc]
set -euo pipefail
cd "$(dirname "$0")/.."
NVCC=${1:-${CUDACXX:-nvcc}}
FLAGS=(-D__CUDA_NO_HALF_OPERATORS__ -D__CUDA_NO_HALF_CONVERSIONS__ -D__CUDA_NO_BFLOAT16_CONVERSIONS__
       -D__CUDA_NO_HALF2_OPERATORS__ --expt-relaxed-constexpr -std=c++17 -O3 -Icsrc)
archs=$(tr ';' ' ' < csrc/cuda_archs.txt)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
bad=0
for arch in $archs; do
  sm=sm_$(echo "${arch%+PTX}" | tr -d .)
  for cu in csrc/kernels/*/*_cuda.cu; do
    log="$out/$(basename "$cu").$sm.log"
    "$NVCC" "${FLAGS[@]}" -arch="$sm" -Xptxas -v -c "$cu" -o "$out/k.o" >"$log" 2>&1 || {
      cat "$log"; echo "ptxas check: $cu failed to compile for $sm"; exit 1; }
    functions=$(grep -c "bytes stack frame" "$log" || true)
    offenders=$(grep "bytes stack frame" "$log" | grep -Ev "^ *(ptxas info *: *)?0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads" || true)
    if [ -n "$offenders" ]; then
      bad=1
      echo "ptxas check FAILED: $cu ($sm):"
      grep -B1 "bytes stack frame" "$log" | grep -A1 -F -f <(echo "$offenders" | head -20) | head -40 || echo "$offenders"
    else
      echo "ptxas check: $cu ($sm): $functions kernels, no stack frame, no spills"
    fi
  done
done
exit $bad

#!/usr/bin/env bash
# ptxas resource check: compiles every csrc/kernels/*/*_cuda.cu once with `nvcc -Xptxas -v` and a
# -gencode for each architecture in csrc/cuda_archs.txt (torch's nvcc flags), and fails on any
# function with spill stores/loads or a non-zero stack frame (per-thread local memory: slow on
# every GPU, and invisible to the emulator, which compiles the kernels with g++).
# Usage: .ci/ptxas_check.sh [nvcc]
set -euo pipefail
cd "$(dirname "$0")/.."
NVCC=${1:-${CUDACXX:-nvcc}}
FLAGS=(-D__CUDA_NO_HALF_OPERATORS__ -D__CUDA_NO_HALF_CONVERSIONS__ -D__CUDA_NO_BFLOAT16_CONVERSIONS__
       -D__CUDA_NO_HALF2_OPERATORS__ --expt-relaxed-constexpr -std=c++17 -O3 -Icsrc)
gencodes=()
for arch in $(tr ';' ' ' < csrc/cuda_archs.txt); do
  n=$(echo "${arch%+PTX}" | tr -d .)
  gencodes+=(-gencode "arch=compute_$n,code=sm_$n")
done
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
bad=0
# Compile on every core (each file's architectures in one nvcc call), then read the logs in order.
jobs_max=$(nproc)
for cu in csrc/kernels/*/*_cuda.cu; do
  name=$(basename "$cu")
  ( "$NVCC" "${FLAGS[@]}" "${gencodes[@]}" -Xptxas -v -c "$cu" -o "$out/$name.o" >"$out/$name.log" 2>&1
    echo $? >"$out/$name.rc" ) &
  while [ "$(jobs -rp | wc -l)" -ge "$jobs_max" ]; do wait -n || true; done
done
wait
for cu in csrc/kernels/*/*_cuda.cu; do
  log="$out/$(basename "$cu").log"
  [ "$(cat "$out/$(basename "$cu").rc")" -eq 0 ] || {
    cat "$log"; echo "ptxas check: $cu failed to compile"; exit 1; }
  # "Compiling entry function 'F' for 'sm_XX'" / "Function properties for F" name the function of
  # the next "N bytes stack frame, S bytes spill stores, L bytes spill loads" line.
  summary=$(awk -v file="$cu" '
    /Compiling entry function/ { match($0, /for .sm_[0-9a-z]+/); arch = substr($0, RSTART + 5, RLENGTH - 5) }
    /Function properties for/ { fn = $NF }
    /bytes stack frame/ {
      n++; split($0, w, /[ ,]+/); k = 0
      for (i = 1; i <= length(w); i++) if (w[i] ~ /^[0-9]+$/) v[++k] = w[i]
      if (v[1] + v[2] + v[3] > 0) { bad++; printf "  %s %s: %s\n", arch, fn, $0 }
    }
    END { printf "%d %d\n", n, bad }' "$log")
  counts=$(tail -1 <<<"$summary")
  functions=${counts% *}
  offenders=${counts#* }
  if [ "$functions" -eq 0 ]; then
    echo "ptxas check: no ptxas resource lines for $cu"; cat "$log"; exit 1
  elif [ "$offenders" -ne 0 ]; then
    bad=1
    echo "ptxas check FAILED: $cu: $offenders of $functions functions spill or use a stack frame:"
    head -n -1 <<<"$summary"
  else
    echo "ptxas check: $cu: $functions functions over $(( ${#gencodes[@]} / 2 )) architectures, no stack frame, no spills"
  fi
done
exit $bad

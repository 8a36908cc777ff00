#!/bin/bash
# One call on a lent GPU machine (see README "Checking a GPU"): build the package the way a GPU
# user does (pip, no build isolation, against the machine's CUDA torch), run every CUDA test and
# the selfcheck. Logs land in $OUT (or ./device_out). Wheels the image lacks travel in .whl/.
#   STEPS="build tests selfcheck bench" ARCHS="9.0" bash benchmarks/device/check.sh
set -u
OUT=${OUT:-$PWD/device_out}; mkdir -p "$OUT"
STEPS=${STEPS:-"build tests selfcheck"}
ARCHS=${ARCHS:-9.0}
export PYTHONUNBUFFERED=1 MAX_JOBS=${MAX_JOBS:-16}
PY=${PY:-python3}
started=$(date +%s)
stamp() { echo "[$(( $(date +%s) - started )) s] $*"; }

{
  nvidia-smi -L; nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu --format=csv
  $PY -V; nvcc --version | tail -2; nproc
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

if ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} || { stamp "wheel install failed"; exit 3; }
fi

if [[ " $STEPS " == *" build "* ]]; then
  stamp "build (pip install --no-build-isolation ., TORCH_CUDA_ARCH_LIST=$ARCHS)"
  if ! TORCH_CUDA_ARCH_LIST="$ARCHS" timeout 400 $PY -m pip install --no-build-isolation --no-deps -v . \
      > "$OUT/build.log" 2>&1; then
    stamp "BUILD FAILED"; grep -n -E "error|Error" "$OUT/build.log" | head -40; tail -20 "$OUT/build.log"; exit 4
  fi
  # Tests import l2vsd_ext from the tree (pytest pythonpath "."): put the installed extension there.
  so=$(cd /tmp && $PY -c "import l2vsd_ext, glob, os; print(glob.glob(os.path.join(os.path.dirname(l2vsd_ext.__file__), '_C*.so'))[0])")
  cp "$so" l2vsd_ext/
  stamp "built: $(ls l2vsd_ext/_C*.so)"
fi
$PY -c "import l2vsd_ext, torch; from l2vsd_ext._ext import load_extension; print(load_extension().build_info()); print('gpu', torch.cuda.is_available() and torch.cuda.get_device_name(0))" 2>&1 | tee -a "$OUT/env.txt"

if [[ " $STEPS " == *" tests "* ]]; then
  stamp "CUDA tests (-k cuda)"
  timeout ${TEST_TIMEOUT:-240} $PY -m pytest python_tests -q -k cuda -n ${XDIST:-8} -p no:cacheprovider \
    -rfEs --timeout 200 > "$OUT/pytest.log" 2>&1
  echo "pytest rc=$?"; grep -E "passed|failed|error" "$OUT/pytest.log" | tail -3
  grep -E "^(FAILED|ERROR)" "$OUT/pytest.log" | head -30
fi

if [[ " $STEPS " == *" selfcheck "* ]]; then
  stamp "selfcheck"
  timeout ${SELFCHECK_TIMEOUT:-300} $PY -m l2vsd_ext.selfcheck --out "$OUT/selfcheck" > "$OUT/selfcheck.log" 2>&1
  echo "selfcheck rc=$?"; grep -v "^\s*\[pass\]" "$OUT/selfcheck.log" | tail -40
fi

if [[ " $STEPS " == *" bench "* ]]; then
  stamp "benchmarks"
  timeout ${BENCH_TIMEOUT:-200} $PY -m pytest ${BENCH_FILES:-benchmarks/bench_jvp.py} -q -p no:cacheprovider \
    --benchmark-columns=median,iqr,rounds --benchmark-json="$OUT/bench.json" > "$OUT/bench.log" 2>&1
  echo "bench rc=$?"; tail -40 "$OUT/bench.log"
fi
if [[ " $STEPS " == *" profile "* ]]; then
  stamp "JVP profile"
  for dt in ${PROFILE_DTYPES:-float16}; do
    timeout ${PROFILE_TIMEOUT:-120} $PY benchmarks/device/profile_jvp.py --dtype $dt --out "$OUT" 2>&1 | grep -v Warning | tail -5
  done
fi
stamp "done"

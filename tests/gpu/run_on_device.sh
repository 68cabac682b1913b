#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The one prepared run of bips's GPU checks on a GPU machine without network (issue 10): builds
# and installs bips, runs tests/gpu and the CPU-side device tests, then
# benchmarks/gpu_bench.py --quick. Logs and the benchmark's JSON go to $OUT (default ./gpu-out).
# About 5 minutes; every step has a timeout and the whole run a budget (BIPS_DEVICE_BUDGET,
# seconds, default 360): the benchmark gets what the tests left.
#
#   bash tests/gpu/run_on_device.sh [WHEELS_DIR]
#
# WHEELS_DIR (or $BIPS_WHEELS; default .whl): wheels of pybind11>=3 and scikit-build-core for
# the build, which bash tools/fetch-device-wheels.sh downloads (on a machine with network; .whl
# is ignored by git, so the device tool must carry it). Without them the machine's own
# pybind11 and scikit-build-core are used if they are new enough.
#
# With the device tool, from the repository root:
#   run(command="bash tests/gpu/run_on_device.sh .whl", carry=[".whl"], timeout_s=540)
#
# Exit status: 0 if bips built and every test passed; 1 otherwise. The benchmark always runs if
# bips built; its status is in the summary, not in the exit status (a failed baseline is a
# finding, not a broken build).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

PY=${PYTHON:-python3}
OUT=${OUT:-$PWD/gpu-out}
WHEELS=${1:-${BIPS_WHEELS:-.whl}}
BUDGET=${BIPS_DEVICE_BUDGET:-360}
DEPS=/tmp/bips-build-deps
SITE=/tmp/bips-site
mkdir -p "$OUT"
rm -f "$OUT"/{machine,build,gpu-tests,cpu-tests,gpu_bench}.log "$OUT"/{gpu_bench.json,summary.txt}
export PYTHONUNBUFFERED=1
START=$SECONDS
summary=()

left() { echo $((BUDGET - (SECONDS - START))); }
# timeout for a step: at most $1 seconds, and never past the budget minus $2 (kept for later steps)
limit() {
    local t=$(($(left) - $2))
    ((t > $1)) && t=$1
    ((t < 30)) && t=30
    echo "$t"
}
note() {
    summary+=("$(printf '%-28s %s (%d s in)' "$1" "$2" $((SECONDS - START)))")
    echo "== $1: $2"
}
# run NAME LOG TIMEOUT CMD...: runs CMD with a timeout, its output shown and kept in $OUT/LOG
run() {
    local name=$1 log=$2 secs=$3
    shift 3
    echo
    echo "== $name (timeout ${secs} s, $(left) s of the budget left)"
    timeout --kill-after=10 "$secs" "$@" 2>&1 | tee -a "$OUT/$log"
    return "${PIPESTATUS[0]}"
}

# --- the machine ------------------------------------------------------------------------------
{
    echo "date: $(date -u +%FT%TZ)"
    nvidia-smi || echo "nvidia-smi failed"
    nvidia-smi --query-gpu=name,uuid,driver_version,memory.total --format=csv || true
    echo "CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES-<unset>}"
    "$PY" --version
    "$PY" - <<'EOF'
import importlib, platform
print("platform", platform.platform())
for name in ("torch", "cupy", "numpy", "pybind11", "scikit_build_core", "pytest", "pytest_timeout"):
    try:
        m = importlib.import_module(name)
        print(name, getattr(m, "__version__", "?"))
    except Exception as e:  # noqa: BLE001
        print(name, "missing:", e)
try:
    import torch
    print("torch.cuda", torch.version.cuda, "available", torch.cuda.is_available())
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        print("device", p.name, getattr(p, "uuid", "?"), f"{p.total_memory / 2**30:.0f} GiB")
except Exception as e:  # noqa: BLE001
    print("torch check failed:", e)
EOF
    cmake --version | head -1 || true
    ninja --version || true
} 2>&1 | tee "$OUT/machine.log"

# --- build and install ------------------------------------------------------------------------
rm -rf "$DEPS" "$SITE"
if compgen -G "$WHEELS/*.whl" >/dev/null; then
    echo "== build dependencies from $WHEELS: $(cd "$WHEELS" && echo *.whl)"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$DEPS" "$WHEELS"/*.whl ||
        { note "build dependencies" "FAILED (pip install of $WHEELS)"; }
else
    echo "== no wheels in '$WHEELS': using this machine's pybind11 and scikit-build-core"
fi
export PYTHONPATH=$DEPS
if ! pybind11_dir=$("$PY" -c '
import sys, pybind11
if int(pybind11.__version__.split(".")[0]) < 3:
    sys.exit(f"pybind11 {pybind11.__version__} is too old (bips needs >= 3): bring wheels "
             "(bash tools/fetch-device-wheels.sh, carry .whl)")
print(pybind11.get_cmake_dir())'); then
    note "build" "FAILED (no pybind11 >= 3)"
    printf '%s\n' "${summary[@]}" | tee "$OUT/summary.txt"
    exit 1
fi
CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) run "build + install" build.log "$(limit 300 200)" \
    "$PY" -m pip install --no-build-isolation --no-deps --no-compile --target "$SITE" \
    --config-settings=cmake.define.pybind11_DIR="$pybind11_dir" .
rc=$?
export PYTHONPATH=$SITE
if [ $rc -ne 0 ] || ! "$PY" -c 'import bips' 2>/dev/null; then
    note "build + install" "FAILED (rc $rc; see build.log)"
    printf '%s\n' "${summary[@]}" | tee "$OUT/summary.txt"
    exit 1
fi
note "build + install" "ok"
"$PY" -c '
import bips
ok = getattr(bips, "cuda_available", None)
print("bips", bips.__version__, "from", bips.__file__)
print("bips.cuda_available():", ok() if ok else "missing (this bips has no GPU pools)")
' 2>&1 | tee -a "$OUT/build.log"

status=0
# pytest-timeout (on the machine): a test that hangs fails alone instead of eating the budget.
# pytest-xdist (on the machine): the GPU tests' files run side by side, each file in one worker
# (most of a test's time is its processes importing torch). The write-guard test, whose consumer
# faults on purpose, runs alone afterwards. (pytest-benchmark, also there, warns under xdist,
# and the suite turns warnings into errors: it is switched off; no test uses it.)
timeout_args=()
"$PY" -c 'import pytest_timeout' 2>/dev/null && timeout_args=(--timeout=150)
xdist_args=()
"$PY" -c 'import xdist' 2>/dev/null && xdist_args=(-n 4 --dist loadfile -p no:benchmark)

# --- tests ------------------------------------------------------------------------------------
run "tests/gpu" gpu-tests.log "$(limit 200 130)" \
    "$PY" -m pytest tests/gpu --ignore=tests/gpu/test_gpu_write_guard.py -v -rA \
    -p no:cacheprovider "${timeout_args[@]}" "${xdist_args[@]}"
rc=$?
if [ $rc -eq 0 ]; then note "tests/gpu" "passed"; else note "tests/gpu" "FAILED (rc $rc)"; status=1; fi
run "tests/gpu write guard" gpu-tests.log "$(limit 90 120)" \
    "$PY" -m pytest tests/gpu/test_gpu_write_guard.py -v -rA -p no:cacheprovider "${timeout_args[@]}"
rc=$?
if [ $rc -eq 0 ]; then note "tests/gpu write guard" "passed"; else
    note "tests/gpu write guard" "FAILED (rc $rc)"
    status=1
fi

run "CPU-side device tests" cpu-tests.log "$(limit 120 110)" \
    "$PY" -m pytest tests --ignore=tests/gpu -k "device or cuda or fd_channel or gpu" -v -rA \
    -p no:cacheprovider "${timeout_args[@]}"
rc=$?
case $rc in
0) note "CPU-side device tests" "passed" ;;
5) note "CPU-side device tests" "none selected" ;;
*) note "CPU-side device tests" "FAILED (rc $rc)"; status=1 ;;
esac

# --- benchmark --------------------------------------------------------------------------------
bench_s=$(($(left) - 15))
((bench_s < 60)) && bench_s=60
run "benchmarks/gpu_bench.py --quick" gpu_bench.log "$bench_s" \
    "$PY" benchmarks/gpu_bench.py --quick --json "$OUT/gpu_bench.json" --max-seconds $((bench_s - 40))
rc=$?
case $rc in
0) note "gpu_bench --quick" "ok" ;;
1) note "gpu_bench --quick" "done, some cases failed (see gpu_bench.log)" ;;
*) note "gpu_bench --quick" "FAILED (rc $rc)" ;;
esac

echo
printf '%s\n' "${summary[@]}" | tee "$OUT/summary.txt"
echo "exit status $status; logs in $OUT"
exit $status

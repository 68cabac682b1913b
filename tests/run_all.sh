#!/usr/bin/env bash
# The whole test suite: installs the package with its test extras, runs the C++ unit tests
# (plain, ASan+UBSan, TSan) under ctest, then the Python tests under pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
echo "== installing bips and test dependencies"
"$PY" -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
"$PY" -m pip install --quiet ".[test]"
# torch is optional: the DLPack tests use it where it installs (a CPU wheel is used when present).
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
    timeout 600 "$PY" -m pip install --quiet "torch==2.13.0" >/dev/null 2>&1 \
        || echo "   (torch not installable here: torch DLPack tests will be skipped)"
fi

echo "== C++ unit tests (ctest: plain, address+undefined, thread sanitizers)"
bash .ci/cpp-tests.sh

echo "== Python tests (pytest)"
# The package lives under python/, so the repository root does not shadow the installed copy.
"$PY" -m pytest -p no:cacheprovider "$@"

#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Downloads what a GPU machine without network needs to build bips (the build requirements of
# pyproject.toml: pybind11 >= 3 and scikit-build-core, with scikit-build-core's own packaging and
# pathspec; all pure Python) into DIR (default .whl, ignored by git), for
# tests/gpu/run_on_device.sh. Run it on a machine with network, then carry DIR:
#
#   bash tools/fetch-device-wheels.sh [DIR]
#   # device tool: run(command="bash tests/gpu/run_on_device.sh .whl", carry=[".whl"])
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
dir=${1:-.whl}
mkdir -p "$dir"
# One version of each: two of one package stop the whole install there.
rm -f "$dir"/pybind11-*.whl "$dir"/scikit_build_core-*.whl "$dir"/packaging-*.whl \
    "$dir"/pathspec-*.whl
"${PYTHON:-python3}" -m pip download --quiet --no-deps --only-binary=:all: --dest "$dir" \
    "pybind11>=3.0" "scikit-build-core>=0.10" "packaging>=23.2" "pathspec>=0.12"
ls -l "$dir"

#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Builds a portable bips wheel on this machine: `pip wheel`, then `auditwheel repair` for
# manylinux_2_28 (via tools/repair-wheel.sh). Prints the repaired wheel's path as the last line
# of stdout; progress and warnings go to stderr.
#
#   tools/build-wheel.sh [-o DIR] [--build-dir DIR] [--plat PLATFORM] [--no-build-isolation]
#
#   -o, --out DIR          where the repaired wheel goes (default: dist/ in the checkout)
#   --build-dir DIR        CMake build directory (default: a fresh temporary one)
#   --plat PLATFORM        target policy (default: manylinux_2_28_<arch>)
#   --no-build-isolation   build with the scikit-build-core and pybind11 already installed
#   $PYTHON                the interpreter to build for (default: python3)
#
# A wheel can only be as portable as the glibc and libstdc++ symbol versions it references,
# and those come from the machine that compiles it. When this machine's toolchain is too new for
# the target (Debian 12: glibc 2.36, GCC 12 -> manylinux_2_35), the wheel is repaired
# for the best policy auditwheel allows here and a warning says so. Real manylinux_2_28 wheels
# come from cibuildwheel, which compiles inside the manylinux_2_28 image (docs/packaging.md).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
py=${PYTHON:-python3}
out=$repo/dist
build_dir=
plat=manylinux_2_28_$(uname -m)
pip_args=()

usage() { sed -n '3,13s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2; }
while [ $# -gt 0 ]; do
    case $1 in
        -o | --out) out=$2; shift 2 ;;
        --build-dir) build_dir=$2; shift 2 ;;
        --plat) plat=$2; shift 2 ;;
        --no-build-isolation) pip_args+=(--no-build-isolation); shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "build-wheel.sh: unknown argument '$1'" >&2; usage; exit 2 ;;
    esac
done
if [ -n "$build_dir" ]; then
    pip_args+=("-Cbuild-dir=$build_dir")
fi

raw=$(mktemp -d)
trap 'rm -rf "$raw"' EXIT

echo "== pip wheel ($("$py" --version 2>&1))" >&2
"$py" -m pip wheel --no-deps --disable-pip-version-check "${pip_args[@]}" -w "$raw" "$repo" >&2
wheels=("$raw"/bips-*.whl)
if [ ${#wheels[@]} -ne 1 ] || [ ! -f "${wheels[0]}" ]; then
    echo "build-wheel.sh: pip wheel did not produce one bips wheel" >&2
    exit 1
fi
wheel=${wheels[0]}

# The most portable policy the wheel's versioned symbols allow (auditwheel's sym_tag), compared
# with the target by glibc version: manylinux_2_<minor>_<arch>.
target=$("$py" - "$wheel" "$plat" <<'PY'
import json
import re
import subprocess
import sys

wheel, plat = sys.argv[1:3]
try:
    out = subprocess.run(
        [sys.executable, "-m", "auditwheel", "show", "--json", wheel],
        check=True, capture_output=True, text=True,
    ).stdout
except (OSError, subprocess.CalledProcessError):
    out = subprocess.run(
        ["auditwheel", "show", "--json", wheel], check=True, capture_output=True, text=True
    ).stdout
sym_tag = json.loads(out)["sym_tag"]


def glibc_minor(tag: str) -> int:
    m = re.match(r"manylinux_2_(\d+)_", tag)
    if m is None:
        sys.exit(f"build-wheel.sh: cannot read a glibc version from policy {tag!r}")
    return int(m.group(1))


print(sym_tag if glibc_minor(sym_tag) > glibc_minor(plat) else plat)
PY
)

if [ "$target" != "$plat" ]; then
    {
        echo "build-wheel.sh: WARNING: this machine cannot build a $plat wheel."
        echo "  The compiled code references glibc/libstdc++ symbol versions newer than that"
        echo "  policy allows (auditwheel show, below); repairing for $target instead, the best"
        echo "  policy auditwheel allows here. Build real $plat wheels with cibuildwheel, which"
        echo "  compiles inside the manylinux image (see docs/packaging.md)."
        "$py" -m auditwheel show "$wheel" 2>/dev/null || auditwheel show "$wheel"
    } >&2
fi

echo "== auditwheel repair --plat $target" >&2
PYTHON=$py bash "$repo/tools/repair-wheel.sh" "$wheel" "$out" "$target"

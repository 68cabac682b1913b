#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Builds a portable bips wheel on this machine: `pip wheel` with zig as the compiler, then
# `auditwheel repair` for manylinux_2_28 (via tools/repair-wheel.sh). Prints the repaired wheel's
# path as the last line of stdout; progress and warnings go to stderr.
#
#   tools/build-wheel.sh [-o DIR] [--build-dir DIR] [--plat PLATFORM] [--toolchain zig|host]
#                        [--no-build-isolation]
#
#   -o, --out DIR          where the repaired wheel goes (default: dist/ in the checkout)
#   --build-dir DIR        CMake build directory (default: a fresh temporary one)
#   --plat PLATFORM        target policy (default: manylinux_2_28_<arch>)
#   --toolchain zig        (default) compile with zig for the policy's glibc (pip install ziglang)
#   --toolchain host       compile with this machine's compilers: portable only as far as its glibc
#   --no-build-isolation   build with the scikit-build-core and pybind11 already installed
#   $PYTHON                the interpreter to build for (default: python3)
#
# A wheel can only be as portable as the glibc and libstdc++ symbol versions it references. zig
# (tools/zig/toolchain.cmake) compiles against the headers and symbol-versioned stubs of the
# policy's glibc and links its own C++ runtime statically, so the wheel needs nothing newer than
# that glibc and no libstdc++ at all, whatever machine builds it. With --toolchain host those
# versions come from this machine (Debian 12: glibc 2.36, GCC 12 -> manylinux_2_35): the wheel is
# then repaired for the best policy auditwheel allows here, and a warning says so.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
py=${PYTHON:-python3}
out=$repo/dist
build_dir=
arch=$(uname -m)
plat=manylinux_2_28_$arch
toolchain=zig
pip_args=()

usage() { sed -n '3,16s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2; }
while [ $# -gt 0 ]; do
    case $1 in
        -o | --out) out=$2; shift 2 ;;
        --build-dir) build_dir=$2; shift 2 ;;
        --plat) plat=$2; shift 2 ;;
        --toolchain) toolchain=$2; shift 2 ;;
        --no-build-isolation) pip_args+=(--no-build-isolation); shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "build-wheel.sh: unknown argument '$1'" >&2; usage; exit 2 ;;
    esac
done
if [ -n "$build_dir" ]; then
    pip_args+=("-Cbuild-dir=$build_dir")
fi

case $toolchain in
    zig)
        # manylinux_2_28_x86_64 -> x86_64-linux-gnu.2.28
        if [[ ! $plat =~ ^manylinux_([0-9]+)_([0-9]+)_$arch$ ]]; then
            echo "build-wheel.sh: --toolchain zig needs a manylinux_X_Y_$arch policy, not '$plat'" >&2
            exit 2
        fi
        BIPS_ZIG_TARGET=$arch-linux-gnu.${BASH_REMATCH[1]}.${BASH_REMATCH[2]}
        if ! BIPS_ZIG=$("$py" -c 'import os, ziglang; print(os.path.join(os.path.dirname(ziglang.__file__), "zig"))' 2>/dev/null) \
            || [ ! -x "$BIPS_ZIG" ]; then
            echo "build-wheel.sh: zig is not installed for $py: pip install ziglang (the test" \
                "extra has it), or build with --toolchain host" >&2
            exit 1
        fi
        export BIPS_ZIG BIPS_ZIG_TARGET
        pip_args+=("-Ccmake.define.CMAKE_TOOLCHAIN_FILE=$repo/tools/zig/toolchain.cmake")
        echo "== compiler: zig $("$BIPS_ZIG" version) for $BIPS_ZIG_TARGET" >&2
        ;;
    host) echo "== compiler: this machine's (--toolchain host)" >&2 ;;
    *) echo "build-wheel.sh: --toolchain is zig or host, not '$toolchain'" >&2; exit 2 ;;
esac

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

# The most portable policy the versioned symbols of the wheel's own binaries allow (auditwheel's
# sym_tag), compared with the target by glibc version: manylinux_2_<minor>_<arch>. An empty
# --ldpaths leaves out the host's GStreamer and GLib, which the plugin takes from the user's
# machine and the wheel never carries (tools/repair-wheel.sh).
empty=$raw/no-libs
mkdir -p "$empty"
target=$("$py" - "$wheel" "$plat" "$empty" <<'PY'
import json
import re
import subprocess
import sys

wheel, plat, empty = sys.argv[1:4]
show = ["show", "--json", "--ldpaths", empty, wheel]
try:
    out = subprocess.run(
        [sys.executable, "-m", "auditwheel", *show], check=True, capture_output=True, text=True
    ).stdout
except (OSError, subprocess.CalledProcessError):
    out = subprocess.run(["auditwheel", *show], check=True, capture_output=True, text=True).stdout
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
        echo "build-wheel.sh: WARNING: this build cannot make a $plat wheel."
        echo "  The compiled code references glibc/libstdc++ symbol versions newer than that"
        echo "  policy allows (auditwheel show, below); repairing for $target instead, the best"
        echo "  policy auditwheel allows here. Build with --toolchain zig (the default), or with"
        echo "  cibuildwheel, which compiles inside the manylinux image (see docs/packaging.md)."
        "$py" -m auditwheel show "$wheel" 2>/dev/null || auditwheel show "$wheel"
    } >&2
fi

echo "== auditwheel repair --plat $target" >&2
PYTHON=$py bash "$repo/tools/repair-wheel.sh" "$wheel" "$out" "$target"

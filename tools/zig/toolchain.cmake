# SPDX-License-Identifier: Apache-2.0
# Compiles with zig for an old glibc, so that the wheel built on any Linux machine is a real
# manylinux wheel: zig carries the headers and symbol-versioned stubs of every glibc, and links
# its C++ runtime (libc++, libc++abi, libunwind) statically. tools/build-wheel.sh uses it:
#
#   BIPS_ZIG=/path/to/zig BIPS_ZIG_TARGET=x86_64-linux-gnu.2.28 \
#     pip wheel . -Ccmake.define.CMAKE_TOOLCHAIN_FILE=tools/zig/toolchain.cmake
#
# The target is the build machine's own architecture and OS, so this is not a cross build:
# pkg-config and find_package still find the host's GStreamer, Python and pybind11.
set(CMAKE_C_COMPILER "${CMAKE_CURRENT_LIST_DIR}/cc")
set(CMAKE_CXX_COMPILER "${CMAKE_CURRENT_LIST_DIR}/c++")
set(CMAKE_PROJECT_INCLUDE "${CMAKE_CURRENT_LIST_DIR}/project.cmake")

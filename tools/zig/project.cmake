# SPDX-License-Identifier: Apache-2.0
# Read after project() when building with tools/zig/toolchain.cmake.

# pkg-config (which CMake runs with PKG_CONFIG_ALLOW_SYSTEM_CFLAGS) hands the GStreamer plugin
# -I/usr/include and -I/usr/include/<multiarch>: the host's glibc headers, which would shadow
# zig's headers of the old glibc. Declared implicit, CMake leaves them off the command line;
# GStreamer's and GLib's own directories below them stay.
foreach(_bips_lang C CXX)
  list(APPEND CMAKE_${_bips_lang}_IMPLICIT_INCLUDE_DIRECTORIES
    /usr/include /usr/local/include /usr/include/${CMAKE_SYSTEM_PROCESSOR}-linux-gnu)
endforeach()
unset(_bips_lang)

# zig's static libc++ comes with debug information; the wheel does not need it.
string(APPEND CMAKE_MODULE_LINKER_FLAGS_RELEASE " -s")

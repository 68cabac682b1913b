# SPDX-License-Identifier: Apache-2.0
# The bips core library, defined once for both places that compile it: CMakeLists.txt (tests,
# Python module, GStreamer plugin) and the installed bipsConfig.cmake, which compiles the same
# sources inside a user's project with that project's compiler and flags. A new core source goes
# into BIPS_CORE_SOURCES and nowhere else; cpp/src is installed whole, so its headers need nothing.

# The core's sources, relative to cpp/src (installed as <prefix>/share/bips/src).
set(BIPS_CORE_SOURCES
  dtype.cpp
  names.cpp
  interrupt.cpp
  posix/clock.cpp
  posix/error.cpp
  posix/file.cpp
  posix/futex.cpp
  posix/lock.cpp
  posix/mapping.cpp
  posix/sigbus.cpp
  params.cpp
  pool_files.cpp
  fork_guard.cpp
  segment.cpp
  signaler.cpp
  segment_create.cpp
  segment_open.cpp
  segment_device.cpp
  device.cpp
  cuda/driver.cpp
  cuda/device_memory.cpp
  cuda/stream_task.cpp
  sweep.cpp
  cleanup.cpp
  producer.cpp
  consumer.cpp
  consumer_attach.cpp
  notifier.cpp
  fd_channel.cpp
  pool.cpp
  c_api.cpp
)

# bips_add_core_library(TARGET SRC_DIR): the static library TARGET from the core's sources in
# SRC_DIR. The caller adds the public include directories and has found Threads.
function(bips_add_core_library target src_dir)
  list(TRANSFORM BIPS_CORE_SOURCES PREPEND "${src_dir}/" OUTPUT_VARIABLE sources)
  add_library(${target} STATIC ${sources})
  target_include_directories(${target} PRIVATE "${src_dir}")
  target_compile_features(${target} PUBLIC cxx_std_17)
  # It goes into shared objects too: the Python module, the GStreamer plugin, a user's plugin.
  set_target_properties(${target} PROPERTIES POSITION_INDEPENDENT_CODE ON)
  # dlopen for the CUDA driver, loaded only when a GPU pool is used (in libc since glibc 2.34).
  target_link_libraries(${target} PUBLIC Threads::Threads ${CMAKE_DL_LIBS})
  if(CMAKE_SYSTEM_NAME STREQUAL "Linux")
    # shm_open and shm_unlink live in librt before glibc 2.34 (an empty stub since).
    target_link_libraries(${target} PUBLIC rt)
  endif()
endfunction()

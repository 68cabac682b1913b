#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Configures, builds and runs the C++ unit tests under ctest three times: plain (Release),
# AddressSanitizer + UndefinedBehaviorSanitizer, and ThreadSanitizer.
#
#   .ci/cpp-tests.sh                 all three
#   .ci/cpp-tests.sh asan tsan       only these (plain | asan | tsan)
#
# The functions below run inside `if`, where `set -e` does not apply: each step checks itself.
#
# Build dirs: build/cpp, build/asan, build/tsan. The sanitizer builds are Debug, like the asan and
# tsan presets of CMakePresets.json, which use the same dirs.
# Environment: JOBS (default 2) for the build and ctest; CTEST_ARGS for more ctest arguments
# (e.g. CTEST_ARGS="-R corrupt").
set -euo pipefail
cd "$(dirname "$0")/.."

JOBS=${JOBS:-2}
GENERATOR=()
if command -v ninja >/dev/null 2>&1; then
    GENERATOR=(-G Ninja)
fi
read -r -a EXTRA_CTEST <<<"${CTEST_ARGS:-}"

configure_and_build() { # dir, extra cmake args...
    local dir=$1
    shift
    # A build dir made with another generator cannot be reused; start it again.
    if [ -f "$dir/CMakeCache.txt" ] && [ ${#GENERATOR[@]} -gt 0 ] &&
        ! grep -q '^CMAKE_GENERATOR:INTERNAL=Ninja$' "$dir/CMakeCache.txt"; then
        rm -rf "$dir"
    fi
    cmake -S . -B "$dir" "${GENERATOR[@]}" -DBIPS_BUILD_TESTS=ON "$@" >/dev/null || return 1
    cmake --build "$dir" --parallel "$JOBS" || return 1
}

run_ctest() { # dir, [command prefix...]
    local dir=$1
    shift
    (cd "$dir" && "$@" ctest --output-on-failure --parallel "$JOBS" "${EXTRA_CTEST[@]}")
}

# ThreadSanitizer maps its shadow memory at fixed addresses; kernels with more ASLR entropy
# (vm.mmap_rnd_bits > 28, common since Linux 6.x) make older TSan runtimes die at start with
# "unexpected memory mapping". Running with ASLR off (setarch -R) avoids it.
tsan_prefix() { # binary -> prints the prefix to use ("" or "setarch <arch> -R"), fails if none works
    local bin=$1 out
    if out=$(TSAN_OPTIONS=halt_on_error=1 "$bin" --list 2>&1 >/dev/null) && [ -z "$out" ]; then
        return 0
    fi
    echo "   TSan does not start here (${out%%$'\n'*}); retrying with ASLR off" >&2
    if command -v setarch >/dev/null 2>&1 &&
        TSAN_OPTIONS=halt_on_error=1 setarch "$(uname -m)" -R "$bin" --list >/dev/null 2>&1; then
        echo "setarch $(uname -m) -R"
        return 0
    fi
    echo "   TSan cannot run on this machine, even with ASLR off" >&2
    return 1
}

run_plain() {
    echo "== plain (Release): build/cpp"
    configure_and_build build/cpp -DCMAKE_BUILD_TYPE=Release -DBIPS_SANITIZE= || return 1
    run_ctest build/cpp
}

run_asan() {
    echo "== address,undefined: build/asan"
    configure_and_build build/asan -DCMAKE_BUILD_TYPE=Debug \
        -DBIPS_SANITIZE=address,undefined || return 1
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
        UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
        run_ctest build/asan
}

run_tsan() {
    echo "== thread: build/tsan"
    configure_and_build build/tsan -DCMAKE_BUILD_TYPE=Debug -DBIPS_SANITIZE=thread || return 1
    local prefix
    prefix=$(tsan_prefix build/tsan/cpp/tests/bips_tests) || return 1
    local -a pre=()
    read -r -a pre <<<"$prefix"
    TSAN_OPTIONS=halt_on_error=1 run_ctest build/tsan "${pre[@]}"
}

configs=("$@")
[ ${#configs[@]} -gt 0 ] || configs=(plain asan tsan)
for c in "${configs[@]}"; do
    case $c in
    plain | asan | tsan) ;;
    *)
        echo "unknown configuration '$c' (use plain, asan, tsan)" >&2
        exit 2
        ;;
    esac
done

failed=()
for c in "${configs[@]}"; do
    start=$SECONDS
    if "run_$c"; then
        echo "== $c: passed in $((SECONDS - start)) s"
    else
        echo "== $c: FAILED after $((SECONDS - start)) s"
        failed+=("$c")
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "C++ tests failed in: ${failed[*]}" >&2
    exit 1
fi
echo "C++ tests passed in: ${configs[*]}"

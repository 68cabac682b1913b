// SPDX-License-Identifier: Apache-2.0
// What the tests share: unique pool names, forked children with hard timeouts, pipes to
// synchronise with them, files written straight into /dev/shm, and frame payload patterns.
#pragma once

#include "check.hpp"

#include <bips/bips.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <optional>
#include <string>
#include <sys/types.h>
#include <thread>
#include <vector>

namespace bips::test {

using namespace std::chrono_literals;

/// Timing bounds are the spec's (e.g. "a dead consumer's buffers come back within 1 s"); under
/// ThreadSanitizer everything runs several times slower, so the bounds stretch by this factor.
#if defined(__SANITIZE_THREAD__)
inline constexpr int SLOWDOWN = 3;
#else
inline constexpr int SLOWDOWN = 1;
#endif

/// A pool name no other test, process or run uses: "bt<test pid>-<n>" (children add their pid).
std::string unique_name();
/// The prefix every name from this test process (and its children) starts with.
std::string name_prefix();
/// /dev/shm/bips.NAME
std::string shm_path(const std::string &name);
/// /dev/shm/bips.NAME@ctl, the pool's control file.
std::string ctl_path(const std::string &name);
bool shm_exists(const std::string &name);

/// Seconds since `start`, as a double.
double seconds_since(std::chrono::steady_clock::time_point start);

/// Polls `pred` every millisecond until it is true or `timeout` passes; returns its last value.
bool wait_until(const std::function<bool()> &pred, std::chrono::milliseconds timeout);

/// A forked child process. The destructor SIGKILLs and reaps it if nobody waited for it, so a
/// failing test never leaves a process behind.
class Child {
public:
    Child() = default;
    /// Forks; the child arms alarm(alarm_s) as a hard stop, runs `body`, and _exit()s with its
    /// return value, or 100 + n if n checks failed in it, or 99 if it threw.
    static Child fork(const std::function<int()> &body, unsigned alarm_s = 10);
    Child(Child &&other) noexcept;
    Child &operator=(Child &&other) noexcept;
    Child(const Child &) = delete;
    Child &operator=(const Child &) = delete;
    ~Child();

    pid_t pid() const noexcept { return m_pid; }
    /// Waits up to `timeout` for the child to exit. Returns its exit code, 128 + signal if a
    /// signal ended it, or -1 after killing it because it ran past the timeout.
    int wait(std::chrono::milliseconds timeout);
    /// SIGKILLs the child and reaps it.
    void kill();

private:
    pid_t m_pid = -1;
};

/// A pipe: a child writes one byte to say "ready", the parent waits for it with a timeout.
class Pipe {
public:
    Pipe();
    Pipe(const Pipe &) = delete;
    Pipe &operator=(const Pipe &) = delete;
    ~Pipe();
    void signal(char c = '!') const;
    /// The next byte, or -1 if none came within `timeout` (or the writer closed its end).
    int wait(std::chrono::milliseconds timeout) const;

private:
    int m_fd[2] = {-1, -1};
};

/// Writes `bytes` as /dev/shm/bips.NAME (which must not exist) with open() + write().
void write_shm_file(const std::string &name, const std::vector<unsigned char> &bytes);
/// Reads a whole /dev/shm/bips.NAME file.
std::vector<unsigned char> read_shm_file(const std::string &name);

/// A whole file mapped shared and read-write, as a peer with write access maps a pool's file
/// (raw open + mmap, no bips code). REQUIREs that it opens.
class MappedFile {
public:
    explicit MappedFile(const std::string &path);
    MappedFile(const MappedFile &) = delete;
    MappedFile &operator=(const MappedFile &) = delete;
    ~MappedFile();
    int fd() const noexcept { return m_fd; }
    unsigned char *data() const noexcept { return m_map; }
    std::size_t size() const noexcept { return m_size; }
    template <class T> void set(std::size_t off, T v) {
        REQUIRE(off + sizeof(T) <= m_size);
        std::memcpy(m_map + off, &v, sizeof(T));
    }
    template <class T> T get(std::size_t off) const {
        T v{};
        std::memcpy(&v, m_map + off, sizeof(T));
        return v;
    }

private:
    int m_fd = -1;
    unsigned char *m_map = nullptr;
    std::size_t m_size = 0;
};

/// Unlinks /dev/shm/bips.NAME and its control file when it goes out of scope (for files the
/// tests forge).
class ScopedUnlink {
public:
    explicit ScopedUnlink(std::string name) : m_name(std::move(name)) {}
    ScopedUnlink(const ScopedUnlink &) = delete;
    ScopedUnlink &operator=(const ScopedUnlink &) = delete;
    ~ScopedUnlink();

private:
    std::string m_name;
};

/// The payload of frame `seq`: byte k is (seq * 7 + k) % 251, and the first 8 bytes hold seq.
void fill_pattern(std::byte *data, std::size_t n, std::uint64_t seq);
/// True if `data` holds fill_pattern(seq); reports the first bad byte otherwise.
bool has_pattern(const std::byte *data, std::size_t n, std::uint64_t seq);

/// Options for a uint8 pool of `capacity` buffers of `bytes` bytes (shape {bytes}).
PoolOptions small_pool(std::uint32_t capacity, std::size_t bytes = 64,
                       Policy policy = Policy::block);

/// Acquires, fills with the pattern of `tag` and publishes one buffer (timeout 1 s).
void publish_pattern(Producer &producer, std::uint64_t tag);

} // namespace bips::test

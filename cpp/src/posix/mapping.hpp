// SPDX-License-Identifier: Apache-2.0
// An owned memory mapping (guarded against SIGBUS, see sigbus.hpp), and the page size.
#pragma once

#include <cstddef>
#include <string>
#include <sys/types.h>

namespace bips::posix {

/// An owned memory mapping. Move-only; the destructor unmaps it.
class Mapping {
public:
    Mapping() noexcept = default;
    Mapping(int fd, std::size_t length, off_t offset, int prot, const std::string &what);
    Mapping(Mapping &&other) noexcept;
    Mapping &operator=(Mapping &&other) noexcept;
    Mapping(const Mapping &) = delete;
    Mapping &operator=(const Mapping &) = delete;
    ~Mapping();

    /// Private zero-filled memory, not backed by any file.
    static Mapping anonymous(std::size_t length, const std::string &what);
    /// A private copy of `length` bytes of the file at `offset`, read with pread(): what a
    /// reader uses for a file that a stranger could shrink under a mapping. False in *complete
    /// when the file is shorter.
    static Mapping copy_of(int fd, std::size_t length, off_t offset, const std::string &what,
                           bool *complete);

    std::byte *data() const noexcept { return m_addr; }
    std::size_t size() const noexcept { return m_length; }
    /// The file under this mapping shrank; its contents were replaced by zero pages.
    bool lost() const noexcept;

private:
    std::byte *m_addr = nullptr;
    std::size_t m_length = 0;
    int m_guard = -1; // posix/sigbus.hpp: survives a peer's ftruncate()
};

/// The system page size (at least 4096).
std::size_t page_size() noexcept;

} // namespace bips::posix

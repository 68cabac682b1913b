// SPDX-License-Identifier: Apache-2.0
#include "posix/mapping.hpp"

#include "posix/error.hpp"
#include "posix/sigbus.hpp"

#include <sys/mman.h>
#include <unistd.h>

namespace bips::posix {

Mapping::Mapping(int fd, std::size_t length, off_t offset, int prot, const std::string &what)
    : m_length(length) {
    void *p = ::mmap(nullptr, length, prot, MAP_SHARED, fd, offset);
    if (p == MAP_FAILED)
        throw_errno("mmap(" + what + ")");
    m_addr = static_cast<std::byte *>(p);
    m_guard = sigbus_guard(p, length, prot);
}

Mapping Mapping::anonymous(std::size_t length, const std::string &what) {
    Mapping m;
    void *p = ::mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        throw_errno("mmap(anonymous, " + what + ")");
    m.m_addr = static_cast<std::byte *>(p);
    m.m_length = length;
    return m;
}

Mapping Mapping::copy_of(int fd, std::size_t length, off_t offset, const std::string &what,
                         bool *complete) {
    Mapping m = anonymous(length, what);
    std::size_t done = 0;
    while (done < length) {
        auto r = retry_eintr([&] {
            return ::pread(fd, m.m_addr + done, length - done, offset + static_cast<off_t>(done));
        });
        if (r < 0)
            throw_errno("pread(" + what + ")");
        if (r == 0)
            break;
        done += static_cast<std::size_t>(r);
    }
    *complete = done == length;
    return m;
}

Mapping::Mapping(Mapping &&other) noexcept : m_addr(other.m_addr), m_length(other.m_length) {
    other.m_addr = nullptr;
    other.m_length = 0;
    m_guard = other.m_guard;
    other.m_guard = -1;
}

Mapping &Mapping::operator=(Mapping &&other) noexcept {
    if (this != &other) {
        sigbus_unguard(m_guard); // before munmap: see sigbus_unguard()
        if (m_addr)
            ::munmap(m_addr, m_length);
        m_addr = other.m_addr;
        m_length = other.m_length;
        m_guard = other.m_guard;
        other.m_addr = nullptr;
        other.m_length = 0;
        other.m_guard = -1;
    }
    return *this;
}

Mapping::~Mapping() {
    sigbus_unguard(m_guard); // before munmap: see sigbus_unguard()
    if (m_addr)
        ::munmap(m_addr, m_length);
}

bool Mapping::lost() const noexcept { return sigbus_lost(m_guard); }

std::size_t page_size() noexcept {
    static const std::size_t ps = [] {
        long v = ::sysconf(_SC_PAGESIZE);
        return v > 4096 ? static_cast<std::size_t>(v) : std::size_t{4096};
    }();
    return ps;
}

} // namespace bips::posix

// SPDX-License-Identifier: Apache-2.0
// Looking at pools from outside: listing, details, cleanup of what dead processes left.
#include "cuda/driver.hpp"
#include "segment.hpp"

#include <bips/errors.hpp>
#include <bips/pool.hpp>

#include <algorithm>
#include <dirent.h>
#include <memory>
#include <unistd.h>

namespace bips {

namespace {

PoolInfo describe(const detail::Segment &seg) {
    PoolInfo info;
    const detail::Params &p = seg.params();
    const detail::PoolHeader *h = seg.header();
    info.name = seg.name();
    info.producer_alive = h->closed.load(std::memory_order_acquire) == 0 && seg.producer_alive();
    info.closed = h->closed.load(std::memory_order_acquire) != 0;
    info.layout_version = detail::LAYOUT_VERSION;
    info.capacity = p.capacity;
    info.buffer_size = p.buffer_size;
    info.meta_size = p.meta_size;
    info.policy = p.policy;
    info.mode = p.mode;
    info.owner = seg.file_stat().st_uid;
    info.max_consumers = p.max_consumers;
    info.free = seg.count_free();
    info.published = h->published.load(std::memory_order_relaxed);
    const detail::ControlHeader *c = seg.ctl();
    info.dropped = h->dropped.load(std::memory_order_relaxed);
    info.last_publish_ns = h->last_publish_ns.load(std::memory_order_relaxed);
    // A copied value, compared without arithmetic that a hostile value could overflow.
    const std::int64_t now_ns = posix::monotonic_ns();
    if (info.last_publish_ns > 0 && info.last_publish_ns <= now_ns &&
        info.last_publish_ns >= now_ns - 2'000'000'000)
        info.fps = static_cast<double>(h->rate_mfps.load(std::memory_order_relaxed)) / 1000.0;
    info.acquire_waits = h->acquire_waits.load(std::memory_order_relaxed);
    info.acquire_wait_ns = h->acquire_wait_ns.load(std::memory_order_relaxed);
    info.shape.assign(p.shape, p.shape + p.ndim);
    info.dtype = p.dtype;
    info.producer_pid = h->producer_pid;
    info.created_ns = static_cast<std::uint64_t>(h->created_ns);
    info.file_size = p.layout.file_size;
    if (p.device.is_cuda()) {
        info.device = "cuda";
        info.device_uuid = detail::cuda::uuid_text(p.device_uuid);
        info.device_ordinal = p.device.index;
    }
    std::uint64_t attached = c->attached.load(std::memory_order_acquire);
    for (std::uint32_t s = 0; s < p.max_consumers; ++s) {
        bool alive = seg.slot_alive(s);
        if (!alive && !(attached & detail::queued_bit(s)))
            continue;
        SlotInfo si;
        si.slot = s;
        si.alive = alive;
        const detail::SlotDesc *sd = seg.slot(s);
        si.pid = sd->pid.load(std::memory_order_relaxed);
        si.latest = sd->latest.load(std::memory_order_relaxed) != 0;
        si.received = sd->received.load(std::memory_order_relaxed);
        si.dropped = sd->dropped.load(std::memory_order_relaxed);
        si.skipped = sd->skipped.load(std::memory_order_relaxed);
        si.attached_ns = sd->attached_ns.load(std::memory_order_relaxed);
        si.last_seq =
            static_cast<std::int64_t>(sd->last_seq_plus1.load(std::memory_order_relaxed)) - 1;
        si.last_receive_ns = sd->last_receive_ns.load(std::memory_order_relaxed);
        for (std::uint32_t i = 0; i < p.capacity; ++i) {
            std::uint64_t st = seg.state(i).load(std::memory_order_relaxed);
            si.queued += (st & detail::queued_bit(s)) != 0;
            si.held += (st & detail::held_bit(s)) != 0;
        }
        info.consumers += alive;
        info.slots.push_back(si);
    }
    return info;
}

std::shared_ptr<detail::Segment> open_existing(const std::string &name, detail::Access access) {
    detail::OpenStatus status;
    auto seg = detail::Segment::open(name, access, &status);
    if (seg)
        return seg;
    if (status == detail::OpenStatus::not_found)
        throw PoolNotFound("no pool named '" + name + "' (/dev/shm/bips." + name + ")");
    if (status == detail::OpenStatus::initializing)
        throw Error("pool '" + name + "' is still being created");
    throw CorruptPool("pool '" + name + "' was never completed (its creator died)");
}

} // namespace

PoolInfo pool_info(const std::string &name) {
    return describe(*open_existing(name, detail::Access::inspect));
}

std::vector<PoolInfo> list_pools() {
    std::vector<PoolInfo> out;
    std::unique_ptr<DIR, int (*)(DIR *)> dir(::opendir("/dev/shm"), ::closedir);
    if (!dir)
        return out;
    std::vector<std::string> names;
    std::vector<std::string> ctl_names; // control files, by pool name
    const std::string suffix = detail::CTL_SUFFIX;
    while (dirent *e = ::readdir(dir.get())) {
        std::string n = e->d_name;
        if (n.rfind("bips.", 0) != 0)
            continue;
        n = n.substr(5);
        std::vector<std::string> *into = &names;
        if (n.size() > suffix.size() &&
            n.compare(n.size() - suffix.size(), suffix.size(), suffix) == 0) {
            n.resize(n.size() - suffix.size());
            into = &ctl_names;
        }
        try {
            validate_name(n);
        } catch (const InvalidArgument &) {
            continue;
        }
        into->push_back(n);
    }
    // A control file whose pool file is gone (removed by hand, or a crash): `bips clean`
    // removes it.
    std::sort(names.begin(), names.end());
    std::vector<std::string> missed;
    for (const auto &n : ctl_names)
        if (!std::binary_search(names.begin(), names.end(), n)) {
            // The directory scan is no snapshot: a pool created meanwhile may have been missed.
            if (::access(("/dev/shm" + detail::shm_name_for(n)).c_str(), F_OK) == 0) {
                missed.push_back(n);
                continue;
            }
            PoolInfo info;
            info.name = n;
            info.error = "control file without its pool file";
            out.push_back(info);
        }
    names.insert(names.end(), missed.begin(), missed.end());
    for (const auto &n : names) {
        try {
            detail::OpenStatus status;
            auto seg = detail::Segment::open(n, detail::Access::inspect, &status);
            if (seg) {
                out.push_back(describe(*seg));
            } else if (status != detail::OpenStatus::not_found) {
                PoolInfo info;
                info.name = n;
                info.error = status == detail::OpenStatus::initializing
                                 ? "being created"
                                 : "incomplete (creator died)";
                out.push_back(info);
            }
        } catch (const std::exception &e) {
            PoolInfo info;
            info.name = n;
            info.error = e.what();
            out.push_back(info);
        }
    }
    std::sort(out.begin(), out.end(),
              [](const PoolInfo &a, const PoolInfo &b) { return a.name < b.name; });
    return out;
}

unsigned reclaim_dead_consumers(const std::string &name) {
    auto seg = open_existing(name, detail::Access::consumer);
    return seg->sweep_dead(std::chrono::seconds(1));
}

bool remove_stale_pool(const std::string &name) { return detail::remove_if_unused(name); }

} // namespace bips

// SPDX-License-Identifier: Apache-2.0
// What can be read about pools without receiving: producer and consumer stats, PoolInfo and
// SlotInfo (bips list/info/top), and the pool tools (list, info, reclaim, remove).
#include "common.hpp"

#include <pybind11/stl.h>

namespace bipspy {
namespace {

template <class T> std::string stats_repr(const char *name, const py::object &self) {
    std::string s = std::string("<bips.") + name;
    for (auto item : self.attr("_asdict")().cast<py::dict>())
        s += " " + item.first.cast<std::string>() + "=" + py::repr(item.second).cast<std::string>();
    return s + ">";
}

// pybind11 lets Type.__new__(Type) make an instance whose C++ value was never constructed (its
// getters then read uninitialised memory). bips makes these itself, without tp_new.
PyObject *refuse_new(PyTypeObject *type, PyObject *, PyObject *) {
    PyErr_Format(PyExc_TypeError, "cannot create '%s' instances", type->tp_name);
    return nullptr;
}

void made_by_bips_only(py::module_ &m, const char *name) {
    reinterpret_cast<PyTypeObject *>(m.attr(name).ptr())->tp_new = refuse_new;
}

} // namespace

void register_inspect(py::module_ &m) {
    py::class_<bips::ProducerStats>(m, "ProducerStats", "Producer counters (a snapshot).")
        .def_readonly("published", &bips::ProducerStats::published)
        .def_readonly("dropped", &bips::ProducerStats::dropped)
        .def_readonly("capacity", &bips::ProducerStats::capacity)
        .def_readonly("free", &bips::ProducerStats::free)
        .def_readonly("in_flight", &bips::ProducerStats::in_flight)
        .def_readonly("consumers", &bips::ProducerStats::consumers)
        .def_readonly("acquire_waits", &bips::ProducerStats::acquire_waits)
        .def_readonly("acquire_wait_ns", &bips::ProducerStats::acquire_wait_ns)
        .def_readonly("spins", &bips::ProducerStats::spins)
        .def_readonly("sleeps", &bips::ProducerStats::sleeps)
        .def("_asdict",
             [](const bips::ProducerStats &s) {
                 py::dict d;
                 d["published"] = s.published;
                 d["dropped"] = s.dropped;
                 d["capacity"] = s.capacity;
                 d["free"] = s.free;
                 d["in_flight"] = s.in_flight;
                 d["consumers"] = s.consumers;
                 d["acquire_waits"] = s.acquire_waits;
                 d["acquire_wait_ns"] = s.acquire_wait_ns;
                 d["spins"] = s.spins;
                 d["sleeps"] = s.sleeps;
                 return d;
             })
        .def("__repr__", [](const py::object &self) {
            return stats_repr<bips::ProducerStats>("ProducerStats", self);
        });

    py::class_<bips::ConsumerStats>(m, "ConsumerStats", "Consumer counters (a snapshot).")
        .def_readonly("received", &bips::ConsumerStats::received)
        .def_readonly("dropped", &bips::ConsumerStats::dropped)
        .def_readonly("skipped", &bips::ConsumerStats::skipped)
        .def_readonly("queued", &bips::ConsumerStats::queued)
        .def_readonly("held", &bips::ConsumerStats::held)
        .def_readonly("slot", &bips::ConsumerStats::slot)
        .def_readonly("reconnects", &bips::ConsumerStats::reconnects)
        .def_readonly("spins", &bips::ConsumerStats::spins)
        .def_readonly("sleeps", &bips::ConsumerStats::sleeps)
        .def("_asdict",
             [](const bips::ConsumerStats &s) {
                 py::dict d;
                 d["received"] = s.received;
                 d["dropped"] = s.dropped;
                 d["skipped"] = s.skipped;
                 d["queued"] = s.queued;
                 d["held"] = s.held;
                 d["slot"] = s.slot;
                 d["reconnects"] = s.reconnects;
                 d["spins"] = s.spins;
                 d["sleeps"] = s.sleeps;
                 return d;
             })
        .def("__repr__", [](const py::object &self) {
            return stats_repr<bips::ConsumerStats>("ConsumerStats", self);
        });

    py::class_<bips::SlotInfo>(m, "SlotInfo", "One consumer slot of a pool.")
        .def_readonly("slot", &bips::SlotInfo::slot)
        .def_readonly("alive", &bips::SlotInfo::alive)
        .def_readonly("pid", &bips::SlotInfo::pid)
        .def_readonly("latest", &bips::SlotInfo::latest)
        .def_readonly("received", &bips::SlotInfo::received)
        .def_readonly("dropped", &bips::SlotInfo::dropped)
        .def_readonly("skipped", &bips::SlotInfo::skipped)
        .def_readonly("queued", &bips::SlotInfo::queued)
        .def_readonly("held", &bips::SlotInfo::held)
        .def_readonly("attached_ns", &bips::SlotInfo::attached_ns,
                      "CLOCK_MONOTONIC ns when the consumer attached.")
        .def_readonly("last_seq", &bips::SlotInfo::last_seq,
                      "seq of the last frame received; -1 if none yet.")
        .def_readonly("last_receive_ns", &bips::SlotInfo::last_receive_ns,
                      "CLOCK_MONOTONIC ns of the last receive; 0 if never.")
        .def("__repr__", [](const bips::SlotInfo &s) {
            return "<bips.SlotInfo slot=" + std::to_string(s.slot) +
                   (s.alive ? " alive" : " dead") + " received=" + std::to_string(s.received) +
                   " queued=" + std::to_string(s.queued) + " held=" + std::to_string(s.held) + ">";
        });

    py::class_<bips::PoolInfo>(m, "PoolInfo", "A pool seen from outside (no attachment).")
        .def_readonly("name", &bips::PoolInfo::name)
        .def_readonly("producer_alive", &bips::PoolInfo::producer_alive)
        .def_readonly("closed", &bips::PoolInfo::closed)
        .def_readonly("capacity", &bips::PoolInfo::capacity)
        .def_readonly("buffer_size", &bips::PoolInfo::buffer_size)
        .def_readonly("meta_size", &bips::PoolInfo::meta_size)
        .def_property_readonly("policy",
                               [](const bips::PoolInfo &i) { return policy_name(i.policy); })
        .def_readonly("mode", &bips::PoolInfo::mode)
        .def_readonly("owner", &bips::PoolInfo::owner)
        .def_readonly("max_consumers", &bips::PoolInfo::max_consumers)
        .def_readonly("consumers", &bips::PoolInfo::consumers)
        .def_readonly("free", &bips::PoolInfo::free)
        .def_readonly("published", &bips::PoolInfo::published)
        .def_readonly("dropped", &bips::PoolInfo::dropped)
        .def_readonly("last_publish_ns", &bips::PoolInfo::last_publish_ns,
                      "CLOCK_MONOTONIC ns of the last publish; 0 if never.")
        .def_readonly("fps", &bips::PoolInfo::fps,
                      "Frames/s over the last full second; 0.0 when idle for over 2 s.")
        .def_readonly("acquire_waits", &bips::PoolInfo::acquire_waits,
                      "Producer acquire calls that found no free buffer and waited.")
        .def_readonly("acquire_wait_ns", &bips::PoolInfo::acquire_wait_ns,
                      "Total ns spent in those waits.")
        .def_property_readonly(
            "shape",
            [](const bips::PoolInfo &i) { return shape_tuple(i.shape.data(), i.shape.size()); })
        .def_property_readonly("dtype",
                               [](const bips::PoolInfo &i) -> py::object {
                                   return i.error.empty() ? py::object(numpy_dtype(i.dtype))
                                                          : py::none();
                               })
        .def_readonly("producer_pid", &bips::PoolInfo::producer_pid)
        .def_readonly("created_ns", &bips::PoolInfo::created_ns)
        .def_readonly("file_size", &bips::PoolInfo::file_size)
        .def_readonly("device", &bips::PoolInfo::device, "\"cpu\" or \"cuda\".")
        .def_readonly("device_uuid", &bips::PoolInfo::device_uuid,
                      "GPU pools: the GPU's UUID (\"GPU-...\"), the same in every process.")
        .def_readonly("device_ordinal", &bips::PoolInfo::device_ordinal,
                      "GPU pools: the producer's ordinal of the GPU.")
        .def_readonly("slots", &bips::PoolInfo::slots)
        .def_property_readonly("error",
                               [](const bips::PoolInfo &i) -> py::object {
                                   return i.error.empty() ? py::object(py::none())
                                                          : py::object(py::str(i.error));
                               })
        .def("__repr__", [](const bips::PoolInfo &i) {
            if (!i.error.empty())
                return "<bips.PoolInfo " + i.name + " error=" + i.error + ">";
            return "<bips.PoolInfo " + i.name +
                   " producer=" + (i.producer_alive ? "alive" : "gone") +
                   " consumers=" + std::to_string(i.consumers) +
                   " capacity=" + std::to_string(i.capacity) +
                   " buffer_size=" + std::to_string(i.buffer_size) + ">";
        });

    for (const char *name : {"ProducerStats", "ConsumerStats", "SlotInfo", "PoolInfo"})
        made_by_bips_only(m, name);

    m.def("list_pools", &bips::list_pools,
          "Every bips pool under /dev/shm, read without attaching.");
    m.def("pool_info", &bips::pool_info, py::arg("name"),
          "One pool's details with a row per consumer slot.");
    m.def("reclaim_dead_consumers", &bips::reclaim_dead_consumers, py::arg("name"),
          "Gives back what dead consumers of pool `name` held; returns the slots reclaimed.");
    m.def("remove_stale_pool", &bips::remove_stale_pool, py::arg("name"),
          "Removes pool `name` if no producer and no consumer is alive; True if removed.");
    m.def("validate_name", &bips::validate_name, py::arg("name"),
          "Raises InvalidArgument for a bad pool name.");
    m.def("cuda_available", &bips::cuda_available,
          "True if GPU pools can be used here (the CUDA driver loads and has a device that shares "
          "memory as file descriptors).");
    m.def("cuda_unavailable_reason", &bips::cuda_unavailable_reason,
          "Why cuda_available() is False (\"\" when it is True).");
}

} // namespace bipspy

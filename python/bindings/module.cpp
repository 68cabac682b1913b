// SPDX-License-Identifier: Apache-2.0
// The bips._core module: registers each concept's bindings. Semantics live in the C++ core.
#include "common.hpp"

PYBIND11_MODULE(_core, m) {
    m.doc() = "bips compiled core: shared-memory frame pools (use the `bips` package).";
    py::detail::npy_api::get(); // import numpy now, not in the middle of the first frame
    m.attr("__version__") = BIPS_VERSION_STRING;
    m.attr("LAYOUT_VERSION") = bips::LAYOUT_VERSION;
    m.attr("MAX_CONSUMERS") = bips::MAX_CONSUMERS;
    m.attr("MAX_CAPACITY") = bips::MAX_CAPACITY;
    m.attr("MAX_DIMS") = bips::MAX_DIMS;
    bipspy::register_errors(m);
    bipspy::register_inspect(m);
    bipspy::register_frame(m);
    bipspy::register_buffer(m);
    bipspy::register_producer(m);
    bipspy::register_consumer(m);
    bipspy::register_video(m);
    bipspy::install_interrupt_check();
}

// SPDX-License-Identifier: Apache-2.0
// The video convention's format table (bips/video.hpp) for bips.video, which builds its plane
// views from it: one table for C++ and Python.
#include "common.hpp"

#include <bips/video.hpp>

#include <pybind11/stl.h>

#include <cstdint>
#include <string>
#include <tuple>
#include <vector>

namespace bipspy {
namespace {

using PlaneRow = std::tuple<std::uint32_t, std::uint32_t, std::uint32_t, std::uint32_t>;
using FormatRow = std::tuple<std::string, std::vector<PlaneRow>, bool, bool>;

std::vector<FormatRow> video_formats() {
    std::vector<FormatRow> out;
    for (const bips::video::FormatSpec &f : bips::video::FORMATS) {
        std::vector<PlaneRow> planes;
        for (std::uint32_t p = 0; p < f.n_planes; ++p) {
            const bips::video::PlaneSpec &s = f.planes[p];
            planes.emplace_back(s.row_div, s.col_div, s.channels, s.sample_bytes);
        }
        out.emplace_back(f.name, std::move(planes), f.image, f.big_endian);
    }
    return out;
}

} // namespace

void register_video(py::module_ &m) {
    m.def("video_formats", &video_formats,
          "The video convention's formats: (name, planes, image, big_endian) each, a plane being "
          "(row divisor, column divisor, channels, bytes per sample).");
}

} // namespace bipspy

// SPDX-License-Identifier: Apache-2.0
// The GStreamer plugin "bips": bipssink and bipssrc.

#include "bipssink.hpp"
#include "bipssrc.hpp"

#include <gst/gst.h>

// GST_PLUGIN_DEFINE names the package through this macro (autotools' config.h defines it there).
#define PACKAGE "bips"

static gboolean plugin_init(GstPlugin *plugin) {
    return gst_element_register(plugin, "bipssink", GST_RANK_NONE, GST_TYPE_BIPS_SINK) &&
           gst_element_register(plugin, "bipssrc", GST_RANK_NONE, GST_TYPE_BIPS_SRC);
}

GST_PLUGIN_DEFINE(GST_VERSION_MAJOR, GST_VERSION_MINOR, bips,
                  "Zero-copy video between processes through bips shared-memory pools", plugin_init,
                  BIPS_GST_VERSION, "Apache 2.0", "bips", "https://pypi.org/project/bips/")

// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <gst/base/gstbasesink.h>

G_BEGIN_DECLS

/// bipssink: publishes raw video frames into a bips pool, zero-copy when upstream writes into
/// the buffers it proposes.
#define GST_TYPE_BIPS_SINK (gst_bips_sink_get_type())
G_DECLARE_FINAL_TYPE(GstBipsSink, gst_bips_sink, GST, BIPS_SINK, GstBaseSink)

#define GST_TYPE_BIPS_SINK_POLICY (gst_bips_sink_policy_get_type())
GType gst_bips_sink_policy_get_type(void);

G_END_DECLS

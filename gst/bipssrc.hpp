// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <gst/base/gstpushsrc.h>

G_BEGIN_DECLS

/// bipssrc: a live source that pushes the frames of a bips pool, wrapping the shared memory.
#define GST_TYPE_BIPS_SRC (gst_bips_src_get_type())
G_DECLARE_FINAL_TYPE(GstBipsSrc, gst_bips_src, GST, BIPS_SRC, GstPushSrc)

#define GST_TYPE_BIPS_SRC_TIMESTAMP_MODE (gst_bips_src_timestamp_mode_get_type())
GType gst_bips_src_timestamp_mode_get_type(void);

G_END_DECLS

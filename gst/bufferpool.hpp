// SPDX-License-Identifier: Apache-2.0
#pragma once

// GstBipsBufferPool: the GstBufferPool bipssink proposes upstream, whose every buffer wraps one
// freshly acquired bips buffer. It never recycles GstBuffers: a released GstBuffer is freed, and
// with it the bips buffer goes back (unless it was published), so no bips buffer is ever handed
// out twice.

#include "producer_link.hpp"

#include <gst/gst.h>

#include <memory>

G_BEGIN_DECLS

#define GST_TYPE_BIPS_BUFFER_POOL (gst_bips_buffer_pool_get_type())
G_DECLARE_FINAL_TYPE(GstBipsBufferPool, gst_bips_buffer_pool, GST, BIPS_BUFFER_POOL, GstBufferPool)

G_END_DECLS

/// A pool for upstream whose buffers are bips buffers of `link`'s producer.
GstBufferPool *gst_bips_buffer_pool_new(std::shared_ptr<bips::gst::ProducerLink> link);

// SPDX-License-Identifier: Apache-2.0
// Looping playback through bipssink: run `videotestsrc ! CAPS ! bipssink pool=NAME`, end it
// with EOS, then do a flushing seek back to the start and check that frames flow again, into a
// new pool, still on the zero-copy path. (gst-launch-1.0 cannot seek, hence this driver.)
//
//   gst_loop_after_eos NAME CAPS   prints "first=N published=N zero-copy=N copies=N" once
//                                  the replay has published 20 frames, keeps running until a
//                                  line (or end of input) on stdin, then exits 0; on failure
//                                  exits 1 with a message on stderr

#include <gst/gst.h>

#include <stdio.h>

static guint64 counter(GstElement *sink, const char *name) {
    guint64 v = 0;
    g_object_get(sink, name, &v, NULL);
    return v;
}

// Waits up to `timeout` for a message of `types` (an error ends the wait as a failure).
static gboolean wait_for(GstElement *pipeline, GstMessageType types, GstClockTime timeout) {
    GstBus *bus = gst_element_get_bus(pipeline);
    GstMessage *msg =
        gst_bus_timed_pop_filtered(bus, timeout, (GstMessageType)(types | GST_MESSAGE_ERROR));
    gboolean ok = msg && GST_MESSAGE_TYPE(msg) != GST_MESSAGE_ERROR;
    if (msg && !ok) {
        GError *err = NULL;
        gchar *debug = NULL;
        gst_message_parse_error(msg, &err, &debug);
        fprintf(stderr, "error: %s (%s)\n", err->message, debug ? debug : "");
        g_clear_error(&err);
        g_free(debug);
    }
    if (msg)
        gst_message_unref(msg);
    gst_object_unref(bus);
    return ok;
}

// Polls the sink's published counter until it reaches `n` (10 s at most). Each pool holds its
// first frame until a consumer is attached (wait-for-consumers=1), so the test's consumer sees
// both passes however slowly it attaches.
static gboolean wait_published(GstElement *sink, guint64 n) {
    for (int i = 0; i < 1000 && counter(sink, "published") < n; ++i)
        g_usleep(10000);
    return counter(sink, "published") >= n;
}

int main(int argc, char **argv) {
    gst_init(&argc, &argv);
    if (argc != 3) {
        fprintf(stderr, "usage: %s POOL CAPS\n", argv[0]);
        return 2;
    }
    const guint64 frames = 20;
    gchar *desc = g_strdup_printf(
        "videotestsrc ! %s ! bipssink name=sink pool=%s capacity=4 policy=drop-oldest "
        "wait-for-consumers=1 sync=false",
        argv[2], argv[1]);
    GError *err = NULL;
    GstElement *pipeline = gst_parse_launch(desc, &err);
    g_free(desc);
    if (!pipeline) {
        fprintf(stderr, "cannot build the pipeline: %s\n", err->message);
        return 1;
    }
    GstElement *sink = gst_bin_get_by_name(GST_BIN(pipeline), "sink");
    int rc = 1;
    gst_element_set_state(pipeline, GST_STATE_PLAYING);
    if (!wait_published(sink, frames)) {
        fprintf(stderr, "first pass: only %" G_GUINT64_FORMAT " frames\n",
                counter(sink, "published"));
        goto out;
    }
    // The end of the first pass: EOS closes the pool.
    gst_element_send_event(pipeline, gst_event_new_eos());
    if (!wait_for(pipeline, GST_MESSAGE_EOS, 10 * GST_SECOND)) {
        fprintf(stderr, "no EOS from the first pass\n");
        goto out;
    }
    const guint64 first = counter(sink, "published");
    // Replay from the start: upstream keeps the buffer pool the sink proposed.
    if (!gst_element_seek_simple(pipeline, GST_FORMAT_TIME, GST_SEEK_FLAG_FLUSH, 0)) {
        fprintf(stderr, "the seek failed\n");
        goto out;
    }
    if (!wait_published(sink, first + frames)) {
        fprintf(stderr,
                "after the seek: %" G_GUINT64_FORMAT " frames, %" G_GUINT64_FORMAT " before it\n",
                counter(sink, "published"), first);
        goto out;
    }
    printf("first=%" G_GUINT64_FORMAT " published=%" G_GUINT64_FORMAT
           " zero-copy=%" G_GUINT64_FORMAT " copies=%" G_GUINT64_FORMAT "\n",
           first, counter(sink, "published"), counter(sink, "zero-copy"), counter(sink, "copies"));
    fflush(stdout);
    // Keep the new pool alive until told (a line, or end of input): a consumer that follows it
    // with reconnect=True must find it.
    char line[16];
    if (!fgets(line, sizeof line, stdin)) {
        // end of input: stop as well
    }
    rc = 0;
out:
    gst_element_set_state(pipeline, GST_STATE_NULL);
    gst_object_unref(sink);
    gst_object_unref(pipeline);
    return rc;
}

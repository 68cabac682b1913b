/* SPDX-License-Identifier: Apache-2.0 */
/* A producer in plain C99, through the C API (bips.h): creates pool NAME with frames of shape
 * (H, W, 3) uint8 and publishes N of them, then closes. Frame i holds byte (i + y + x + c) % 256
 * at pixel (y, x) channel c, is stamped START + i * 1/30 s (CLOCK_MONOTONIC, START taken once)
 * and carries the metadata "frame i".
 *
 *   c_producer NAME [N=10] [H=48] [W=64] [WAIT_S=10]
 *
 * It waits up to WAIT_S seconds for a first consumer, so that no frame is published to nobody. */
#define _POSIX_C_SOURCE 200809L

#include <bips/bips.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define FRAME_NS 33333333 /* 1/30 s */

static int64_t monotonic_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Prints what failed, with the library's code and message. */
static int report(const char *what, bips_status status) {
    fprintf(stderr, "error: %s: %s: %s\n", what, bips_status_name(status),
            bips_last_error_message());
    return 1;
}

/* Waits up to wait_s seconds for the first consumer; 0 once there is one. */
static int wait_for_consumer(bips_producer *producer, long wait_s) {
    const int64_t deadline = monotonic_ns() + (int64_t)wait_s * 1000000000;
    const struct timespec pause = {0, 5000000};
    bips_producer_stats stats;
    bips_status status;
    while ((status = bips_producer_get_stats(producer, &stats)) == BIPS_OK &&
           stats.consumers == 0) {
        if (monotonic_ns() >= deadline) {
            fprintf(stderr, "no consumer attached within %ld s\n", wait_s);
            return 1;
        }
        nanosleep(&pause, NULL);
    }
    return status == BIPS_OK ? 0 : report("bips_producer_get_stats", status);
}

static int publish(bips_producer *producer, long n, long h, long w) {
    const int64_t start = monotonic_ns();
    long i;
    for (i = 0; i < n; ++i) {
        bips_buffer *buffer = NULL;
        unsigned char *px;
        char meta[32];
        long y, x, c;
        bips_status status = bips_producer_acquire(producer, 10 * (int64_t)1000000000, &buffer);
        if (status != BIPS_OK)
            return report("bips_producer_acquire", status);
        px = (unsigned char *)bips_buffer_data(buffer);
        for (y = 0; y < h; ++y)
            for (x = 0; x < w; ++x)
                for (c = 0; c < 3; ++c)
                    *px++ = (unsigned char)((i + y + x + c) % 256);
        snprintf(meta, sizeof meta, "frame %ld", i);
        /* publish always takes the buffer, published or given back */
        status = bips_producer_publish(producer, buffer, start + i * (int64_t)FRAME_NS, meta,
                                       strlen(meta));
        if (status != BIPS_OK)
            return report("bips_producer_publish", status);
    }
    return 0;
}

int main(int argc, char **argv) {
    bips_producer_options options;
    bips_producer *producer = NULL;
    bips_status status;
    long n, h, w, wait_s;
    int rc;

    if (argc < 2) {
        fprintf(stderr, "usage: %s NAME [N] [H] [W] [WAIT_S]\n", argv[0]);
        return 2;
    }
    n = argc > 2 ? atol(argv[2]) : 10;
    h = argc > 3 ? atol(argv[3]) : 48;
    w = argc > 4 ? atol(argv[4]) : 64;
    wait_s = argc > 5 ? atol(argv[5]) : 10;

    bips_producer_options_init(&options);
    options.capacity = 4;
    options.ndim = 3;
    options.shape[0] = h;
    options.shape[1] = w;
    options.shape[2] = 3;
    options.dtype = BIPS_DTYPE_UINT8;
    options.meta_size = 32;
    status = bips_producer_create(argv[1], &options, &producer);
    if (status != BIPS_OK)
        return report("bips_producer_create", status);
    printf("bips %s: pool '%s' ready\n", bips_version(), argv[1]);
    fflush(stdout);

    rc = wait_for_consumer(producer, wait_s);
    if (rc == 0)
        rc = publish(producer, n, h, w);
    /* Consumers drain what is queued, then see the end of the stream. */
    bips_producer_free(producer);
    if (rc == 0)
        printf("published %ld frames\n", n);
    return rc;
}

/* SPDX-License-Identifier: Apache-2.0 */
/* The C API used from plain C99 (built with -std=c99 -pedantic-errors): a producer and a consumer
 * exchange frames with shape, dtype, timestamps and metadata; test_c_api.cpp runs it. */
#include <bips/bips.h>

#include <stdio.h>
#include <string.h>

#include "c_api_c99.h"

#define EXPECT(cond)                                                                               \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            snprintf(why, why_len, "%s:%d: %s (last error: %s)", __FILE__, __LINE__, #cond,        \
                     bips_last_error_message());                                                   \
            goto done;                                                                             \
        }                                                                                          \
    } while (0)

int bips_c99_round_trip(const char *name, char *why, size_t why_len) {
    bips_producer *prod = NULL;
    bips_consumer *cons = NULL;
    bips_buffer *buf = NULL;
    bips_frame *frame = NULL;
    bips_pool_list *list = NULL;
    bips_producer_options po;
    bips_producer_stats ps;
    bips_consumer_stats cs;
    bips_pool_info info;
    const int64_t shape[2] = {2, 3};
    int ok = 0;
    uint64_t k;

    why[0] = '\0';
    bips_producer_options_init(&po);
    po.capacity = 4;
    po.ndim = 2;
    po.shape[0] = shape[0];
    po.shape[1] = shape[1];
    po.dtype = BIPS_DTYPE_FLOAT32;
    po.meta_size = 16;
    EXPECT(bips_producer_create(name, &po, &prod) == BIPS_OK);
    EXPECT(bips_consumer_open(name, NULL, &cons) == BIPS_OK);

    for (k = 0; k < 3; ++k) {
        char meta[16];
        float *px;
        int i;
        EXPECT(bips_producer_acquire(prod, 1000000000, &buf) == BIPS_OK);
        EXPECT(bips_buffer_nbytes(buf) == 24);
        EXPECT(bips_buffer_ndim(buf) == 2 && bips_buffer_shape(buf)[1] == 3);
        EXPECT(bips_buffer_dtype(buf) == BIPS_DTYPE_FLOAT32);
        px = (float *)bips_buffer_data(buf);
        for (i = 0; i < 6; ++i)
            px[i] = (float)k + 0.5f * (float)i;
        snprintf(meta, sizeof meta, "c99 #%u", (unsigned)k);
        EXPECT(bips_producer_publish(prod, buf, (int64_t)(1000 + k), meta, strlen(meta)) ==
               BIPS_OK);
        buf = NULL; /* publish consumed it */
    }
    EXPECT(bips_producer_get_stats(prod, &ps) == BIPS_OK && ps.published == 3);

    for (k = 0; k < 3; ++k) {
        char meta[16];
        const float *px;
        int i;
        EXPECT(bips_consumer_receive(cons, 1000000000, &frame) == BIPS_OK);
        EXPECT(bips_frame_seq(frame) == k);
        EXPECT(bips_frame_timestamp_ns(frame) == (int64_t)(1000 + k));
        EXPECT(bips_frame_ndim(frame) == 2);
        EXPECT(bips_frame_shape(frame)[0] == 2 && bips_frame_shape(frame)[1] == 3);
        EXPECT(bips_frame_dtype(frame) == BIPS_DTYPE_FLOAT32);
        EXPECT(strcmp(bips_dtype_name(bips_frame_dtype(frame)), "float32") == 0);
        EXPECT(bips_frame_nbytes(frame) == 24);
        px = (const float *)bips_frame_data(frame);
        for (i = 0; i < 6; ++i)
            EXPECT(px[i] == (float)k + 0.5f * (float)i);
        snprintf(meta, sizeof meta, "c99 #%u", (unsigned)k);
        EXPECT(bips_frame_meta_size(frame) == strlen(meta));
        EXPECT(memcmp(bips_frame_meta(frame), meta, strlen(meta)) == 0);
        EXPECT(bips_frame_intact(frame) == 1);
        bips_frame_release(frame);
        frame = NULL;
    }
    EXPECT(bips_consumer_try_receive(cons, &frame) == BIPS_ERR_TIMEOUT && frame == NULL);
    EXPECT(bips_consumer_get_stats(cons, &cs) == BIPS_OK && cs.received == 3);

    EXPECT(bips_get_pool_info(name, &list) == BIPS_OK);
    EXPECT(bips_pool_list_size(list) == 1);
    EXPECT(bips_pool_list_get(list, 0, &info) == BIPS_OK);
    EXPECT(strcmp(info.name, name) == 0 && info.error[0] == '\0');
    EXPECT(info.producer_alive && info.capacity == 4 && info.published == 3);
    EXPECT(info.ndim == 2 && info.shape[1] == 3 && info.dtype == BIPS_DTYPE_FLOAT32);

    EXPECT(bips_producer_close(prod) == BIPS_OK);
    EXPECT(bips_consumer_receive(cons, 1000000000, &frame) == BIPS_ERR_PRODUCER_GONE);
    EXPECT(frame == NULL);
    ok = 1;
done:
    bips_pool_list_free(list);
    bips_frame_release(frame);
    bips_buffer_discard(buf);
    bips_consumer_free(cons);
    bips_producer_free(prod);
    return ok;
}

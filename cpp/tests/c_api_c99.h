/* SPDX-License-Identifier: Apache-2.0 */
/* The C99 half of the C API tests (c_api_c99.c), called from test_c_api.cpp. */
#ifndef BIPS_TESTS_C_API_C99_H
#define BIPS_TESTS_C_API_C99_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Runs a round trip through pool `name` in C; 1 if it passed, else 0 with the reason in `why`.
int bips_c99_round_trip(const char *name, char *why, size_t why_len);

#ifdef __cplusplus
}
#endif

#endif

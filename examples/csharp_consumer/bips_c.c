/* SPDX-License-Identifier: Apache-2.0 */
/* libbips_c.so is the C API (bips.h) of the static bips::bips as a shared library, for P/Invoke.
 * Its functions come from the archive, linked whole (see CMakeLists.txt); this file only makes
 * sure the header compiles as C where the library is built. */
#include <bips/bips.h>

/*
 * fuzz_normalize: the properties of http_path_normalize that fuzz_path and
 * fuzz_http_request both check on every target they see.
 */
#ifndef PF_FUZZ_NORMALIZE_H
#define PF_FUZZ_NORMALIZE_H

#include <stdbool.h>
#include <stddef.h>

/*
 * Runs http_path_normalize(target, len) into an exactly outlen-byte heap
 * buffer (so that ASan sees a write past it) and checks its promises:
 * the result is the one of an independent, simpler implementation of the
 * header's contract (same return code, path and trailing_slash); and on
 * success it is a clean relative path inside the root (no leading '/', no
 * "//", no "." or ".." segment, no trailing '/', at most HTTP_PATH_MAX and
 * outlen - 1 bytes), which normalizes to itself again. Copies the result
 * to out (outsize bytes) if out is not NULL. Returns the return code.
 */
int fuzz_check_normalize(const char *target, size_t len, size_t outlen, char *out,
                         size_t outsize, bool *trailing_slash);

#endif

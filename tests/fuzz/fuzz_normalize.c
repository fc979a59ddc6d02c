/*
 * fuzz_normalize: checks one http_path_normalize call against the header's
 * contract. The reference normalizer below is written from http_path.h,
 * not from http_path.c: it collects a whole segment before deciding what it is, and
 * keeps the output as a plain string, so that a slip in the real one-pass
 * code shows as a difference.
 */
#define _GNU_SOURCE     /* memrchr */
#include "fuzz_normalize.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../daemon/http_path.h"
#include "fuzz_util.h"

static int ref_hex(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* "", "." or "..": a segment that names no file of its own. */
static bool ref_dot_name(const char *seg, size_t n)
{
    return n == 0 || (n == 1 && seg[0] == '.') || (n == 2 && seg[0] == '.' && seg[1] == '.');
}

/*
 * http_path.h's contract, spelled out: out holds HTTP_PATH_MAX + 1 bytes.
 * The length limit applies to every moment of the walk: a segment that does
 * not fit is an error even if a later ".." would remove it.
 */
static int ref_normalize(const char *t, size_t len, size_t outlen, char *out, bool *ts)
{
    size_t limit = outlen - 1 < HTTP_PATH_MAX ? outlen - 1 : HTTP_PATH_MAX;
    char seg[HTTP_PATH_MAX + 2];
    size_t olen = 0, slen = 0, i = 1;

    if (len == 0 || t[0] != '/')
        return -EINVAL;
    for (;;) {
        bool end = i == len || t[i] == '?' || t[i] == '#';
        bool dir;

        if (!end) {
            unsigned char c = (unsigned char)t[i++];

            if (c == '%') {
                int hi = i < len ? ref_hex((unsigned char)t[i]) : -1;
                int lo = i + 1 < len ? ref_hex((unsigned char)t[i + 1]) : -1;

                if (hi < 0 || lo < 0)
                    return -EINVAL;
                i += 2;
                c = (unsigned char)(hi * 16 + lo);
                if (c == 0)
                    return -EINVAL;
            } else if (c < 0x20 || c == 0x7f) {
                return -EINVAL;
            }
            if (c != '/') {
                seg[slen++] = (char)c;
                /* A non-dot segment can grow only until it stops fitting. */
                if (!ref_dot_name(seg, slen) && olen + (olen > 0) + slen > limit)
                    return -ENAMETOOLONG;
                continue;
            }
        }
        dir = ref_dot_name(seg, slen);
        if (slen == 2 && dir) {
            char *slash;

            if (olen == 0)
                return -EINVAL;
            slash = memrchr(out, '/', olen);
            olen = slash != NULL ? (size_t)(slash - out) : 0;
        } else if (!dir) {
            if (olen > 0)
                out[olen++] = '/';
            memcpy(out + olen, seg, slen);
            olen += slen;
        }
        if (end) {
            out[olen] = '\0';
            *ts = dir;
            return 0;
        }
        slen = 0;
    }
}

/* The promises of a successful result, whoever produced it. */
static void check_clean_path(const char *target, size_t len, const char *out, size_t limit,
                             bool ts)
{
    const char *p = out;
    size_t n = strlen(out);

    FUZZ_CHECK(n <= limit, "\"%.*s\": %zu bytes, over the limit %zu", (int)len, target, n, limit);
    FUZZ_CHECK(out[0] != '/', "\"%.*s\" -> \"%s\": absolute", (int)len, target, out);
    FUZZ_CHECK(strcmp(out, "..") != 0 && strncmp(out, "../", 3) != 0 &&
               strstr(out, "/../") == NULL,
               "\"%.*s\" -> \"%s\": climbs", (int)len, target, out);
    FUZZ_CHECK(n == 0 || out[n - 1] != '/', "\"%.*s\" -> \"%s\": trailing '/'", (int)len,
               target, out);
    FUZZ_CHECK(n > 0 || ts, "\"%.*s\" -> root without trailing_slash", (int)len, target);
    while (n > 0) {
        size_t seg = strcspn(p, "/");

        FUZZ_CHECK(!ref_dot_name(p, seg), "\"%.*s\" -> \"%s\": empty, . or .. segment",
                   (int)len, target, out);
        if (p[seg] == '\0')
            break;
        p += seg + 1;
    }
}

/* "/" + out with '%', '?', '#' and control bytes escaped, + "/" if ts:
 * a target that must normalize to out again. */
static char *renormalize_target(const char *out, bool ts, size_t *len)
{
    size_t n = strlen(out), at = 0;
    char *t = malloc(3 * n + 3);

    FUZZ_CHECK(t != NULL, "out of memory");
    t[at++] = '/';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)out[i];

        if (c == '%' || c == '?' || c == '#' || c < 0x20 || c == 0x7f)
            at += (size_t)sprintf(t + at, "%%%02X", c);
        else
            t[at++] = (char)c;
    }
    if (ts && n > 0)
        t[at++] = '/';
    *len = at;
    return t;
}

int fuzz_check_normalize(const char *target, size_t len, size_t outlen, char *out,
                         size_t outsize, bool *trailing_slash)
{
    char *got = malloc(outlen), want[HTTP_PATH_MAX + 1], again[HTTP_PATH_MAX + 1];
    size_t limit = outlen - 1 < HTTP_PATH_MAX ? outlen - 1 : HTTP_PATH_MAX, tlen;
    bool ts = false, want_ts = false, again_ts = false;
    int rc, want_rc, again_rc;
    char *t;

    FUZZ_CHECK(got != NULL, "out of memory");
    rc = http_path_normalize(target, len, got, outlen, &ts);
    want_rc = ref_normalize(target, len, outlen, want, &want_ts);
    FUZZ_CHECK(rc == want_rc, "\"%.*s\" (outlen %zu): returned %d, the contract says %d",
               (int)len, target, outlen, rc, want_rc);
    if (rc == 0) {
        FUZZ_CHECK(memchr(got, '\0', limit + 1) != NULL, "\"%.*s\": result not terminated",
                   (int)len, target);
        FUZZ_CHECK(strcmp(got, want) == 0 && ts == want_ts,
                   "\"%.*s\" (outlen %zu): gave \"%s\" (slash %d), the contract says \"%s\" (%d)",
                   (int)len, target, outlen, got, ts, want, want_ts);
        check_clean_path(target, len, got, limit, ts);
        /* Normalizing is idempotent: the clean path names itself. */
        t = renormalize_target(got, ts, &tlen);
        again_rc = http_path_normalize(t, tlen, again, sizeof(again), &again_ts);
        FUZZ_CHECK(again_rc == 0 && strcmp(again, got) == 0 && again_ts == ts,
                   "\"%.*s\" -> \"%s\" (slash %d), but \"%.*s\" -> %d \"%s\" (slash %d)",
                   (int)len, target, got, ts, (int)tlen, t, again_rc,
                   again_rc == 0 ? again : "", again_ts);
        free(t);
        if (out != NULL)
            snprintf(out, outsize, "%s", got);
        if (trailing_slash != NULL)
            *trailing_slash = ts;
    }
    free(got);
    return rc;
}

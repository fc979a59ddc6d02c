/*
 * fuzz_http_request: the input is what a client sends on one connection.
 * It is cut into request heads by http_head_end (http.c reads a head with
 * read_until_match(http_head_end, HTTP_HEAD_MAX)), checking that a search
 * resumed from where an earlier one stopped finds the same end as one from
 * the start (the bytes of a head come in pieces). Each head is parsed by
 * http_head_parse, as daemon/http.c's head_read_cb does, and the target of
 * each request that http_serve would serve goes through http_path_normalize,
 * checked by fuzz_check_normalize. Bodies are skipped as conn_next_request
 * discards them, and a response that closes the connection ends the input.
 *
 * What http_serve decides from a parsed head (refuse, redirect, serve) is
 * static in http.c, so the part of it that decides what is served is copied
 * here (marked "as http.c"); a change there must be repeated here.
 */
#include <http_parser.h>
#include <limits.h>
#include <string.h>
#include <strings.h>

#include "../../daemon/http.h"
#include "../../daemon/http_head.h"
#include "../../daemon/http_path.h"
#include "fuzz_normalize.h"
#include "fuzz_util.h"

/* What became of one request: whether the connection carries on, and how
 * many body bytes are dropped before the next head. */
struct request_outcome {
    bool keep_going;
    unsigned long long discard;
};

/* As http.c's http_serve, up to the call of http_path_normalize. */
static struct request_outcome request_serve(const char *buf, size_t len, struct http_request *r)
{
    unsigned long long body = r->p.content_length == ULLONG_MAX ? 0 : r->p.content_length;
    struct request_outcome o = { .keep_going = http_should_keep_alive(&r->p) != 0 };
    const char *path = r->url, *q;
    size_t path_len;

    FUZZ_CHECK(r->url >= buf && r->url_len <= len && r->url + r->url_len <= buf + len,
               "the URL is not inside the head");
    if (r->p.http_major != 1 || (r->p.flags & F_CHUNKED) || body > HTTP_BODY_DISCARD_MAX)
        return (struct request_outcome){ .keep_going = false };
    o.discard = body;
    if (r->p.method != HTTP_GET && r->p.method != HTTP_HEAD)
        return o;
    if (r->url_len > 7 && strncasecmp(path, "http://", 7) == 0) {
        const char *slash = memchr(path + 7, '/', r->url_len - 7);

        if (slash == NULL)
            return (struct request_outcome){ .keep_going = false };
        path = slash;
    }
    path_len = r->url_len - (size_t)(path - r->url);
    q = memchr(path, '?', path_len);
    if (q != NULL)
        path_len = (size_t)(q - path);
    /* serve_path: a bad target costs the connection (400 or 414). */
    if (fuzz_check_normalize(path, path_len, HTTP_PATH_MAX + 1, NULL, 0, NULL) < 0)
        o.keep_going = false;
    return o;
}

/* As head_read_cb: buf/len is what read_until delivered; emsgsize when no
 * delimiter ended within HTTP_HEAD_MAX (then len is HTTP_HEAD_MAX). */
static struct request_outcome request_head(const char *buf, size_t len, bool emsgsize)
{
    const char *eol = memchr(buf, '\n', len < HTTP_REQUEST_LINE_MAX ? len : HTTP_REQUEST_LINE_MAX);
    struct http_request r;
    size_t used;

    if ((eol == NULL && len >= HTTP_REQUEST_LINE_MAX) || emsgsize)
        return (struct request_outcome){ .keep_going = false };     /* 414, 431 */
    used = http_head_parse(&r, buf, len);
    FUZZ_CHECK(used <= len, "http_parser used %zu of %zu bytes", used, len);
    if (HTTP_PARSER_ERRNO(&r.p) != HPE_PAUSED || r.url == NULL)
        return (struct request_outcome){ .keep_going = false };     /* 400, 431 */
    return request_serve(buf, len, &r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *in = (const char *)data;
    size_t at = 0;

    while (at < size) {
        size_t left = size - at, end = http_head_end(in + at, left, 0, NULL), n;
        size_t split = (unsigned char)in[at] % left;
        struct request_outcome o;

        /* The bytes up to `split` came first and held no end: the search
         * resumed from there finds the end the whole search does. */
        if (http_head_end(in + at, split, 0, NULL) == 0)
            FUZZ_CHECK(http_head_end(in + at, left, split, NULL) == end,
                       "head end %zu searched whole, %zu resumed at %zu", end,
                       http_head_end(in + at, left, split, NULL), split);
        /* read_until_match: the end must be within max_bytes; without one,
         * the read fails once max_bytes are buffered, else it waits. */
        if (end > 0 && end <= HTTP_HEAD_MAX)
            n = end;
        else if (end > 0 || left >= HTTP_HEAD_MAX)
            n = 0;
        else
            break;
        o = n > 0 ? request_head(in + at, n, false) : request_head(in + at, HTTP_HEAD_MAX, true);
        if (!o.keep_going)
            break;
        at += n;
        /* conn_next_request drops the body before the next head. */
        at += o.discard < size - at ? (size_t)o.discard : size - at;
    }
    return 0;
}

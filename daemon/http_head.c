/* http_head: the framing of a request head (see http_head.h). */
#include "http_head.h"

#include <string.h>
#include <strings.h>

#include "http.h"

size_t http_head_end(const char *data, size_t len, size_t from, void *arg)
{
    /* "\n\r\n" is the longest end: one that ends past `from` starts at
     * from - 2 or later. */
    const char *p = data + (from >= 2 ? from - 2 : 0), *end = data + len;

    (void)arg;
    while ((p = memchr(p, '\n', (size_t)(end - p))) != NULL) {
        if (p + 1 < end && p[1] == '\n')
            return (size_t)(p + 2 - data);
        if (p + 2 < end && p[1] == '\r' && p[2] == '\n')
            return (size_t)(p + 3 - data);
        p++;
    }
    return 0;
}

/* ---- http_parser callbacks: note where things are, copy nothing ---- */

static bool header_is(const struct http_request *r, const char *name)
{
    size_t n = strlen(name);

    return r->field_len == n && strncasecmp(r->field, name, n) == 0;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
    struct http_request *r = p->data;

    if (r->url == NULL)
        r->url = at;
    r->url_len += len;
    return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
    struct http_request *r = p->data;

    r->field = at;
    r->field_len = len;
    return ++r->nheaders > HTTP_HEADERS_MAX;
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    struct http_request *r = p->data;
    struct http_header_value *hv = NULL;

    if (header_is(r, "if-none-match"))
        hv = &r->inm;
    else if (header_is(r, "if-modified-since"))
        hv = &r->ims;
    else if (header_is(r, "range"))
        hv = &r->range;
    else if (header_is(r, "if-range"))
        hv = &r->if_range;
    else if (header_is(r, "user-agent"))
        hv = &r->ua;
    else if (header_is(r, "referer"))
        hv = &r->referer;
    else if (header_is(r, "host"))
        r->has_host = true;
    if (hv != NULL) {
        hv->v = at;
        hv->len = len;
    }
    return 0;
}

/* The head is all we parse: the body, if any, is ours to read or refuse. */
static int on_headers_complete(http_parser *p)
{
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings parser_settings = {
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
};

size_t http_head_parse(struct http_request *r, const char *buf, size_t len)
{
    memset(r, 0, sizeof(*r));
    http_parser_init(&r->p, HTTP_REQUEST);
    r->p.data = r;
    return http_parser_execute(&r->p, &parser_settings, buf, len);
}

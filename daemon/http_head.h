/* http_head: where a request head ends in the bytes a connection sent,
 * and what it says (the parts the http handler looks at). */
#ifndef PREFORKD_HTTP_HEAD_H
#define PREFORKD_HTTP_HEAD_H

#include <http_parser.h>
#include <stdbool.h>
#include <stddef.h>

struct http_header_value {
    const char *v;
    size_t len;
};

/* One request head, parsed in place: pointers into the read buffer. */
struct http_request {
    http_parser p;
    const char *url;
    size_t url_len;
    const char *field;
    size_t field_len;
    int nheaders;
    struct http_header_value inm, ims, range, if_range, ua, referer;
    bool has_host;
};

/*
 * The offset just past the first empty line in data[0, len), whether lines
 * end with CRLF or, as nginx and RFC 9112 allow, a bare LF; 0 if there is
 * none yet. data[0, from) was searched before (a pf_match_fn for
 * pf_iostream_read_until_match; arg is unused).
 */
size_t http_head_end(const char *data, size_t len, size_t from, void *arg);

/*
 * Parses the request head buf[0, len) (as http_head_end cut it) into r, in
 * place: r's pointers point into buf, nothing is copied. More than
 * HTTP_HEADERS_MAX headers stop the parse. Returns the bytes http_parser
 * used; HTTP_PARSER_ERRNO(&r->p) is HPE_PAUSED once the head ended.
 */
size_t http_head_parse(struct http_request *r, const char *buf, size_t len);

#endif

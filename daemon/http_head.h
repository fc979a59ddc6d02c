/* http_head: where a request head ends in the bytes a connection sent. */
#ifndef PREFORKD_HTTP_HEAD_H
#define PREFORKD_HTTP_HEAD_H

#include <stddef.h>

/*
 * The offset just past the first empty line in data[0, len), whether lines
 * end with CRLF or, as nginx and RFC 9112 allow, a bare LF; 0 if there is
 * none yet. data[0, from) was searched before (a pf_match_fn for
 * pf_iostream_read_until_match; arg is unused).
 */
size_t http_head_end(const char *data, size_t len, size_t from, void *arg);

#endif

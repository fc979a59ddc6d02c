/* http: the static-file HTTP/1.1 handler (handler = http). */
#ifndef PREFORKD_HTTP_H
#define PREFORKD_HTTP_H

#include <stddef.h>

#include "config.h"
#include "scoreboard.h"
#include "tcpserver.h"

/* A request line longer than this gets 414 (nginx's large header buffer). */
#define HTTP_REQUEST_LINE_MAX 8192
/* A request head (line and headers) longer than this, or with more headers
 * than HTTP_HEADERS_MAX, gets 431. */
#define HTTP_HEAD_MAX 16384
#define HTTP_HEADERS_MAX 100
/* A body on GET or HEAD up to this size is read and dropped; a larger one,
 * or a chunked one, gets 413. */
#define HTTP_BODY_DISCARD_MAX (1024 * 1024)

struct http_server;

/* Per-worker state: the root directory, MIME types, access log, counters in
 * the worker's scoreboard slot. Returns NULL with errmsg set. */
struct http_server *http_server_new(struct ev_loop *loop, const struct config *c,
                                    struct scoreboard *sb, int slot,
                                    char *errmsg, size_t len);
void http_server_free(struct http_server *h);
/* The pf_tcp_server's handle_stream; the server's data is the http_server. */
void http_handle_stream(struct pf_tcp_server *srv, struct pf_iostream *s,
                        const struct sockaddr *peer, socklen_t len);
/* Graceful stop: idle keep-alive connections close now, the others after
 * the response in progress. */
void http_server_drain(struct http_server *h);
/* USR1: reopen the access log. Returns 0 or -errno. */
int http_server_reopen_logs(struct http_server *h);

#endif

/* Names shared between lib/ files only (pf__ prefix); not installed. */
#ifndef PF_INTERNAL_H
#define PF_INTERNAL_H

#include <stdbool.h>

#include "iostream.h"

/* pf_iostream_new for an fd already non-blocking (accept4 made it so):
 * saves two fcntl calls per connection. */
struct pf_iostream *pf__iostream_new_nonblocking(struct ev_loop *loop, int fd,
                                                 const struct pf_iostream_options *opt);
/* A TLS stream on an accepted fd (see pf_iostream_new_tls). */
struct pf_iostream *pf__iostream_new_tls_nonblocking(struct ev_loop *loop, int fd,
                                                     const struct pf_iostream_options *opt,
                                                     struct ssl_ctx_st *ctx, bool server,
                                                     double handshake_timeout_sec);
/* Runs after the user's close callback, just before the stream is freed:
 * lets the tcp server count open streams. */
void pf__iostream_set_release(struct pf_iostream *s,
                              void (*fn)(void *arg, struct pf_iostream *s), void *arg);

/* The tcp server's list of its open streams (for closing them all). */
struct pf__stream_link {
    struct pf_iostream *prev, *next;
};
struct pf__stream_link *pf__iostream_link(struct pf_iostream *s);

#endif

/* The pf_iostream behaviours that check_iostream and check_tls both assert,
 * one function each: the plain suite runs them on a socketpair, the TLS
 * suite on a TLS stream behind its bridge. Each takes a stream that the
 * calling test opened with su_attach() and still owns, and fails the test
 * at the first assertion that does not hold; wait_sec bounds each wait for
 * something that should happen. */
#ifndef PF_STREAMCHECKS_H
#define PF_STREAMCHECKS_H

#include "streamutil.h"

/* read_until finds a delimiter that arrives split across writes (each with
 * the loop's time to travel alone), completes once, and keeps the bytes
 * after it for the next read. */
void sc_read_until_across_writes_keeps_rest(struct su_stream *c, double wait_sec);
/* A read callback that closes the stream with a second request buffered:
 * one read, one close with reason 0, every later call -EPIPE, no write
 * callback. What the peer then sees is the caller's to check. */
void sc_close_from_read_cb_drops_buffered_data(struct su_stream *c, double wait_sec);
/* For a stream opened with max_buffer_size 1024: 4 KiB without the
 * delimiter close it with -ENOBUFS and no read callback. */
void sc_read_until_over_max_buffer_closes_with_enobufs(struct su_stream *c, double wait_sec);
/* Once the peer is gone: a 1 MiB write (and one more if the stream is still
 * open) raises no SIGPIPE and ends in one close, without write callback
 * and with the fd closed; returns the close reason for the caller to judge.
 * The caller restores SIGPIPE's default action first. */
int sc_write_to_gone_peer_closes_stream(struct su_stream *c, double wait_sec);

#endif

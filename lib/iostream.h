/*
 * iostream: a buffered, non-blocking byte stream on one fd, driven by libev.
 * Tornado's IOStream: one read at a time (read_until, read_bytes,
 * read_until_close), queued writes with completion callbacks, a close
 * callback, max_buffer_size and an idle timeout. It owns the fd.
 */
#ifndef PF_IOSTREAM_H
#define PF_IOSTREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <ev.h>

#include "tls.h"

/* Tornado's default max_buffer_size: 100 MiB. */
#define PF_IOSTREAM_DEFAULT_MAX_BUFFER (100u * 1024 * 1024)
/* Bytes read per read(2). Reads land in a stack buffer first, so a
 * connection holds no read buffer until data outlives a callback. */
#define PF_IOSTREAM_READ_CHUNK (64u * 1024)
/* Longest read_until delimiter; protocols use "\r\n\r\n" and the like. */
#define PF_IOSTREAM_DELIM_MAX 16

struct pf_iostream;

/*
 * A read completed. status 0: buf/len hold exactly the bytes asked for
 * (read_until: up to and including the delimiter; read_bytes: n bytes, or
 * 1..n when partial; read_until_close: everything up to EOF), and they are
 * consumed. status -EMSGSIZE (read_until only): no delimiter ended within
 * max_bytes; buf/len are the first max_bytes bytes, nothing is consumed and
 * the stream stays open, so that a protocol can answer (HTTP's 414/431)
 * before it closes. buf is valid only until the callback returns. The
 * callback may start the next read, write, or close the stream. A read
 * still pending when the stream closes is not called back: the close
 * callback says why.
 */
typedef void (*pf_read_cb)(struct pf_iostream *s, const char *buf, size_t len, int status);
/* The bytes of this write (and all before it) were handed to the kernel. */
typedef void (*pf_write_cb)(struct pf_iostream *s);
/*
 * The stream closed, exactly once: reason 0 for EOF or pf_iostream_close(),
 * else -errno: -ETIMEDOUT (idle timeout), -ENOBUFS (max_buffer_size
 * exceeded), or the socket's error. The fd is already closed; s is freed right after
 * this returns.
 */
typedef void (*pf_close_cb)(struct pf_iostream *s, int reason);

struct pf_iostream_options {
    size_t max_buffer_size;     /* 0: PF_IOSTREAM_DEFAULT_MAX_BUFFER */
    double idle_timeout_sec;    /* 0: none. Any read or write progress resets it */
};

/* Takes ownership of fd (made non-blocking). opt may be NULL. Returns NULL
 * only when out of memory, and then fd is closed. */
struct pf_iostream *pf_iostream_new(struct ev_loop *loop, int fd,
                                    const struct pf_iostream_options *opt);

/*
 * Start a read; only one may be pending (a second one is a caller bug).
 * A read that the buffered bytes already satisfy completes from the loop,
 * never from inside this call. Each returns 0, or -EPIPE on a closed stream.
 *   read_until: delim of 1..PF_IOSTREAM_DELIM_MAX bytes (copied). If it does
 *     not end within max_bytes, cb gets -EMSGSIZE (see pf_read_cb); max_bytes
 *     0 = bounded by max_buffer_size only (the stream closes, -ENOBUFS).
 *   read_bytes: n > 0; partial: complete with whatever 1..n bytes arrive.
 *   read_until_close: all bytes up to EOF (bounded by max_buffer_size).
 */
int pf_iostream_read_until(struct pf_iostream *s, const char *delim, size_t dlen,
                           size_t max_bytes, pf_read_cb cb);
/*
 * read_until with a matcher of yours instead of a fixed delimiter (Tornado's
 * read_until_regex): e.g. a blank line ended by "\r\n" or a bare "\n". The
 * matcher returns the offset just past the match in data[0, len), or 0 if
 * there is none yet. data[0, from) was searched before and held none: a
 * new match ends past `from`. max_bytes and cb as for read_until.
 */
typedef size_t (*pf_match_fn)(const char *data, size_t len, size_t from, void *arg);
int pf_iostream_read_until_match(struct pf_iostream *s, pf_match_fn match, void *arg,
                                 size_t max_bytes, pf_read_cb cb);
int pf_iostream_read_bytes(struct pf_iostream *s, size_t n, bool partial,
                           pf_read_cb cb);
int pf_iostream_read_until_close(struct pf_iostream *s, pf_read_cb cb);
/* Completes as soon as at least one byte is available: buf/len show every
 * byte buffered, and none is consumed (e.g. to start a timer on the first
 * byte of a request, then read_until it from the callback). */
int pf_iostream_read_peek(struct pf_iostream *s, pf_read_cb cb);

/*
 * Queue len bytes (copied as needed; buf is yours again on return). Bytes
 * go out in the order written. cb (may be NULL) runs from the loop once
 * these bytes are written. Returns 0, -EPIPE on a closed stream, or
 * -ENOBUFS if the queue would exceed max_buffer_size (the stream closes).
 */
int pf_iostream_write(struct pf_iostream *s, const void *buf, size_t len,
                      pf_write_cb cb);
/* The same for several buffers, sent with one sendmsg(2) when the queue is
 * empty (e.g. a response head and a small body). */
int pf_iostream_writev(struct pf_iostream *s, const struct iovec *iov, int iovcnt,
                       pf_write_cb cb);

/*
 * Queue head_len bytes of head (copied as needed), then len bytes of file fd
 * from offset, sent with sendfile(2). fd is borrowed: keep it open until cb runs
 * or the stream's close callback does (a file cache may share one fd among
 * many streams). cb as for pf_iostream_write. Until cb would fire, no other
 * write or sendfile may be queued (a caller bug). Returns 0 or -errno (the
 * stream is closed then, as with pf_iostream_write).
 */
int pf_iostream_sendfile(struct pf_iostream *s, const void *head, size_t head_len,
                         int fd, off_t offset, size_t len, pf_write_cb cb);

/* The TLS handshake finished; info lives as long as the stream. */
typedef void (*pf_handshake_cb)(struct pf_iostream *s, const struct pf_tls_info *info);

/*
 * A stream that speaks TLS on fd, as the server (accepting) or the client
 * side, with an SSL_CTX of yours (borrowed: it must outlive the stream).
 * The handshake runs on the loop and must finish within
 * PF_TLS_HANDSHAKE_TIMEOUT_SEC, or the stream closes with -ETIMEDOUT (-EPROTO
 * if it fails). Reads and writes work as on a plain stream, and may start at
 * once: they wait for the handshake. Closing sends close_notify, without
 * waiting for the peer's. Returns NULL only when out of memory.
 */
struct pf_iostream *pf_iostream_new_tls(struct ev_loop *loop, int fd,
                                        const struct pf_iostream_options *opt,
                                        struct ssl_ctx_st *ctx, bool server);
/* cb runs from the loop once the handshake is done (at once if it is).
 * Returns 0, -EINVAL for a plain stream, -EPIPE once closed. */
int pf_iostream_wait_for_handshake(struct pf_iostream *s, pf_handshake_cb cb);
/* The handshake's facts; false for a plain stream or before it is done. */
bool pf_iostream_tls_info(const struct pf_iostream *s, struct pf_tls_info *out);

/* Called once when the stream closes (see pf_close_cb). */
void pf_iostream_set_close_cb(struct pf_iostream *s, pf_close_cb cb);
/* 0 disables; restarts the countdown from now. */
void pf_iostream_set_idle_timeout(struct pf_iostream *s, double sec);
/* Close with -ETIMEDOUT sec from now (the loop's now), activity or not,
 * e.g. a request head that must be complete in time; 0 clears it. */
void pf_iostream_set_deadline(struct pf_iostream *s, double sec);

/* Close now: pending writes are dropped, the fd is closed at once (a TLS
 * stream whose socket is full first waits up to PF_TLS_CLOSE_NOTIFY_SEC to
 * send close_notify), and the close callback runs from the loop with reason
 * 0. Idempotent. */
void pf_iostream_close(struct pf_iostream *s);

/*
 * Close once the peer stops sending: for a protocol that answers a request
 * it did not read to the end (HTTP's 413, 431). Closing with unread input
 * makes the kernel reset the connection, and the peer, still sending, may
 * never read the answer. Once the queued writes are out, this side is shut
 * down (FIN) and what arrives is read and dropped until the peer closes or
 * sec pass; then the close callback runs with reason 0. A pending read is
 * dropped; start no other read or write. A TLS stream, or sec <= 0, closes
 * at once as with pf_iostream_close.
 */
void pf_iostream_close_lingering(struct pf_iostream *s, double sec);

bool pf_iostream_closed(const struct pf_iostream *s);
bool pf_iostream_reading(const struct pf_iostream *s);
bool pf_iostream_writing(const struct pf_iostream *s);
int pf_iostream_fd(const struct pf_iostream *s);
struct ev_loop *pf_iostream_loop(const struct pf_iostream *s);
/* Yours: never read by libprefork. */
void pf_iostream_set_data(struct pf_iostream *s, void *data);
void *pf_iostream_data(const struct pf_iostream *s);

#endif

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
#include <ev.h>

/* Tornado's default max_buffer_size: 100 MiB. */
#define PF_IOSTREAM_DEFAULT_MAX_BUFFER (100u * 1024 * 1024)
/* Bytes read per read(2). Reads land in a stack buffer first, so a
 * connection holds no read buffer until data outlives a callback. */
#define PF_IOSTREAM_READ_CHUNK (64u * 1024)
/* Longest read_until delimiter; protocols use "\r\n\r\n" and the like. */
#define PF_IOSTREAM_DELIM_MAX 32

struct pf_iostream;

/*
 * A read completed: buf/len hold exactly the bytes asked for (read_until:
 * up to and including the delimiter; read_bytes: n bytes, or 1..n when
 * partial; read_until_close: everything up to EOF). buf is valid only until
 * the callback returns. The callback may start the next read, write, or
 * close the stream. A read still pending when the stream closes is not
 * called back: the close callback says why.
 */
typedef void (*pf_read_cb)(struct pf_iostream *s, const char *buf, size_t len);
/* The bytes of this write (and all before it) were handed to the kernel. */
typedef void (*pf_write_cb)(struct pf_iostream *s);
/*
 * The stream closed, exactly once: reason 0 for EOF or pf_iostream_close(),
 * else -errno: -ETIMEDOUT (idle timeout), -ENOBUFS (max_buffer_size
 * exceeded), -EMSGSIZE (read_until found no delimiter within max_bytes),
 * or the socket's error. The fd is already closed; s is freed right after
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
 *     not end within max_bytes, the stream closes with -EMSGSIZE; max_bytes
 *     0 = bounded by max_buffer_size only (-ENOBUFS).
 *   read_bytes: n > 0; partial: complete with whatever 1..n bytes arrive.
 *   read_until_close: all bytes up to EOF (bounded by max_buffer_size).
 */
int pf_iostream_read_until(struct pf_iostream *s, const char *delim, size_t dlen,
                           size_t max_bytes, pf_read_cb cb);
int pf_iostream_read_bytes(struct pf_iostream *s, size_t n, bool partial,
                           pf_read_cb cb);
int pf_iostream_read_until_close(struct pf_iostream *s, pf_read_cb cb);

/*
 * Queue len bytes (copied as needed; buf is yours again on return). Bytes
 * go out in the order written. cb (may be NULL) runs from the loop once
 * these bytes are written. Returns 0, -EPIPE on a closed stream, or
 * -ENOBUFS if the queue would exceed max_buffer_size (the stream closes).
 */
int pf_iostream_write(struct pf_iostream *s, const void *buf, size_t len,
                      pf_write_cb cb);

/* Called once when the stream closes (see pf_close_cb). */
void pf_iostream_set_close_cb(struct pf_iostream *s, pf_close_cb cb);
/* 0 disables; restarts the countdown from now. */
void pf_iostream_set_idle_timeout(struct pf_iostream *s, double sec);

/* Close now: pending writes are dropped, the fd is closed at once, and the
 * close callback runs from the loop with reason 0. Idempotent. */
void pf_iostream_close(struct pf_iostream *s);

bool pf_iostream_closed(const struct pf_iostream *s);
bool pf_iostream_reading(const struct pf_iostream *s);
bool pf_iostream_writing(const struct pf_iostream *s);
int pf_iostream_fd(const struct pf_iostream *s);
struct ev_loop *pf_iostream_loop(const struct pf_iostream *s);
/* Yours: never read by libprefork. */
void pf_iostream_set_data(struct pf_iostream *s, void *data);
void *pf_iostream_data(const struct pf_iostream *s);

#endif

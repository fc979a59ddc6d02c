/*
 * iostream: buffered non-blocking reads and writes on one fd (Tornado's
 * IOStream). Reads land in a stack buffer and go straight to the pending
 * read's callback; only bytes left over after the callbacks are copied to
 * a heap buffer, so an idle or well-behaved connection holds none. Parsing
 * what the bytes mean is left to the handler.
 */
#define _GNU_SOURCE     /* memmem */
#include "iostream.h"
#include "internal.h"
#include "tls_internal.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

enum read_mode { READ_NONE, READ_UNTIL, READ_BYTES, READ_UNTIL_CLOSE, READ_PEEK };

/* One write's completion: fires once `mark` bytes in total were sent. */
struct write_done {
    unsigned long long mark;
    pf_write_cb cb;
};

struct pf_iostream {
    struct ev_loop *loop;
    int fd;
    void *data;
    size_t max_buffer;
    double idle_timeout_sec;
    ev_tstamp last_activity;
    ev_tstamp deadline;         /* pf_iostream_set_deadline's; 0: none */
    ev_tstamp hs_deadline;      /* TLS: the handshake's, apart from the user's; 0: none */

    enum read_mode rmode;
    pf_read_cb rcb;
    char delim[PF_IOSTREAM_DELIM_MAX];
    size_t dlen;
    size_t rmax;                /* read_until: delimiter must end within this */
    size_t rbytes;              /* read_bytes: wanted */
    bool partial;
    size_t scanned;             /* read_until: bytes already searched */
    bool delivering;            /* inside deliver(): it picks up new reads itself */

    char *rbuf;                 /* leftovers: rbuf[rstart, rstart + rlen) */
    size_t rcap, rstart, rlen;

    char *wbuf;                 /* unsent bytes: wbuf[wstart, wstart + wlen) */
    size_t wcap, wstart, wlen;
    int file_fd;                /* pf_iostream_sendfile's (borrowed), after wbuf; -1: none */
    off_t file_off;
    size_t file_left;
    unsigned long long wqueued, wsent;
    struct write_done *wdone;   /* FIFO [whead, nwdone) */
    size_t whead, nwdone, capwdone;
    bool not_socket;            /* send() said ENOTSOCK: use write() */

    bool eof;
    bool closed;
    int close_reason;
    pf_close_cb close_cb;
    void (*release)(void *, struct pf_iostream *);
    void *release_arg;
    struct pf__stream_link link;    /* the tcp server's list */

    SSL *ssl;                   /* NULL: a plain stream */
    bool hs_done;               /* the TLS handshake finished */
    bool read_wants_write;      /* TLS: the last read waits for writability */
    bool write_wants_read;      /* TLS: the last write waits for readability */
    bool tls_closing;           /* closed; close_notify waits for the socket */
    pf_handshake_cb hs_cb;      /* TLS: to run once the handshake is done */

    ev_io rio, wio;
    ev_timer idle;
    ev_idle deferred;           /* fed, never started: buffered reads, or once
                                 * closed, the close callback and the free */
};

#define STREAM_OF(w, field) \
    ((struct pf_iostream *)((char *)(w) - offsetof(struct pf_iostream, field)))

static void stream_close(struct pf_iostream *s, int reason);
static void stream_finish_close(struct pf_iostream *s);

static bool write_pending(const struct pf_iostream *s)
{
    return s->wlen > 0 || s->file_fd >= 0;
}

static void touch(struct pf_iostream *s)
{
    s->last_activity = ev_now(s->loop);
}

/* Starts watching for input when a read waits. It stops only at EOF or
 * close, or lazily in rio_cb when input comes with no read waiting: a
 * request/response connection thus costs no epoll_ctl pair per request. */
static void update_read_watcher(struct pf_iostream *s)
{
    if (!s->closed && !s->eof && s->rmode != READ_NONE)
        ev_io_start(s->loop, &s->rio);
    else if (s->closed || s->eof)
        ev_io_stop(s->loop, &s->rio);
}

/*
 * Can the pending read complete from data[0, len)? Sets *n to the bytes it
 * takes. Returns 1 if so, 0 if it needs more, or -errno if it never can.
 */
static int read_ready(struct pf_iostream *s, const char *data, size_t len, size_t *n)
{
    switch (s->rmode) {
    case READ_UNTIL: {
        /* Start where the last search stopped, less a partial delimiter. */
        size_t from = s->scanned >= s->dlen ? s->scanned - (s->dlen - 1) : 0;
        const char *hit = len >= s->dlen
            ? memmem(data + from, len - from, s->delim, s->dlen) : NULL;
        if (hit != NULL) {
            *n = (size_t)(hit - data) + s->dlen;
            return *n <= s->rmax ? 1 : -EMSGSIZE;
        }
        s->scanned = len;
        return len >= s->rmax ? -EMSGSIZE : 0;
    }
    case READ_BYTES:
        if (len >= s->rbytes || (s->partial && len > 0)) {
            *n = len < s->rbytes ? len : s->rbytes;
            return 1;
        }
        return 0;
    case READ_UNTIL_CLOSE:
        *n = len;
        return s->eof;
    case READ_PEEK:
        *n = len;
        return len > 0;
    case READ_NONE:
        break;
    }
    return 0;
}

/* Hands data to pending reads, in order, until one needs more bytes.
 * Returns how many bytes the callbacks took. */
static size_t deliver(struct pf_iostream *s, const char *data, size_t len)
{
    size_t used = 0;

    s->delivering = true;
    while (s->rmode != READ_NONE && !s->closed) {
        size_t n = 0;
        int rc = read_ready(s, data + used, len - used, &n);
        pf_read_cb cb = s->rcb;
        enum read_mode mode = s->rmode;

        if (rc == 0)
            break;
        s->rmode = READ_NONE;
        s->rcb = NULL;
        s->scanned = 0;
        if (rc < 0) {
            /* Over max_bytes: show the bytes, consume none, and stop here so
             * that a read the callback starts waits for the loop. */
            cb(s, data + used, s->rmax, rc);
            break;
        }
        cb(s, data + used, n, 0);
        if (mode != READ_PEEK)
            used += n;
    }
    s->delivering = false;
    return used;
}

static void drop_read_buffer(struct pf_iostream *s)
{
    free(s->rbuf);
    s->rbuf = NULL;
    s->rcap = s->rstart = s->rlen = 0;
}

static void consume(struct pf_iostream *s, size_t n)
{
    s->rstart += n;
    s->rlen -= n;
    /* Back to the stack path: an idle connection keeps no buffer. */
    if (s->rlen == 0)
        drop_read_buffer(s);
}

/* Makes room for `want` more bytes after the buffered ones. */
static int reserve_read(struct pf_iostream *s, size_t want)
{
    size_t cap;
    char *p;

    if (s->rcap - s->rstart - s->rlen >= want)
        return 0;
    if (s->rstart > 0) {
        memmove(s->rbuf, s->rbuf + s->rstart, s->rlen);
        s->rstart = 0;
        if (s->rcap - s->rlen >= want)
            return 0;
    }
    cap = s->rcap ? s->rcap : PF_IOSTREAM_READ_CHUNK;
    while (cap - s->rlen < want)
        cap *= 2;
    p = realloc(s->rbuf, cap);
    if (p == NULL)
        return -ENOMEM;
    s->rbuf = p;
    s->rcap = cap;
    return 0;
}

/* Peer closed its side. Writes still queued go out first (a client that
 * half-closes after its request still gets the answer). */
static void on_eof(struct pf_iostream *s)
{
    s->eof = true;
    if (s->rmode == READ_UNTIL_CLOSE) {
        size_t used = deliver(s, s->rbuf ? s->rbuf + s->rstart : "", s->rlen);
        if (s->closed)
            return;
        consume(s, used);
    }
    if (!write_pending(s))
        stream_close(s, 0);
    else
        update_read_watcher(s);
}

/* Reads once; returns bytes read (> 0), 0 at EOF, or -errno. */
static ssize_t read_some(struct pf_iostream *s, char *buf, size_t len)
{
    ssize_t n;

    if (s->ssl != NULL) {
        enum pf__tls_want want;

        n = pf__tls_read(s->ssl, buf, len, &want);
        if (want == PF__TLS_WANT_WRITE) {
            s->read_wants_write = true;
            ev_io_start(s->loop, &s->wio);
        }
        return n;
    }
    do
        n = read(s->fd, buf, len);
    while (n < 0 && errno == EINTR);
    return n < 0 ? -errno : n;
}

/* One step of the TLS handshake, on either readiness. Once done, reads and
 * writes that waited for it go on, from the loop. */
static void tls_handshake_step(struct pf_iostream *s)
{
    enum pf__tls_want want;
    int rc = pf__tls_handshake(s->ssl, &want);

    if (rc < 0) {
        stream_close(s, rc);
        return;
    }
    if (rc == 0) {
        if (want == PF__TLS_WANT_WRITE)
            ev_io_start(s->loop, &s->wio);
        else
            ev_io_stop(s->loop, &s->wio);
        ev_io_start(s->loop, &s->rio);
        return;
    }
    s->hs_done = true;
    s->hs_deadline = 0;         /* the timer, if it fires early, just re-arms */
    touch(s);
    if (s->hs_cb != NULL)
        ev_feed_event(s->loop, &s->deferred, EV_CUSTOM);
    if (write_pending(s))
        ev_io_start(s->loop, &s->wio);
    else
        ev_io_stop(s->loop, &s->wio);
    if (s->rmode != READ_NONE)
        ev_feed_event(s->loop, &s->rio, EV_READ);
    update_read_watcher(s);
}

static void rio_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct pf_iostream *s = STREAM_OF(w, rio);
    ssize_t n;
    size_t used;

    (void)loop;
    (void)revents;
    if (s->ssl != NULL) {
        if (!s->hs_done) {
            tls_handshake_step(s);
            return;
        }
        if (s->write_wants_read) {
            /* The last TLS write waited for this: let the writer go on. */
            s->write_wants_read = false;
            ev_feed_event(s->loop, &s->wio, EV_WRITE);
        }
    }
    if (s->rmode == READ_NONE) {
        /* Nobody asked: leave the bytes in the kernel (backpressure). */
        ev_io_stop(s->loop, &s->rio);
        return;
    }
    if (s->rlen == 0) {
        char stack[PF_IOSTREAM_READ_CHUNK];

        n = read_some(s, stack, sizeof(stack));
        if (n <= 0)
            goto not_read;
        touch(s);
        used = deliver(s, stack, (size_t)n);
        if (s->closed || used == (size_t)n)
            goto done;
        if ((size_t)n - used > s->max_buffer) {
            stream_close(s, -ENOBUFS);
            return;
        }
        if (reserve_read(s, (size_t)n - used) < 0) {
            stream_close(s, -ENOMEM);
            return;
        }
        memcpy(s->rbuf + s->rstart + s->rlen, stack + used, (size_t)n - used);
        s->rlen += (size_t)n - used;
    } else {
        if (reserve_read(s, PF_IOSTREAM_READ_CHUNK) < 0) {
            stream_close(s, -ENOMEM);
            return;
        }
        n = read_some(s, s->rbuf + s->rstart + s->rlen, PF_IOSTREAM_READ_CHUNK);
        if (n <= 0)
            goto not_read;
        touch(s);
        s->rlen += (size_t)n;
        used = deliver(s, s->rbuf + s->rstart, s->rlen);
        if (s->closed)
            return;
        consume(s, used);
        if (s->rlen > s->max_buffer) {
            stream_close(s, -ENOBUFS);
            return;
        }
    }
done:
    if (!s->closed)
        update_read_watcher(s);
    /* TLS may hold decrypted bytes the socket no longer signals. */
    if (!s->closed && s->ssl != NULL && s->rmode != READ_NONE && SSL_pending(s->ssl) > 0)
        ev_feed_event(s->loop, &s->rio, EV_READ);
    return;
not_read:
    if (n == 0)
        on_eof(s);
    else if (n != -EAGAIN)
        stream_close(s, (int)n);
}

/* A read started outside deliver() with bytes already buffered. */
static void closer_run(struct pf_iostream *s);

static void deferred_cb(struct ev_loop *loop, ev_idle *w, int revents)
{
    struct pf_iostream *s = STREAM_OF(w, deferred);
    size_t used;

    (void)loop;
    (void)revents;
    if (s->closed) {
        closer_run(s);
        return;
    }
    if (s->hs_cb != NULL && s->hs_done) {
        pf_handshake_cb cb = s->hs_cb;
        struct pf_tls_info info;

        s->hs_cb = NULL;
        pf__tls_info(s->ssl, &info);
        cb(s, &info);
        if (s->closed)
            return;
    }
    if (s->rlen == 0)
        return;
    used = deliver(s, s->rbuf + s->rstart, s->rlen);
    if (s->closed)
        return;
    consume(s, used);
    update_read_watcher(s);
}

static int start_read(struct pf_iostream *s, enum read_mode mode, pf_read_cb cb)
{
    assert(cb != NULL);
    assert(s->rmode == READ_NONE && "only one read may be pending");
    if (s->closed || s->eof)
        return -EPIPE;
    s->rmode = mode;
    s->rcb = cb;
    s->scanned = 0;
    /* deliver() looks at the new read itself when it regains control. */
    if (s->delivering)
        return 0;
    if (s->rlen > 0)
        ev_feed_event(s->loop, &s->deferred, EV_CUSTOM);
    else
        update_read_watcher(s);
    if (s->ssl != NULL && s->hs_done && s->rlen == 0 && SSL_pending(s->ssl) > 0)
        ev_feed_event(s->loop, &s->rio, EV_READ);
    return 0;
}

int pf_iostream_read_until(struct pf_iostream *s, const char *delim, size_t dlen,
                           size_t max_bytes, pf_read_cb cb)
{
    assert(dlen > 0 && dlen <= PF_IOSTREAM_DELIM_MAX);
    if (s->closed || s->eof)
        return -EPIPE;
    memcpy(s->delim, delim, dlen);
    s->dlen = dlen;
    s->rmax = max_bytes ? max_bytes : SIZE_MAX;
    return start_read(s, READ_UNTIL, cb);
}

int pf_iostream_read_bytes(struct pf_iostream *s, size_t n, bool partial,
                           pf_read_cb cb)
{
    assert(n > 0);
    s->rbytes = n;
    s->partial = partial;
    return start_read(s, READ_BYTES, cb);
}

int pf_iostream_read_until_close(struct pf_iostream *s, pf_read_cb cb)
{
    return start_read(s, READ_UNTIL_CLOSE, cb);
}

int pf_iostream_read_peek(struct pf_iostream *s, pf_read_cb cb)
{
    return start_read(s, READ_PEEK, cb);
}

/* Sends once; returns bytes sent, 0 if the socket is full, or -errno. */
/* Sends what a plain socket takes of iov at once; returns bytes sent, 0 if
 * the socket is full, or -errno. */
static ssize_t sock_sendv(struct pf_iostream *s, const struct iovec *iov, int iovcnt)
{
    struct msghdr msg = { .msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)iovcnt };
    ssize_t n;

    for (;;) {
        /* MSG_NOSIGNAL: a peer that went away is an error, not a SIGPIPE. */
        n = s->not_socket ? writev(s->fd, iov, iovcnt) : sendmsg(s->fd, &msg, MSG_NOSIGNAL);
        if (n >= 0)
            return n;
        if (errno == EINTR)
            continue;
        if (errno == ENOTSOCK && !s->not_socket) {
            s->not_socket = true;
            continue;
        }
        return errno == EAGAIN ? 0 : -errno;
    }
}

/* Sends once; returns bytes sent, 0 if the socket is full, or -errno. */
static ssize_t send_some(struct pf_iostream *s, const char *buf, size_t len)
{
    struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
    ssize_t n;

    if (s->ssl != NULL) {
        enum pf__tls_want want;

        if (!s->hs_done)
            return 0;           /* queued until the handshake is done */
        n = pf__tls_write(s->ssl, buf, len, &want);
        if (want == PF__TLS_WANT_READ) {
            s->write_wants_read = true;
            ev_io_start(s->loop, &s->rio);
        }
        return n;
    }
    return sock_sendv(s, &iov, 1);
}

static void fire_write_callbacks(struct pf_iostream *s)
{
    while (s->whead < s->nwdone && s->wdone[s->whead].mark <= s->wsent && !s->closed) {
        pf_write_cb cb = s->wdone[s->whead++].cb;
        cb(s);
    }
    if (s->whead == s->nwdone)
        s->whead = s->nwdone = 0;
}

static void drop_file(struct pf_iostream *s)
{
    s->file_fd = -1;
    s->file_left = 0;
}

/* Sends what the kernel takes of the queued file. Returns 0, or -errno
 * after closing the stream. */
/* sendfile(2) cannot encrypt: read a chunk and write it through TLS. What
 * TLS did not take is read again next time (it is the same bytes). */
static ssize_t send_file_tls(struct pf_iostream *s)
{
    char chunk[16 * 1024];      /* one TLS record */
    size_t want = s->file_left < sizeof(chunk) ? s->file_left : sizeof(chunk);
    ssize_t n = pread(s->file_fd, chunk, want, s->file_off);

    if (n <= 0)
        return n;               /* -1 with errno, or 0: the file shrank */
    n = send_some(s, chunk, (size_t)n);
    if (n == 0) {
        errno = EAGAIN;
        return -1;
    }
    if (n > 0)
        s->file_off += n;
    else
        errno = (int)-n;
    return n > 0 ? n : -1;
}

static int send_file(struct pf_iostream *s)
{
    while (s->file_left > 0) {
        ssize_t n = s->ssl != NULL ? send_file_tls(s)
                                   : sendfile(s->fd, s->file_fd, &s->file_off, s->file_left);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return 0;
        if (n <= 0) {
            /* 0: the file shrank under us; the length we promised is a lie now. */
            int err = n < 0 ? -errno : -EIO;
            stream_close(s, err);
            return err;
        }
        touch(s);
        s->wsent += (unsigned long long)n;
        s->file_left -= (size_t)n;
    }
    drop_file(s);
    return 0;
}

/* Flushes the queue; fed with EV_CUSTOM, only fires completions. */
static void wio_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct pf_iostream *s = STREAM_OF(w, wio);

    (void)loop;
    if (s->tls_closing) {
        if (!pf__tls_shutdown(s->ssl))
            stream_finish_close(s);
        return;
    }
    if (s->ssl != NULL && (revents & EV_WRITE)) {
        if (!s->hs_done) {
            tls_handshake_step(s);
            return;
        }
        if (s->read_wants_write) {
            s->read_wants_write = false;
            ev_feed_event(s->loop, &s->rio, EV_READ);
        }
    }
    while (s->wlen > 0 && (revents & EV_WRITE)) {
        ssize_t n = send_some(s, s->wbuf + s->wstart, s->wlen);
        if (n < 0) {
            stream_close(s, (int)n);
            return;
        }
        if (n == 0)
            break;
        touch(s);
        s->wsent += (unsigned long long)n;
        s->wstart += (size_t)n;
        s->wlen -= (size_t)n;
    }
    if (s->wlen == 0 && s->wbuf != NULL) {
        free(s->wbuf);
        s->wbuf = NULL;
        s->wcap = s->wstart = 0;
    }
    if (s->wlen == 0 && s->file_fd >= 0 && (revents & EV_WRITE) && send_file(s) < 0)
        return;
    if (!write_pending(s))
        ev_io_stop(s->loop, &s->wio);
    fire_write_callbacks(s);
    if (!s->closed && s->eof && !write_pending(s))
        stream_close(s, 0);
}

static int queue_bytes(struct pf_iostream *s, const char *buf, size_t len)
{
    if (s->wlen + len > s->max_buffer)
        return -ENOBUFS;
    if (s->wcap - s->wstart - s->wlen < len) {
        size_t cap = s->wcap ? s->wcap : PF_IOSTREAM_READ_CHUNK;
        char *p;

        if (s->wstart > 0) {
            memmove(s->wbuf, s->wbuf + s->wstart, s->wlen);
            s->wstart = 0;
        }
        while (cap - s->wlen < len)
            cap *= 2;
        if (cap != s->wcap) {
            p = realloc(s->wbuf, cap);
            if (p == NULL)
                return -ENOMEM;
            s->wbuf = p;
            s->wcap = cap;
        }
    }
    memcpy(s->wbuf + s->wstart + s->wlen, buf, len);
    s->wlen += len;
    return 0;
}

static int push_write_done(struct pf_iostream *s, pf_write_cb cb)
{
    if (s->nwdone == s->capwdone) {
        size_t cap = s->capwdone ? s->capwdone * 2 : 4;
        struct write_done *p = realloc(s->wdone, cap * sizeof(*p));
        if (p == NULL)
            return -ENOMEM;
        s->wdone = p;
        s->capwdone = cap;
    }
    s->wdone[s->nwdone++] = (struct write_done){ s->wqueued, cb };
    return 0;
}

/* Sends what the socket takes of iov at once; returns bytes sent, 0 if the
 * socket is full, or -errno. */
static ssize_t sendv_some(struct pf_iostream *s, const struct iovec *iov, int iovcnt)
{
    size_t total = 0;

    if (s->ssl == NULL)
        return sock_sendv(s, iov, iovcnt);
    /* TLS: one record per buffer; stop at the first that does not go whole. */
    for (int i = 0; i < iovcnt; i++) {
        ssize_t n = send_some(s, iov[i].iov_base, iov[i].iov_len);

        if (n < 0)
            return total ? (ssize_t)total : n;
        total += (size_t)n;
        if ((size_t)n < iov[i].iov_len)
            break;
    }
    return (ssize_t)total;
}

int pf_iostream_writev(struct pf_iostream *s, const struct iovec *iov, int iovcnt,
                       pf_write_cb cb)
{
    size_t len = 0, skip = 0;
    ssize_t sent = 0;
    int err;

    assert(s->file_fd < 0 && "no write may follow a pending sendfile");
    if (s->closed)
        return -EPIPE;
    for (int i = 0; i < iovcnt; i++)
        len += iov[i].iov_len;
    /* Nothing queued: try the socket first, and copy only what it refused. */
    if (s->wlen == 0 && len > 0) {
        sent = sendv_some(s, iov, iovcnt);
        if (sent < 0) {
            stream_close(s, (int)sent);
            return (int)sent;
        }
        if (sent > 0) {
            touch(s);
            s->wsent += (unsigned long long)sent;
        }
    }
    skip = (size_t)sent;
    for (int i = 0; i < iovcnt && (size_t)sent < len; i++) {
        if (skip >= iov[i].iov_len) {
            skip -= iov[i].iov_len;
            continue;
        }
        err = queue_bytes(s, (const char *)iov[i].iov_base + skip, iov[i].iov_len - skip);
        skip = 0;
        if (err < 0) {
            stream_close(s, err);
            return err;
        }
    }
    if ((size_t)sent < len)
        ev_io_start(s->loop, &s->wio);
    s->wqueued += len;
    if (cb != NULL) {
        err = push_write_done(s, cb);
        if (err < 0) {
            stream_close(s, err);
            return err;
        }
        /* Already sent: complete from the loop, never from inside write. */
        if (s->wlen == 0)
            ev_feed_event(s->loop, &s->wio, EV_CUSTOM);
    }
    return 0;
}

int pf_iostream_write(struct pf_iostream *s, const void *buf, size_t len,
                      pf_write_cb cb)
{
    struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };

    return pf_iostream_writev(s, &iov, 1, cb);
}

int pf_iostream_sendfile(struct pf_iostream *s, const void *head, size_t head_len,
                         int fd, off_t offset, size_t len, pf_write_cb cb)
{
    ssize_t sent = 0;
    int err;

    assert(s->file_fd < 0 && "one sendfile at a time");
    if (s->closed)
        return -EPIPE;
    if (s->wlen == 0 && head_len > 0) {
        /* No MSG_MORE: corking the head until the file follows raised the
         * 64 KiB p99 from about 5 to 40 ms here, as nginx's tcp_nopush does. */
        sent = send_some(s, head, head_len);
        if (sent < 0) {
            stream_close(s, (int)sent);
            return (int)sent;
        }
        touch(s);
        s->wsent += (unsigned long long)sent;
    }
    if ((size_t)sent < head_len) {
        err = queue_bytes(s, (const char *)head + sent, head_len - (size_t)sent);
        if (err < 0) {
            stream_close(s, err);
            return err;
        }
    }
    s->file_fd = fd;
    s->file_off = offset;
    s->file_left = len;
    s->wqueued += head_len + len;
    if (s->wlen == 0 && send_file(s) < 0)
        return -EPIPE;
    if (write_pending(s))
        ev_io_start(s->loop, &s->wio);
    if (cb != NULL) {
        err = push_write_done(s, cb);
        if (err < 0) {
            stream_close(s, err);
            return err;
        }
        if (!write_pending(s))
            ev_feed_event(s->loop, &s->wio, EV_CUSTOM);
    }
    return 0;
}

/* When the idle timeout or the deadline, whichever is first, falls due;
 * 0: neither is set. */
static ev_tstamp timer_due(const struct pf_iostream *s)
{
    ev_tstamp at = s->idle_timeout_sec > 0 ? s->last_activity + s->idle_timeout_sec : 0;

    if (s->deadline > 0 && (at == 0 || s->deadline < at))
        at = s->deadline;
    if (s->hs_deadline > 0 && (at == 0 || s->hs_deadline < at))
        at = s->hs_deadline;
    return at;
}

static void arm_timer(struct pf_iostream *s)
{
    ev_tstamp at = timer_due(s), now = ev_now(s->loop);

    ev_timer_stop(s->loop, &s->idle);
    if (at > 0) {
        ev_timer_set(&s->idle, at > now ? at - now : 0., 0.);
        ev_timer_start(s->loop, &s->idle);
    }
}

/* One timer serves the idle timeout and the deadline. It is re-armed
 * lazily (libev's recommended pattern): activity costs an assignment, and
 * the timer, when it fires early, looks at what is due now. */
static void idle_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct pf_iostream *s = STREAM_OF(w, idle);
    ev_tstamp now = ev_now(loop), at = timer_due(s);

    (void)revents;
    if (s->tls_closing) {
        stream_finish_close(s);     /* the peer reads no more: give up on close_notify */
        return;
    }
    if (at > 0 && at <= now) {
        stream_close(s, -ETIMEDOUT);
        return;
    }
    arm_timer(s);
}

void pf_iostream_set_idle_timeout(struct pf_iostream *s, double sec)
{
    if (s->closed)
        return;
    s->idle_timeout_sec = sec;
    /* ev_now is the time the loop last woke; a long callback or a loop not
     * yet run would eat into the timeout. A vDSO clock read is cheap. */
    ev_now_update(s->loop);
    touch(s);
    arm_timer(s);
}

void pf_iostream_set_deadline(struct pf_iostream *s, double sec)
{
    if (s->closed)
        return;
    if (sec <= 0) {
        s->deadline = 0;    /* the timer, if it fires early, just re-arms */
        return;
    }
    s->deadline = ev_now(s->loop) + sec;
    if (!ev_is_active(&s->idle) || ev_timer_remaining(s->loop, &s->idle) > sec)
        arm_timer(s);
}

static void closer_run(struct pf_iostream *s)
{
    if (s->close_cb != NULL)
        s->close_cb(s, s->close_reason);
    if (s->release != NULL)
        s->release(s->release_arg, s);
    drop_read_buffer(s);
    free(s->wbuf);
    free(s->wdone);
    SSL_free(s->ssl);
    free(s);
}

/* The fd goes; the close callback and the free wait for the loop: the
 * caller may be deep inside one of this stream's callbacks. */
static void stream_finish_close(struct pf_iostream *s)
{
    ev_io_stop(s->loop, &s->wio);
    ev_timer_stop(s->loop, &s->idle);
    ev_clear_pending(s->loop, &s->wio);
    ev_clear_pending(s->loop, &s->idle);
    s->tls_closing = false;
    close(s->fd);
    s->fd = -1;
    ev_feed_event(s->loop, &s->deferred, EV_CUSTOM);
}

static void stream_close(struct pf_iostream *s, int reason)
{
    if (s->closed)
        return;
    s->closed = true;
    s->close_reason = reason;
    s->rmode = READ_NONE;
    ev_io_stop(s->loop, &s->rio);
    ev_io_stop(s->loop, &s->wio);
    ev_timer_stop(s->loop, &s->idle);
    ev_clear_pending(s->loop, &s->rio);
    ev_clear_pending(s->loop, &s->wio);
    ev_clear_pending(s->loop, &s->deferred);
    drop_file(s);
    /* The response may still fill the socket: close_notify then waits for
     * room (a bounded while), or the peer could not tell the end of the
     * data from a cut. After an error it is sent only if it fits now. */
    if (s->ssl != NULL && pf__tls_shutdown(s->ssl) && reason == 0) {
        s->tls_closing = true;
        ev_io_start(s->loop, &s->wio);
        ev_timer_set(&s->idle, PF_TLS_CLOSE_NOTIFY_SEC, 0.);
        ev_timer_start(s->loop, &s->idle);
        return;
    }
    stream_finish_close(s);
}

void pf_iostream_close(struct pf_iostream *s)
{
    stream_close(s, 0);
}

struct pf_iostream *pf__iostream_new_nonblocking(struct ev_loop *loop, int fd,
                                                 const struct pf_iostream_options *opt)
{
    struct pf_iostream *s = calloc(1, sizeof(*s));

    if (s == NULL) {
        close(fd);
        return NULL;
    }
    s->loop = loop;
    s->fd = fd;
    s->file_fd = -1;
    s->max_buffer = opt && opt->max_buffer_size ? opt->max_buffer_size
                                                : PF_IOSTREAM_DEFAULT_MAX_BUFFER;
    ev_io_init(&s->rio, rio_cb, fd, EV_READ);
    ev_io_init(&s->wio, wio_cb, fd, EV_WRITE);
    ev_timer_init(&s->idle, idle_cb, 0., 0.);
    ev_idle_init(&s->deferred, deferred_cb);
    if (opt && opt->idle_timeout_sec > 0)
        pf_iostream_set_idle_timeout(s, opt->idle_timeout_sec);
    return s;
}

struct pf_iostream *pf__iostream_new_tls_nonblocking(struct ev_loop *loop, int fd,
                                                     const struct pf_iostream_options *opt,
                                                     struct ssl_ctx_st *ctx, bool server,
                                                     double handshake_timeout_sec)
{
    struct pf_iostream *s = pf__iostream_new_nonblocking(loop, fd, opt);

    if (s == NULL)
        return NULL;
    s->ssl = SSL_new(ctx);
    if (s->ssl == NULL || pf__tls_set_fd(s->ssl, fd) < 0) {
        stream_close(s, -ENOMEM);
        return s;               /* closes from the loop, as any failed stream */
    }
    if (server)
        SSL_set_accept_state(s->ssl);
    else
        SSL_set_connect_state(s->ssl);
    /* The handshake is due in time, however slowly a peer trickles it, and
     * whatever deadline the user sets meanwhile (a later one does not move it). */
    s->hs_deadline = ev_now(loop) + (handshake_timeout_sec > 0 ? handshake_timeout_sec
                                                               : PF_TLS_HANDSHAKE_TIMEOUT_SEC);
    arm_timer(s);
    /* A server waits for the ClientHello; a client sends one. */
    ev_io_start(loop, server ? &s->rio : &s->wio);
    return s;
}

struct pf_iostream *pf_iostream_new_tls(struct ev_loop *loop, int fd,
                                        const struct pf_iostream_options *opt,
                                        struct ssl_ctx_st *ctx, bool server)
{
    int fl = fcntl(fd, F_GETFL);

    if (fl >= 0 && !(fl & O_NONBLOCK))
        fcntl(fd, F_SETFL, fl | O_NONBLOCK);
    return pf__iostream_new_tls_nonblocking(loop, fd, opt, ctx, server, 0);
}

int pf_iostream_wait_for_handshake(struct pf_iostream *s, pf_handshake_cb cb)
{
    if (s->ssl == NULL)
        return -EINVAL;
    if (s->closed)
        return -EPIPE;
    s->hs_cb = cb;
    if (s->hs_done)
        ev_feed_event(s->loop, &s->deferred, EV_CUSTOM);
    return 0;
}

bool pf_iostream_tls_info(const struct pf_iostream *s, struct pf_tls_info *out)
{
    if (s->ssl == NULL || !s->hs_done)
        return false;
    pf__tls_info(s->ssl, out);
    return true;
}

struct pf_iostream *pf_iostream_new(struct ev_loop *loop, int fd,
                                    const struct pf_iostream_options *opt)
{
    int fl = fcntl(fd, F_GETFL);

    if (fl >= 0 && !(fl & O_NONBLOCK))
        fcntl(fd, F_SETFL, fl | O_NONBLOCK);
    return pf__iostream_new_nonblocking(loop, fd, opt);
}

struct pf__stream_link *pf__iostream_link(struct pf_iostream *s)
{
    return &s->link;
}

void pf__iostream_set_release(struct pf_iostream *s, void (*fn)(void *, struct pf_iostream *),
                              void *arg)
{
    s->release = fn;
    s->release_arg = arg;
}

void pf_iostream_set_close_cb(struct pf_iostream *s, pf_close_cb cb)
{
    s->close_cb = cb;
}

bool pf_iostream_closed(const struct pf_iostream *s) { return s->closed; }
bool pf_iostream_reading(const struct pf_iostream *s) { return s->rmode != READ_NONE; }
bool pf_iostream_writing(const struct pf_iostream *s) { return write_pending(s); }
int pf_iostream_fd(const struct pf_iostream *s) { return s->fd; }
struct ev_loop *pf_iostream_loop(const struct pf_iostream *s) { return s->loop; }
void pf_iostream_set_data(struct pf_iostream *s, void *data) { s->data = data; }
void *pf_iostream_data(const struct pf_iostream *s) { return s->data; }

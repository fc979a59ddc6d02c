/*
 * iostream: buffered non-blocking reads and writes on one fd (Tornado's
 * IOStream). Reads land in a stack buffer and go straight to the pending
 * read's callback; only bytes left over after the callbacks are copied to
 * a heap buffer. Writes go straight to the socket; a queue is made only for
 * what it refuses and for completions still to run. So an idle connection
 * holds the stream struct and nothing else. Parsing what the bytes mean is
 * left to the handler.
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

enum read_mode { READ_NONE, READ_UNTIL, READ_MATCH, READ_BYTES, READ_UNTIL_CLOSE, READ_PEEK };

/* Bytes waiting: data[start, start + len). Allocated with its first byte
 * and freed with its last. */
struct byte_buf {
    size_t cap, start, len;
    char data[];
};

/* A write queue needs no more than this to begin with. */
#define BYTE_BUF_MIN 4096

/* One write's completion: fires once `mark` bytes in total were sent. */
struct write_done {
    unsigned long long mark;
    pf_write_cb cb;
};

/* What is left of the writes: made when a write leaves bytes unsent or a
 * completion to run, freed once both are done. */
struct write_queue {
    struct byte_buf *bytes;     /* unsent, before the file */
    int file_fd;                /* pf_iostream_sendfile's (borrowed); -1: none */
    off_t file_off;
    size_t file_left;
    unsigned long long queued, sent;    /* bytes since the queue was made */
    size_t head, n, cap;        /* completions: done[head, n) */
    struct write_done done[];
};

#define WRITE_DONE_MIN 2

struct pf_iostream {
    struct ev_loop *loop;
    void *data;
    int fd;
    int close_reason;
    uint8_t rmode;              /* enum read_mode */
    uint8_t dlen;
    bool partial;               /* read_bytes: 1..n bytes will do */
    bool delivering;            /* inside deliver(): it picks up new reads itself */
    bool not_socket;            /* send() said ENOTSOCK: use write() */
    bool eof;
    bool closed;
    bool hs_done;               /* TLS: the handshake finished */
    bool read_wants_write;      /* TLS: the last read waits for writability */
    bool write_wants_read;      /* TLS: the last write waits for readability */
    bool tls_closing;           /* TLS: closed; close_notify waits for the socket */
    bool lingering;             /* pf_iostream_close_lingering was called */
    bool shut_wr;               /* lingering: our side is shut, input is dropped */
    size_t max_buffer;
    double idle_timeout_sec;
    ev_tstamp last_activity;
    ev_tstamp deadline;         /* pf_iostream_set_deadline's; 0: none */
    ev_tstamp hs_deadline;      /* TLS: the handshake's, apart from the user's; 0: none */

    pf_read_cb rcb;
    union {
        char delim[PF_IOSTREAM_DELIM_MAX];  /* read_until */
        struct {
            pf_match_fn fn;
            void *arg;
        } match;                            /* read_until_match */
    };
    union {
        size_t rmax;            /* read_until(_match): the match must end within this */
        size_t rbytes;          /* read_bytes: wanted */
    };
    size_t scanned;             /* read_until(_match): bytes already searched */
    struct byte_buf *rbuf;      /* bytes read that no read took yet */
    struct write_queue *wq;

    pf_close_cb close_cb;
    void (*release)(void *, struct pf_iostream *);
    void *release_arg;
    struct pf__stream_link link;    /* the tcp server's list */

    SSL *ssl;                   /* NULL: a plain stream */
    pf_handshake_cb hs_cb;      /* TLS: to run once the handshake is done */

    ev_io io;                   /* both directions: see watch() */
    ev_timer idle;
    /* Fed, never started: work the loop owes the stream. EV_CUSTOM: the
     * handshake callback, write completions, buffered bytes for a read;
     * EV_READ / EV_WRITE: try the socket as if it were ready (TLS); once
     * closed: the close callback and the free. */
    ev_idle deferred;
};

#define STREAM_OF(w, field) \
    ((struct pf_iostream *)((char *)(w) - offsetof(struct pf_iostream, field)))

static void stream_close(struct pf_iostream *s, int reason);
static void stream_finish_close(struct pf_iostream *s);

/* ---- byte buffers ---- */

static size_t buf_len(const struct byte_buf *b)
{
    return b != NULL ? b->len : 0;
}

static char *buf_begin(struct byte_buf *b)
{
    return b->data + b->start;
}

static char *buf_end(struct byte_buf *b)
{
    return b->data + b->start + b->len;
}

/* Makes room for want > 0 more bytes after the buffered ones, allocating
 * the buffer if there is none. Returns 0 or -ENOMEM. */
static int buf_reserve(struct byte_buf **bp, size_t want)
{
    struct byte_buf *b = *bp;
    size_t len = buf_len(b), cap;

    if (b != NULL) {
        if (b->cap - b->start - b->len >= want)
            return 0;
        if (b->start > 0) {
            memmove(b->data, buf_begin(b), b->len);
            b->start = 0;
            if (b->cap - b->len >= want)
                return 0;
        }
    }
    cap = b != NULL ? b->cap : BYTE_BUF_MIN;
    while (cap - len < want)
        cap *= 2;
    b = realloc(b, sizeof(*b) + cap);
    if (b == NULL)
        return -ENOMEM;
    if (*bp == NULL)
        b->start = b->len = 0;
    b->cap = cap;
    *bp = b;
    return 0;
}

/* Drops n bytes from the front; the last byte takes the buffer with it. */
static void buf_consume(struct byte_buf **bp, size_t n)
{
    struct byte_buf *b = *bp;

    if (b == NULL)
        return;
    b->start += n;
    b->len -= n;
    if (b->len == 0) {
        free(b);
        *bp = NULL;
    }
}

/* Copies len > 0 bytes to the end of *bp, which is allowed `max` bytes in
 * all. Returns 0, -ENOBUFS or -ENOMEM. */
static int buf_append(struct byte_buf **bp, size_t max, const char *p, size_t len)
{
    if (buf_len(*bp) + len > max)
        return -ENOBUFS;
    if (buf_reserve(bp, len) < 0)
        return -ENOMEM;
    memcpy(buf_end(*bp), p, len);
    (*bp)->len += len;
    return 0;
}

/* ---- the watchers ---- */

/* Owes the stream a callback from the loop (see `deferred`). */
static void defer(struct pf_iostream *s, int what)
{
    ev_feed_event(s->loop, &s->deferred, what);
}

/* One io watcher serves both directions; this turns one on or off.
 * Restarting it drops an event it had pending, which the level-triggered
 * backend reports again on the next poll. */
static void watch(struct pf_iostream *s, int dir, bool on)
{
    int now = ev_is_active(&s->io) ? s->io.events & (EV_READ | EV_WRITE) : 0;
    int want = on ? now | dir : now & ~dir;

    if (want == now)
        return;
    ev_io_stop(s->loop, &s->io);
    if (want != 0) {
        ev_io_modify(&s->io, want);
        ev_io_start(s->loop, &s->io);
    }
}

static bool bytes_pending(const struct pf_iostream *s)
{
    return s->wq != NULL && s->wq->bytes != NULL;
}

static bool write_pending(const struct pf_iostream *s)
{
    return s->wq != NULL && (s->wq->bytes != NULL || s->wq->file_fd >= 0);
}

static void touch(struct pf_iostream *s)
{
    s->last_activity = ev_now(s->loop);
}

/* Starts watching for input when a read waits. It stops only at EOF or
 * close, or lazily in on_readable when input comes with no read waiting: a
 * request/response connection thus costs no epoll_ctl pair per request. */
static void update_read_watcher(struct pf_iostream *s)
{
    if (!s->closed && !s->eof && s->rmode != READ_NONE)
        watch(s, EV_READ, true);
    else if (s->closed || s->eof)
        watch(s, EV_READ, false);
}

/* ---- reading ---- */

/* read_until's matcher: the end of the first delimiter in data[0, len), or
 * 0. The search starts where the last one stopped, less a partial delimiter. */
static size_t find_delim(const struct pf_iostream *s, const char *data, size_t len)
{
    size_t from = s->scanned >= s->dlen ? s->scanned - (s->dlen - 1) : 0;
    const char *hit = len >= s->dlen ? memmem(data + from, len - from, s->delim, s->dlen) : NULL;

    return hit != NULL ? (size_t)(hit - data) + s->dlen : 0;
}

/*
 * Can the pending read complete from data[0, len)? Sets *n to the bytes it
 * takes. Returns 1 if so, 0 if it needs more, or -errno if it never can.
 */
static int read_ready(struct pf_iostream *s, const char *data, size_t len, size_t *n)
{
    switch ((enum read_mode)s->rmode) {
    case READ_UNTIL:
    case READ_MATCH: {
        size_t end = s->rmode == READ_UNTIL ? find_delim(s, data, len)
                                            : s->match.fn(data, len, s->scanned, s->match.arg);
        if (end > 0) {
            *n = end;
            return end <= s->rmax ? 1 : -EMSGSIZE;
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
        enum read_mode mode = (enum read_mode)s->rmode;

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

/* The bytes read that no read took yet ("" when none). */
static const char *read_data(struct pf_iostream *s)
{
    return s->rbuf != NULL ? buf_begin(s->rbuf) : "";
}

/* Peer closed its side. Writes still queued go out first (a client that
 * half-closes after its request still gets the answer). */
static void on_eof(struct pf_iostream *s)
{
    s->eof = true;
    if (s->rmode == READ_UNTIL_CLOSE) {
        size_t used = deliver(s, read_data(s), buf_len(s->rbuf));
        if (s->closed)
            return;
        buf_consume(&s->rbuf, used);
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
            watch(s, EV_WRITE, true);
        }
        return n;
    }
    do
        n = read(s->fd, buf, len);
    while (n < 0 && errno == EINTR);
    return n < 0 ? -errno : n;
}

/* Hands the buffered bytes to the pending read, from the loop. */
static void deliver_buffered(struct pf_iostream *s)
{
    size_t used;

    if (s->rbuf == NULL)
        return;
    used = deliver(s, buf_begin(s->rbuf), s->rbuf->len);
    if (s->closed)
        return;
    buf_consume(&s->rbuf, used);
    update_read_watcher(s);
}

/* Lingering: what the peer still sends is read and dropped until it
 * closes (see pf_iostream_close_lingering). */
static void linger_read(struct pf_iostream *s)
{
    char stack[PF_IOSTREAM_READ_CHUNK];
    ssize_t n = read_some(s, stack, sizeof(stack));

    if (n == 0)
        stream_close(s, 0);
    else if (n < 0 && n != -EAGAIN)
        stream_close(s, (int)n);
}

/* The socket is readable (or, TLS, may be). */
static void on_readable(struct pf_iostream *s)
{
    ssize_t n;
    size_t used;
    int err;

    if (s->shut_wr) {
        linger_read(s);
        return;
    }
    if (s->write_wants_read) {
        /* The last TLS write waited for this: let the writer go on. */
        s->write_wants_read = false;
        defer(s, EV_WRITE);
    }
    if (s->rmode == READ_NONE) {
        /* Nobody asked: leave the bytes in the kernel (backpressure). */
        watch(s, EV_READ, false);
        return;
    }
    if (s->rbuf == NULL) {
        char stack[PF_IOSTREAM_READ_CHUNK];

        n = read_some(s, stack, sizeof(stack));
        if (n <= 0)
            goto not_read;
        touch(s);
        used = deliver(s, stack, (size_t)n);
        if (s->closed || used == (size_t)n)
            goto done;
        err = buf_append(&s->rbuf, s->max_buffer, stack + used, (size_t)n - used);
        if (err < 0) {
            stream_close(s, err);
            return;
        }
    } else {
        if (buf_reserve(&s->rbuf, PF_IOSTREAM_READ_CHUNK) < 0) {
            stream_close(s, -ENOMEM);
            return;
        }
        n = read_some(s, buf_end(s->rbuf), PF_IOSTREAM_READ_CHUNK);
        if (n <= 0)
            goto not_read;
        touch(s);
        s->rbuf->len += (size_t)n;
        used = deliver(s, buf_begin(s->rbuf), s->rbuf->len);
        if (s->closed)
            return;
        buf_consume(&s->rbuf, used);
        if (buf_len(s->rbuf) > s->max_buffer) {
            stream_close(s, -ENOBUFS);
            return;
        }
    }
done:
    if (!s->closed)
        update_read_watcher(s);
    /* TLS may hold decrypted bytes the socket no longer signals. */
    if (!s->closed && s->ssl != NULL && s->rmode != READ_NONE && SSL_pending(s->ssl) > 0)
        defer(s, EV_READ);
    return;
not_read:
    if (n == 0)
        on_eof(s);
    else if (n != -EAGAIN)
        stream_close(s, (int)n);
}

static int start_read(struct pf_iostream *s, enum read_mode mode, pf_read_cb cb)
{
    assert(cb != NULL);
    assert(s->rmode == READ_NONE && "only one read may be pending");
    if (s->closed || s->eof || s->lingering)
        return -EPIPE;
    s->rmode = (uint8_t)mode;
    s->rcb = cb;
    s->scanned = 0;
    /* deliver() looks at the new read itself when it regains control. */
    if (s->delivering)
        return 0;
    if (s->rbuf != NULL)
        defer(s, EV_CUSTOM);
    else
        update_read_watcher(s);
    if (s->ssl != NULL && s->hs_done && s->rbuf == NULL && SSL_pending(s->ssl) > 0)
        defer(s, EV_READ);
    return 0;
}

int pf_iostream_read_until(struct pf_iostream *s, const char *delim, size_t dlen,
                           size_t max_bytes, pf_read_cb cb)
{
    assert(dlen > 0 && dlen <= PF_IOSTREAM_DELIM_MAX);
    memcpy(s->delim, delim, dlen);
    s->dlen = (uint8_t)dlen;
    s->rmax = max_bytes ? max_bytes : SIZE_MAX;
    return start_read(s, READ_UNTIL, cb);
}

int pf_iostream_read_until_match(struct pf_iostream *s, pf_match_fn match, void *arg,
                                 size_t max_bytes, pf_read_cb cb)
{
    assert(match != NULL);
    s->match.fn = match;
    s->match.arg = arg;
    s->rmax = max_bytes ? max_bytes : SIZE_MAX;
    return start_read(s, READ_MATCH, cb);
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

/* ---- writing ---- */

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
            watch(s, EV_READ, true);
        }
        return n;
    }
    return sock_sendv(s, &iov, 1);
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

/* The stream's write queue, made if there is none. NULL: out of memory. */
static struct write_queue *write_queue(struct pf_iostream *s)
{
    struct write_queue *q = s->wq;

    if (q != NULL)
        return q;
    q = malloc(sizeof(*q) + WRITE_DONE_MIN * sizeof(q->done[0]));
    if (q == NULL)
        return NULL;
    memset(q, 0, sizeof(*q));
    q->file_fd = -1;
    q->cap = WRITE_DONE_MIN;
    s->wq = q;
    return q;
}

/* A queue with nothing left to send or to run goes. */
static void release_write_queue_if_done(struct pf_iostream *s)
{
    if (s->wq != NULL && !write_pending(s) && s->wq->head == s->wq->n) {
        free(s->wq);
        s->wq = NULL;
    }
}

/* cb runs once every byte queued so far is sent. */
static int push_write_done(struct pf_iostream *s, pf_write_cb cb)
{
    struct write_queue *q = s->wq;

    if (q->n == q->cap && q->head > 0) {
        memmove(q->done, q->done + q->head, (q->n - q->head) * sizeof(q->done[0]));
        q->n -= q->head;
        q->head = 0;
    }
    if (q->n == q->cap) {
        q = realloc(q, sizeof(*q) + 2 * q->cap * sizeof(q->done[0]));
        if (q == NULL)
            return -ENOMEM;
        q->cap *= 2;
        s->wq = q;
    }
    q->done[q->n++] = (struct write_done){ q->queued, cb };
    return 0;
}

/* Runs the completions of the bytes sent so far. A callback may write (and
 * so move the queue) or close. */
static void fire_write_callbacks(struct pf_iostream *s)
{
    struct write_queue *q;

    while (!s->closed && (q = s->wq) != NULL && q->head < q->n
           && q->done[q->head].mark <= q->sent) {
        pf_write_cb cb = q->done[q->head++].cb;

        cb(s);
    }
    if (!s->closed)
        release_write_queue_if_done(s);
}

static void drop_file(struct pf_iostream *s)
{
    if (s->wq != NULL) {
        s->wq->file_fd = -1;
        s->wq->file_left = 0;
    }
}

/* sendfile(2) cannot encrypt: read a chunk and write it through TLS. What
 * TLS did not take is read again next time (it is the same bytes). */
static ssize_t send_file_tls(struct pf_iostream *s, struct write_queue *q)
{
    char chunk[16 * 1024];      /* one TLS record */
    size_t want = q->file_left < sizeof(chunk) ? q->file_left : sizeof(chunk);
    ssize_t n = pread(q->file_fd, chunk, want, q->file_off);

    if (n <= 0)
        return n;               /* -1 with errno, or 0: the file shrank */
    n = send_some(s, chunk, (size_t)n);
    if (n == 0) {
        errno = EAGAIN;
        return -1;
    }
    if (n > 0)
        q->file_off += n;
    else
        errno = (int)-n;
    return n > 0 ? n : -1;
}

/* Sends what the kernel takes of the queued file. Returns 0, or -errno
 * after closing the stream. */
static int send_file(struct pf_iostream *s)
{
    struct write_queue *q = s->wq;

    while (q->file_left > 0) {
        ssize_t n = s->ssl != NULL ? send_file_tls(s, q)
                                   : sendfile(s->fd, q->file_fd, &q->file_off, q->file_left);

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
        q->sent += (unsigned long long)n;
        q->file_left -= (size_t)n;
    }
    drop_file(s);
    return 0;
}

static void linger_start(struct pf_iostream *s);

/* Flushes the queue if can_send (the socket is, or may be, writable), then
 * runs the completions of what is sent. */
static void on_writable(struct pf_iostream *s, bool can_send)
{
    struct write_queue *q = s->wq;

    if (can_send && s->read_wants_write) {
        s->read_wants_write = false;
        defer(s, EV_READ);
    }
    if (can_send && q != NULL) {
        while (q->bytes != NULL) {
            ssize_t n = send_some(s, buf_begin(q->bytes), q->bytes->len);

            if (n < 0) {
                stream_close(s, (int)n);
                return;
            }
            if (n == 0)
                break;
            touch(s);
            q->sent += (unsigned long long)n;
            buf_consume(&q->bytes, (size_t)n);
        }
        if (q->bytes == NULL && q->file_fd >= 0 && send_file(s) < 0)
            return;
    }
    if (!write_pending(s))
        watch(s, EV_WRITE, false);
    fire_write_callbacks(s);
    if (!s->closed && s->eof && !write_pending(s))
        stream_close(s, 0);
    if (!s->closed && s->lingering && !s->shut_wr && !write_pending(s))
        linger_start(s);
}

/* After a write: wait for the socket if bytes are left, and run cb from
 * the loop once they are gone (at once if they are). */
static int write_queued(struct pf_iostream *s, pf_write_cb cb)
{
    int err;

    if (write_pending(s))
        watch(s, EV_WRITE, true);
    if (cb != NULL) {
        err = push_write_done(s, cb);
        if (err < 0) {
            stream_close(s, err);
            return err;
        }
        if (!write_pending(s))
            defer(s, EV_CUSTOM);
    }
    release_write_queue_if_done(s);
    return 0;
}

int pf_iostream_writev(struct pf_iostream *s, const struct iovec *iov, int iovcnt,
                       pf_write_cb cb)
{
    struct write_queue *q;
    size_t len = 0, skip;
    ssize_t sent = 0;
    int err;

    assert(!(s->wq != NULL && s->wq->file_fd >= 0) && "no write may follow a pending sendfile");
    if (s->closed || s->lingering)
        return -EPIPE;
    for (int i = 0; i < iovcnt; i++)
        len += iov[i].iov_len;
    /* Nothing queued: try the socket first, and copy only what it refused. */
    if (!bytes_pending(s) && len > 0) {
        sent = sendv_some(s, iov, iovcnt);
        if (sent < 0) {
            stream_close(s, (int)sent);
            return (int)sent;
        }
        if (sent > 0)
            touch(s);
    }
    if ((size_t)sent == len && cb == NULL && s->wq == NULL)
        return 0;               /* all gone, nothing to run after it */
    q = write_queue(s);
    if (q == NULL) {
        stream_close(s, -ENOMEM);
        return -ENOMEM;
    }
    q->sent += (unsigned long long)sent;
    q->queued += len;
    skip = (size_t)sent;
    for (int i = 0; i < iovcnt && (size_t)sent < len; i++) {
        if (skip >= iov[i].iov_len) {
            skip -= iov[i].iov_len;
            continue;
        }
        err = buf_append(&q->bytes, s->max_buffer, (const char *)iov[i].iov_base + skip,
                         iov[i].iov_len - skip);
        skip = 0;
        if (err < 0) {
            stream_close(s, err);
            return err;
        }
    }
    return write_queued(s, cb);
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
    struct write_queue *q;
    ssize_t sent = 0;
    int err;

    assert(!(s->wq != NULL && s->wq->file_fd >= 0) && "one sendfile at a time");
    if (s->closed || s->lingering)
        return -EPIPE;
    if (!bytes_pending(s) && head_len > 0) {
        /* No MSG_MORE: corking the head until the file follows raised the
         * 64 KiB p99 from about 5 to 40 ms here, as nginx's tcp_nopush does. */
        sent = send_some(s, head, head_len);
        if (sent < 0) {
            stream_close(s, (int)sent);
            return (int)sent;
        }
        touch(s);
    }
    q = write_queue(s);
    if (q == NULL) {
        stream_close(s, -ENOMEM);
        return -ENOMEM;
    }
    q->sent += (unsigned long long)sent;
    if ((size_t)sent < head_len) {
        err = buf_append(&q->bytes, s->max_buffer, (const char *)head + sent,
                         head_len - (size_t)sent);
        if (err < 0) {
            stream_close(s, err);
            return err;
        }
    }
    q->file_fd = fd;
    q->file_off = offset;
    q->file_left = len;
    q->queued += head_len + len;
    if (q->bytes == NULL && send_file(s) < 0)
        return -EPIPE;
    return write_queued(s, cb);
}

/* ---- the handshake, and what the loop calls ---- */

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
        watch(s, EV_WRITE, want == PF__TLS_WANT_WRITE);
        watch(s, EV_READ, true);
        return;
    }
    s->hs_done = true;
    s->hs_deadline = 0;         /* the timer, if it fires early, just re-arms */
    touch(s);
    if (s->hs_cb != NULL)
        defer(s, EV_CUSTOM);
    watch(s, EV_WRITE, write_pending(s));
    if (s->rmode != READ_NONE)
        defer(s, EV_READ);
    update_read_watcher(s);
}

/* The socket is ready for revents (EV_READ | EV_WRITE), or may be. */
static void on_ready(struct pf_iostream *s, int revents)
{
    if (s->tls_closing) {
        if (!pf__tls_shutdown(s->ssl))
            stream_finish_close(s);
        return;
    }
    if (s->ssl != NULL && !s->hs_done) {
        tls_handshake_step(s);
        return;
    }
    if (revents & EV_READ)
        on_readable(s);
    if ((revents & EV_WRITE) && !s->closed)
        on_writable(s, true);
}

static void io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    on_ready(STREAM_OF(w, io), revents);
}

static void closer_run(struct pf_iostream *s);

static void deferred_cb(struct ev_loop *loop, ev_idle *w, int revents)
{
    struct pf_iostream *s = STREAM_OF(w, deferred);

    (void)loop;
    if (s->closed) {
        if (!s->tls_closing)
            closer_run(s);
        return;
    }
    if (revents & EV_CUSTOM) {
        if (s->hs_cb != NULL && s->hs_done) {
            pf_handshake_cb cb = s->hs_cb;
            struct pf_tls_info info;

            s->hs_cb = NULL;
            pf__tls_info(s->ssl, &info);
            cb(s, &info);
            if (s->closed)
                return;
        }
        on_writable(s, false);
        if (s->closed)
            return;
        deliver_buffered(s);
        if (s->closed)
            return;
    }
    if (revents & (EV_READ | EV_WRITE))
        on_ready(s, revents);
}

/* ---- timers ---- */

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
        /* Lingering ends in time: that is how it is meant to end. */
        stream_close(s, s->lingering ? 0 : -ETIMEDOUT);
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

/* ---- closing, and the rest ---- */

static void closer_run(struct pf_iostream *s)
{
    if (s->close_cb != NULL)
        s->close_cb(s, s->close_reason);
    if (s->release != NULL)
        s->release(s->release_arg, s);
    free(s->rbuf);
    if (s->wq != NULL)
        free(s->wq->bytes);
    free(s->wq);
    SSL_free(s->ssl);
    free(s);
}

/* The fd goes; the close callback and the free wait for the loop: the
 * caller may be deep inside one of this stream's callbacks. */
static void stream_finish_close(struct pf_iostream *s)
{
    watch(s, EV_READ | EV_WRITE, false);
    ev_timer_stop(s->loop, &s->idle);
    ev_clear_pending(s->loop, &s->idle);
    s->tls_closing = false;
    close(s->fd);
    s->fd = -1;
    defer(s, EV_CUSTOM);
}

static void stream_close(struct pf_iostream *s, int reason)
{
    if (s->closed)
        return;
    s->closed = true;
    s->close_reason = reason;
    s->rmode = READ_NONE;
    watch(s, EV_READ | EV_WRITE, false);
    ev_timer_stop(s->loop, &s->idle);
    ev_clear_pending(s->loop, &s->deferred);
    drop_file(s);
    /* The response may still fill the socket: close_notify then waits for
     * room (a bounded while), or the peer could not tell the end of the
     * data from a cut. After an error it is sent only if it fits now. */
    if (s->ssl != NULL && pf__tls_shutdown(s->ssl) && reason == 0) {
        s->tls_closing = true;
        watch(s, EV_WRITE, true);
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

/* The writes are out: shut our side, and drop what comes until EOF. */
static void linger_start(struct pf_iostream *s)
{
    if (shutdown(s->fd, SHUT_WR) < 0) {
        stream_close(s, -errno);
        return;
    }
    s->shut_wr = true;
    buf_consume(&s->rbuf, buf_len(s->rbuf));
    watch(s, EV_READ, true);
}

void pf_iostream_close_lingering(struct pf_iostream *s, double sec)
{
    if (s->closed || s->lingering)
        return;
    if (s->ssl != NULL || s->eof || s->not_socket || sec <= 0) {
        stream_close(s, 0);
        return;
    }
    s->lingering = true;
    s->rmode = READ_NONE;
    s->rcb = NULL;
    s->deadline = ev_now(s->loop) + sec;
    arm_timer(s);
    if (!write_pending(s))
        linger_start(s);
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
    s->max_buffer = opt && opt->max_buffer_size ? opt->max_buffer_size
                                                : PF_IOSTREAM_DEFAULT_MAX_BUFFER;
    ev_io_init(&s->io, io_cb, fd, 0);
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
    watch(s, server ? EV_READ : EV_WRITE, true);
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
        defer(s, EV_CUSTOM);
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

/* The stream harness; see streamutil.h. */
#define _GNU_SOURCE
#include "streamutil.h"
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

void su_attach(struct su_stream *st, struct ev_loop *loop, int fd, int peer,
               struct pf_iostream *s)
{
    memset(st, 0, sizeof(*st));
    st->loop = loop;
    st->fd = fd;
    st->peer = peer;
    st->s = s;
    ck_assert_ptr_nonnull(s);
    pf_iostream_set_data(s, st);
    pf_iostream_set_close_cb(s, su_close_cb);
}

void su_detach(struct su_stream *st, double timeout_sec)
{
    if (st->s != NULL) {
        pf_iostream_close(st->s);
        ck_assert_msg(su_run_until_closed(st, timeout_sec), "close callback never ran");
    }
    if (st->peer >= 0)
        close(st->peer);
    st->peer = -1;
    for (int i = 0; i < st->nreads && i < SU_MAX_READS; i++)
        free(st->rbuf[i]);
    st->nreads = 0;
}

struct su_stream *su_of(struct pf_iostream *s)
{
    return pf_iostream_data(s);
}

void su_note_cb(struct su_stream *st, char what)
{
    if (st->in_call)
        st->reentered++;
    if (st->nlog < sizeof(st->log) - 1)
        st->log[st->nlog++] = what;
}

void su_record_read(struct su_stream *st, const char *buf, size_t len, int status)
{
    su_note_cb(st, 'R');
    if (st->nreads < SU_MAX_READS) {
        st->rstatus[st->nreads] = status;
        st->rbuf[st->nreads] = malloc(len + 1);
        ck_assert_ptr_nonnull(st->rbuf[st->nreads]);
        memcpy(st->rbuf[st->nreads], buf, len);
        st->rbuf[st->nreads][len] = '\0';
        st->rlen[st->nreads] = len;
    }
    st->nreads++;
}

void su_read_cb(struct pf_iostream *s, const char *buf, size_t len, int status)
{
    su_record_read(su_of(s), buf, len, status);
}

void su_write_cb(struct pf_iostream *s)
{
    struct su_stream *st = su_of(s);

    su_note_cb(st, 'W');
    st->nwrites++;
}

void su_close_cb(struct pf_iostream *s, int reason)
{
    struct su_stream *st = su_of(s);

    su_note_cb(st, 'C');
    st->nclose++;
    st->close_reason = reason;
    st->close_time = tu_now();
    st->closed_flag_in_close_cb = pf_iostream_closed(s);
    errno = 0;
    st->fd_closed_in_close_cb = fcntl(st->fd, F_GETFD) == -1 && errno == EBADF;
    st->closed = true;
    st->s = NULL;   /* freed once we return */
}

void su_close_in_read_cb(struct pf_iostream *s, const char *buf, size_t len, int status)
{
    struct su_stream *st = su_of(s);

    su_record_read(st, buf, len, status);
    su_close(st);
    st->closed_after_close = pf_iostream_closed(s);
    st->rc_after_close[0] = su_read_until(st, "\r\n\r\n", 0, su_read_cb);
    st->rc_after_close[1] = su_read_bytes(st, 1, false, su_read_cb);
    st->rc_after_close[2] = su_write(st, "x", 1, su_write_cb);
    su_close(st);   /* idempotent */
}

/* The wrappers mark the span of each call so that callbacks can tell
 * whether they ran inside it. su_close_in_read_cb calls them after the
 * close, when st->s is still the stream (the close callback has not run). */
int su_read_until(struct su_stream *st, const char *delim, size_t max_bytes, pf_read_cb cb)
{
    bool was = st->in_call;
    int rc;

    ck_assert_ptr_nonnull(st->s);
    st->in_call = true;
    rc = pf_iostream_read_until(st->s, delim, strlen(delim), max_bytes, cb);
    st->in_call = was;
    return rc;
}

int su_read_bytes(struct su_stream *st, size_t n, bool partial, pf_read_cb cb)
{
    bool was = st->in_call;
    int rc;

    ck_assert_ptr_nonnull(st->s);
    st->in_call = true;
    rc = pf_iostream_read_bytes(st->s, n, partial, cb);
    st->in_call = was;
    return rc;
}

int su_read_until_close(struct su_stream *st, pf_read_cb cb)
{
    bool was = st->in_call;
    int rc;

    ck_assert_ptr_nonnull(st->s);
    st->in_call = true;
    rc = pf_iostream_read_until_close(st->s, cb);
    st->in_call = was;
    return rc;
}

int su_write(struct su_stream *st, const void *buf, size_t len, pf_write_cb cb)
{
    bool was = st->in_call;
    int rc;

    ck_assert_ptr_nonnull(st->s);
    st->in_call = true;
    rc = pf_iostream_write(st->s, buf, len, cb);
    st->in_call = was;
    return rc;
}

int su_wait_for_handshake(struct su_stream *st, pf_handshake_cb cb)
{
    bool was = st->in_call;
    int rc;

    ck_assert_ptr_nonnull(st->s);
    st->in_call = true;
    rc = pf_iostream_wait_for_handshake(st->s, cb);
    st->in_call = was;
    return rc;
}

void su_close(struct su_stream *st)
{
    bool was = st->in_call;

    ck_assert_ptr_nonnull(st->s);
    st->in_call = true;
    pf_iostream_close(st->s);
    st->in_call = was;
}

void su_run_for(struct su_stream *st, double sec)
{
    tu_run_for(st->loop, sec);
}

bool su_run_until_count(struct su_stream *st, const int *count, int target, double timeout_sec)
{
    double deadline = tu_now() + timeout_sec;

    while (*count < target && tu_now() < deadline)
        su_run_for(st, 0.01);
    return *count >= target;
}

bool su_run_until_closed(struct su_stream *st, double timeout_sec)
{
    return tu_run_until(st->loop, &st->closed, timeout_sec);
}

void su_peer_write(struct su_stream *st, const char *str)
{
    ck_assert(tu_write_all(st->peer, str, strlen(str)));
}

void su_peer_close(struct su_stream *st)
{
    close(st->peer);
    st->peer = -1;
}

size_t su_read_peer(struct su_stream *st, void *buf, size_t len, double timeout_sec)
{
    double deadline = tu_now() + timeout_sec;
    size_t got = 0;

    while (got < len && tu_now() < deadline) {
        ssize_t n = recv(st->peer, (char *)buf + got, len - got, MSG_DONTWAIT);

        if (n > 0)
            got += (size_t)n;
        else if (n == 0)
            break;
        else
            su_run_for(st, 0.002);
    }
    return got;
}

void su_assert_read(const struct su_stream *st, int i, const char *want, size_t wlen)
{
    ck_assert_int_gt(st->nreads, i);
    ck_assert_msg(st->rstatus[i] == 0, "read %d: status %d", i, st->rstatus[i]);
    ck_assert_msg(st->rlen[i] == wlen && memcmp(st->rbuf[i], want, wlen) == 0,
                  "read %d: got %zu bytes \"%s\", want %zu bytes \"%s\"", i,
                  st->rlen[i], tu_show(st->rbuf[i], st->rlen[i]), wlen, tu_show(want, wlen));
}

void su_assert_no_reentry(const struct su_stream *st)
{
    ck_assert_msg(st->reentered == 0,
                  "%d callback(s) ran inside a pf_iostream_* call (log \"%s\")",
                  st->reentered, st->log);
}

void su_assert_closed_once(const struct su_stream *st, int reason)
{
    ck_assert_msg(st->nclose == 1, "close callback ran %d times", st->nclose);
    ck_assert_msg(st->close_reason == reason, "close reason %d (%s), want %d (%s)",
                  st->close_reason, strerror(-st->close_reason), reason, strerror(-reason));
    ck_assert_msg(st->fd_closed_in_close_cb, "fd %d still open in the close callback", st->fd);
    ck_assert_msg(st->closed_flag_in_close_cb,
                  "pf_iostream_closed() false in the close callback");
}

unsigned char su_pattern_byte(size_t i)
{
    return (unsigned char)(((uint32_t)i * 2654435761u) >> 24);
}

void su_fill_pattern(unsigned char *buf, size_t from, size_t len)
{
    for (size_t i = 0; i < len; i++)
        buf[i] = su_pattern_byte(from + i);
}

/* Check suite for lib/iostream.c. Each test drives one pf_iostream on a fresh
 * libev loop through a socketpair (a TCP loopback pair where TCP matters) and
 * plays the peer with plain reads and writes; streamutil.h records what the
 * stream's callbacks see. The tests assert what a user of the stream sees:
 * bytes, callbacks, close reasons and fds; the library's internals are left
 * to lib/iostream.c. */
#define _GNU_SOURCE
#include "iostream.h"
#include "streamchecks.h"
#include "streamutil.h"
#include "testutil.h"

#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

/* Bound on waiting for something that should happen. */
#define WAIT_SEC 3.0
/* Time the loop gets to do something that should NOT happen. */
#define SETTLE_SEC 0.1
/* Write callbacks whose moment a slow reader records. */
#define MAX_WRITES 8
/* Large enough that neither a socketpair nor loopback TCP can absorb it. */
#define LARGE_WRITE_BYTES (8u * 1024 * 1024)
/* The slow peer reads at most this much per millisecond tick. */
#define SLOW_READ_CHUNK (32u * 1024)
#define HTTP_DELIM "\r\n\r\n"
/* A lingering stream's time, and what its peer sends at a time. */
#define LINGER_SEC 0.5
#define LINGER_INPUT_BYTES (16u * 1024)

#define container_of(ptr, type, member) \
    ((type *)((char *)(ptr) - offsetof(type, member)))

/* What the callbacks that issue the next call from inside one need (the
 * stream's data). */
struct chain {
    int reads;                  /* reads chain_read_cb still issues */
    int writes;
    int rc;                     /* first non-zero return of a chained call */
};

/* ---- helpers ---------------------------------------------------------- */

static void tcp_pair(int sv[2])
{
    struct sockaddr_in sin = { .sin_family = AF_INET,
                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    ck_assert_int_ge(l, 0);
    ck_assert_int_eq(bind(l, (struct sockaddr *)&sin, sizeof(sin)), 0);
    ck_assert_int_eq(listen(l, 1), 0);
    sv[1] = tu_connect_tcp("127.0.0.1", tu_local_port(l));
    ck_assert_int_ge(sv[1], 0);
    sv[0] = accept4(l, NULL, NULL, SOCK_CLOEXEC);
    ck_assert_int_ge(sv[0], 0);
    close(l);
}

/* A new stream on loop; the test keeps the other end as c->peer. */
static void ctx_open(struct su_stream *c, struct ev_loop *loop,
                     const struct pf_iostream_options *opt, bool tcp)
{
    int sv[2];

    if (tcp)
        tcp_pair(sv);
    else
        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    su_attach(c, loop, sv[0], sv[1], pf_iostream_new(loop, sv[0], opt));
}

static void ctx_init(struct su_stream *c, const struct pf_iostream_options *opt, bool tcp)
{
    struct ev_loop *loop = ev_loop_new(0);

    ck_assert_ptr_nonnull(loop);
    ctx_open(c, loop, opt, tcp);
}

/* Closes the stream if the test left it open (its close callback must
 * run), and the loop. */
static void ctx_done(struct su_stream *c)
{
    su_detach(c, WAIT_SEC);
    ev_loop_destroy(c->loop);
}

/* Bytes that reached the peer's side: read by the slow reader, waiting in
 * the peer's receive queue and, on TCP, still in the stream's send queue
 * (those count: they were handed to the kernel). */
struct slow_reader {
    ev_timer timer;
    struct su_stream *c;
    bool tcp;
    size_t got;
    size_t mismatch_at;         /* SIZE_MAX: none */
    bool eof;
    size_t accounted[MAX_WRITES];   /* bytes on the peer's side at each write cb */
    unsigned char buf[SLOW_READ_CHUNK];
};

static size_t peer_side_bytes(struct slow_reader *r)
{
    int inq = 0, outq = 0;

    ck_assert_int_eq(ioctl(r->c->peer, FIONREAD, &inq), 0);
    if (r->tcp)
        ck_assert_int_eq(ioctl(r->c->fd, SIOCOUTQ, &outq), 0);
    return r->got + (size_t)inq + (size_t)outq;
}

/* su_write_cb, noting how many bytes had reached the peer's side by then. */
static void accounting_write_cb(struct pf_iostream *s)
{
    struct su_stream *c = su_of(s);
    struct slow_reader *r = c->data;

    if (c->nwrites < MAX_WRITES)
        r->accounted[c->nwrites] = peer_side_bytes(r);
    su_write_cb(s);
}

static void slow_reader_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct slow_reader *r = container_of(w, struct slow_reader, timer);
    struct pollfd p = { .fd = r->c->peer, .events = POLLIN };
    ssize_t n;

    (void)revents;
    if (poll(&p, 1, 0) != 1)
        return;
    n = read(r->c->peer, r->buf, sizeof(r->buf));
    if (n <= 0) {
        r->eof = true;
        ev_timer_stop(loop, w);
        return;
    }
    for (ssize_t i = 0; i < n; i++)
        if (r->mismatch_at == SIZE_MAX && r->buf[i] != su_pattern_byte(r->got + (size_t)i))
            r->mismatch_at = r->got + (size_t)i;
    r->got += (size_t)n;
}

/* tcp: c is a TCP pair (its send queue counts). c's data is r from now on. */
static void slow_reader_start(struct slow_reader *r, struct su_stream *c, bool tcp)
{
    memset(r, 0, offsetof(struct slow_reader, buf));
    r->c = c;
    r->tcp = tcp;
    r->mismatch_at = SIZE_MAX;
    c->data = r;
    ev_timer_init(&r->timer, slow_reader_cb, 0.001, 0.001);
    ev_timer_start(c->loop, &r->timer);
}

static bool run_until_peer_got(struct slow_reader *r, size_t want, double timeout_sec)
{
    double deadline = tu_now() + timeout_sec;

    while (r->got < want && !r->eof && tu_now() < deadline)
        su_run_for(r->c, 0.01);
    return r->got >= want;
}

/* A repeating timer that calls fn `left` times, every period. */
struct ticker {
    ev_timer timer;
    struct su_stream *c;
    int left;
    double last;
    void (*fn)(struct ticker *t);
};

static void ticker_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct ticker *t = container_of(w, struct ticker, timer);

    (void)revents;
    t->fn(t);
    t->last = tu_now();
    if (--t->left <= 0)
        ev_timer_stop(loop, w);
}

static void ticker_start(struct ticker *t, struct su_stream *c, double period, int times,
                         void (*fn)(struct ticker *t))
{
    memset(t, 0, sizeof(*t));
    t->c = c;
    t->left = times;
    t->fn = fn;
    ev_timer_init(&t->timer, ticker_cb, period, period);
    ev_timer_start(c->loop, &t->timer);
}

/* ---- reads ------------------------------------------------------------ */

START_TEST(test_read_until_finds_delimiter_split_across_writes_and_keeps_rest)
{
    struct su_stream c;

    ctx_init(&c, NULL, false);
    sc_read_until_across_writes_keeps_rest(&c, WAIT_SEC);
    ctx_done(&c);
}
END_TEST

START_TEST(test_read_until_finds_delimiter_sent_one_byte_per_write_after_false_starts)
{
    /* "\r\n\r\r\n\r\n": a partial match must not hide the real one. */
    static const char data[] = "x\r\n\r\r\n\r\ntail";
    struct su_stream c;

    ctx_init(&c, NULL, false);
    ck_assert_int_eq(su_read_until(&c, HTTP_DELIM, 0, su_read_cb), 0);
    for (size_t i = 0; i < sizeof(data) - 1; i++) {
        ck_assert(tu_write_all(c.peer, &data[i], 1));
        su_run_for(&c, 0.02);
        if (i < 7)
            ck_assert_msg(c.nreads == 0, "read completed after %zu bytes", i + 1);
    }
    ck_assert(su_run_until_count(&c, &c.nreads, 1, WAIT_SEC));
    SU_ASSERT_READ(&c, 0, "x\r\n\r\r\n\r\n");
    ck_assert_int_eq(su_read_bytes(&c, 4, false, su_read_cb), 0);
    ck_assert(su_run_until_count(&c, &c.nreads, 2, WAIT_SEC));
    SU_ASSERT_READ(&c, 1, "tail");
    su_assert_no_reentry(&c);
    ctx_done(&c);
}
END_TEST

START_TEST(test_read_until_long_delimiter_split_over_three_writes)
{
    struct su_stream c;

    ctx_init(&c, NULL, false);
    ck_assert_int_eq(su_read_until(&c, "--boundary--", 0, su_read_cb), 0);
    su_peer_write(&c, "part one --bou");
    su_run_for(&c, SETTLE_SEC);
    su_peer_write(&c, "nda");
    su_run_for(&c, SETTLE_SEC);
    ck_assert_int_eq(c.nreads, 0);
    su_peer_write(&c, "ry--after");
    ck_assert(su_run_until_count(&c, &c.nreads, 1, WAIT_SEC));
    SU_ASSERT_READ(&c, 0, "part one --boundary--");
    ck_assert_int_eq(su_read_bytes(&c, 5, false, su_read_cb), 0);
    ck_assert(su_run_until_count(&c, &c.nreads, 2, WAIT_SEC));
    SU_ASSERT_READ(&c, 1, "after");
    ctx_done(&c);
}
END_TEST

/* A blank line, CRLF or bare LF: the matcher an HTTP head reader uses. */
static size_t blank_line_end(const char *data, size_t len, size_t from, void *arg)
{
    size_t *last_from = arg;

    ck_assert_msg(from >= *last_from && from <= len, "from %zu after %zu, len %zu", from,
                  *last_from, len);
    *last_from = from;
    for (size_t i = from >= 2 ? from - 2 : 0; i < len; i++) {
        if (data[i] != '\n')
            continue;
        if (i + 1 < len && data[i + 1] == '\n')
            return i + 2;
        if (i + 2 < len && data[i + 1] == '\r' && data[i + 2] == '\n')
            return i + 3;
    }
    return 0;
}

/* The match spans writes; bytes after it stay for the next read; `from`
 * only grows within one read and starts again at 0 for the next. */
START_TEST(test_read_until_match_finds_a_match_split_across_writes)
{
    static const char *const parts[] = { "GET / HTTP/1.0\r", "\nA: b\n", "\r", "\nrest\n\n" };
    size_t last_from = 0;
    struct su_stream c;

    ctx_init(&c, NULL, false);
    c.in_call = true;
    ck_assert_int_eq(pf_iostream_read_until_match(c.s, blank_line_end, &last_from, 0, su_read_cb), 0);
    c.in_call = false;
    for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
        su_peer_write(&c, parts[i]);
        su_run_for(&c, SETTLE_SEC / 4);
    }
    ck_assert(su_run_until_count(&c, &c.nreads, 1, WAIT_SEC));
    su_assert_read(&c, 0, "GET / HTTP/1.0\r\nA: b\n\r\n", strlen("GET / HTTP/1.0\r\nA: b\n\r\n"));
    last_from = 0;
    c.in_call = true;
    ck_assert_int_eq(pf_iostream_read_until_match(c.s, blank_line_end, &last_from, 0, su_read_cb), 0);
    c.in_call = false;
    ck_assert(su_run_until_count(&c, &c.nreads, 2, WAIT_SEC));
    su_assert_read(&c, 1, "rest\n\n", 6);
    ck_assert_int_eq(c.rstatus[1], 0);
    su_assert_no_reentry(&c);
    ctx_done(&c);
}
END_TEST

/* No match within max_bytes: -EMSGSIZE, as read_until gives. */
START_TEST(test_read_until_match_none_within_max_bytes_reports_emsgsize)
{
    size_t last_from = 0;
    struct su_stream c;

    ctx_init(&c, NULL, false);
    ck_assert_int_eq(pf_iostream_read_until_match(c.s, blank_line_end, &last_from, 8, su_read_cb), 0);
    su_peer_write(&c, "0123456789\n\n");
    ck_assert(su_run_until_count(&c, &c.nreads, 1, WAIT_SEC));
    ck_assert_int_eq(c.rstatus[0], -EMSGSIZE);
    ck_assert_uint_eq(c.rlen[0], 8);
    ck_assert(!c.closed);
    ctx_done(&c);
}
END_TEST

START_TEST(test_read_until_copies_delimiter)
{
    char delim[] = HTTP_DELIM;
    struct su_stream c;

    ctx_init(&c, NULL, false);
    ck_assert_int_eq(su_read_until(&c, delim, 0, su_read_cb), 0);
    /* The caller's buffer is reused before any byte arrives. */
    memset(delim, 'x', 4);
    su_peer_write(&c, "xxxxabc\r\n\r\n");
    ck_assert(su_run_until_count(&c, &c.nreads, 1, WAIT_SEC));
    SU_ASSERT_READ(&c, 0, "xxxxabc\r\n\r\n");
    su_assert_no_reentry(&c);
    ctx_done(&c);
}
END_TEST

START_TEST(test_read_until_delimiter_and_more_data_in_one_write)
{
    struct su_stream c;

    ctx_init(&c, NULL, false);
    ck_assert_int_eq(su_read_until(&c, HTTP_DELIM, 0, su_read_cb), 0);
    su_peer_write(&c, "HEAD / HTTP/1.0\r\n\r\nbody");
    ck_assert(su_run_until_count(&c, &c.nreads, 1, WAIT_SEC));
    su_run_for(&c, SETTLE_SEC);
    ck_assert_int_eq(c.nreads, 1);
    SU_ASSERT_READ(&c, 0, "HEAD / HTTP/1.0\r\n\r\n");
    ck_assert_int_eq(su_read_bytes(&c, 4, false, su_read_cb), 0);
    ck_assert(su_run_until_count(&c, &c.nreads, 2, WAIT_SEC));
    SU_ASSERT_READ(&c, 1, "body");
    su_assert_no_reentry(&c);
    ctx_done(&c);
}
END_TEST

/* Records the read, then issues the next read_until while chain->reads lasts. */
static void chain_read_cb(struct pf_iostream *s, const char *buf, size_t len, int status)
{
    struct su_stream *c = su_of(s);
    struct chain *ch = c->data;
    int rc;

    su_record_read(c, buf, len, status);
    if (ch->reads-- > 0) {
        rc = su_read_until(c, HTTP_DELIM, 0, chain_read_cb);
        if (rc != 0 && ch->rc == 0)
            ch->rc = rc;
    }
}

START_TEST(test_read_until_pipelined_requests_returned_by_successive_reads_from_callback)
{
    struct chain ch = { .reads = 2 };
    struct su_stream c;

    ctx_init(&c, NULL, false);
    c.data = &ch;
    ck_assert_int_eq(su_read_until(&c, HTTP_DELIM, 0, chain_read_cb), 0);
    su_peer_write(&c, "GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n");
    ck_assert(su_run_until_count(&c, &c.nreads, 2, WAIT_SEC));
    su_run_for(&c, SETTLE_SEC);
    /* The third read_until is pending with nothing left to satisfy it. */
    ck_assert_int_eq(c.nreads, 2);
    SU_ASSERT_READ(&c, 0, "GET /a HTTP/1.1\r\n\r\n");
    SU_ASSERT_READ(&c, 1, "GET /b HTTP/1.1\r\n\r\n");
    su_peer_write(&c, "GET /c HTTP/1.1\r\n\r\n");
    ck_assert(su_run_until_count(&c, &c.nreads, 3, WAIT_SEC));
    SU_ASSERT_READ(&c, 2, "GET /c HTTP/1.1\r\n\r\n");
    ck_assert_int_eq(ch.rc, 0);
    ck_assert_int_eq(c.nclose, 0);
    su_assert_no_reentry(&c);
    ctx_done(&c);
}
END_TEST

START_TEST(test_read_bytes_exact_across_several_writes)
{
    struct su_stream c;

    ctx_init(&c, NULL, false);
    ck_assert_int_eq(su_read_bytes(&c, 10, false, su_read_cb), 0);
    su_peer_write(&c, "abc");
    su_run_for(&c, SETTLE_SEC);
    ck_assert_int_eq(c.nreads, 0);
    su_peer_write(&c, "defg");
    su_run_for(&c, SETTLE_SEC);
    ck_assert_int_eq(c.nreads, 0);
    su_peer_write(&c, "hijXYZ");
    ck_assert(su_run_until_count(&c, &c.nreads, 1, WAIT_SEC));
    su_run_for(&c, SETTLE_SEC);
    ck_assert_int_eq(c.nreads, 1);
    SU_ASSERT_READ(&c, 0, "abcdefghij");
    ck_assert_int_eq(su_read_bytes(&c, 3, false, su_read_cb), 0);
    ck_assert(su_run_until_count(&c, &c.nreads, 2, WAIT_SEC));
    SU_ASSERT_READ(&c, 1, "XYZ");
    su_assert_no_reentry(&c);
    ctx_done(&c);
}
END_TEST

START_TEST(test_read_bytes_partial_returns_as_soon_as_some_bytes_arrive)
{
    struct su_stream c;
    char all[16];
    size_t total = 0;

    ctx_init(&c, NULL, false);
    ck_assert_int_eq(su_read_bytes(&c, 100, true, su_read_cb), 0);
    su_peer_write(&c, "hello");
    ck_assert(su_run_until_count(&c, &c.nreads, 1, WAIT_SEC));
    SU_ASSERT_READ(&c, 0, "hello");

    /* More buffered than asked for: 1..n bytes, the rest kept in order. */
    su_peer_write(&c, "0123456789");
    su_run_for(&c, SETTLE_SEC);
    ck_assert_int_eq(su_read_bytes(&c, 4, true, su_read_cb), 0);
    ck_assert(su_run_until_count(&c, &c.nreads, 2, WAIT_SEC));
    ck_assert_msg(c.rlen[1] >= 1 && c.rlen[1] <= 4, "partial read of 4 returned %zu bytes",
                  c.rlen[1]);
    for (int i = 1; total < 10 && i < SU_MAX_READS; i++) {
        if (i > 1) {
            ck_assert_int_eq(su_read_bytes(&c, 100, true, su_read_cb), 0);
            ck_assert(su_run_until_count(&c, &c.nreads, i + 1, WAIT_SEC));
        }
        ck_assert_uint_le(total + c.rlen[i], sizeof(all));
        memcpy(all + total, c.rbuf[i], c.rlen[i]);
        total += c.rlen[i];
    }
    ck_assert_uint_eq(total, 10);
    ck_assert(memcmp(all, "0123456789", 10) == 0);
    su_assert_no_reentry(&c);
    ctx_done(&c);
}
END_TEST

/* _i == 0: the peer shuts down its write side; 1: it closes its end. */
START_TEST(test_read_until_close_gets_all_bytes_then_close_reason_0)
{
    struct su_stream c;

    ctx_init(&c, NULL, false);
    ck_assert_int_eq(su_read_until_close(&c, su_read_cb), 0);
    su_peer_write(&c, "part1,");
    su_run_for(&c, SETTLE_SEC);
    ck_assert_int_eq(c.nreads, 0);
    su_peer_write(&c, "part2");
    if (_i == 0)
        ck_assert_int_eq(shutdown(c.peer, SHUT_WR), 0);
    else
        su_peer_close(&c);
    ck_assert(su_run_until_closed(&c, WAIT_SEC));
    su_run_for(&c, SETTLE_SEC);
    ck_assert_int_eq(c.nreads, 1);
    SU_ASSERT_READ(&c, 0, "part1,part2");
    ck_assert_str_eq(c.log, "RC");
    su_assert_closed_once(&c, 0);
    su_assert_no_reentry(&c);
    ctx_done(&c);
}
END_TEST

/* Writes the pattern through the non-blocking peer, then shuts it down. */
struct slow_writer {
    ev_io io;
    size_t sent, total;
    unsigned char buf[SLOW_READ_CHUNK];
};

static void slow_writer_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct slow_writer *wr = container_of(w, struct slow_writer, io);
    size_t n = wr->total - wr->sent;
    ssize_t got;

    (void)revents;
    if (n > sizeof(wr->buf))
        n = sizeof(wr->buf);
    su_fill_pattern(wr->buf, wr->sent, n);
    got = write(w->fd, wr->buf, n);
    if (got > 0)
        wr->sent += (size_t)got;
    if (wr->sent == wr->total || (got < 0 && errno != EAGAIN)) {
        ev_io_stop(loop, w);
        shutdown(w->fd, SHUT_WR);
    }
}

START_TEST(test_read_until_close_collects_more_than_one_read_chunk)
{
    const size_t total = 3 * PF_IOSTREAM_READ_CHUNK + 123;
    struct slow_writer *wr = calloc(1, sizeof(*wr));
    struct su_stream c;
    size_t bad = SIZE_MAX;

    ck_assert_ptr_nonnull(wr);
    ctx_init(&c, NULL, false);
    ck_assert_int_eq(fcntl(c.peer, F_SETFL, O_NONBLOCK), 0);
    wr->total = total;
    ev_io_init(&wr->io, slow_writer_cb, c.peer, EV_WRITE);
    ev_io_start(c.loop, &wr->io);
    ck_assert_int_eq(su_read_until_close(&c, su_read_cb), 0);
    ck_assert(su_run_until_closed(&c, WAIT_SEC));
    ev_io_stop(c.loop, &wr->io);
    ck_assert_uint_eq(wr->sent, total);
    ck_assert_int_eq(c.nreads, 1);
    ck_assert_uint_eq(c.rlen[0], total);
    for (size_t i = 0; i < total && bad == SIZE_MAX; i++)
        if ((unsigned char)c.rbuf[0][i] != su_pattern_byte(i))
            bad = i;
    ck_assert_msg(bad == SIZE_MAX, "byte %zu differs", bad);
    su_assert_closed_once(&c, 0);
    free(wr);
    ctx_done(&c);
}
END_TEST

START_TEST(test_read_satisfied_by_buffer_completes_from_loop_not_inside_call)
{
    struct su_stream c;

    ctx_init(&c, NULL, false);
    ck_assert_int_eq(su_read_until(&c, HTTP_DELIM, 0, su_read_cb), 0);
    su_peer_write(&c, "a\r\n\r\nb\r\n\r\nccc");
    ck_assert(su_run_until_count(&c, &c.nreads, 1, WAIT_SEC));
    SU_ASSERT_READ(&c, 0, "a\r\n\r\n");

    /* "b\r\n\r\nccc" is buffered: each of these could complete at once. */
    ck_assert_int_eq(su_read_until(&c, HTTP_DELIM, 0, su_read_cb), 0);
    ck_assert_msg(c.nreads == 1, "read_until completed inside the call");
    ck_assert(su_run_until_count(&c, &c.nreads, 2, WAIT_SEC));
    SU_ASSERT_READ(&c, 1, "b\r\n\r\n");
    ck_assert_int_eq(su_read_bytes(&c, 3, false, su_read_cb), 0);
    ck_assert_msg(c.nreads == 2, "read_bytes completed inside the call");
    ck_assert(su_run_until_count(&c, &c.nreads, 3, WAIT_SEC));
    SU_ASSERT_READ(&c, 2, "ccc");
    su_assert_no_reentry(&c);
    ctx_done(&c);
}
END_TEST

START_TEST(test_read_issued_after_data_arrived_gets_it)
{
    struct su_stream c;

    ctx_init(&c, NULL, false);
    su_peer_write(&c, "early\r\n\r\n");
    su_run_for(&c, SETTLE_SEC);
    ck_assert_int_eq(su_read_until(&c, HTTP_DELIM, 0, su_read_cb), 0);
    ck_assert(su_run_until_count(&c, &c.nreads, 1, WAIT_SEC));
    SU_ASSERT_READ(&c, 0, "early\r\n\r\n");
    su_assert_no_reentry(&c);
    ctx_done(&c);
}
END_TEST

START_TEST(test_read_until_completes_when_peer_sends_request_and_closes)
{
    struct su_stream c;

    ctx_init(&c, NULL, false);
    ck_assert_int_eq(su_read_until(&c, HTTP_DELIM, 0, su_read_cb), 0);
    su_peer_write(&c, "GET / HTTP/1.0\r\n\r\n");
    su_peer_close(&c);
    ck_assert(su_run_until_count(&c, &c.nreads, 1, WAIT_SEC));
    SU_ASSERT_READ(&c, 0, "GET / HTTP/1.0\r\n\r\n");
    ck_assert_msg(c.log[0] == 'R', "callbacks ran as \"%s\"", c.log);
    ctx_done(&c);
    ck_assert_int_eq(c.nclose, 1);
    ck_assert_int_eq(c.close_reason, 0);
}
END_TEST

START_TEST(test_reading_and_writing_report_pending_operations)
{
    struct su_stream c;
    unsigned char *big = malloc(LARGE_WRITE_BYTES);

    ck_assert_ptr_nonnull(big);
    memset(big, 'z', LARGE_WRITE_BYTES);
    ctx_init(&c, NULL, false);
    ck_assert(!pf_iostream_reading(c.s));
    ck_assert(!pf_iostream_writing(c.s));
    ck_assert(!pf_iostream_closed(c.s));
    ck_assert_int_eq(su_read_until(&c, "\n", 0, su_read_cb), 0);
    ck_assert(pf_iostream_reading(c.s));
    su_peer_write(&c, "line\n");
    ck_assert(su_run_until_count(&c, &c.nreads, 1, WAIT_SEC));
    ck_assert(!pf_iostream_reading(c.s));
    /* Nobody reads the peer: most of this stays queued. */
    ck_assert_int_eq(su_write(&c, big, LARGE_WRITE_BYTES, NULL), 0);
    free(big);
    su_run_for(&c, SETTLE_SEC);
    ck_assert(pf_iostream_writing(c.s));
    ctx_done(&c);
}
END_TEST

START_TEST(test_new_makes_fd_nonblocking_and_exposes_fd_loop_and_data)
{
    struct su_stream c;
    int fl;

    ctx_init(&c, NULL, false);
    fl = fcntl(c.fd, F_GETFL);
    ck_assert_int_ge(fl, 0);
    ck_assert_msg(fl & O_NONBLOCK, "fd is still blocking");
    ck_assert_int_eq(pf_iostream_fd(c.s), c.fd);
    ck_assert_ptr_eq(pf_iostream_loop(c.s), c.loop);
    ck_assert_ptr_eq(pf_iostream_data(c.s), &c);
    ctx_done(&c);
}
END_TEST

/* ---- writes ----------------------------------------------------------- */

static void write_cb_a(struct pf_iostream *s) { su_note_cb(su_of(s), 'a'); su_of(s)->nwrites++; }
static void write_cb_b(struct pf_iostream *s) { su_note_cb(su_of(s), 'b'); su_of(s)->nwrites++; }
static void write_cb_c(struct pf_iostream *s) { su_note_cb(su_of(s), 'c'); su_of(s)->nwrites++; }

START_TEST(test_write_peer_gets_bytes_in_order_and_cb_fires_once_per_write)
{
    struct su_stream c;
    char buf[32];
    struct pollfd p;

    ctx_init(&c, NULL, false);
    ck_assert_int_eq(su_write(&c, "one,", 4, write_cb_a), 0);
    ck_assert_int_eq(su_write(&c, "two,", 4, NULL), 0);
    ck_assert_int_eq(su_write(&c, "three,", 6, write_cb_b), 0);
    ck_assert_int_eq(su_write(&c, "four", 4, write_cb_c), 0);
    ck_assert_msg(c.nwrites == 0, "write callback ran inside pf_iostream_write");
    ck_assert(su_run_until_count(&c, &c.nwrites, 3, WAIT_SEC));
    su_run_for(&c, SETTLE_SEC);
    ck_assert_int_eq(c.nwrites, 3);
    ck_assert_str_eq(c.log, "abc");
    ck_assert_uint_eq(tu_read_full(c.peer, buf, 18, 1000), 18);
    ck_assert(memcmp(buf, "one,two,three,four", 18) == 0);
    p = (struct pollfd){ .fd = c.peer, .events = POLLIN };
    ck_assert_msg(poll(&p, 1, 0) == 0, "peer got more bytes than were written");
    su_assert_no_reentry(&c);
    ctx_done(&c);
}
END_TEST

/* Writes the next piece from inside the write callback. */
static void chain_write_cb(struct pf_iostream *s)
{
    struct su_stream *c = su_of(s);
    struct chain *ch = c->data;
    int rc;

    su_note_cb(c, 'W');
    c->nwrites++;
    if (ch->writes-- > 0) {
        rc = su_write(c, ch->writes == 1 ? "y" : "z", 1, chain_write_cb);
        if (rc != 0 && ch->rc == 0)
            ch->rc = rc;
    }
}

START_TEST(test_write_cb_never_fires_inside_write)
{
    struct chain ch = { .writes = 2 };
    struct su_stream c;
    char buf[8];

    ctx_init(&c, NULL, false);
    c.data = &ch;
    /* The socket has room: the bytes may go out inside the call, the
     * callback may not run there. */
    ck_assert_int_eq(su_write(&c, "x", 1, chain_write_cb), 0);
    ck_assert_msg(c.nwrites == 0, "write callback ran inside pf_iostream_write");
    ck_assert(su_run_until_count(&c, &c.nwrites, 3, WAIT_SEC));
    ck_assert_int_eq(ch.rc, 0);
    su_assert_no_reentry(&c);
    ck_assert_uint_eq(tu_read_full(c.peer, buf, 3, 1000), 3);
    ck_assert(memcmp(buf, "xyz", 3) == 0);
    ctx_done(&c);
}
END_TEST

/* _i == 0: socketpair; 1: TCP loopback. */
START_TEST(test_large_write_to_slow_reader_calls_back_after_all_bytes_sent)
{
    struct slow_reader *r = malloc(sizeof(*r));
    unsigned char *big = malloc(LARGE_WRITE_BYTES);
    struct su_stream c;

    ck_assert_ptr_nonnull(r);
    ck_assert_ptr_nonnull(big);
    ctx_init(&c, NULL, _i == 1);
    su_fill_pattern(big, 0, LARGE_WRITE_BYTES);
    ck_assert_int_eq(su_write(&c, big, LARGE_WRITE_BYTES, accounting_write_cb), 0);
    /* The buffer is ours again: the stream must have copied what it needs. */
    memset(big, 0xAA, LARGE_WRITE_BYTES);
    free(big);
    ck_assert_int_eq(c.nwrites, 0);
    slow_reader_start(r, &c, _i == 1);
    ck_assert(su_run_until_count(&c, &c.nwrites, 1, 8.0));
    ck_assert_msg(r->accounted[0] >= LARGE_WRITE_BYTES,
                  "write callback ran with only %zu of %u bytes handed to the kernel",
                  r->accounted[0], LARGE_WRITE_BYTES);
    if (!r->tcp)
        ck_assert_uint_eq(r->accounted[0], LARGE_WRITE_BYTES);
    ck_assert(run_until_peer_got(r, LARGE_WRITE_BYTES, WAIT_SEC));
    ck_assert_int_eq(c.nwrites, 1);
    ck_assert_msg(r->mismatch_at == SIZE_MAX, "peer got a wrong byte at offset %zu",
                  r->mismatch_at);
    /* Nothing more follows: the peer sees EOF right after the last byte. */
    su_close(&c);
    ck_assert(su_run_until_closed(&c, WAIT_SEC));
    ck_assert(run_until_peer_got(r, SIZE_MAX, WAIT_SEC) || r->eof);
    ck_assert_uint_eq(r->got, LARGE_WRITE_BYTES);
    ev_timer_stop(c.loop, &r->timer);
    su_assert_no_reentry(&c);
    ctx_done(&c);
    free(r);
}
END_TEST

/* Peeks, then reads the head from inside the peek callback. */
static void peek_then_read_cb(struct pf_iostream *s, const char *buf, size_t len, int status)
{
    struct su_stream *c = su_of(s);

    su_record_read(c, buf, len, status);
    ck_assert_int_eq(su_read_until(c, HTTP_DELIM, 0, su_read_cb), 0);
}

START_TEST(test_read_peek_fires_on_first_byte_and_consumes_nothing)
{
    struct su_stream c;

    ctx_init(&c, NULL, false);
    ck_assert_int_eq(pf_iostream_read_peek(c.s, peek_then_read_cb), 0);
    ck_assert(tu_write_all(c.peer, "G", 1));
    ck_assert(su_run_until_count(&c, &c.nreads, 1, WAIT_SEC));
    ck_assert_uint_eq(c.rlen[0], 1);
    ck_assert(tu_write_all(c.peer, "ET /\r\n\r\n", 8));
    ck_assert(su_run_until_count(&c, &c.nreads, 2, WAIT_SEC));
    /* The peeked byte is still there for the read that followed. */
    ck_assert_uint_eq(c.rlen[1], 9);
    ck_assert_str_eq(c.rbuf[1], "GET /\r\n\r\n");
    ck_assert_int_eq(c.reentered, 0);
    ctx_done(&c);
}
END_TEST

/* sendfile: the head, then the file range, in order; the file stays the
 * caller's; the callback fires once, from the loop. */
static void check_sendfile(bool tcp, size_t file_len, off_t off, size_t len)
{
    char path[] = "/tmp/check_iostream_sf.XXXXXX";
    unsigned char *data = malloc(file_len), *got = malloc(len + 5);
    int fd = mkstemp(path), before;
    struct su_stream c;

    ck_assert_int_ge(fd, 0);
    unlink(path);
    su_fill_pattern(data, 0, file_len);
    ck_assert(tu_write_all(fd, data, file_len));
    ctx_init(&c, NULL, tcp);
    before = tu_fd_count();
    c.in_call = true;
    ck_assert_int_eq(pf_iostream_sendfile(c.s, "HEAD:", 5, fd, off, len, su_write_cb), 0);
    c.in_call = false;
    ck_assert_int_eq(c.nwrites, 0);
    ck_assert_uint_eq(su_read_peer(&c, got, len + 5, WAIT_SEC), len + 5);
    ck_assert(memcmp(got, "HEAD:", 5) == 0);
    ck_assert(memcmp(got + 5, data + off, len) == 0);
    ck_assert(su_run_until_count(&c, &c.nwrites, 1, WAIT_SEC));
    ck_assert_int_eq(c.reentered, 0);
    ck_assert_int_eq(tu_fd_count(), before);    /* the file is borrowed, still ours */
    ck_assert_int_eq(close(fd), 0);
    ctx_done(&c);
    free(data);
    free(got);
}

START_TEST(test_writev_sends_buffers_in_order_even_when_queued)
{
    static unsigned char big[4 << 20];
    static unsigned char got[(4 << 20) + 10];
    struct iovec iov[3] = {
        { .iov_base = "head:", .iov_len = 5 },
        { .iov_base = big, .iov_len = sizeof(big) },
        { .iov_base = ":tail", .iov_len = 5 },
    };
    struct su_stream c;

    su_fill_pattern(big, 0, sizeof(big));
    ctx_init(&c, NULL, true);
    c.in_call = true;
    ck_assert_int_eq(pf_iostream_writev(c.s, iov, 3, su_write_cb), 0);
    c.in_call = false;
    /* 4 MiB is more than the socket takes: the rest was copied and queued. */
    ck_assert_uint_eq(su_read_peer(&c, got, sizeof(got), WAIT_SEC), sizeof(got));
    ck_assert(memcmp(got, "head:", 5) == 0);
    ck_assert(memcmp(got + 5, big, sizeof(big)) == 0);
    ck_assert(memcmp(got + 5 + sizeof(big), ":tail", 5) == 0);
    ck_assert(su_run_until_count(&c, &c.nwrites, 1, WAIT_SEC));
    ck_assert_int_eq(c.reentered, 0);
    ctx_done(&c);
}
END_TEST

START_TEST(test_sendfile_sends_head_then_file_range_and_borrows_file)
{
    check_sendfile(false, 1000, 100, 500);
    check_sendfile(true, 4 << 20, 1, (4 << 20) - 1);    /* more than a socket takes at once */
}
END_TEST

START_TEST(test_sendfile_stream_closing_first_leaves_file_open)
{
    char path[] = "/tmp/check_iostream_sf.XXXXXX";
    int fd = mkstemp(path), before;
    static char big[8 << 20];
    struct su_stream c;

    ck_assert_int_ge(fd, 0);
    unlink(path);
    ck_assert(tu_write_all(fd, big, sizeof(big)));
    ctx_init(&c, NULL, false);
    before = tu_fd_count();
    ck_assert_int_eq(pf_iostream_sendfile(c.s, "H", 1, fd, 0, sizeof(big), su_write_cb), 0);
    su_close(&c);
    ck_assert(su_run_until_closed(&c, WAIT_SEC));
    /* The stream's fd is gone; the file is still the caller's. */
    ck_assert_int_eq(tu_fd_count(), before - 1);
    ck_assert_int_ge(fcntl(fd, F_GETFD), 0);     /* still open */
    ck_assert_int_eq(close(fd), 0);
    ck_assert_int_eq(c.nwrites, 0);
    ctx_done(&c);
}
END_TEST

START_TEST(test_write_cbs_fire_in_order_each_after_its_own_bytes)
{
    const size_t len[3] = { 100, 2u * 1024 * 1024, 100 };
    size_t end[3], off = 0;
    struct slow_reader *r = malloc(sizeof(*r));
    unsigned char *buf = malloc(len[1]);
    struct su_stream c;

    ck_assert_ptr_nonnull(r);
    ck_assert_ptr_nonnull(buf);
    ctx_init(&c, NULL, false);
    for (int i = 0; i < 3; i++) {
        su_fill_pattern(buf, off, len[i]);
        ck_assert_int_eq(su_write(&c, buf, len[i], accounting_write_cb), 0);
        off += len[i];
        end[i] = off;
    }
    free(buf);
    slow_reader_start(r, &c, false);
    ck_assert(su_run_until_count(&c, &c.nwrites, 3, 8.0));
    for (int i = 0; i < 3; i++)
        ck_assert_msg(r->accounted[i] >= end[i],
                      "write callback %d ran with %zu bytes out, its write ends at %zu",
                      i, r->accounted[i], end[i]);
    ck_assert(run_until_peer_got(r, off, WAIT_SEC));
    ck_assert_msg(r->mismatch_at == SIZE_MAX, "peer got a wrong byte at offset %zu",
                  r->mismatch_at);
    ev_timer_stop(c.loop, &r->timer);
    ck_assert_int_eq(c.nwrites, 3);
    su_assert_no_reentry(&c);
    ctx_done(&c);
    free(r);
}
END_TEST

/* _i == 0: socketpair; 1: TCP loopback (the first writes succeed, then RST). */
START_TEST(test_write_to_closed_peer_closes_stream_without_sigpipe)
{
    struct su_stream c;
    int reason;

    signal(SIGPIPE, SIG_DFL);
    ctx_init(&c, NULL, _i == 1);
    su_peer_close(&c);
    reason = sc_write_to_gone_peer_closes_stream(&c, WAIT_SEC);
    ck_assert_msg(reason == 0 || reason == -EPIPE || reason == -ECONNRESET,
                  "close reason %d", reason);
    ctx_done(&c);
}
END_TEST

/* ---- close ------------------------------------------------------------ */

START_TEST(test_peer_close_while_read_until_pending_closes_once_without_read_cb)
{
    struct su_stream c;

    ctx_init(&c, NULL, false);
    ck_assert_int_eq(su_read_until(&c, HTTP_DELIM, 0, su_read_cb), 0);
    su_peer_write(&c, "GET / HTTP/1.1\r\nHost: x\r\n");
    su_run_for(&c, SETTLE_SEC);
    su_peer_close(&c);
    ck_assert(su_run_until_closed(&c, WAIT_SEC));
    su_run_for(&c, SETTLE_SEC);
    ck_assert_int_eq(c.nreads, 0);
    su_assert_closed_once(&c, 0);
    ck_assert_str_eq(c.log, "C");
    ctx_done(&c);
}
END_TEST

START_TEST(test_close_from_read_cb_closes_once_and_drops_buffered_data)
{
    struct su_stream c;
    char ch;

    ctx_init(&c, NULL, false);
    sc_close_from_read_cb_drops_buffered_data(&c, WAIT_SEC);
    ck_assert_uint_eq(tu_read_full(c.peer, &ch, 1, 1000), 0);
    su_assert_no_reentry(&c);
    ctx_done(&c);
}
END_TEST

START_TEST(test_close_runs_close_cb_from_loop_and_later_calls_return_epipe)
{
    struct su_stream c;
    struct pollfd p;
    char ch;

    ctx_init(&c, NULL, false);
    ck_assert_int_eq(su_read_until(&c, HTTP_DELIM, 0, su_read_cb), 0);
    su_close(&c);
    ck_assert_msg(c.nclose == 0, "close callback ran inside pf_iostream_close");
    ck_assert(pf_iostream_closed(c.s));
    errno = 0;
    ck_assert_msg(fcntl(c.fd, F_GETFD) == -1 && errno == EBADF,
                  "fd still open after pf_iostream_close");
    ck_assert_int_eq(su_read_until(&c, HTTP_DELIM, 0, su_read_cb), -EPIPE);
    ck_assert_int_eq(su_read_bytes(&c, 4, false, su_read_cb), -EPIPE);
    ck_assert_int_eq(su_read_until_close(&c, su_read_cb), -EPIPE);
    ck_assert_int_eq(su_write(&c, "x", 1, su_write_cb), -EPIPE);
    su_close(&c);
    ck_assert(su_run_until_closed(&c, WAIT_SEC));
    su_run_for(&c, SETTLE_SEC);
    su_assert_closed_once(&c, 0);
    ck_assert_int_eq(c.nreads, 0);
    ck_assert_int_eq(c.nwrites, 0);
    p = (struct pollfd){ .fd = c.peer, .events = POLLIN };
    ck_assert_int_eq(poll(&p, 1, 1000), 1);
    ck_assert_int_eq(read(c.peer, &ch, 1), 0);
    su_assert_no_reentry(&c);
    ctx_done(&c);
}
END_TEST

START_TEST(test_close_drops_pending_writes_without_write_cb)
{
    unsigned char *big = calloc(1, LARGE_WRITE_BYTES);
    struct su_stream c;

    ck_assert_ptr_nonnull(big);
    ctx_init(&c, NULL, false);
    ck_assert_int_eq(su_write(&c, big, LARGE_WRITE_BYTES, su_write_cb), 0);
    free(big);
    su_run_for(&c, SETTLE_SEC);
    su_close(&c);
    ck_assert(su_run_until_closed(&c, WAIT_SEC));
    su_run_for(&c, SETTLE_SEC);
    ck_assert_int_eq(c.nwrites, 0);
    su_assert_closed_once(&c, 0);
    ctx_done(&c);
}
END_TEST

/* Lingering close: the answer goes out, then a FIN; what the peer still
 * sends is dropped (no reset), and its close ends the stream with reason 0. */
START_TEST(test_close_lingering_sends_answer_then_fin_and_drops_input_until_peer_closes)
{
    static char input[LINGER_INPUT_BYTES];
    char got[16] = { 0 };
    struct su_stream c;

    ctx_init(&c, NULL, true);
    memset(input, 'i', sizeof(input));
    ck_assert(tu_write_all(c.peer, input, sizeof(input)));     /* never read */
    ck_assert_int_eq(su_write(&c, "answer", 6, su_write_cb), 0);
    c.in_call = true;
    pf_iostream_close_lingering(c.s, WAIT_SEC);
    c.in_call = false;
    ck_assert_int_eq(pf_iostream_read_bytes(c.s, 1, true, su_read_cb), -EPIPE);
    ck_assert_int_eq(pf_iostream_write(c.s, "x", 1, NULL), -EPIPE);
    su_run_for(&c, SETTLE_SEC);
    ck_assert_int_eq(c.nwrites, 1);
    ck_assert_uint_eq(tu_read_full(c.peer, got, sizeof(got), (int)(WAIT_SEC * 1000)), 6);
    ck_assert_str_eq(got, "answer");
    ck_assert_msg(recv(c.peer, got, 1, MSG_DONTWAIT) == 0, "no FIN after the answer");
    /* The peer goes on sending: a lingering stream reads, so no reset. */
    for (int i = 0; i < 4; i++) {
        ck_assert_msg(tu_write_all(c.peer, input, sizeof(input)), "send %d after the "
                      "answer: %s", i, strerror(errno));
        su_run_for(&c, SETTLE_SEC / 4);
    }
    ck_assert_msg(!c.closed, "the stream closed before the peer did");
    su_peer_close(&c);
    ck_assert_msg(su_run_until_closed(&c, WAIT_SEC), "the peer closed; the stream did not");
    su_assert_closed_once(&c, 0);
    ck_assert_int_eq(c.nreads, 0);
    su_assert_no_reentry(&c);
    ctx_done(&c);
}
END_TEST

static void peer_sends_input(struct ticker *t)
{
    static const char input[LINGER_INPUT_BYTES];

    if (t->c->peer >= 0)    /* once the stream is gone: EPIPE, ignored */
        (void)send(t->c->peer, input, sizeof(input), MSG_NOSIGNAL | MSG_DONTWAIT);
}

/* A peer that never stops sending gets its connection closed in time. */
START_TEST(test_close_lingering_ends_after_its_time_with_reason_0)
{
    struct ticker t;
    double start;
    struct su_stream c;

    ctx_init(&c, NULL, true);
    start = tu_now();
    pf_iostream_close_lingering(c.s, LINGER_SEC);
    ticker_start(&t, &c, LINGER_SEC / 10, 1000, peer_sends_input);
    ck_assert(su_run_until_closed(&c, LINGER_SEC + WAIT_SEC));
    ev_timer_stop(c.loop, &t.timer);
    ck_assert_msg(c.close_time - start >= LINGER_SEC * 0.9
                  && c.close_time - start < LINGER_SEC + 1.0,
                  "lingering for %.2f s ended after %.2f s", LINGER_SEC, c.close_time - start);
    su_assert_closed_once(&c, 0);
    ctx_done(&c);
}
END_TEST

/* _i == 0: TCP RST from the peer; the close reason is the socket's error. */
START_TEST(test_peer_reset_closes_with_econnreset)
{
    struct linger lg = { .l_onoff = 1, .l_linger = 0 };
    struct su_stream c;

    ctx_init(&c, NULL, true);
    ck_assert_int_eq(su_read_until(&c, HTTP_DELIM, 0, su_read_cb), 0);
    su_peer_write(&c, "GET /");
    su_run_for(&c, SETTLE_SEC);
    ck_assert_int_eq(setsockopt(c.peer, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)), 0);
    su_peer_close(&c);
    ck_assert(su_run_until_closed(&c, WAIT_SEC));
    su_assert_closed_once(&c, -ECONNRESET);
    ck_assert_int_eq(c.nreads, 0);
    ctx_done(&c);
}
END_TEST

/* ---- limits ----------------------------------------------------------- */

START_TEST(test_read_until_over_max_buffer_closes_stream_with_enobufs)
{
    struct pf_iostream_options opt = { .max_buffer_size = 1024 };
    struct su_stream c;

    ctx_init(&c, &opt, false);
    sc_read_until_over_max_buffer_closes_with_enobufs(&c, WAIT_SEC);
    ctx_done(&c);
}
END_TEST

START_TEST(test_read_until_no_delimiter_within_max_bytes_reports_emsgsize_and_stays_open)
{
    char data[200];
    struct su_stream c;

    memset(data, 'a', sizeof(data));
    ctx_init(&c, NULL, false);
    ck_assert_int_eq(su_read_until(&c, HTTP_DELIM, 100, su_read_cb), 0);
    ck_assert(tu_write_all(c.peer, data, sizeof(data)));
    ck_assert(su_run_until_count(&c, &c.nreads, 1, WAIT_SEC));
    su_run_for(&c, SETTLE_SEC);
    ck_assert_int_eq(c.nreads, 1);
    ck_assert_int_eq(c.rstatus[0], -EMSGSIZE);
    ck_assert_uint_eq(c.rlen[0], 100);
    ck_assert(memcmp(c.rbuf[0], data, 100) == 0);
    /* Open, so that a protocol can still answer; nothing was consumed. */
    ck_assert_int_eq(c.nclose, 0);
    ck_assert_int_eq(su_read_bytes(&c, 200, false, su_read_cb), 0);
    ck_assert(su_run_until_count(&c, &c.nreads, 2, WAIT_SEC));
    ck_assert_int_eq(c.rstatus[1], 0);
    ck_assert_uint_eq(c.rlen[1], 200);
    ctx_done(&c);
}
END_TEST

START_TEST(test_read_until_delimiter_ending_exactly_at_max_bytes_succeeds)
{
    char data[100];
    struct su_stream c;

    memset(data, 'a', sizeof(data));
    memcpy(data + 96, HTTP_DELIM, 4);
    ctx_init(&c, NULL, false);
    ck_assert_int_eq(su_read_until(&c, HTTP_DELIM, 100, su_read_cb), 0);
    ck_assert(tu_write_all(c.peer, data, sizeof(data)));
    ck_assert(su_run_until_count(&c, &c.nreads, 1, WAIT_SEC));
    ck_assert_uint_eq(c.rlen[0], 100);
    ck_assert(memcmp(c.rbuf[0], data, 100) == 0);
    ck_assert_int_eq(c.nclose, 0);
    ctx_done(&c);
}
END_TEST

START_TEST(test_read_until_delimiter_ending_past_max_bytes_reports_emsgsize)
{
    char data[101];
    struct su_stream c;

    memset(data, 'a', sizeof(data));
    memcpy(data + 97, HTTP_DELIM, 4);
    ctx_init(&c, NULL, false);
    ck_assert_int_eq(su_read_until(&c, HTTP_DELIM, 100, su_read_cb), 0);
    ck_assert(tu_write_all(c.peer, data, sizeof(data)));
    ck_assert(su_run_until_count(&c, &c.nreads, 1, WAIT_SEC));
    ck_assert_int_eq(c.rstatus[0], -EMSGSIZE);
    ck_assert_uint_eq(c.rlen[0], 100);
    ck_assert_int_eq(c.nclose, 0);
    ctx_done(&c);
}
END_TEST

START_TEST(test_read_until_close_over_max_buffer_closes_with_enobufs)
{
    struct pf_iostream_options opt = { .max_buffer_size = 1024 };
    char data[4096];
    struct su_stream c;

    memset(data, 'a', sizeof(data));
    ctx_init(&c, &opt, false);
    ck_assert_int_eq(su_read_until_close(&c, su_read_cb), 0);
    ck_assert(tu_write_all(c.peer, data, sizeof(data)));
    ck_assert(su_run_until_closed(&c, WAIT_SEC));
    su_run_for(&c, SETTLE_SEC);
    su_assert_closed_once(&c, -ENOBUFS);
    ctx_done(&c);
}
END_TEST

START_TEST(test_write_over_max_buffer_returns_enobufs_and_closes)
{
    struct pf_iostream_options opt = { .max_buffer_size = 64 * 1024 };
    unsigned char *big = calloc(1, LARGE_WRITE_BYTES);
    struct su_stream c;

    ck_assert_ptr_nonnull(big);
    ctx_init(&c, &opt, false);
    /* Neither the socket nor a 64 KiB queue can take 8 MiB. */
    ck_assert_int_eq(su_write(&c, big, LARGE_WRITE_BYTES, su_write_cb), -ENOBUFS);
    free(big);
    if (c.s != NULL)
        ck_assert(pf_iostream_closed(c.s));
    ck_assert(su_run_until_closed(&c, WAIT_SEC));
    su_run_for(&c, SETTLE_SEC);
    su_assert_closed_once(&c, -ENOBUFS);
    ck_assert_int_eq(c.nwrites, 0);
    su_assert_no_reentry(&c);
    ctx_done(&c);
}
END_TEST

/* ---- idle timeout ----------------------------------------------------- */

START_TEST(test_idle_timeout_closes_quiet_stream_with_etimedout)
{
    struct pf_iostream_options opt = { .idle_timeout_sec = 0.2 };
    double t0 = tu_now(), elapsed;
    struct su_stream c;

    ctx_init(&c, &opt, false);
    ck_assert_int_eq(su_read_until(&c, HTTP_DELIM, 0, su_read_cb), 0);
    ck_assert(su_run_until_closed(&c, WAIT_SEC));
    elapsed = c.close_time - t0;
    ck_assert_msg(elapsed >= 0.15 && elapsed <= 1.0, "closed after %.3f s", elapsed);
    su_assert_closed_once(&c, -ETIMEDOUT);
    ck_assert_int_eq(c.nreads, 0);
    ctx_done(&c);
}
END_TEST

static void line_read_cb(struct pf_iostream *s, const char *buf, size_t len, int status)
{
    struct su_stream *c = su_of(s);
    struct chain *ch = c->data;

    su_record_read(c, buf, len, status);
    if (su_read_until(c, "\n", 0, line_read_cb) != 0 && ch->rc == 0)
        ch->rc = -1;
}

static void tick_peer_line(struct ticker *t) { su_peer_write(t->c, "x\n"); }
static void tick_peer_byte(struct ticker *t) { su_peer_write(t->c, "a"); }
static void tick_stream_byte(struct ticker *t)
{
    if (t->c->s != NULL)
        ck_assert_int_eq(su_write(t->c, "y", 1, NULL), 0);
}

/* Traffic every 0.1 s for 0.5 s against a 0.2 s idle timeout: no close
 * until the traffic stops, then -ETIMEDOUT about 0.2 s after the last of it.
 * _i == 0: complete lines, each ending a read; 1: single bytes that never
 * complete the pending read_until; 2: the stream itself writes. */
START_TEST(test_idle_timeout_not_triggered_while_traffic_flows)
{
    struct pf_iostream_options opt = { .idle_timeout_sec = 0.2 };
    struct chain ch = { 0 };
    struct ticker t;
    struct su_stream c;
    double t0, after_last;

    ctx_init(&c, &opt, false);
    c.data = &ch;
    if (_i == 0) {
        ck_assert_int_eq(su_read_until(&c, "\n", 0, line_read_cb), 0);
        ticker_start(&t, &c, 0.1, 5, tick_peer_line);
    } else if (_i == 1) {
        ck_assert_int_eq(su_read_until(&c, HTTP_DELIM, 0, su_read_cb), 0);
        ticker_start(&t, &c, 0.1, 5, tick_peer_byte);
    } else {
        ticker_start(&t, &c, 0.1, 5, tick_stream_byte);
    }
    t0 = tu_now();
    while (t.left > 0 && !c.closed && tu_now() - t0 < 2.0)
        su_run_for(&c, 0.01);
    ck_assert_msg(!c.closed, "closed with reason %d after %.3f s of traffic",
                  c.close_reason, c.close_time - t0);
    ck_assert_int_eq(t.left, 0);
    if (_i == 0) {
        /* The last line was written by the final tick; let it be read. */
        ck_assert(su_run_until_count(&c, &c.nreads, 5, WAIT_SEC));
        ck_assert_int_eq(c.nreads, 5);
    }
    ck_assert(su_run_until_closed(&c, WAIT_SEC));
    after_last = c.close_time - t.last;
    ck_assert_msg(after_last >= 0.15 && after_last <= 1.0,
                  "closed %.3f s after the last traffic", after_last);
    su_assert_closed_once(&c, -ETIMEDOUT);
    ck_assert_int_eq(ch.rc, 0);
    ctx_done(&c);
}
END_TEST

/* The loop was last awake 0.3 s before the stream is created (a long
 * callback, or setup before the first ev_run): the countdown still starts at
 * creation, and pf_iostream_set_idle_timeout() restarts it from "now". */
START_TEST(test_idle_timeout_counts_from_creation_after_loop_was_busy)
{
    struct pf_iostream_options opt = { .idle_timeout_sec = 0.2 };
    double t0, elapsed;
    struct su_stream c;
    struct ev_loop *loop = ev_loop_new(0);

    ck_assert_ptr_nonnull(loop);
    ev_run(loop, EVRUN_NOWAIT);
    usleep(300 * 1000);
    t0 = tu_now();
    ctx_open(&c, loop, _i == 0 ? &opt : NULL, false);
    if (_i == 1)
        pf_iostream_set_idle_timeout(c.s, 0.2);
    ck_assert_int_eq(su_read_until(&c, HTTP_DELIM, 0, su_read_cb), 0);
    ck_assert(su_run_until_closed(&c, WAIT_SEC));
    elapsed = c.close_time - t0;
    ck_assert_msg(elapsed >= 0.15 && elapsed <= 1.0,
                  "idle timeout of 0.2 s closed the stream after %.3f s", elapsed);
    su_assert_closed_once(&c, -ETIMEDOUT);
    ctx_done(&c);
}
END_TEST

START_TEST(test_deadline_closes_despite_traffic_and_clearing_it_does_not)
{
    struct pf_iostream_options opt = { .idle_timeout_sec = 5 };
    struct su_stream c;
    double t0;

    ctx_init(&c, &opt, false);
    ck_assert_int_eq(su_read_until(&c, HTTP_DELIM, 0, su_read_cb), 0);
    pf_iostream_set_deadline(c.s, 0.3);
    t0 = tu_now();
    /* A byte every 50 ms keeps the idle timeout away, not the deadline. */
    while (!c.closed && tu_now() - t0 < 2.0) {
        tu_write_all(c.peer, "x", 1);
        su_run_for(&c, 0.05);
    }
    ck_assert(c.closed);
    ck_assert_msg(c.close_time - t0 >= 0.25 && c.close_time - t0 <= 1.5, "closed after %.3f s",
                  c.close_time - t0);
    su_assert_closed_once(&c, -ETIMEDOUT);
    ctx_done(&c);

    ctx_init(&c, &opt, false);
    pf_iostream_set_deadline(c.s, 0.2);
    pf_iostream_set_deadline(c.s, 0);
    su_run_for(&c, 0.6);
    ck_assert_msg(!c.closed, "a cleared deadline closed the stream");
    ctx_done(&c);
}
END_TEST

START_TEST(test_set_idle_timeout_zero_disables_and_nonzero_restarts_countdown)
{
    struct pf_iostream_options opt = { .idle_timeout_sec = 0.3 };
    struct su_stream c;
    double t1, elapsed;

    ctx_init(&c, &opt, false);
    su_run_for(&c, 0.2);
    pf_iostream_set_idle_timeout(c.s, 0);
    su_run_for(&c, 0.5);
    ck_assert_msg(!c.closed, "closed with idle timeout disabled (reason %d)", c.close_reason);

    pf_iostream_set_idle_timeout(c.s, 0.3);
    su_run_for(&c, 0.2);
    ck_assert(!c.closed);
    /* Restarts from now: the 0.2 s already idle do not count. */
    t1 = tu_now();
    pf_iostream_set_idle_timeout(c.s, 0.3);
    ck_assert(su_run_until_closed(&c, WAIT_SEC));
    elapsed = c.close_time - t1;
    ck_assert_msg(elapsed >= 0.25 && elapsed <= 1.0, "closed %.3f s after the restart",
                  elapsed);
    su_assert_closed_once(&c, -ETIMEDOUT);
    ctx_done(&c);
}
END_TEST

/* ---- fds -------------------------------------------------------------- */

START_TEST(test_fd_closed_once_close_cb_runs_after_peer_close)
{
    struct su_stream c;

    ctx_init(&c, NULL, false);
    ck_assert_int_eq(su_read_bytes(&c, 1, true, su_read_cb), 0);
    su_peer_close(&c);
    ck_assert(su_run_until_closed(&c, WAIT_SEC));
    ck_assert(c.fd_closed_in_close_cb);
    errno = 0;
    ck_assert_msg(fcntl(c.fd, F_GETFD) == -1 && errno == EBADF, "fd %d still open", c.fd);
    ctx_done(&c);
}
END_TEST

START_TEST(test_no_fd_leak_over_100_streams_closed_every_way)
{
    struct ev_loop *loop = ev_loop_new(0);
    struct pf_iostream_options small = { .max_buffer_size = 1024 };
    char data[2048];
    int start;

    ck_assert_ptr_nonnull(loop);
    memset(data, 'a', sizeof(data));
    start = tu_fd_count();
    ck_assert_int_gt(start, 0);
    for (int i = 0; i < 100; i++) {
        struct su_stream c;

        ctx_open(&c, loop, i % 4 == 2 ? &small : NULL, i % 5 == 4);
        switch (i % 4) {
        case 0:     /* pf_iostream_close() with a read pending */
            ck_assert_int_eq(su_read_until(&c, HTTP_DELIM, 0, su_read_cb), 0);
            su_close(&c);
            break;
        case 1:     /* the peer closes */
            ck_assert_int_eq(su_read_until(&c, HTTP_DELIM, 0, su_read_cb), 0);
            su_peer_close(&c);
            break;
        case 2:     /* max_buffer_size exceeded */
            ck_assert_int_eq(su_read_until(&c, HTTP_DELIM, 0, su_read_cb), 0);
            ck_assert(tu_write_all(c.peer, data, sizeof(data)));
            break;
        case 3:     /* closed from a read callback, with a write queued */
            ck_assert_int_eq(su_write(&c, "hi", 2, NULL), 0);
            ck_assert_int_eq(su_read_until(&c, HTTP_DELIM, 0, su_close_in_read_cb), 0);
            su_peer_write(&c, "q\r\n\r\n");
            break;
        }
        ck_assert_msg(su_run_until_closed(&c, WAIT_SEC), "stream %d never closed", i);
        ck_assert_msg(c.fd_closed_in_close_cb, "stream %d: fd open in close cb", i);
        su_detach(&c, WAIT_SEC);
    }
    tu_run_for(loop, SETTLE_SEC);
    ck_assert_int_eq(tu_fd_count(), start);
    ev_loop_destroy(loop);
}
END_TEST

/* ---- suite ------------------------------------------------------------ */

static Suite *iostream_suite(void)
{
    Suite *s = suite_create("iostream");
    TCase *tc;

    tc = tu_add_tcase(s, "read", 10);
    tcase_add_test(tc, test_read_until_finds_delimiter_split_across_writes_and_keeps_rest);
    tcase_add_test(tc, test_read_until_finds_delimiter_sent_one_byte_per_write_after_false_starts);
    tcase_add_test(tc, test_read_until_long_delimiter_split_over_three_writes);
    tcase_add_test(tc, test_read_until_copies_delimiter);
    tcase_add_test(tc, test_read_until_match_finds_a_match_split_across_writes);
    tcase_add_test(tc, test_read_until_match_none_within_max_bytes_reports_emsgsize);
    tcase_add_test(tc, test_read_until_delimiter_and_more_data_in_one_write);
    tcase_add_test(tc, test_read_until_pipelined_requests_returned_by_successive_reads_from_callback);
    tcase_add_test(tc, test_read_bytes_exact_across_several_writes);
    tcase_add_test(tc, test_read_bytes_partial_returns_as_soon_as_some_bytes_arrive);
    tcase_add_loop_test(tc, test_read_until_close_gets_all_bytes_then_close_reason_0, 0, 2);
    tcase_add_test(tc, test_read_until_close_collects_more_than_one_read_chunk);
    tcase_add_test(tc, test_read_satisfied_by_buffer_completes_from_loop_not_inside_call);
    tcase_add_test(tc, test_read_issued_after_data_arrived_gets_it);
    tcase_add_test(tc, test_read_until_completes_when_peer_sends_request_and_closes);
    tcase_add_test(tc, test_reading_and_writing_report_pending_operations);
    tcase_add_test(tc, test_new_makes_fd_nonblocking_and_exposes_fd_loop_and_data);

    tc = tu_add_tcase(s, "write", 10);
    tcase_add_test(tc, test_write_peer_gets_bytes_in_order_and_cb_fires_once_per_write);
    tcase_add_test(tc, test_write_cb_never_fires_inside_write);
    tcase_add_loop_test(tc, test_large_write_to_slow_reader_calls_back_after_all_bytes_sent, 0, 2);
    tcase_add_test(tc, test_write_cbs_fire_in_order_each_after_its_own_bytes);
    tcase_add_test(tc, test_read_peek_fires_on_first_byte_and_consumes_nothing);
    tcase_add_test(tc, test_writev_sends_buffers_in_order_even_when_queued);
    tcase_add_test(tc, test_sendfile_sends_head_then_file_range_and_borrows_file);
    tcase_add_test(tc, test_sendfile_stream_closing_first_leaves_file_open);
    tcase_add_loop_test(tc, test_write_to_closed_peer_closes_stream_without_sigpipe, 0, 2);

    tc = tu_add_tcase(s, "close", 10);
    tcase_add_test(tc, test_peer_close_while_read_until_pending_closes_once_without_read_cb);
    tcase_add_test(tc, test_close_from_read_cb_closes_once_and_drops_buffered_data);
    tcase_add_test(tc, test_close_runs_close_cb_from_loop_and_later_calls_return_epipe);
    tcase_add_test(tc, test_close_drops_pending_writes_without_write_cb);
    tcase_add_test(tc, test_close_lingering_sends_answer_then_fin_and_drops_input_until_peer_closes);
    tcase_add_test(tc, test_close_lingering_ends_after_its_time_with_reason_0);
    tcase_add_test(tc, test_peer_reset_closes_with_econnreset);

    tc = tu_add_tcase(s, "limits", 10);
    tcase_add_test(tc, test_read_until_over_max_buffer_closes_stream_with_enobufs);
    tcase_add_test(tc, test_read_until_no_delimiter_within_max_bytes_reports_emsgsize_and_stays_open);
    tcase_add_test(tc, test_read_until_delimiter_ending_exactly_at_max_bytes_succeeds);
    tcase_add_test(tc, test_read_until_delimiter_ending_past_max_bytes_reports_emsgsize);
    tcase_add_test(tc, test_read_until_close_over_max_buffer_closes_with_enobufs);
    tcase_add_test(tc, test_write_over_max_buffer_returns_enobufs_and_closes);

    tc = tu_add_tcase(s, "idle", 10);
    tcase_add_test(tc, test_idle_timeout_closes_quiet_stream_with_etimedout);
    tcase_add_loop_test(tc, test_idle_timeout_not_triggered_while_traffic_flows, 0, 3);
    tcase_add_test(tc, test_set_idle_timeout_zero_disables_and_nonzero_restarts_countdown);
    tcase_add_test(tc, test_deadline_closes_despite_traffic_and_clearing_it_does_not);
    tcase_add_loop_test(tc, test_idle_timeout_counts_from_creation_after_loop_was_busy, 0, 2);

    tc = tu_add_tcase(s, "fd", 10);
    tcase_add_test(tc, test_fd_closed_once_close_cb_runs_after_peer_close);
    tcase_add_test(tc, test_no_fd_leak_over_100_streams_closed_every_way);

    return s;
}

int main(void)
{
    return tu_run_suite(iostream_suite()) == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

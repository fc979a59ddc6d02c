/*
 * fuzz_iostream_until: pf_iostream_read_until's delimiter search across
 * arbitrary read boundaries. The input picks a delimiter and chunk sizes;
 * the rest is written into a socketpair one chunk at a time, with the
 * loop run in between until the stream has read every byte, so that each
 * chunk is one read (or a few, past PF_IOSTREAM_READ_CHUNK). The read
 * callback starts the next read_until, or in "deferred" mode leaves the
 * first UNTIL_DEFERRED_MAX of them to the harness, which starts them
 * between loop runs, with bytes already buffered (iostream's runner path).
 * What the callbacks got must be what splitting the whole data after each
 * delimiter gives.
 *
 * Input: byte 0: delimiter length 1 + b % 8; then the delimiter; then a
 * byte n (bit 7: deferred mode; n % 16 chunk sizes follow, 0: one chunk);
 * then the sizes, one
 * byte each (b < 0xf0: b + 1 bytes, else (b - 0xef) * 4 KiB), used in
 * turn for at most UNTIL_CHUNKS_MAX chunks, the last one taking the rest;
 * then the data, at most UNTIL_DATA_MAX.
 */
#define _GNU_SOURCE     /* memmem */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>
#include <ev.h>

#include "iostream.h"
#include "fuzz_util.h"

#define UNTIL_DELIM_MAX 8
#define UNTIL_SIZES_MAX 16
#define UNTIL_BIG_SIZE_FROM 0xf0
#define UNTIL_BIG_SIZE_UNIT 4096
#define UNTIL_DATA_MAX (64 * 1024)
/* Each chunk costs a write and a few loop runs: bounded, so that an input
 * of 1-byte chunks does not run a thousand times slower than the others. */
#define UNTIL_CHUNKS_MAX 64
#define UNTIL_DEFERRED_FLAG 0x80
/* Reads the harness starts itself in deferred mode: each costs two loop
 * runs, so they are bounded like the chunks. */
#define UNTIL_DEFERRED_MAX 16
/* Loop runs allowed to drain one chunk (each reads up to
 * PF_IOSTREAM_READ_CHUNK bytes) plus the deferred reads, or to see the close. */
#define UNTIL_PUMP_MAX (16 + 2 * UNTIL_DEFERRED_MAX)

struct until_run {
    char delim[UNTIL_DELIM_MAX];
    size_t dlen;
    char *got;                  /* every delivery, concatenated */
    size_t got_len;
    size_t *ends;               /* where each delivery ended in got */
    size_t n_ends;
    unsigned deferred_left;     /* reads the harness is still to start */
    bool read_wanted;           /* the callback left the next read to it */
    bool closed;
    int close_reason;
};

static void until_read_cb(struct pf_iostream *s, const char *buf, size_t len, int status)
{
    struct until_run *r = pf_iostream_data(s);
    int rc;

    FUZZ_CHECK(status == 0, "read_until without max_bytes called back with %d", status);
    FUZZ_CHECK(len >= r->dlen && memcmp(buf + len - r->dlen, r->delim, r->dlen) == 0,
               "delivery %zu (%zu bytes) does not end with the delimiter", r->n_ends, len);
    /* got and ends are sized for the whole input: a delivery is never empty. */
    memcpy(r->got + r->got_len, buf, len);
    r->got_len += len;
    r->ends[r->n_ends++] = r->got_len;
    if (r->deferred_left > 0) {
        r->deferred_left--;
        r->read_wanted = true;
        return;
    }
    rc = pf_iostream_read_until(s, r->delim, r->dlen, 0, until_read_cb);
    FUZZ_CHECK(rc == 0, "read_until from the callback returned %d", rc);
}

static void until_close_cb(struct pf_iostream *s, int reason)
{
    struct until_run *r = pf_iostream_data(s);

    r->closed = true;
    r->close_reason = reason;
}

/* Runs the loop until the stream has read every byte written so far and
 * delivered every delimiter among them, starting the deferred reads. */
static void until_pump(struct ev_loop *loop, struct until_run *r, struct pf_iostream *s, int fd)
{
    int pending = 0;

    for (int i = 0; i < UNTIL_PUMP_MAX; i++) {
        size_t before = r->n_ends;

        ev_run(loop, EVRUN_NOWAIT);
        FUZZ_CHECK(!r->closed, "the stream closed before EOF, reason %d", r->close_reason);
        if (r->read_wanted) {
            r->read_wanted = false;
            FUZZ_CHECK(pf_iostream_read_until(s, r->delim, r->dlen, 0, until_read_cb) == 0,
                       "read_until between loop runs failed");
            continue;
        }
        FUZZ_CHECK(ioctl(fd, FIONREAD, &pending) == 0, "FIONREAD: %s", strerror(errno));
        if (pending == 0 && r->n_ends == before)
            return;
    }
    FUZZ_CHECK(false, "%d bytes unread, read pending %d, after %d loop runs", pending,
               r->read_wanted, UNTIL_PUMP_MAX);
}

static size_t until_chunk_size(uint8_t b)
{
    return b < UNTIL_BIG_SIZE_FROM ? (size_t)b + 1
                                   : (size_t)(b - UNTIL_BIG_SIZE_FROM + 1) * UNTIL_BIG_SIZE_UNIT;
}

/* The reference: split data after each delimiter, searching from the end
 * of the previous one; checks r's deliveries against it. */
static void until_compare(const struct until_run *r, const uint8_t *data, size_t len)
{
    size_t at = 0, n = 0;

    for (;;) {
        const uint8_t *hit = memmem(data + at, len - at, r->delim, r->dlen);

        if (hit == NULL)
            break;
        at = (size_t)(hit - data) + r->dlen;
        FUZZ_CHECK(n < r->n_ends && r->ends[n] == at,
                   "delivery %zu should end at byte %zu; got %zu deliveries, that one ending at %zu",
                   n, at, r->n_ends, n < r->n_ends ? r->ends[n] : 0);
        n++;
    }
    FUZZ_CHECK(n == r->n_ends, "%zu deliveries, expected %zu", r->n_ends, n);
    FUZZ_CHECK(r->got_len == at && memcmp(r->got, data, at) == 0,
               "the delivered bytes differ from the data");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct until_run r = { 0 };
    const uint8_t *sizes, *payload;
    size_t n_sizes, len, at = 0, turn = 0;
    struct ev_loop *loop;
    struct pf_iostream *s;
    int sv[2];

    if (size < 2)
        return 0;
    r.dlen = 1 + data[0] % UNTIL_DELIM_MAX;
    if (size < 1 + r.dlen + 1)
        return 0;
    memcpy(r.delim, data + 1, r.dlen);
    n_sizes = data[1 + r.dlen] % UNTIL_SIZES_MAX;
    r.deferred_left = data[1 + r.dlen] & UNTIL_DEFERRED_FLAG ? UNTIL_DEFERRED_MAX : 0;
    sizes = data + 2 + r.dlen;
    if (size < 2 + r.dlen + n_sizes)
        return 0;
    payload = sizes + n_sizes;
    len = size - (size_t)(payload - data);
    if (len > UNTIL_DATA_MAX)
        len = UNTIL_DATA_MAX;

    r.got = malloc(len + 1);
    r.ends = malloc((len + 1) * sizeof(*r.ends));
    loop = ev_loop_new(EVFLAG_AUTO);
    FUZZ_CHECK(r.got != NULL && r.ends != NULL && loop != NULL, "out of memory");
    FUZZ_CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0, "socketpair: %s",
               strerror(errno));
    s = pf_iostream_new(loop, sv[0], NULL);
    FUZZ_CHECK(s != NULL, "pf_iostream_new failed");
    pf_iostream_set_data(s, &r);
    pf_iostream_set_close_cb(s, until_close_cb);
    FUZZ_CHECK(pf_iostream_read_until(s, r.delim, r.dlen, 0, until_read_cb) == 0,
               "read_until failed");

    while (at < len) {
        size_t n = n_sizes > 0 ? until_chunk_size(sizes[turn % n_sizes]) : len;

        if (++turn == UNTIL_CHUNKS_MAX || n > len - at)
            n = len - at;
        FUZZ_CHECK(write(sv[1], payload + at, n) == (ssize_t)n, "write: %s", strerror(errno));
        at += n;
        until_pump(loop, &r, s, sv[0]);
    }
    /* EOF: the stream closes by itself, and a partial record is not delivered. */
    close(sv[1]);
    for (int i = 0; i < UNTIL_PUMP_MAX && !r.closed; i++)
        ev_run(loop, EVRUN_NOWAIT);
    FUZZ_CHECK(r.closed && r.close_reason == 0, "after EOF: closed %d, reason %d", r.closed,
               r.close_reason);
    /* The close callback ran; the stream frees itself in the same loop pass. */
    until_compare(&r, payload, len);
    ev_loop_destroy(loop);
    free(r.got);
    free(r.ends);
    return 0;
}

/* The stream harness of check_iostream and check_tls: one pf_iostream on a
 * libev loop of its own, every callback it makes recorded, and the test at
 * the other end of the connection with plain reads and writes. The two
 * suites check the same promises of pf_iostream over two transports (a
 * socketpair or loopback TCP; TLS behind a bridge process), so they share
 * what a test sees; how the stream and its peer are made stays with each
 * suite. */
#ifndef PF_STREAMUTIL_H
#define PF_STREAMUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <ev.h>

#include "iostream.h"

/* Read results kept per test (more are only counted). */
#define SU_MAX_READS 16

/* A stream under test and what its callbacks saw; the callbacks reach it
 * with pf_iostream_data(). Fields are the test's to read. */
struct su_stream {
    void *data;                 /* rw: the suite's per-test extras; never read here */
    struct ev_loop *loop;
    struct pf_iostream *s;      /* NULL once the close callback has run */
    int fd;                     /* the stream's end */
    int peer;                   /* the test's end; -1 once closed */

    /* Set around every su_* call into the stream: a callback that runs
     * while it is set ran inside the call, which pf_iostream promises never
     * happens. */
    bool in_call;
    int reentered;

    int nreads;
    char *rbuf[SU_MAX_READS];   /* each read's bytes, NUL-terminated */
    size_t rlen[SU_MAX_READS];
    int rstatus[SU_MAX_READS];
    int nwrites;
    char log[128];              /* the callbacks in order: 'R' read, 'W' write, 'C' close, ... */
    size_t nlog;

    int nclose;
    int close_reason;
    double close_time;          /* tu_now() in the close callback */
    bool closed;
    bool fd_closed_in_close_cb;
    bool closed_flag_in_close_cb;   /* pf_iostream_closed() there */

    /* What su_close_in_read_cb saw right after closing. */
    bool closed_after_close;
    int rc_after_close[3];
};

/* Takes over s (made on loop for fd; peer is the test's end): the stream's
 * data is st, its close callback su_close_cb. Clears st first; st->data is
 * NULL. */
void su_attach(struct su_stream *st, struct ev_loop *loop, int fd, int peer,
               struct pf_iostream *s);
/* Closes the stream if the test left it open and fails the test if the
 * close callback does not run within timeout_sec; closes the peer; frees
 * the recorded reads. The loop stays. */
void su_detach(struct su_stream *st, double timeout_sec);

struct su_stream *su_of(struct pf_iostream *s);
/* For a suite's own callbacks: notes one in the log (and a reentry). */
void su_note_cb(struct su_stream *st, char what);
void su_record_read(struct su_stream *st, const char *buf, size_t len, int status);
/* Callbacks that only record. */
void su_read_cb(struct pf_iostream *s, const char *buf, size_t len, int status);
void su_write_cb(struct pf_iostream *s);
void su_close_cb(struct pf_iostream *s, int reason);
/* Records the read, closes the stream, then tries every call once more
 * (closed_after_close, rc_after_close: read_until, read_bytes, write) and
 * closes again. */
void su_close_in_read_cb(struct pf_iostream *s, const char *buf, size_t len, int status);

/* pf_iostream_* with in_call set around them; the stream must be open. */
int su_read_until(struct su_stream *st, const char *delim, size_t max_bytes, pf_read_cb cb);
int su_read_bytes(struct su_stream *st, size_t n, bool partial, pf_read_cb cb);
int su_read_until_close(struct su_stream *st, pf_read_cb cb);
int su_write(struct su_stream *st, const void *buf, size_t len, pf_write_cb cb);
int su_wait_for_handshake(struct su_stream *st, pf_handshake_cb cb);
void su_close(struct su_stream *st);

void su_run_for(struct su_stream *st, double sec);
/* Runs the loop until *count reaches target; false after timeout_sec. */
bool su_run_until_count(struct su_stream *st, const int *count, int target, double timeout_sec);
bool su_run_until_closed(struct su_stream *st, double timeout_sec);

void su_peer_write(struct su_stream *st, const char *str);
void su_peer_close(struct su_stream *st);
/* Reads up to len bytes from the peer while the loop runs (the stream needs
 * it to send what the socket did not take at once); stops at EOF. Returns
 * the bytes read. */
size_t su_read_peer(struct su_stream *st, void *buf, size_t len, double timeout_sec);

/* Read i completed with status 0 and exactly want (a string literal). */
#define SU_ASSERT_READ(st, i, want) su_assert_read((st), (i), (want), sizeof(want) - 1)
void su_assert_read(const struct su_stream *st, int i, const char *want, size_t wlen);
void su_assert_no_reentry(const struct su_stream *st);
/* The close callback ran once, with reason, the fd already closed and
 * pf_iostream_closed() true. */
void su_assert_closed_once(const struct su_stream *st, int reason);

/* Byte i of every patterned stream: a position hash, so that a lost,
 * repeated or reordered chunk of any size shows up as a mismatch. */
unsigned char su_pattern_byte(size_t i);
/* buf[0..len) = the pattern from byte from on. */
void su_fill_pattern(unsigned char *buf, size_t from, size_t len);

#endif

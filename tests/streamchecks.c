/* Behaviours both stream suites check; see streamchecks.h. */
#include "streamchecks.h"
#include "testutil.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Time the loop gets to do something that should NOT happen. */
#define SETTLE_SEC 0.1
#define HTTP_DELIM "\r\n\r\n"

void sc_read_until_across_writes_keeps_rest(struct su_stream *c, double wait_sec)
{
    ck_assert_int_eq(su_read_until(c, HTTP_DELIM, 0, su_read_cb), 0);
    /* Each write gets the loop's time to travel alone (one TLS record each);
     * the delimiter straddles the second and the third. */
    su_peer_write(c, "GET / HT");
    su_run_for(c, SETTLE_SEC);
    ck_assert_int_eq(c->nreads, 0);
    su_peer_write(c, "TP/1.1\r\n\r");
    su_run_for(c, SETTLE_SEC);
    ck_assert_int_eq(c->nreads, 0);
    su_peer_write(c, "\nrest");
    ck_assert(su_run_until_count(c, &c->nreads, 1, wait_sec));
    su_run_for(c, SETTLE_SEC);
    ck_assert_int_eq(c->nreads, 1);
    SU_ASSERT_READ(c, 0, "GET / HTTP/1.1\r\n\r\n");

    /* Issued after the callback returned: the leftover must have been kept. */
    ck_assert_int_eq(su_read_bytes(c, 4, false, su_read_cb), 0);
    ck_assert(su_run_until_count(c, &c->nreads, 2, wait_sec));
    SU_ASSERT_READ(c, 1, "rest");
    ck_assert_int_eq(c->nclose, 0);
    su_assert_no_reentry(c);
}

void sc_close_from_read_cb_drops_buffered_data(struct su_stream *c, double wait_sec)
{
    ck_assert_int_eq(su_read_until(c, HTTP_DELIM, 0, su_close_in_read_cb), 0);
    /* The second request stays buffered when the callback closes. */
    su_peer_write(c, "a\r\n\r\nb\r\n\r\n");
    ck_assert(su_run_until_closed(c, wait_sec));
    su_run_for(c, SETTLE_SEC);
    ck_assert_int_eq(c->nreads, 1);
    SU_ASSERT_READ(c, 0, "a\r\n\r\n");
    ck_assert_str_eq(c->log, "RC");
    su_assert_closed_once(c, 0);
    ck_assert(c->closed_after_close);
    ck_assert_int_eq(c->rc_after_close[0], -EPIPE);
    ck_assert_int_eq(c->rc_after_close[1], -EPIPE);
    ck_assert_int_eq(c->rc_after_close[2], -EPIPE);
    ck_assert_int_eq(c->nwrites, 0);
}

void sc_read_until_over_max_buffer_closes_with_enobufs(struct su_stream *c, double wait_sec)
{
    char data[4096];

    memset(data, 'a', sizeof(data));
    ck_assert_int_eq(su_read_until(c, HTTP_DELIM, 0, su_read_cb), 0);
    ck_assert(tu_write_all(c->peer, data, sizeof(data)));
    ck_assert(su_run_until_closed(c, wait_sec));
    su_run_for(c, SETTLE_SEC);
    su_assert_closed_once(c, -ENOBUFS);
    ck_assert_int_eq(c->nreads, 0);
}

int sc_write_to_gone_peer_closes_stream(struct su_stream *c, double wait_sec)
{
    const size_t len = 1024 * 1024;
    unsigned char *buf = calloc(1, len);
    int rc;

    ck_assert_ptr_nonnull(buf);
    rc = su_write(c, buf, len, su_write_cb);
    ck_assert_msg(rc == 0 || rc == -EPIPE, "write returned %d", rc);
    free(buf);
    if (c->s != NULL && !pf_iostream_closed(c->s))
        ck_assert_int_eq(su_write(c, "more", 4, su_write_cb), 0);
    ck_assert(su_run_until_closed(c, wait_sec));
    ck_assert_int_eq(c->nclose, 1);
    ck_assert_int_eq(c->nwrites, 0);
    ck_assert(c->fd_closed_in_close_cb);
    return c->close_reason;
}

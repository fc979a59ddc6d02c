/*
 * echo: the protocol-less handler. Every byte read is written back; the next
 * read waits until the kernel took the previous echo, so a client that
 * sends without reading is slowed down instead of growing our buffers.
 * Connection lifetime and timeouts are iostream's.
 */
#include "echo.h"

/* Bytes per read: one iostream chunk, so a read never waits for more. */
#define ECHO_READ_MAX PF_IOSTREAM_READ_CHUNK

static void echo_read_cb(struct pf_iostream *s, const char *buf, size_t len, int status);

static void echo_read_next(struct pf_iostream *s)
{
    pf_iostream_read_bytes(s, ECHO_READ_MAX, true, echo_read_cb);
}

static void echo_written_cb(struct pf_iostream *s)
{
    if (!pf_iostream_reading(s))
        echo_read_next(s);
}

static void echo_read_cb(struct pf_iostream *s, const char *buf, size_t len, int status)
{
    (void)status;               /* read_bytes has no failure it reports here */
    if (pf_iostream_write(s, buf, len, echo_written_cb) < 0)
        return;                 /* the stream closed; its close callback knows why */
    if (!pf_iostream_writing(s))
        echo_read_next(s);
}

void echo_handle_stream(struct pf_tcp_server *srv, struct pf_iostream *s,
                        const struct sockaddr *peer, socklen_t len)
{
    (void)srv;
    (void)peer;
    (void)len;
    echo_read_next(s);
}

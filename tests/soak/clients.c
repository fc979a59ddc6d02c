/*
 * clients: the load that runs through the whole soak, one thread per
 * client, each with at most one connection and one operation in flight:
 * HTTP keep-alive (requests one after another on a connection, a
 * `Connection: close` answer means reconnect), HTTP one request per
 * connection, echo sessions (exchanges for up to SOAK_ECHO_SESSION_MAX_SEC)
 * and echo one exchange per connection. Every answer is checked byte for
 * byte; anything else is recorded as a failure with the connection's ports,
 * for the report to charge to a fault.
 */
#define _GNU_SOURCE     /* memmem, strcasestr */
#include "soak.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define HTTP_HEAD_MAX 4096
#define ECHO_MSG_MAX 8192
#define ECHO_NEW_MSG_MAX 2048
/* A paced keep-alive client pauses up to this long after each request, as
 * a browser does: a drain then finds its connection idle, and closing an
 * idle connection races the next request. The http drain closes only
 * connections idle for 1 s (and answers the others with Connection:
 * close); the pause stays well under that, and over its 0.25 s check period. */
#define KA_PACE_MAX_SEC 0.4
/* Clients run niced: they take what CPU the daemons and the fault injector
 * leave, so that a starved heartbeat or a late fault is not of our making. */
#define CLIENT_NICE 5
/* After a failure, before the next try: no busy loop on a dead listener. */
#define FAILURE_PAUSE_US 10000

/* How many threads of each kind (issue #9: several keep-alive connections). */
static const int clients_per_kind[C_NKINDS] = {
    [C_HTTP_KA] = 3, [C_HTTP_KA_PACED] = 2, [C_HTTP_NEW] = 2, [C_ECHO_KA] = 2,
    [C_ECHO_NEW] = 2,
};

struct conn {
    int fd;
    unsigned short server_port, client_port;
    double t_open;
    double t_last;              /* when its last operation was done (or it opened) */
    double t_sent;              /* when the current operation started sending */
    unsigned ops;               /* operations done on it */
};

/* What went wrong with one operation, before it becomes a struct failure. */
struct op_error {
    bool refused, timeout;
    char what[200];
};

static void op_errorf(struct op_error *e, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void op_errorf(struct op_error *e, int err, const char *fmt, ...)
{
    va_list ap;
    size_t n;

    va_start(ap, fmt);
    vsnprintf(e->what, sizeof(e->what), fmt, ap);
    va_end(ap);
    if (err != 0) {
        n = strlen(e->what);
        snprintf(e->what + n, sizeof(e->what) - n, ": %s", strerror(err));
    }
    e->refused = err == ECONNREFUSED;
    e->timeout = err == ETIMEDOUT;
}

void record_failure(const struct failure *f)
{
    pthread_mutex_lock(&soak.lock);
    if (soak.nfailures == soak.cap_failures) {
        int cap = soak.cap_failures ? 2 * soak.cap_failures : 256;
        struct failure *p = realloc(soak.failures, (size_t)cap * sizeof(*p));

        if (p == NULL) {
            pthread_mutex_unlock(&soak.lock);
            return;
        }
        soak.failures = p;
        soak.cap_failures = cap;
    }
    soak.failures[soak.nfailures++] = *f;
    pthread_mutex_unlock(&soak.lock);
}

/* Waits for events on fd for up to timeout_sec; 0, or -ETIMEDOUT. */
static int wait_fd(int fd, short events, double timeout_sec)
{
    struct pollfd p = { .fd = fd, .events = events };
    double deadline = soak_now() + timeout_sec;
    int rc;

    for (;;) {
        double left = deadline - soak_now();

        if (left <= 0)
            return -ETIMEDOUT;
        rc = poll(&p, 1, (int)(left * 1000) + 1);
        if (rc > 0)
            return 0;
        if (rc < 0 && errno != EINTR)
            return -errno;
    }
}

static void conn_close(struct conn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
}

static int conn_open(struct conn *c, unsigned port, double timeout_sec, struct op_error *e)
{
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof(sin);
    int err = 0, one = 1;

    *c = (struct conn){ .fd = -1, .server_port = (unsigned short)port, .t_open = soak_now() };
    c->t_last = c->t_open;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        op_errorf(e, errno, "socket");
        return -1;
    }
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(c->fd, (struct sockaddr *)&sin, sizeof(sin)) < 0) {
        if (errno != EINPROGRESS) {
            err = errno;
        } else if ((err = -wait_fd(c->fd, POLLOUT, timeout_sec)) == 0) {
            socklen_t elen = sizeof(err);

            if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &elen) < 0)
                err = errno;
        }
    }
    if (getsockname(c->fd, (struct sockaddr *)&sin, &len) == 0)
        c->client_port = ntohs(sin.sin_port);
    if (err != 0) {
        op_errorf(e, err, "connect");
        conn_close(c);
        return -1;
    }
    return 0;
}

static int send_all(struct conn *c, const void *buf, size_t len, double timeout_sec)
{
    const char *p = buf;

    while (len > 0) {
        ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL);

        if (n > 0) {
            p += n;
            len -= (size_t)n;
        } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            int rc = wait_fd(c->fd, POLLOUT, timeout_sec);
            if (rc < 0)
                return rc;
        } else {
            return -errno;
        }
    }
    return 0;
}

/* Some bytes (> 0), 0 at EOF, or -errno (-ETIMEDOUT after timeout_sec
 * without a byte). */
static ssize_t recv_some(struct conn *c, void *buf, size_t len, double timeout_sec)
{
    for (;;) {
        ssize_t n = recv(c->fd, buf, len, 0);

        if (n >= 0)
            return n;
        if (errno == EAGAIN || errno == EINTR) {
            int rc = wait_fd(c->fd, POLLIN, timeout_sec);
            if (rc < 0)
                return rc;
            continue;
        }
        return -errno;
    }
}

/* Reads exactly len bytes; 0, or sets e and returns -1. */
static int recv_exact(struct conn *c, void *buf, size_t len, double timeout_sec,
                      struct op_error *e, const char *what)
{
    size_t got = 0;

    while (got < len) {
        ssize_t n = recv_some(c, (char *)buf + got, len - got, timeout_sec);

        if (n <= 0) {
            op_errorf(e, n == 0 ? 0 : (int)-n, "%s: %s after %zu of %zu bytes", what,
                      n == 0 ? "EOF" : "recv", got, len);
            return -1;
        }
        got += (size_t)n;
    }
    return 0;
}

/* One GET of a served file, its answer checked byte for byte. *closed
 * tells whether the server said Connection: close (and then closes). */
static int http_get(struct conn *c, bool big, bool ask_close, char *body, double timeout_sec,
                    bool *closed, struct op_error *e)
{
    const unsigned char *want = big ? soak.big : soak.small;
    size_t want_len = big ? SOAK_BIG_LEN : SOAK_SMALL_LEN, have = 0, head_len;
    char req[256], head[HTTP_HEAD_MAX + 1];
    const char *end = NULL, *cl;
    int len = snprintf(req, sizeof(req), "GET /%s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                       "User-Agent: preforkd-soak\r\n%s\r\n", big ? "big.bin" : "small.bin",
                       ask_close ? "Connection: close\r\n" : "");
    int rc;

    c->t_sent = soak_now();
    rc = send_all(c, req, (size_t)len, timeout_sec);
    if (rc < 0) {
        op_errorf(e, -rc, "request %u on the connection: send", c->ops + 1);
        return -1;
    }
    while (end == NULL) {
        ssize_t n;

        if (have == HTTP_HEAD_MAX) {
            op_errorf(e, 0, "request %u: a response head over %d bytes", c->ops + 1,
                      HTTP_HEAD_MAX);
            return -1;
        }
        n = recv_some(c, head + have, HTTP_HEAD_MAX - have, timeout_sec);
        if (n <= 0) {
            op_errorf(e, n == 0 ? 0 : (int)-n, "request %u on the connection: %s after %zu "
                      "bytes of the response head", c->ops + 1, n == 0 ? "EOF" : "recv", have);
            return -1;
        }
        have += (size_t)n;
        head[have] = '\0';
        end = memmem(head, have, "\r\n\r\n", 4);
    }
    head_len = (size_t)(end - head) + 4;
    head[head_len - 2] = '\0';      /* the head as a string, its last CRLF kept */
    if (strncmp(head, "HTTP/1.1 200 ", 13) != 0) {
        op_errorf(e, 0, "request %u: status line \"%.40s\"", c->ops + 1, head);
        return -1;
    }
    cl = strcasestr(head, "\r\nContent-Length:");
    if (cl == NULL || strtoul(cl + 17, NULL, 10) != want_len) {
        op_errorf(e, 0, "request %u: Content-Length %s, expected %zu", c->ops + 1,
                  cl ? cl + 17 : "missing", want_len);
        return -1;
    }
    *closed = strcasestr(head, "\r\nConnection: close\r\n") != NULL;
    have -= head_len;
    if (have > want_len) {
        op_errorf(e, 0, "request %u: %zu bytes after a %zu-byte body", c->ops + 1,
                  have - want_len, want_len);
        return -1;
    }
    memcpy(body, head + head_len, have);
    if (recv_exact(c, body + have, want_len - have, timeout_sec, e, "body") < 0) {
        size_t n = strlen(e->what);
        snprintf(e->what + n, sizeof(e->what) - n, " (request %u)", c->ops + 1);
        return -1;
    }
    if (memcmp(body, want, want_len) != 0) {
        op_errorf(e, 0, "request %u: the body differs from %s", c->ops + 1,
                  big ? "big.bin" : "small.bin");
        return -1;
    }
    if (ask_close && !*closed) {
        op_errorf(e, 0, "request %u: Connection: close asked, not answered", c->ops + 1);
        return -1;
    }
    c->ops++;
    c->t_last = soak_now();
    return 0;
}

/* One echo of len random bytes. */
static int echo_once(struct conn *c, uint64_t *rng, size_t len, unsigned char *out,
                     unsigned char *in, double timeout_sec, struct op_error *e)
{
    int rc;

    fill_pattern(out, len, rng_next(rng));
    c->t_sent = soak_now();
    rc = send_all(c, out, len, timeout_sec);
    if (rc < 0) {
        op_errorf(e, -rc, "exchange %u on the connection: send", c->ops + 1);
        return -1;
    }
    if (recv_exact(c, in, len, timeout_sec, e, "echo") < 0) {
        size_t n = strlen(e->what);
        snprintf(e->what + n, sizeof(e->what) - n, " (exchange %u)", c->ops + 1);
        return -1;
    }
    if (memcmp(in, out, len) != 0) {
        op_errorf(e, 0, "exchange %u: the echo of %zu bytes differs", c->ops + 1, len);
        return -1;
    }
    c->ops++;
    c->t_last = soak_now();
    return 0;
}

static void client_failed(struct client *cl, struct conn *c, const struct op_error *e)
{
    struct failure f = {
        .client = cl->kind, .daemon = cl->d->index, .t_open = c->t_open, .t_fail = soak_now(),
        .server_port = c->server_port, .client_port = c->client_port, .refused = e->refused,
        .timeout = e->timeout, .fault = -1,
    };

    /* How long the connection sat idle matters to a server that closes idle ones. */
    if (c->ops > 0)
        snprintf(f.what, sizeof(f.what), "%s (the connection idled %.3f s before it; it "
                 "failed %.3f s after it was sent)", e->what, c->t_sent - c->t_last,
                 f.t_fail - c->t_sent);
    else
        snprintf(f.what, sizeof(f.what), "%s", e->what);
    record_failure(&f);
    conn_close(c);
    usleep(FAILURE_PAUSE_US);
}

static void count_op(struct client *cl, double started, size_t bytes)
{
    double dt = soak_now() - started;

    cl->st.ops++;
    cl->st.bytes += bytes;
    if (dt > cl->st.max_latency)
        cl->st.max_latency = dt;
    if (dt > SOAK_SLOW_OP_SEC)
        cl->st.slow++;
}

static bool open_counted(struct client *cl, struct conn *c)
{
    struct op_error e;

    if (conn_open(c, cl->d->port, SOAK_IO_TIMEOUT_SEC, &e) < 0) {
        client_failed(cl, c, &e);
        return false;
    }
    cl->st.conns++;
    return true;
}

static void *client_main(void *arg)
{
    struct client *cl = arg;
    char *body = malloc(SOAK_BIG_LEN);
    unsigned char *out = malloc(ECHO_MSG_MAX), *in = malloc(ECHO_MSG_MAX);
    struct conn c = { .fd = -1 };
    struct op_error e;

    if (body == NULL || out == NULL || in == NULL) {
        fprintf(stderr, "soak: client: out of memory\n");
        exit(2);
    }
    setpriority(PRIO_PROCESS, (id_t)gettid(), CLIENT_NICE);
    while (!atomic_load(&soak.stop_clients)) {
        bool big = rng_next(&cl->rng) & 1, closed = false;
        double t;

        switch (cl->kind) {
        case C_HTTP_KA:
        case C_HTTP_KA_PACED:
        case C_HTTP_NEW:
            if (c.fd < 0 && !open_counted(cl, &c))
                break;
            t = soak_now();
            if (http_get(&c, big, cl->kind == C_HTTP_NEW, body, SOAK_IO_TIMEOUT_SEC, &closed,
                         &e) < 0) {
                client_failed(cl, &c, &e);
                break;
            }
            count_op(cl, t, big ? SOAK_BIG_LEN : SOAK_SMALL_LEN);
            if (closed) {
                if (cl->kind != C_HTTP_NEW)
                    cl->st.server_closes++;
                conn_close(&c);
            }
            if (cl->kind == C_HTTP_KA_PACED)
                usleep((useconds_t)(rng_uniform(&cl->rng, 0, KA_PACE_MAX_SEC) * 1e6));
            break;
        case C_ECHO_KA: {
            double end = soak_now() + rng_uniform(&cl->rng, 0.1, SOAK_ECHO_SESSION_MAX_SEC);

            if (!open_counted(cl, &c))
                break;
            while (c.fd >= 0 && soak_now() < end && !atomic_load(&soak.stop_clients)) {
                size_t len = 1 + rng_next(&cl->rng) % ECHO_MSG_MAX;

                t = soak_now();
                if (echo_once(&c, &cl->rng, len, out, in, SOAK_IO_TIMEOUT_SEC, &e) < 0)
                    client_failed(cl, &c, &e);
                else
                    count_op(cl, t, len);
            }
            conn_close(&c);
            break;
        }
        case C_ECHO_NEW: {
            size_t len = 1 + rng_next(&cl->rng) % ECHO_NEW_MSG_MAX;

            if (!open_counted(cl, &c))
                break;
            t = soak_now();
            if (echo_once(&c, &cl->rng, len, out, in, SOAK_IO_TIMEOUT_SEC, &e) < 0) {
                client_failed(cl, &c, &e);
                break;
            }
            count_op(cl, t, len);
            conn_close(&c);
            break;
        }
        case C_NKINDS:
            break;
        }
    }
    conn_close(&c);
    free(body);
    free(out);
    free(in);
    return NULL;
}

void clients_start(void)
{
    atomic_store(&soak.stop_clients, false);
    for (int k = 0; k < C_NKINDS; k++) {
        for (int i = 0; i < clients_per_kind[k] && soak.nclients < SOAK_MAX_CLIENTS; i++) {
            struct client *cl = &soak.clients[soak.nclients];

            cl->kind = (enum client_kind)k;
            cl->d = &soak.d[k == C_ECHO_KA || k == C_ECHO_NEW ? 1 : 0];
            cl->index = soak.nclients;
            cl->rng = soak.seed ^ ((uint64_t)(soak.nclients + 1) * 0x9e3779b97f4a7c15ULL);
            if (pthread_create(&cl->thread, NULL, client_main, cl) != 0) {
                fprintf(stderr, "soak: pthread_create failed\n");
                exit(2);
            }
            soak.nclients++;
        }
    }
}

void clients_stop(void)
{
    atomic_store(&soak.stop_clients, true);
    for (int i = 0; i < soak.nclients; i++)
        pthread_join(soak.clients[i].thread, NULL);
}

bool probe_listener(const struct daemon *d, unsigned port, double timeout_sec,
                    char *why, size_t len)
{
    struct conn c;
    struct op_error e = { .what = "" };
    uint64_t rng = soak.seed;
    bool ok, closed;

    if (conn_open(&c, port, timeout_sec, &e) < 0) {
        snprintf(why, len, "127.0.0.1:%u: %s", port, e.what);
        return false;
    }
    if (d->http) {
        char *body = malloc(SOAK_BIG_LEN);

        ok = body != NULL && http_get(&c, false, true, body, timeout_sec, &closed, &e) == 0;
        free(body);
    } else {
        unsigned char out[64], in[64];

        ok = echo_once(&c, &rng, sizeof(out), out, in, timeout_sec, &e) == 0;
    }
    conn_close(&c);
    if (!ok)
        snprintf(why, len, "127.0.0.1:%u: %s", port, e.what);
    return ok;
}

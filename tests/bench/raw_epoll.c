/*
 * raw_epoll: the floor of the benchmark. N pre-forked processes share one
 * non-blocking listener and answer every request with one fixed HTTP/1.1 200
 * response built once at start. Parsing is the least HTTP needs: a request
 * ends at "\r\n\r\n" (bodies are not read), pipelined requests get their
 * responses in one write, "Connection: close" (or HTTP/1.0 without
 * keep-alive) closes after the response. Whatever preforkd, nginx or Tornado
 * cost above this is framework overhead. Benchmark-only: no config, no
 * timeouts, no logging.
 *
 * usage: raw_epoll PORT NPROCS BODY_FILE [exclusive|plain]
 */
#define _GNU_SOURCE     /* accept4, memmem */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

/* Longest request head kept across reads; a longer one closes the connection. */
#define RAW_HEAD_MAX 16384
/* Bytes read per read(2); a pipelined burst larger than this takes two reads. */
#define RAW_READ_BUF 65536
#define RAW_EVENTS 256
#define RAW_BACKLOG 511     /* nginx's default on Linux */
#define RAW_BODY_MAX 65536
#define RAW_IOV 64

struct response {
    char *keep, *close;     /* the two variants: keep-alive and Connection: close */
    size_t keep_len, close_len;
};

/* Per connection, allocated at accept: no buffer until a head is split
 * across reads or the socket buffer is full. */
struct conn {
    int fd;
    bool close_after;       /* the last queued response closes */
    char *partial;          /* bytes of an unfinished head, or NULL */
    size_t npartial;
    size_t queued;          /* whole responses still to write */
    size_t off;             /* bytes of the first queued response already written */
};

static struct response resp;

static char *build_response(const char *body, size_t body_len, bool close, size_t *len)
{
    char head[256];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 200 OK\r\nServer: raw_epoll\r\nContent-Type: text/html\r\n"
                     "Content-Length: %zu\r\n%s\r\n", body_len,
                     close ? "Connection: close\r\n" : "");
    char *r = malloc((size_t)n + body_len);

    if (r == NULL)
        return NULL;
    memcpy(r, head, (size_t)n);
    memcpy(r + n, body, body_len);
    *len = (size_t)n + body_len;
    return r;
}

/* Case-insensitive search for needle in h[0..n). */
static const char *find_ci(const char *h, size_t n, const char *needle)
{
    size_t k = strlen(needle);

    for (size_t i = 0; i + k <= n; i++)
        if (strncasecmp(h + i, needle, k) == 0)
            return h + i;
    return NULL;
}

/* Whether the request head h[0..n), every line ending in "\r\n", asks for
 * the connection to close. */
static bool head_wants_close(const char *h, size_t n)
{
    const char *eol = memchr(h, '\n', n);
    bool http10 = eol != NULL && eol - h >= 9 && memcmp(eol - 9, "HTTP/1.0\r", 9) == 0;

    if (find_ci(h, n, "\nconnection: close") != NULL)
        return true;
    return http10 && find_ci(h, n, "\nconnection: keep-alive") == NULL;
}

static void conn_free(int ep, struct conn *c)
{
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->partial);
    free(c);
}

/* Writes the queued responses; returns false when the connection is done. */
static bool conn_flush(int ep, struct conn *c)
{
    while (c->queued > 0) {
        const struct response *r = &resp;
        struct iovec iov[RAW_IOV];
        size_t n = c->queued < RAW_IOV ? c->queued : RAW_IOV;
        ssize_t w;

        for (size_t i = 0; i < n; i++) {
            bool last = i + 1 == c->queued;
            iov[i].iov_base = last && c->close_after ? r->close : r->keep;
            iov[i].iov_len = last && c->close_after ? r->close_len : r->keep_len;
        }
        iov[0].iov_base = (char *)iov[0].iov_base + c->off;
        iov[0].iov_len -= c->off;
        w = writev(c->fd, iov, (int)n);
        if (w < 0 && errno == EAGAIN) {
            /* Only EPOLLOUT: a level-triggered EPOLLIN we do not serve would spin. */
            struct epoll_event ev = { .events = EPOLLOUT, .data.ptr = c };
            epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
            return true;
        }
        if (w < 0)
            return false;
        for (size_t i = 0; i < n && w > 0; i++) {
            size_t left = iov[i].iov_len;
            if ((size_t)w >= left) {
                w -= (ssize_t)left;
                c->queued--;
                c->off = 0;
            } else {
                c->off += (size_t)w;
                w = 0;
            }
        }
    }
    return !c->close_after;
}

/* Counts the complete heads in buf and keeps the unfinished tail. */
static bool conn_consume(struct conn *c, const char *buf, size_t len)
{
    const char *p = buf, *end = buf + len, *e;

    while (!c->close_after && (e = memmem(p, (size_t)(end - p), "\r\n\r\n", 4)) != NULL) {
        /* The head with its last line's "\r\n": a request line alone is a line too. */
        c->close_after = head_wants_close(p, (size_t)(e - p) + 2);
        c->queued++;
        p = e + 4;
    }
    if (c->close_after || p == end) {
        c->npartial = 0;
        return true;
    }
    if ((size_t)(end - p) > RAW_HEAD_MAX)
        return false;
    if (c->partial == NULL && (c->partial = malloc(RAW_HEAD_MAX)) == NULL)
        return false;
    memmove(c->partial, p, (size_t)(end - p));
    c->npartial = (size_t)(end - p);
    return true;
}

static bool conn_readable(int ep, struct conn *c)
{
    static char buf[RAW_HEAD_MAX + RAW_READ_BUF];
    size_t have = c->npartial;
    ssize_t n;

    if (have > 0)
        memcpy(buf, c->partial, have);
    n = read(c->fd, buf + have, RAW_READ_BUF);
    if (n < 0 && errno == EAGAIN)
        return true;
    if (n <= 0)
        return false;
    if (!conn_consume(c, buf, have + (size_t)n))
        return false;
    if (c->npartial == 0 && c->partial != NULL) {
        free(c->partial);
        c->partial = NULL;
    }
    return conn_flush(ep, c);
}

/* One connection per wakeup, as nginx does without multi_accept: a worker
 * that drained the queue would take a client's whole burst of connections
 * while the others sleep. The listener is level-triggered, so what is left
 * wakes a worker again. */
static void accept_one(int ep, int lfd)
{
    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    struct conn *c;
    struct epoll_event ev = { .events = EPOLLIN };

    if (fd < 0)
        return;     /* EAGAIN: another process took it */
    c = calloc(1, sizeof(*c));
    if (c == NULL) {
        close(fd);
        return;
    }
    c->fd = fd;
    ev.data.ptr = c;
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
        close(fd);
        free(c);
    }
}

static void worker_run(int lfd, bool exclusive)
{
    struct epoll_event evs[RAW_EVENTS];
    struct epoll_event lev = { .events = EPOLLIN | (exclusive ? EPOLLEXCLUSIVE : 0),
                               .data.ptr = NULL };
    int ep = epoll_create1(EPOLL_CLOEXEC);

    /* No orphans: the worker goes when the parent does. */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev) < 0) {
        perror("raw_epoll: epoll");
        _exit(1);
    }
    for (;;) {
        int n = epoll_wait(ep, evs, RAW_EVENTS, -1);

        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            bool alive;

            if (c == NULL) {
                accept_one(ep, lfd);
                continue;
            }
            if (evs[i].events & EPOLLOUT) {
                alive = conn_flush(ep, c);
                if (alive && c->queued == 0) {
                    struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };
                    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                }
            } else {
                alive = c->queued > 0 || conn_readable(ep, c);
            }
            if (!alive || (evs[i].events & (EPOLLERR | EPOLLHUP)))
                conn_free(ep, c);
        }
    }
}

static int listen_on(int port)
{
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    int one = 1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, RAW_BACKLOG) < 0) {
        perror("raw_epoll: listen 127.0.0.1");
        exit(1);
    }
    return fd;
}

static size_t read_body(const char *path, char *body)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n = fd < 0 ? -1 : read(fd, body, RAW_BODY_MAX);

    if (n < 0) {
        perror(path);
        exit(1);
    }
    close(fd);
    return (size_t)n;
}

static pid_t children[1024];
static int nchildren;

static void stop_cb(int sig)
{
    for (int i = 0; i < nchildren; i++)
        kill(children[i], sig);
    _exit(0);
}

int main(int argc, char **argv)
{
    static char body[RAW_BODY_MAX];
    size_t body_len;
    int port, nprocs, lfd;
    bool exclusive;

    if (argc < 4 || argc > 5) {
        fprintf(stderr, "usage: raw_epoll PORT NPROCS BODY_FILE [exclusive|plain]\n");
        return 2;
    }
    port = atoi(argv[1]);
    nprocs = atoi(argv[2]);
    exclusive = argc < 5 || strcmp(argv[4], "plain") != 0;
    if (nprocs < 1 || nprocs > 1024) {
        fprintf(stderr, "raw_epoll: NPROCS must be 1..1024\n");
        return 2;
    }
    body_len = read_body(argv[3], body);
    resp.keep = build_response(body, body_len, false, &resp.keep_len);
    resp.close = build_response(body, body_len, true, &resp.close_len);
    if (resp.keep == NULL || resp.close == NULL)
        return 1;
    signal(SIGPIPE, SIG_IGN);
    lfd = listen_on(port);
    for (int i = 0; i < nprocs; i++) {
        pid_t pid = fork();
        if (pid == 0)
            worker_run(lfd, exclusive);
        if (pid < 0) {
            perror("raw_epoll: fork");
            stop_cb(SIGTERM);
        }
        children[nchildren++] = pid;
    }
    signal(SIGTERM, stop_cb);
    signal(SIGINT, stop_cb);
    /* The parent only waits, as a pre-fork master does. */
    while (wait(NULL) > 0 || errno == EINTR)
        ;
    return 0;
}

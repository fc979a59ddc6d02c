/*
 * tcpserver: listeners plus a handle_stream callback (Tornado's TCPServer).
 * It owns its listening fds and counts the streams it created, pausing
 * accept while max_connections are open. What a stream carries is the
 * handler's business; how a socket is bound is netutil's.
 */
#include "tcpserver.h"
#include "internal.h"
#include "process.h"
#include "tls.h"

#include <openssl/ssl.h>

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

struct pf_tcp_server {
    struct ev_loop *loop;
    pf_handle_stream_cb cb;
    struct pf_tcp_server_options opt;
    void *data;
    /* Accepting listeners. Each handler is its own allocation: it embeds
     * libev watchers, which must not move while active. */
    struct pf_accept_handler **handlers;
    int *fds;                   /* fds[i] is handlers[i]'s listener */
    size_t n, cap;
    int *bound;                 /* bound by pf_tcp_server_bind, not yet started */
    size_t nbound;
    struct pf_iostream *streams;    /* open streams, linked through pf__iostream_link */
    SSL_CTX *tls;               /* NULL: plain */
    double handshake_timeout_sec;
    bool full;                  /* paused at max_connections */
    bool freed;                 /* pf_tcp_server_free ran; last stream frees */
    struct pf_tcp_server_stats stats;
};

struct pf_tcp_server *pf_tcp_server_new(struct ev_loop *loop,
                                        pf_handle_stream_cb cb,
                                        const struct pf_tcp_server_options *opt)
{
    struct pf_tcp_server *srv = calloc(1, sizeof(*srv));

    assert(loop != NULL && cb != NULL);
    if (srv == NULL)
        return NULL;
    srv->loop = loop;
    srv->cb = cb;
    if (opt != NULL)
        srv->opt = *opt;
    if (srv->opt.backlog <= 0)
        srv->opt.backlog = PF_DEFAULT_BACKLOG;
    if (srv->opt.accept_batch == 0)
        srv->opt.accept_batch = (unsigned)srv->opt.backlog;
    return srv;
}

/* The last of the server: its TLS context may only go with its streams. */
static void server_free_memory(struct pf_tcp_server *srv)
{
    SSL_CTX_free(srv->tls);
    free(srv);
}

static void set_accepting(struct pf_tcp_server *srv, bool on)
{
    for (size_t i = 0; i < srv->n; i++) {
        if (on)
            pf_accept_handler_resume(srv->handlers[i]);
        else
            pf_accept_handler_pause(srv->handlers[i]);
    }
}

/* A stream of ours is gone (after its own close callback). */
static void stream_released(void *arg, struct pf_iostream *s)
{
    struct pf_tcp_server *srv = arg;
    struct pf__stream_link *l = pf__iostream_link(s);

    if (l->prev != NULL)
        pf__iostream_link(l->prev)->next = l->next;
    else
        srv->streams = l->next;
    if (l->next != NULL)
        pf__iostream_link(l->next)->prev = l->prev;
    srv->stats.active--;
    if (srv->freed) {
        if (srv->stats.active == 0)
            server_free_memory(srv);
        return;
    }
    if (srv->full && srv->stats.active < srv->opt.max_connections) {
        srv->full = false;
        set_accepting(srv, true);
    }
}

static void accept_cb(struct pf_accept_handler *h, int fd,
                      const struct sockaddr *peer, socklen_t len)
{
    struct pf_tcp_server *srv = h->data;
    struct pf_iostream *s;

    if (fd < 0) {
        srv->stats.last_accept_error = fd;
        srv->stats.accept_pauses++;
        return;
    }
    s = srv->tls == NULL
            ? pf__iostream_new_nonblocking(srv->loop, fd, &srv->opt.stream)
            : pf__iostream_new_tls_nonblocking(srv->loop, fd, &srv->opt.stream, srv->tls, true,
                                               srv->handshake_timeout_sec);
    if (s == NULL)
        return;                 /* out of memory: fd is closed, go on */
    pf__iostream_set_release(s, stream_released, srv);
    pf__iostream_link(s)->next = srv->streams;
    if (srv->streams != NULL)
        pf__iostream_link(srv->streams)->prev = s;
    srv->streams = s;
    srv->stats.accepted++;
    srv->stats.active++;
    if (srv->opt.max_connections && srv->stats.active >= srv->opt.max_connections) {
        /* Leave the rest in the kernel's queue: another worker may take them. */
        srv->full = true;
        set_accepting(srv, false);
    }
    srv->cb(srv, s, peer, len);
}

static int grow(struct pf_tcp_server *srv, size_t more)
{
    size_t cap = srv->cap ? srv->cap : 4;
    void *p;

    while (cap < srv->n + more)
        cap *= 2;
    if (cap == srv->cap)
        return 0;
    p = realloc(srv->handlers, cap * sizeof(*srv->handlers));
    if (p == NULL)
        return -ENOMEM;
    srv->handlers = p;
    p = realloc(srv->fds, cap * sizeof(*srv->fds));
    if (p == NULL)
        return -ENOMEM;
    srv->fds = p;
    srv->cap = cap;
    return 0;
}

static void drop_listener(struct pf_tcp_server *srv, size_t i, bool close_fd)
{
    pf_remove_accept_handler(srv->handlers[i]);
    free(srv->handlers[i]);
    if (close_fd)
        close(srv->fds[i]);
}

int pf_tcp_server_set_tls(struct pf_tcp_server *srv, const struct pf_tls_options *opt,
                          char *errmsg)
{
    SSL_CTX *ctx = opt->ctx;

    if (ctx != NULL)
        SSL_CTX_up_ref(ctx);
    else if ((ctx = pf_tls_server_ctx_new(opt->certificate, opt->key, errmsg)) == NULL)
        return -EINVAL;
    SSL_CTX_free(srv->tls);
    srv->tls = ctx;
    srv->handshake_timeout_sec = opt->handshake_timeout_sec;
    return 0;
}

int pf_tcp_server_add_sockets(struct pf_tcp_server *srv, const int *fds, size_t n)
{
    size_t first = srv->n;
    int err = grow(srv, n);

    if (err < 0)
        return err;
    for (size_t i = 0; i < n; i++) {
        struct pf_accept_handler *h = calloc(1, sizeof(*h));

        if (h == NULL) {
            err = -ENOMEM;
            goto undo;
        }
        h->data = srv;
        err = pf_add_accept_handler(srv->loop, h, fds[i], srv->opt.accept_batch, accept_cb);
        if (err < 0) {
            free(h);
            goto undo;
        }
        if (srv->full)
            pf_accept_handler_pause(h);
        srv->handlers[srv->n] = h;
        srv->fds[srv->n++] = fds[i];
    }
    return 0;
undo:
    while (srv->n > first)
        drop_listener(srv, --srv->n, false);
    return err;
}

int pf_tcp_server_bind(struct pf_tcp_server *srv, unsigned port,
                       const char *address, const struct pf_bind_options *opt,
                       char *errmsg)
{
    struct pf_bind_options o = opt ? *opt : (struct pf_bind_options){ 0 };
    int fds[PF_BIND_MAX];
    int n, *p;

    if (o.backlog <= 0)
        o.backlog = srv->opt.backlog;
    n = pf_bind_sockets(address, port, &o, fds, PF_BIND_MAX, errmsg);
    if (n < 0)
        return n;
    p = realloc(srv->bound, (srv->nbound + (size_t)n) * sizeof(*p));
    if (p == NULL) {
        while (n > 0)
            close(fds[--n]);
        return -ENOMEM;
    }
    srv->bound = p;
    for (int i = 0; i < n; i++)
        srv->bound[srv->nbound++] = fds[i];
    return 0;
}

int pf_tcp_server_listen(struct pf_tcp_server *srv, unsigned port,
                         const char *address, char *errmsg)
{
    int fds[PF_BIND_MAX];
    struct pf_bind_options o = { .backlog = srv->opt.backlog };
    int n = pf_bind_sockets(address, port, &o, fds, PF_BIND_MAX, errmsg);
    int err;

    if (n < 0)
        return n;
    err = pf_tcp_server_add_sockets(srv, fds, (size_t)n);
    if (err < 0)
        while (n > 0)
            close(fds[--n]);
    return err;
}

int pf_tcp_server_start(struct pf_tcp_server *srv, int num_processes,
                        int max_restarts)
{
    int err;

    if (num_processes != 1) {
        int id = pf_fork_processes(num_processes, max_restarts);
        if (id < 0)
            return id;          /* the parent, done supervising */
        ev_loop_fork(srv->loop);
    }
    err = pf_tcp_server_add_sockets(srv, srv->bound, srv->nbound);
    if (err < 0)
        return err;
    free(srv->bound);
    srv->bound = NULL;
    srv->nbound = 0;
    return 0;
}

void pf_tcp_server_accept_now(struct pf_tcp_server *srv)
{
    /* A callback may stop the server: srv->n is read again each time. */
    for (size_t i = 0; i < srv->n; i++)
        pf_accept_handler_accept_now(srv->handlers[i]);
}

void pf_tcp_server_stop(struct pf_tcp_server *srv)
{
    for (size_t i = 0; i < srv->n; i++)
        drop_listener(srv, i, true);
    srv->n = 0;
    for (size_t i = 0; i < srv->nbound; i++)
        close(srv->bound[i]);
    srv->nbound = 0;
}

void pf_tcp_server_free(struct pf_tcp_server *srv)
{
    if (srv == NULL)
        return;
    pf_tcp_server_stop(srv);
    free(srv->handlers);
    free(srv->fds);
    free(srv->bound);
    srv->handlers = NULL;
    srv->fds = NULL;
    srv->bound = NULL;
    srv->cap = 0;
    /* Streams still open point at us: the last one to close frees. */
    srv->freed = true;
    if (srv->stats.active == 0)
        server_free_memory(srv);
}

void pf_tcp_server_close_streams(struct pf_tcp_server *srv)
{
    /* Closing unlinks nothing yet (that waits for the loop), so walk on. */
    for (struct pf_iostream *s = srv->streams; s != NULL; s = pf__iostream_link(s)->next)
        pf_iostream_close(s);
}

void pf_tcp_server_stats(const struct pf_tcp_server *srv,
                         struct pf_tcp_server_stats *out)
{
    *out = srv->stats;
}

const int *pf_tcp_server_sockets(const struct pf_tcp_server *srv, size_t *n)
{
    *n = srv->n;
    return srv->fds;
}

void pf_tcp_server_set_data(struct pf_tcp_server *srv, void *data) { srv->data = data; }
void *pf_tcp_server_data(const struct pf_tcp_server *srv) { return srv->data; }

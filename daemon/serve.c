/*
 * serve: turns a loaded config into listening fds and pre-forked workers,
 * each running a libev loop with a pf_tcp_server. Parsing the config is
 * config.c's job; what a connection says is the handler's.
 */
#include "serve.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include "echo.h"
#include "log.h"
#include "prefork.h"

/* Mode of unix listeners: any local user may connect, as with nginx. */
#define SERVE_UNIX_MODE 0666

int serve_bind_all(const struct config *c, int *fds, size_t max)
{
    char err[PF_ERRMSG_SIZE];
    size_t n = 0;
    int rc = 0;

    for (size_t i = 0; i < c->n_listens; i++) {
        const struct listen_spec *ls = &c->listens[i];

        if (ls->kind == LISTEN_UNIX) {
            rc = n < max ? pf_bind_unix_socket(ls->path, SERVE_UNIX_MODE,
                                               (int)c->backlog, err) : -ENOSPC;
            if (rc >= 0)
                fds[n++] = rc;
        } else {
            struct pf_bind_options o = { .backlog = (int)c->backlog,
                                         .reuse_port = c->reuse_port };
            rc = pf_bind_sockets(ls->host, ls->port, &o, fds + n, max - n, err);
            if (rc > 0)
                n += (size_t)rc;
        }
        if (rc < 0) {
            log_msg(LOG_ERR, 0, "%s:%d: listen = %s: %s", c->path, ls->line,
                    ls->text, rc == -ENOSPC ? "too many listening sockets" : err);
            while (n > 0)
                close(fds[--n]);
            return rc;
        }
    }
    return (int)n;
}

static void stop_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)w;
    (void)revents;
    ev_break(loop, EVBREAK_ALL);
}

static void close_cb(struct pf_iostream *s, int reason)
{
    (void)s;
    if (reason < 0 && reason != -ETIMEDOUT)
        log_msg(LOG_DEBUG, reason, "connection closed");
}

static void handle_stream_cb(struct pf_tcp_server *srv, struct pf_iostream *s,
                             const struct sockaddr *peer, socklen_t len)
{
    pf_iostream_set_close_cb(s, close_cb);
    echo_handle_stream(srv, s, peer, len);
}

static int serve_worker(const struct config *c, const int *fds, size_t n)
{
    struct ev_loop *loop = ev_default_loop(0);
    struct pf_tcp_server_options o = {
        .accept_batch = c->accept_batch,
        .backlog = (int)c->backlog,
        .max_connections = c->max_connections,
        .stream = { .max_buffer_size = c->max_buffer_size,
                    .idle_timeout_sec = c->idle_timeout_sec },
    };
    struct pf_tcp_server *srv;
    ev_signal term, intr;
    int rc;

    ev_loop_fork(loop);
    srv = pf_tcp_server_new(loop, handle_stream_cb, &o);
    if (srv == NULL) {
        log_msg(LOG_ERR, -ENOMEM, "tcp server");
        return 1;
    }
    rc = pf_tcp_server_add_sockets(srv, fds, n);
    if (rc < 0) {
        log_msg(LOG_ERR, rc, "accept on inherited listeners");
        pf_tcp_server_free(srv);
        return 1;
    }
    ev_signal_init(&term, stop_cb, SIGTERM);
    ev_signal_init(&intr, stop_cb, SIGINT);
    ev_signal_start(loop, &term);
    ev_signal_start(loop, &intr);
    log_msg(LOG_INFO, 0, "accepting on %zu listening socket%s", n, n == 1 ? "" : "s");
    ev_run(loop, 0);
    pf_tcp_server_free(srv);
    return 0;
}

int serve(const struct config *c, const int *fds, size_t n)
{
    int id;

    /* A peer that vanishes must cost an EPIPE, not the process. */
    signal(SIGPIPE, SIG_IGN);
    log_set_role("master");
    log_msg(LOG_INFO, 0, "starting %d workers", config_workers(c));
    id = pf_fork_processes(config_workers(c), (int)c->max_restarts);
    if (id >= 0) {
        log_set_role("worker %d", id);
        return serve_worker(c, fds, n);
    }
    if (id == PF_FORK_ALL_EXITED) {
        log_msg(LOG_INFO, 0, "every worker exited, stopping");
        return 0;
    }
    log_msg(LOG_ERR, id == PF_FORK_GAVE_UP ? 0 : id, "%s",
            id == PF_FORK_GAVE_UP ? "too many worker restarts, giving up" : "fork");
    return 1;
}

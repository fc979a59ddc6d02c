/*
 * tcpserver: listeners plus a handle_stream callback. Tornado's TCPServer:
 * listen() many times, or bind() then start(n) to pre-fork, or add_sockets()
 * with fds bound elsewhere (a supervising master). Each accepted connection
 * becomes a pf_iostream handed to handle_stream.
 */
#ifndef PF_TCPSERVER_H
#define PF_TCPSERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>
#include <ev.h>
#include "iostream.h"
#include "netutil.h"

struct pf_tcp_server;

/* A connection arrived. stream is the handler's: it must close it some day
 * (or let EOF, errors or the idle timeout do so). peer is valid for the call. */
typedef void (*pf_handle_stream_cb)(struct pf_tcp_server *srv,
                                    struct pf_iostream *stream,
                                    const struct sockaddr *peer, socklen_t len);

struct pf_tcp_server_options {
    unsigned accept_batch;                  /* 0: backlog */
    int backlog;                            /* 0: PF_DEFAULT_BACKLOG */
    unsigned max_connections;               /* 0: unlimited; else stop accepting while full */
    struct pf_iostream_options stream;      /* for every accepted stream */
};

struct pf_tcp_server_stats {
    unsigned long long accepted;            /* connections accepted since creation */
    unsigned active;                        /* streams open now */
    int last_accept_error;                  /* 0 or -errno that last paused accepting */
    unsigned long long accept_pauses;       /* times accepting paused on such an error */
};

/* Tornado's ssl_options: every stream this server accepts speaks TLS. */
struct pf_tls_options {
    const char *certificate;        /* PEM chain, when ctx is NULL */
    const char *key;                /* PEM private key, when ctx is NULL */
    struct ssl_ctx_st *ctx;         /* or a context of yours (the server takes a reference) */
    double handshake_timeout_sec;   /* 0: PF_TLS_HANDSHAKE_TIMEOUT_SEC */
};

/* opt may be NULL. Returns NULL when out of memory. */
struct pf_tcp_server *pf_tcp_server_new(struct ev_loop *loop,
                                        pf_handle_stream_cb cb,
                                        const struct pf_tcp_server_options *opt);

/* Makes the server speak TLS; call before it accepts. The files are checked
 * now. Returns 0, or -EINVAL with errmsg (PF_ERRMSG_SIZE) naming the file
 * and OpenSSL's reason. */
int pf_tcp_server_set_tls(struct pf_tcp_server *srv, const struct pf_tls_options *opt,
                          char *errmsg);

/* Bind and start accepting at once (in this process). Callable many times.
 * Returns 0 or -errno; errmsg (PF_ERRMSG_SIZE, may be NULL) names the cause. */
int pf_tcp_server_listen(struct pf_tcp_server *srv, unsigned port,
                         const char *address, char *errmsg);
/* Start accepting on listening fds bound elsewhere; the server owns them
 * from now on (pf_tcp_server_stop closes them). Returns 0 or -errno, and
 * then owns none of them. */
int pf_tcp_server_add_sockets(struct pf_tcp_server *srv, const int *fds, size_t n);
/* Bind now, accept only after pf_tcp_server_start. */
int pf_tcp_server_bind(struct pf_tcp_server *srv, unsigned port,
                       const char *address, const struct pf_bind_options *opt,
                       char *errmsg);
/*
 * Start accepting on the sockets bound by pf_tcp_server_bind. num_processes
 * 1 serves in this process; otherwise (<= 0: CPU count) it pre-forks through
 * pf_fork_processes, and returns in each child only. Call it before running
 * the loop and, when forking, with a loop that has no watcher running yet
 * (the children call ev_loop_fork). Returns 0 or -errno.
 */
int pf_tcp_server_start(struct pf_tcp_server *srv, int num_processes,
                        int max_restarts);
/* Accepts what the listeners have queued now (one batch each, as a wakeup
 * would), e.g. right before pf_tcp_server_stop: closing a listener resets
 * the connections the kernel queued on it. Nothing while paused at
 * max_connections. */
void pf_tcp_server_accept_now(struct pf_tcp_server *srv);
/* Stop accepting and close every listener. Open streams go on. */
void pf_tcp_server_stop(struct pf_tcp_server *srv);
/* Close every stream this server accepted that is still open (a fast
 * shutdown). Their close callbacks run from the loop, as usual. */
void pf_tcp_server_close_streams(struct pf_tcp_server *srv);
/* Stop, and free the server. Open streams go on; they must not outlive the
 * loop. */
void pf_tcp_server_free(struct pf_tcp_server *srv);

void pf_tcp_server_stats(const struct pf_tcp_server *srv,
                         struct pf_tcp_server_stats *out);
/* Listening fds now in use (ro), and their number. */
const int *pf_tcp_server_sockets(const struct pf_tcp_server *srv, size_t *n);
void pf_tcp_server_set_data(struct pf_tcp_server *srv, void *data);
void *pf_tcp_server_data(const struct pf_tcp_server *srv);

#endif

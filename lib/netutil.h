/*
 * netutil: listening sockets, from bind to accept. Tornado's
 * netutil.bind_sockets / bind_unix_socket / add_accept_handler on libev.
 * Nothing here logs: errors come back as -errno plus an optional message
 * that names the address and the cause.
 */
#ifndef PF_NETUTIL_H
#define PF_NETUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <ev.h>

/* Tornado's _DEFAULT_BACKLOG, and the default accept batch (it uses the backlog). */
#define PF_DEFAULT_BACKLOG 128
/* A hostname rarely resolves to more than a handful of addresses; a bounded
 * array keeps pf_bind_sockets free of allocation and ownership questions. */
#define PF_BIND_MAX 16
/* Room for any error message from this library, NUL included. */
#define PF_ERRMSG_SIZE 256
/* Room for "[v6addr%scope]:port" or "unix:/path", NUL included. */
#define PF_ADDRSTR_SIZE 128
/* While accept() fails with EMFILE/ENFILE/ENOBUFS/ENOMEM the listener stays
 * readable; we stop watching it and look again after this long. */
#define PF_ACCEPT_RETRY_MS 100

struct pf_bind_options {
    int family;         /* AF_UNSPEC (default, 0), AF_INET or AF_INET6 */
    int backlog;        /* 0: PF_DEFAULT_BACKLOG */
    int flags;          /* getaddrinfo ai_flags; 0: AI_PASSIVE */
    bool reuse_port;    /* SO_REUSEPORT; -EOPNOTSUPP where the platform lacks it */
};

/*
 * Binds a listening TCP socket on every distinct address that `address`
 * resolves to (NULL or "" = every interface, IPv4 and IPv6). Port 0 binds all
 * of them to the same kernel-chosen port. Each socket is CLOEXEC, O_NONBLOCK,
 * SO_REUSEADDR, and IPV6_V6ONLY when AF_INET6; families the kernel does not
 * support are skipped. opt may be NULL (defaults).
 *
 * Returns the number of fds written to fds[] (1..max_fds), owned by the
 * caller, or -errno with nothing left open (-ENOSPC: more addresses than
 * max_fds). On failure, errmsg (if not NULL, PF_ERRMSG_SIZE bytes) names the
 * address and the cause, e.g. "bind [::1]:8080: Address already in use".
 */
int pf_bind_sockets(const char *address, unsigned port,
                    const struct pf_bind_options *opt,
                    int *fds, size_t max_fds, char *errmsg);

/*
 * Binds a listening unix stream socket at path (CLOEXEC, O_NONBLOCK). A stale
 * socket file there (nobody accepts on it) is removed first; a live one is
 * refused with -EADDRINUSE, and any other kind of file with -EEXIST. mode is applied with chmod (e.g. 0666). backlog 0: default.
 * Returns the fd, owned by the caller, or -errno (errmsg as above).
 */
int pf_bind_unix_socket(const char *path, mode_t mode, int backlog, char *errmsg);

/* Formats sa as "1.2.3.4:80", "[::1]:80" or "unix:/path" into buf
 * (PF_ADDRSTR_SIZE bytes). Returns buf. */
char *pf_format_sockaddr(const struct sockaddr *sa, socklen_t len, char *buf);

struct pf_accept_handler;

/*
 * Fires once per accepted connection: fd >= 0 is the new socket (NONBLOCK,
 * CLOEXEC), now owned by the callback. fd < 0 is -errno of an accept failure
 * that paused the handler (EMFILE, ENFILE, ENOBUFS, ENOMEM): peer is NULL, and
 * the handler resumes by itself after PF_ACCEPT_RETRY_MS. The callback may
 * call pf_remove_accept_handler on h.
 */
typedef void (*pf_accept_cb)(struct pf_accept_handler *h, int fd,
                             const struct sockaddr *peer, socklen_t len);

struct pf_accept_handler {
    void *data;             /* rw: yours, never read by libprefork */
    int listen_fd;          /* ro */
    unsigned batch;         /* ro: accepts per wakeup */
    bool paused;            /* ro: by pf_accept_handler_pause */
    struct ev_loop *loop;   /* private */
    pf_accept_cb cb;        /* private */
    ev_io io;               /* private */
    ev_timer retry;         /* private: resumes after EMFILE and the like */
};

/*
 * Starts accepting on listen_fd: each time it is readable, accept4() up to
 * `batch` connections (0: PF_DEFAULT_BACKLOG, Tornado's rule). h is caller
 * owned and must stay valid until pf_remove_accept_handler. listen_fd stays
 * the caller's. Returns 0 or -errno (then cb is never called).
 */
int pf_add_accept_handler(struct ev_loop *loop, struct pf_accept_handler *h,
                          int listen_fd, unsigned batch, pf_accept_cb cb);
/* Stops every watcher of h; does not close listen_fd. Idempotent. */
void pf_remove_accept_handler(struct pf_accept_handler *h);
/* Accepts what listen_fd has queued now, up to `batch` connections (cb
 * runs for each), as a wakeup would, without waiting for the loop; nothing
 * while h is paused or removed. For a listener about to close: the kernel
 * resets the connections left in its queue. */
void pf_accept_handler_accept_now(struct pf_accept_handler *h);
/* Stop / restart watching the listener (e.g. at max_connections); queued
 * connections wait in the kernel's accept queue meanwhile. */
void pf_accept_handler_pause(struct pf_accept_handler *h);
void pf_accept_handler_resume(struct pf_accept_handler *h);

#endif

/*
 * netutil: listening sockets, from bind to accept (Tornado's netutil).
 * pf_bind_sockets resolves and binds, pf_add_accept_handler drains a
 * listener from a libev loop in batches. Serving the accepted fds is left
 * to tcpserver.c; logging is left to the caller.
 */
#define _GNU_SOURCE     /* accept4 */
#include "netutil.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static void set_errmsg(char *errmsg, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void set_errmsg(char *errmsg, const char *fmt, ...)
{
    va_list ap;

    if (errmsg == NULL)
        return;
    va_start(ap, fmt);
    vsnprintf(errmsg, PF_ERRMSG_SIZE, fmt, ap);
    va_end(ap);
}

char *pf_format_sockaddr(const struct sockaddr *sa, socklen_t len, char *buf)
{
    char host[INET6_ADDRSTRLEN];

    buf[0] = '\0';
    switch (sa->sa_family) {
    case AF_INET: {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &sin->sin_addr, host, sizeof(host));
        snprintf(buf, PF_ADDRSTR_SIZE, "%s:%u", host, ntohs(sin->sin_port));
        break;
    }
    case AF_INET6: {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof(host));
        if (sin6->sin6_scope_id != 0)
            snprintf(buf, PF_ADDRSTR_SIZE, "[%s%%%u]:%u", host,
                     (unsigned)sin6->sin6_scope_id, ntohs(sin6->sin6_port));
        else
            snprintf(buf, PF_ADDRSTR_SIZE, "[%s]:%u", host, ntohs(sin6->sin6_port));
        break;
    }
    case AF_UNIX: {
        const struct sockaddr_un *sun = (const struct sockaddr_un *)sa;
        size_t plen = len > offsetof(struct sockaddr_un, sun_path)
                          ? len - offsetof(struct sockaddr_un, sun_path) : 0;
        plen = strnlen(sun->sun_path, plen < sizeof(sun->sun_path) ? plen : sizeof(sun->sun_path));
        snprintf(buf, PF_ADDRSTR_SIZE, "unix:%.*s", (int)plen, sun->sun_path);
        break;
    }
    default:
        snprintf(buf, PF_ADDRSTR_SIZE, "(family %d)", sa->sa_family);
    }
    return buf;
}

static void set_port(struct sockaddr *sa, unsigned port)
{
    if (sa->sa_family == AF_INET)
        ((struct sockaddr_in *)sa)->sin_port = htons(port);
    else if (sa->sa_family == AF_INET6)
        ((struct sockaddr_in6 *)sa)->sin6_port = htons(port);
}

static unsigned get_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);

    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        return 0;
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
}

/* getaddrinfo can list one address several times (once per protocol or
 * through /etc/hosts aliases); binding it twice would fail with EADDRINUSE. */
static bool seen_before(const struct addrinfo *head, const struct addrinfo *ai)
{
    for (const struct addrinfo *p = head; p != ai; p = p->ai_next)
        if (p->ai_family == ai->ai_family && p->ai_addrlen == ai->ai_addrlen &&
            memcmp(p->ai_addr, ai->ai_addr, ai->ai_addrlen) == 0)
            return true;
    return false;
}

/* A numeric address names one socket the caller wants for sure; a host
 * name or NULL stands for whatever of its addresses can be bound. */
static bool is_literal(const char *address)
{
    struct in6_addr a6;
    struct in_addr a4;

    return address != NULL && (inet_pton(AF_INET, address, &a4) == 1 ||
                                inet_pton(AF_INET6, address, &a6) == 1);
}

static int gai_to_errno(int rc)
{
    switch (rc) {
    case EAI_SYSTEM: return errno ? errno : EIO;
    case EAI_MEMORY: return ENOMEM;
    case EAI_AGAIN:  return EAGAIN;
    case EAI_FAMILY: return EAFNOSUPPORT;
    case EAI_SERVICE: return EINVAL;
    default:         return EADDRNOTAVAIL;
    }
}

/* Opens, configures, binds and listens one socket. Returns the fd or -errno
 * (0-errno values are never valid fds); -EAFNOSUPPORT means "skip it". */
static int bind_one(const struct addrinfo *ai, const struct pf_bind_options *o,
                    char *errmsg)
{
    char where[PF_ADDRSTR_SIZE];
    const char *step;
    int one = 1, fd, err;

    fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        err = -errno;
        if (err != -EAFNOSUPPORT)
            set_errmsg(errmsg, "socket %s: %s",
                       pf_format_sockaddr(ai->ai_addr, ai->ai_addrlen, where), strerror(-err));
        return err;
    }
    step = "SO_REUSEADDR";
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
        goto fail;
    if (o->reuse_port) {
        step = "SO_REUSEPORT";
        if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0)
            goto fail;
    }
    /* Without V6ONLY the [::] socket would also claim IPv4 and the 0.0.0.0
     * bind that follows would fail; Tornado sets it for the same reason. */
    if (ai->ai_family == AF_INET6) {
        step = "IPV6_V6ONLY";
        if (setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0)
            goto fail;
    }
    step = "bind";
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0)
        goto fail;
    step = "listen";
    if (listen(fd, o->backlog) < 0)
        goto fail;
    return fd;
fail:
    err = -errno;
    close(fd);
    set_errmsg(errmsg, "%s %s: %s", step,
               pf_format_sockaddr(ai->ai_addr, ai->ai_addrlen, where), strerror(-err));
    return err;
}

int pf_bind_sockets(const char *address, unsigned port,
                    const struct pf_bind_options *opt,
                    int *fds, size_t max_fds, char *errmsg)
{
    struct pf_bind_options o = opt ? *opt : (struct pf_bind_options){ 0 };
    struct addrinfo hints = { 0 }, *res = NULL;
    char service[16];
    unsigned bound_port = 0;
    size_t n = 0;
    int rc, err = 0;

    if (o.backlog <= 0)
        o.backlog = PF_DEFAULT_BACKLOG;
    if (address != NULL && address[0] == '\0')
        address = NULL;
    if (port > 65535) {
        set_errmsg(errmsg, "bind %s:%u: port out of range", address ? address : "*", port);
        return -EINVAL;
    }
#ifndef SO_REUSEPORT
    if (o.reuse_port) {
        set_errmsg(errmsg, "bind %s:%u: SO_REUSEPORT is not supported here",
                   address ? address : "*", port);
        return -EOPNOTSUPP;
    }
#endif
    hints.ai_family = o.family;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = o.flags ? o.flags : AI_PASSIVE;
    snprintf(service, sizeof(service), "%u", port);
    errno = 0;
    rc = getaddrinfo(address, service, &hints, &res);
    if (rc != 0) {
        err = -gai_to_errno(rc);
        set_errmsg(errmsg, "resolve %s:%u: %s", address ? address : "*", port,
                   rc == EAI_SYSTEM ? strerror(-err) : gai_strerror(rc));
        return err;
    }
    for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
        int fd;

        if (seen_before(res, ai))
            continue;
        if (n == max_fds) {
            set_errmsg(errmsg, "bind %s:%u: more than %zu addresses",
                       address ? address : "*", port, max_fds);
            err = -ENOSPC;
            goto fail;
        }
        /* Port 0: the first socket's kernel-chosen port serves every address,
         * so that one "listen 0" gives one port a client can use. */
        if (port == 0 && bound_port != 0)
            set_port(ai->ai_addr, bound_port);
        fd = bind_one(ai, &o, errmsg);
        /* No IPv6 in this kernel, or (Tornado's case) "localhost" listing
         * ::1 on a host whose loopback has no IPv6 address. */
        if (fd == -EAFNOSUPPORT ||
            (fd == -EADDRNOTAVAIL && ai->ai_family == AF_INET6 && !is_literal(address)))
            continue;
        if (fd < 0) {
            err = fd;
            goto fail;
        }
        fds[n++] = fd;
        if (port == 0 && bound_port == 0)
            bound_port = get_port(fd);
    }
    freeaddrinfo(res);
    if (n == 0) {
        set_errmsg(errmsg, "bind %s:%u: no address family is supported",
                   address ? address : "*", port);
        return -EAFNOSUPPORT;
    }
    return (int)n;
fail:
    while (n > 0)
        close(fds[--n]);
    freeaddrinfo(res);
    return err;
}

/* A socket file is stale when nobody accepts on it: connect() is then
 * refused at once. Removing a live one would cut its server off silently. */
static bool unix_socket_is_live(const struct sockaddr_un *sun)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    bool live;

    if (fd < 0)
        return false;
    live = connect(fd, (const struct sockaddr *)sun, sizeof(*sun)) == 0 ||
           errno == EAGAIN;     /* listening, with a full queue */
    close(fd);
    return live;
}

int pf_bind_unix_socket(const char *path, mode_t mode, int backlog, char *errmsg)
{
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    struct stat st;
    const char *step;
    int fd, err;

    if (backlog <= 0)
        backlog = PF_DEFAULT_BACKLOG;
    if (strlen(path) >= sizeof(sun.sun_path)) {
        set_errmsg(errmsg, "bind unix:%s: path longer than %zu bytes", path,
                   sizeof(sun.sun_path) - 1);
        return -ENAMETOOLONG;
    }
    memcpy(sun.sun_path, path, strlen(path) + 1);
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            set_errmsg(errmsg, "bind unix:%s: file exists and is not a socket", path);
            return -EEXIST;
        }
        if (unix_socket_is_live(&sun)) {
            set_errmsg(errmsg, "bind unix:%s: another process is listening on it", path);
            return -EADDRINUSE;
        }
        /* A socket file outlives its process; a fresh bind needs it gone. */
        if (unlink(path) < 0 && errno != ENOENT) {
            err = -errno;
            set_errmsg(errmsg, "unlink stale unix:%s: %s", path, strerror(-err));
            return err;
        }
    } else if (errno != ENOENT) {
        err = -errno;
        set_errmsg(errmsg, "stat unix:%s: %s", path, strerror(-err));
        return err;
    }
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        err = -errno;
        set_errmsg(errmsg, "socket unix:%s: %s", path, strerror(-err));
        return err;
    }
    step = "bind";
    if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0)
        goto fail;
    step = "chmod";
    if (chmod(path, mode) < 0)
        goto fail_unlink;
    step = "listen";
    if (listen(fd, backlog) < 0)
        goto fail_unlink;
    return fd;
fail_unlink:
    err = -errno;
    unlink(path);
    errno = -err;
fail:
    err = -errno;
    close(fd);
    set_errmsg(errmsg, "%s unix:%s: %s", step, path, strerror(-err));
    return err;
}

/* Errors that last while the process or system is out of a resource: the
 * listener stays readable, so retrying at once would spin. */
static bool accept_must_pause(int err)
{
    return err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM;
}

/* One wakeup's work: up to h->batch connections. */
static void accept_batch(struct pf_accept_handler *h)
{
    for (unsigned i = 0; i < h->batch; i++) {
        struct sockaddr_storage peer;
        socklen_t len = sizeof(peer);
        int fd = accept4(h->listen_fd, (struct sockaddr *)&peer, &len,
                         SOCK_NONBLOCK | SOCK_CLOEXEC);

        if (fd < 0) {
            int err = errno;
            if (err == EINTR || err == ECONNABORTED || err == EPROTO || err == EPERM)
                continue;       /* that one connection is gone; others may wait */
            if (accept_must_pause(err)) {
                /* Pause instead of retrying: while EMFILE lasts the fd stays
                 * readable and we would spin. */
                ev_io_stop(h->loop, &h->io);
                ev_timer_set(&h->retry, PF_ACCEPT_RETRY_MS / 1000.0, 0.);
                ev_timer_start(h->loop, &h->retry);
                h->cb(h, -err, NULL, 0);
            }
            return;             /* EAGAIN ends the batch; so does anything unknown */
        }
        h->cb(h, fd, (struct sockaddr *)&peer, len);
        /* The callback may have removed or paused us. */
        if (!ev_is_active(&h->io))
            return;
    }
}

static void accept_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    accept_batch((struct pf_accept_handler *)((char *)w - offsetof(struct pf_accept_handler, io)));
}

void pf_accept_handler_accept_now(struct pf_accept_handler *h)
{
    if (h->loop != NULL && ev_is_active(&h->io))
        accept_batch(h);
}

static void accept_retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct pf_accept_handler *h = (struct pf_accept_handler *)
        ((char *)w - offsetof(struct pf_accept_handler, retry));

    (void)revents;
    if (!h->paused)
        ev_io_start(loop, &h->io);
}

int pf_add_accept_handler(struct ev_loop *loop, struct pf_accept_handler *h,
                          int listen_fd, unsigned batch, pf_accept_cb cb)
{
    assert(loop != NULL && h != NULL && cb != NULL);
    h->loop = NULL;             /* a later remove is then harmless */
    if (listen_fd < 0 || fcntl(listen_fd, F_GETFD) < 0)
        return -EBADF;
    h->listen_fd = listen_fd;
    h->batch = batch ? batch : PF_DEFAULT_BACKLOG;
    h->paused = false;
    h->loop = loop;
    h->cb = cb;
    ev_io_init(&h->io, accept_io_cb, listen_fd, EV_READ);
    ev_timer_init(&h->retry, accept_retry_cb, PF_ACCEPT_RETRY_MS / 1000.0, 0.);
    ev_io_start(loop, &h->io);
    return 0;
}

void pf_remove_accept_handler(struct pf_accept_handler *h)
{
    if (h->loop == NULL)
        return;
    ev_io_stop(h->loop, &h->io);
    ev_timer_stop(h->loop, &h->retry);
    h->loop = NULL;
}

void pf_accept_handler_pause(struct pf_accept_handler *h)
{
    h->paused = true;
    if (h->loop != NULL)
        ev_io_stop(h->loop, &h->io);
}

void pf_accept_handler_resume(struct pf_accept_handler *h)
{
    h->paused = false;
    /* While an EMFILE retry is pending, the timer restarts the watcher. */
    if (h->loop != NULL && !ev_is_active(&h->retry))
        ev_io_start(h->loop, &h->io);
}

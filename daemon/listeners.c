/*
 * listeners: turns `listen` values into bound sockets through libprefork's
 * netutil, and carries them across reloads. The kernel's accept queue lives
 * as long as one fd of a socket does: keeping the fds of unchanged listeners
 * is what lets a reload refuse no connection. Under reuse_port a TCP listen
 * is one SO_REUSEPORT socket per worker task id, so that the kernel, not
 * the race of wakeups, spreads connections over the workers. Who accepts is
 * the workers'.
 */
#define _GNU_SOURCE     /* asprintf */
#include "listeners.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <linux/filter.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"

/* Mode of unix listeners: any local user may connect, as with nginx. */
#define LISTENER_UNIX_MODE 0666

/* Socket 0 of a reuse_port listen has the key of the one shared socket:
 * turning reuse_port on or off by a reload keeps it, and its queue. */
static char *listener_key(const struct listen_spec *s, int task)
{
    const char *host = s->host ? s->host : "*";
    char *key = NULL;
    int rc;

    if (s->kind == LISTEN_UNIX)
        rc = asprintf(&key, "unix:%s", s->path);
    else if (task > 0)
        rc = asprintf(&key, "tcp:%s:%u#%d", host, s->port, task);
    else
        rc = asprintf(&key, "tcp:%s:%u", host, s->port);
    return rc < 0 ? NULL : key;
}

/* As nginx on keep-alive connections, no Nagle: a response's last segment
 * must not wait for the ACK of the one before (a client may delay it 40 ms;
 * the 64 KiB p99 here went from 35 to 2.5 ms). Linux hands the option from
 * a listener to every socket it accepts: one call here, none per client. */
static void listener_set_nodelay(const struct listener *l)
{
    int one = 1;

    for (int i = 0; i < l->nfds; i++)
        setsockopt(l->fds[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* Binds l, for s on port (s's own, or for socket i >= 1 of a reuse_port
 * listen the port socket 0 got); nsockets is the listen's socket count. */
static int listener_bind(struct listener *l, const struct config *c, const struct listen_spec *s,
                         unsigned port, int nsockets)
{
    char err[PF_ERRMSG_SIZE];
    int rc;

    if (s->kind == LISTEN_UNIX) {
        rc = pf_bind_unix_socket(s->path, LISTENER_UNIX_MODE, (int)c->backlog, err);
        if (rc >= 0) {
            l->fds[0] = rc;
            l->nfds = 1;
            l->unix_path = strdup(s->path);
        }
    } else {
        struct pf_bind_options o = { .backlog = (int)c->backlog, .reuse_port = c->reuse_port };
        rc = pf_bind_sockets(s->host, port, &o, l->fds, PF_BIND_MAX, err);
        if (rc > 0) {
            l->nfds = rc;
            l->reuse_port = c->reuse_port;
            listener_set_nodelay(l);
        }
    }
    if (rc < 0 && l->task >= 0)
        log_msg(LOG_ERR, 0, "%s:%d: [server] listen = %s: reuse_port socket #%d of %d: %s",
                c->path, s->line, s->text, l->task, nsockets, err);
    else if (rc < 0)
        log_msg(LOG_ERR, 0, "%s:%d: [server] listen = %s: %s", c->path, s->line, s->text, err);
    return rc < 0 ? rc : 0;
}

/* SO_REUSEPORT on or off on sockets already bound. Linux lets the next
 * SO_REUSEPORT bind on the port share it (and join its group) once it is
 * on: a kept socket becomes socket 0 of a reuse_port listen so. */
static int listener_set_reuse_port(struct listener *l, bool on)
{
    int v = on;

    for (int i = 0; i < l->nfds; i++)
        if (setsockopt(l->fds[i], SOL_SOCKET, SO_REUSEPORT, &v, sizeof(v)) < 0)
            return -errno;
    l->reuse_port = on;
    return 0;
}

static unsigned listener_port(const struct listener *l)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);

    if (getsockname(l->fds[0], (struct sockaddr *)&ss, &len) < 0)
        return 0;
    return ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                          : ((struct sockaddr_in *)&ss)->sin_port);
}

static bool same_addr(const struct sockaddr *a, const struct sockaddr *b)
{
    if (a->sa_family != b->sa_family)
        return false;
    if (a->sa_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    if (a->sa_family == AF_INET6) {
        const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
        return x->sin6_port == y->sin6_port &&
               memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
    }
    return false;
}

/* systemd's default socket for `ListenStream=PORT` is one dual-stack [::]
 * socket: it serves the 0.0.0.0:PORT that our own bind would add. */
static bool dual_stack_covers(int fd, const struct sockaddr_storage *have,
                              const struct sockaddr *want)
{
    const struct sockaddr_in6 *h = (const void *)have;
    const struct sockaddr_in *w = (const void *)want;
    int v6only = 1;
    socklen_t len = sizeof(v6only);

    return have->ss_family == AF_INET6 && want->sa_family == AF_INET &&
           w->sin_addr.s_addr == htonl(INADDR_ANY) && h->sin6_port == w->sin_port &&
           IN6_IS_ADDR_UNSPECIFIED(&h->sin6_addr) &&
           getsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, &len) == 0 && !v6only;
}

/* The inherited fd bound to want, or -1. */
static int find_inherited(const struct sd_listen_fds *in, const struct sockaddr *want, size_t *idx)
{
    for (size_t i = 0; i < in->n; i++) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);

        if (in->fds[i] < 0 || getsockname(in->fds[i], (struct sockaddr *)&ss, &len) < 0)
            continue;
        if (want->sa_family == AF_UNIX) {
            const struct sockaddr_un *a = (const void *)&ss, *b = (const void *)want;
            if (ss.ss_family == AF_UNIX && strcmp(a->sun_path, b->sun_path) == 0) {
                *idx = i;
                return in->fds[i];
            }
            continue;
        }
        if (same_addr((struct sockaddr *)&ss, want) || dual_stack_covers(in->fds[i], &ss, want)) {
            *idx = i;
            return in->fds[i];
        }
    }
    return -1;
}

/*
 * Socket activation: takes the inherited fds that serve every address s
 * would bind. Returns true if s is fully served so (l holds the fds), false
 * if it must be bound as usual (nothing taken).
 */
static bool listener_claim(struct listener *l, const struct listen_spec *s,
                           struct sd_listen_fds *in)
{
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE }, *res, *ai;
    size_t idx[PF_BIND_MAX];
    char port[16];
    int n = 0;

    if (in == NULL || in->n == 0)
        return false;
    if (s->kind == LISTEN_UNIX) {
        struct sockaddr_un sun = { .sun_family = AF_UNIX };
        int fd;

        snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", s->path);
        if ((fd = find_inherited(in, (struct sockaddr *)&sun, &idx[0])) < 0)
            return false;
        l->fds[0] = fd;
        l->nfds = 1;
        in->fds[idx[0]] = -1;
        return true;
    }
    if (s->port == 0)
        return false;           /* a kernel-chosen port cannot be passed in */
    snprintf(port, sizeof(port), "%u", s->port);
    if (getaddrinfo(s->host, port, &hints, &res) != 0)
        return false;
    for (ai = res; ai != NULL && n < PF_BIND_MAX; ai = ai->ai_next) {
        int fd = find_inherited(in, ai->ai_addr, &idx[n]);
        bool dup = false;

        if (fd < 0) {
            n = -1;             /* one address is not served: bind them all */
            break;
        }
        for (int j = 0; j < n; j++)
            dup |= l->fds[j] == fd;
        if (!dup)
            l->fds[n++] = fd;
    }
    freeaddrinfo(res);
    if (n <= 0)
        return false;
    l->nfds = n;
    for (int j = 0; j < n; j++)
        for (size_t i = 0; i < in->n; i++)
            if (in->fds[i] == l->fds[j])
                in->fds[i] = -1;
    return true;
}

static void listener_close(struct listener *l)
{
    for (int i = 0; i < l->nfds; i++)
        close(l->fds[i]);
    if (l->unix_path != NULL)
        unlink(l->unix_path);
    free(l->key);
    free(l->unix_path);
    memset(l, 0, sizeof(*l));
}

static const struct listener *listeners_find(const struct listeners *ls, const char *key)
{
    for (size_t i = 0; ls != NULL && i < ls->n; i++)
        if (strcmp(ls->v[i].key, key) == 0)
            return &ls->v[i];
    return NULL;
}

static bool listeners_have(const struct listeners *ls, const struct listener *l)
{
    const struct listener *o = listeners_find(ls, l->key);

    return o != NULL && o->nfds > 0 && o->fds[0] == l->fds[0];
}

static int listeners_flatten(struct listeners *ls)
{
    size_t n = 0;

    for (size_t i = 0; i < ls->n; i++)
        n += (size_t)ls->v[i].nfds;
    ls->flat = malloc((n ? n : 1) * sizeof(int));
    ls->flat_ssl = malloc((n ? n : 1) * sizeof(bool));
    ls->flat_task = malloc((n ? n : 1) * sizeof(int));
    if (ls->flat == NULL || ls->flat_ssl == NULL || ls->flat_task == NULL)
        return -ENOMEM;
    ls->nflat = 0;
    for (size_t i = 0; i < ls->n; i++) {
        for (int j = 0; j < ls->v[i].nfds; j++) {
            ls->flat_ssl[ls->nflat] = ls->v[i].ssl;
            ls->flat_task[ls->nflat] = ls->v[i].task;
            ls->flat[ls->nflat++] = ls->v[i].fds[j];
        }
    }
    return 0;
}

/* Frees ls, closing only the listeners `keep` does not have. */
static void listeners_free_except(struct listeners *ls, const struct listeners *keep)
{
    for (size_t i = 0; i < ls->n; i++) {
        if (keep != NULL && listeners_have(keep, &ls->v[i])) {
            free(ls->v[i].key);
            free(ls->v[i].unix_path);
        } else {
            listener_close(&ls->v[i]);
        }
    }
    free(ls->v);
    free(ls->flat);
    free(ls->flat_ssl);
    free(ls->flat_task);
    memset(ls, 0, sizeof(*ls));
}

/* Drops a rebind that did not commit: the sockets it kept get back the
 * SO_REUSEPORT setting they had, and those it bound close. */
static void listeners_undo(struct listeners *nls, const struct listeners *old)
{
    for (size_t i = 0; i < nls->n; i++)
        if (nls->v[i].flipped)
            listener_set_reuse_port(&nls->v[i], false);
    listeners_free_except(nls, old);
}

/* Which listeners reuse_port cannot split, and why, once per socket. */
static void listener_note_shared(struct listener *l, const struct config *c,
                                 const struct listen_spec *s)
{
    if (!c->reuse_port || l->task >= 0 || l->noted)
        return;
    l->noted = true;
    if (s->kind == LISTEN_UNIX)
        log_msg(LOG_NOTICE, 0, "listen = %s: reuse_port does not apply to unix sockets (Linux "
                "spreads connections over SO_REUSEPORT sockets for TCP only): every worker "
                "accepts on this one", s->text);
    else
        log_msg(LOG_NOTICE, 0, "listen = %s: reuse_port does not apply to the socket systemd "
                "passed (sockets of our own beside it would not outlive a restart as it does, "
                "and what they queued would be lost): every worker accepts on it", s->text);
}

/*
 * Appends socket `task` of s to out: 0 for the first socket of a listen
 * (which becomes -1, shared by every worker, unless s gets one socket per
 * worker), i >= 1 for the others. The socket is the old one with the same
 * key, else (the first only) the one systemd passed, else bound on port.
 * Returns 0 or -errno (logged but for -ENOMEM).
 */
static int listeners_add(struct listeners *out, const struct listeners *old,
                         const struct config *c, const struct listen_spec *s, int task,
                         unsigned port, int workers, struct sd_listen_fds *inherited)
{
    struct listener *l = &out->v[out->n];
    const struct listener *same;
    int rc;

    l->key = listener_key(s, task);
    if (l->key == NULL)
        return -ENOMEM;
    out->n++;
    l->ssl = s->ssl;
    l->task = task;
    same = listeners_find(old, l->key);
    if (same != NULL) {
        memcpy(l->fds, same->fds, sizeof(l->fds));
        l->nfds = same->nfds;
        l->passed = same->passed;
        l->reuse_port = same->reuse_port;
        l->noted = same->noted;
        if (same->unix_path != NULL && (l->unix_path = strdup(same->unix_path)) == NULL)
            return -ENOMEM;
    } else if (task == 0 && listener_claim(l, s, inherited)) {
        l->passed = true;
        if (s->kind == LISTEN_TCP)
            listener_set_nodelay(l);
        log_msg(LOG_INFO, 0, "listen = %s: using the socket systemd passed", s->text);
    }
    if (task == 0 && !(c->reuse_port && s->kind == LISTEN_TCP && !l->passed))
        l->task = -1;
    listener_note_shared(l, c, s);
    if (l->nfds == 0)
        return listener_bind(l, c, s, port, workers);
    /* Turning reuse_port off keeps the flag: the sockets of the old
     * generation's workers are still in the port's group, and Linux would
     * not forget the port's SO_REUSEPORT state before a restart anyway. */
    if (l->task >= 0 && !l->reuse_port) {
        rc = listener_set_reuse_port(l, true);
        if (rc < 0) {
            log_msg(LOG_ERR, rc, "%s:%d: [server] listen = %s: reuse_port on the running socket",
                    c->path, s->line, s->text);
            return rc;
        }
        l->flipped = true;
    }
    return 0;
}

int listeners_rebind(const struct listeners *old, const struct config *c, int workers,
                     struct sd_listen_fds *inherited, struct listeners *out)
{
    size_t cap = 0;
    int rc = -ENOMEM;

    assert(workers >= 1);
    memset(out, 0, sizeof(*out));
    for (size_t i = 0; i < c->n_listens; i++)
        cap += c->reuse_port && c->listens[i].kind == LISTEN_TCP ? (size_t)workers : 1;
    out->v = calloc(cap, sizeof(*out->v));
    if (out->v == NULL)
        goto fail;
    for (size_t i = 0; i < c->n_listens; i++) {
        const struct listen_spec *s = &c->listens[i];
        const struct listener *first = &out->v[out->n];
        unsigned port;

        rc = listeners_add(out, old, c, s, 0, s->port, workers, inherited);
        if (rc < 0)
            goto fail;
        /* Port 0: the kernel chose socket 0's, the others share it. */
        port = s->port != 0 || first->task < 0 ? s->port : listener_port(first);
        for (int task = 1; first->task == 0 && task < workers; task++) {
            rc = listeners_add(out, old, c, s, task, port, workers, NULL);
            if (rc < 0)
                goto fail;
        }
    }
    rc = listeners_flatten(out);
    if (rc < 0)
        goto fail;
    return 0;
fail:
    if (rc == -ENOMEM)
        log_msg(LOG_ERR, rc, "binding listeners");
    listeners_undo(out, old);
    return rc;
}

int listeners_bind(struct listeners *ls, const struct config *c, int workers,
                   struct sd_listen_fds *inherited)
{
    return listeners_rebind(NULL, c, workers, inherited, ls);
}

void listeners_discard_new(struct listeners *nls, const struct listeners *old)
{
    listeners_undo(nls, old);
}

void listeners_replace(struct listeners *old, struct listeners *nls)
{
    listeners_free_except(old, nls);
    *old = *nls;
    memset(nls, 0, sizeof(*nls));
}

void listeners_close(struct listeners *ls)
{
    listeners_free_except(ls, NULL);
}

/* The sockets of the listen whose first socket is ls->v[i]; 0 if it has
 * no SO_REUSEPORT group of ours. */
static unsigned listeners_group_size(const struct listeners *ls, size_t i)
{
    unsigned n = 1;

    if (!ls->v[i].reuse_port || ls->v[i].task > 0)
        return 0;
    while (i + n < ls->n && ls->v[i + n].task == (int)n)
        n++;
    return n;
}

int listeners_steer(const struct listeners *ls)
{
    int steered = 0;

    for (size_t i = 0; i < ls->n; i++) {
        unsigned n = listeners_group_size(ls, i);
        struct sock_filter pick[] = {
            BPF_STMT(BPF_LD | BPF_W | BPF_ABS, (uint32_t)(SKF_AD_OFF + SKF_AD_RANDOM)),
            BPF_STMT(BPF_ALU | BPF_MOD | BPF_K, n),
            BPF_STMT(BPF_RET | BPF_A, 0),
        };
        struct sock_fprog prog = { .len = sizeof(pick) / sizeof(pick[0]), .filter = pick };
        bool ok = n > 0;

        /* One group per address of the listen, each with socket 0 first. */
        for (int j = 0; ok && j < ls->v[i].nfds; j++)
            ok = setsockopt(ls->v[i].fds[j], SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &prog,
                            sizeof(prog)) == 0;
        if (n > 0 && !ok)
            log_msg(LOG_WARNING, -errno, "%s: steering connections away from the sockets "
                    "that close", ls->v[i].key);
        steered += ok;
    }
    return steered;
}

void listeners_unsteer(const struct listeners *ls)
{
    int none = 0;

    for (size_t i = 0; i < ls->n; i++) {
        if (listeners_group_size(ls, i) == 0)
            continue;
        for (int j = 0; j < ls->v[i].nfds; j++)
            setsockopt(ls->v[i].fds[j], SOL_SOCKET, SO_DETACH_REUSEPORT_BPF, &none, sizeof(none));
    }
}

size_t listeners_take_for_task(struct listeners *ls, int task, const int **fds,
                               const bool **ssl)
{
    size_t n = 0;

    for (size_t i = 0; i < ls->nflat; i++) {
        if (ls->flat_task[i] >= 0 && ls->flat_task[i] != task) {
            close(ls->flat[i]);
            continue;
        }
        ls->flat[n] = ls->flat[i];
        ls->flat_ssl[n] = ls->flat_ssl[i];
        ls->flat_task[n++] = ls->flat_task[i];
    }
    ls->nflat = n;
    *fds = ls->flat;
    *ssl = ls->flat_ssl;
    return n;
}

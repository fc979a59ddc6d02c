/*
 * listeners: turns `listen` values into bound sockets through libprefork's
 * netutil, and carries them across reloads. The kernel's accept queue lives
 * as long as one fd of a socket does: keeping the fds of unchanged listeners
 * is what lets a reload refuse no connection. Who accepts is the workers'.
 */
#define _GNU_SOURCE     /* asprintf */
#include "listeners.h"

#include <arpa/inet.h>
#include <errno.h>
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

static char *listener_key(const struct listen_spec *s)
{
    char *key = NULL;

    if (s->kind == LISTEN_UNIX)
        return asprintf(&key, "unix:%s", s->path) < 0 ? NULL : key;
    return asprintf(&key, "tcp:%s:%u", s->host ? s->host : "*", s->port) < 0 ? NULL : key;
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

static int listener_bind(struct listener *l, const struct config *c, const struct listen_spec *s)
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
        rc = pf_bind_sockets(s->host, s->port, &o, l->fds, PF_BIND_MAX, err);
        if (rc > 0) {
            l->nfds = rc;
            listener_set_nodelay(l);
        }
    }
    if (rc < 0)
        log_msg(LOG_ERR, 0, "%s:%d: [server] listen = %s: %s", c->path, s->line, s->text, err);
    return rc < 0 ? rc : 0;
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
    if (ls->flat == NULL || ls->flat_ssl == NULL)
        return -ENOMEM;
    ls->nflat = 0;
    for (size_t i = 0; i < ls->n; i++) {
        for (int j = 0; j < ls->v[i].nfds; j++) {
            ls->flat_ssl[ls->nflat] = ls->v[i].ssl;
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
    memset(ls, 0, sizeof(*ls));
}

int listeners_rebind(const struct listeners *old, const struct config *c,
                     struct sd_listen_fds *inherited, struct listeners *out)
{
    int rc = -ENOMEM;

    memset(out, 0, sizeof(*out));
    out->v = calloc(c->n_listens, sizeof(*out->v));
    if (out->v == NULL)
        goto fail;
    for (size_t i = 0; i < c->n_listens; i++) {
        const struct listen_spec *s = &c->listens[i];
        struct listener *l = &out->v[out->n];
        const struct listener *same;

        l->key = listener_key(s);
        if (l->key == NULL)
            goto fail;
        out->n++;
        l->ssl = s->ssl;
        same = listeners_find(old, l->key);
        if (same != NULL) {
            memcpy(l->fds, same->fds, sizeof(l->fds));
            l->nfds = same->nfds;
            if (same->unix_path != NULL && (l->unix_path = strdup(same->unix_path)) == NULL)
                goto fail;
            continue;
        }
        if (listener_claim(l, s, inherited)) {
            if (s->kind == LISTEN_TCP)
                listener_set_nodelay(l);
            log_msg(LOG_INFO, 0, "listen = %s: using the socket systemd passed", s->text);
            continue;
        }
        rc = listener_bind(l, c, s);
        if (rc < 0)
            goto fail;
        rc = -ENOMEM;
    }
    rc = listeners_flatten(out);
    if (rc < 0)
        goto fail;
    return 0;
fail:
    if (rc == -ENOMEM)
        log_msg(LOG_ERR, rc, "binding listeners");
    listeners_free_except(out, old);
    return rc;
}

int listeners_bind(struct listeners *ls, const struct config *c, struct sd_listen_fds *inherited)
{
    return listeners_rebind(NULL, c, inherited, ls);
}

void listeners_discard_new(struct listeners *nls, const struct listeners *old)
{
    listeners_free_except(nls, old);
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

const int *listeners_fds(const struct listeners *ls, const bool **ssl, size_t *n)
{
    *n = ls->nflat;
    if (ssl != NULL)
        *ssl = ls->flat_ssl;
    return ls->flat;
}

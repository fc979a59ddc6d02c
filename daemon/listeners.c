/*
 * listeners: turns `listen` values into bound sockets through libprefork's
 * netutil, and carries them across reloads. The kernel's accept queue lives
 * as long as one fd of a socket does: keeping the fds of unchanged listeners
 * is what lets a reload refuse no connection. Who accepts is the workers'.
 */
#define _GNU_SOURCE     /* asprintf */
#include "listeners.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
        if (rc > 0)
            l->nfds = rc;
    }
    if (rc < 0)
        log_msg(LOG_ERR, 0, "%s:%d: [server] listen = %s: %s", c->path, s->line, s->text, err);
    return rc < 0 ? rc : 0;
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
    if (ls->flat == NULL)
        return -ENOMEM;
    ls->nflat = 0;
    for (size_t i = 0; i < ls->n; i++)
        for (int j = 0; j < ls->v[i].nfds; j++)
            ls->flat[ls->nflat++] = ls->v[i].fds[j];
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
    memset(ls, 0, sizeof(*ls));
}

int listeners_rebind(const struct listeners *old, const struct config *c, struct listeners *out)
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

int listeners_bind(struct listeners *ls, const struct config *c)
{
    return listeners_rebind(NULL, c, ls);
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

const int *listeners_fds(const struct listeners *ls, size_t *n)
{
    *n = ls->nflat;
    return ls->flat;
}

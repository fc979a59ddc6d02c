/* listeners: the master's listening sockets, one entry per `listen` value,
 * kept across reloads when the value still names the same socket. */
#ifndef PREFORKD_LISTENERS_H
#define PREFORKD_LISTENERS_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"
#include "netutil.h"
#include "systemd.h"

struct listener {
    char *key;                  /* what makes two listen values the same socket */
    char *unix_path;            /* unix listeners: removed when the listener closes */
    bool ssl;
    int fds[PF_BIND_MAX];       /* a host name may give several */
    int nfds;
};

struct listeners {
    struct listener *v;
    size_t n;
    int *flat;                  /* every fd of every listener, for the workers */
    bool *flat_ssl;             /* flat_ssl[i]: flat[i] is an `ssl` listener */
    size_t nflat;
};

/* Binds every listen of c into ls (zeroed), or takes the socket systemd
 * passed for it (inherited, may be NULL; taken fds are set to -1 there).
 * Logs which one failed, closes what it opened, and returns -errno; else 0. */
int listeners_bind(struct listeners *ls, const struct config *c, struct sd_listen_fds *inherited);
/* For a reload: out gets c's listeners, taking the fds of old ones with the
 * same key, then inherited ones, and binding the others. On failure
 * (logged) old is untouched and out holds nothing. */
int listeners_rebind(const struct listeners *old, const struct config *c,
                     struct sd_listen_fds *inherited, struct listeners *out);
/* Undo a rebind: closes what it bound anew, frees nls. */
void listeners_discard_new(struct listeners *nls, const struct listeners *old);
/* Commit a rebind: closes the old listeners nls did not keep; *old = *nls. */
void listeners_replace(struct listeners *old, struct listeners *nls);
/* Closes every listener (removing unix socket files) and frees ls. */
void listeners_close(struct listeners *ls);
/* Every listening fd, and whether each speaks TLS (ssl may be NULL). */
const int *listeners_fds(const struct listeners *ls, const bool **ssl, size_t *n);

#endif

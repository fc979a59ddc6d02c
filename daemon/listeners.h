/* listeners: the master's listening sockets, one entry per `listen` value
 * (or, under reuse_port, one per `listen` value and worker), kept across
 * reloads when the value still names the same socket. */
#ifndef PREFORKD_LISTENERS_H
#define PREFORKD_LISTENERS_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"
#include "netutil.h"
#include "systemd.h"

struct listener {
    char *key;                  /* what makes two listen values the same socket;
                                 * socket i >= 1 of a reuse_port listen adds "#i" */
    char *unix_path;            /* unix listeners: removed when the listener closes */
    bool ssl;
    bool passed;                /* systemd's socket: always shared */
    bool reuse_port;            /* SO_REUSEPORT is set on fds */
    bool flipped;               /* this rebind set SO_REUSEPORT on fds kept from before */
    bool noted;                 /* "reuse_port does not apply" was logged for it */
    int task;                   /* -1: every worker accepts on it; else only this task id */
    int fds[PF_BIND_MAX];       /* a host name may give several */
    int nfds;
};

struct listeners {
    struct listener *v;
    size_t n;
    int *flat;                  /* every fd of every listener, for the workers */
    bool *flat_ssl;             /* flat_ssl[i]: flat[i] is an `ssl` listener */
    int *flat_task;             /* flat_task[i]: the listener's task */
    size_t nflat;
};

/*
 * Binds every listen of c into ls (zeroed), or takes the socket systemd
 * passed for it (inherited, may be NULL; taken fds are set to -1 there).
 * With c->reuse_port, a TCP listen the master binds itself gets `workers`
 * SO_REUSEPORT sockets on one port, socket i for the worker with task id i;
 * unix listeners and passed sockets stay shared (a notice says so, once).
 * Logs which one failed, closes what it opened, and returns -errno; else 0.
 */
int listeners_bind(struct listeners *ls, const struct config *c, int workers,
                   struct sd_listen_fds *inherited);
/* For a reload, or a change of the worker count (TTIN, TTOU): out gets c's
 * listeners for `workers` workers, taking the fds of old ones with the same
 * key, then inherited ones, and binding the others. On failure (logged) old
 * is as it was and out holds nothing. */
int listeners_rebind(const struct listeners *old, const struct config *c, int workers,
                     struct sd_listen_fds *inherited, struct listeners *out);
/* Undo a rebind: closes what it bound anew, frees nls. */
void listeners_discard_new(struct listeners *nls, const struct listeners *old);
/* Commit a rebind: closes the old listeners nls did not keep; *old = *nls. */
void listeners_replace(struct listeners *old, struct listeners *nls);
/* Closes every listener (removing unix socket files) and frees ls. */
void listeners_close(struct listeners *ls);
/*
 * Sockets of a reuse_port listen on their way out (a reload to fewer
 * workers or to reuse_port = no, TTOU) close when the worker that accepts
 * on them stops, and the kernel resets what they queued by then (unless
 * net.ipv4.tcp_migrate_req = 1). listeners_steer attaches to the
 * SO_REUSEPORT group of each such port a classic BPF program that sends new
 * connections, at random, to the sockets ls keeps only (the group's first,
 * as ls binds them in order and Linux fills a group's holes from its end);
 * listeners_unsteer gives the choice back to the kernel's hash once the
 * others are closed. Returns how many ports are steered.
 */
int listeners_steer(const struct listeners *ls);
void listeners_unsteer(const struct listeners *ls);
/*
 * In a worker just forked with task id `task`: closes the inherited
 * listening fds that other task ids accept on, and returns the number of
 * those task accepts on, with the fds and whether each speaks TLS in *fds
 * and *ssl (ls's arrays: valid while ls is).
 */
size_t listeners_take_for_task(struct listeners *ls, int task, const int **fds,
                               const bool **ssl);

#endif

/* serve: binds the configured listeners, pre-forks the workers and serves
 * the configured handler in each (Tornado's bind_sockets + fork_processes +
 * add_sockets). The supervising master of issue #4 replaces the blocking
 * supervisor used here. */
#ifndef PREFORKD_SERVE_H
#define PREFORKD_SERVE_H

#include "config.h"

/* Binds every listener in c; returns the number of fds written to fds (at
 * most max) or -errno after logging which listener failed. */
int serve_bind_all(const struct config *c, int *fds, size_t max);
/* Room for every fd of every listener (a hostname may give several). */
#define SERVE_MAX_FDS 256

/* Runs the service on the n listening fds bound by serve_bind_all until it
 * ends; returns the process exit status. */
int serve(const struct config *c, const int *fds, size_t n);

#endif

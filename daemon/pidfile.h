/* pidfile: the master's pid on disk, locked while it runs. */
#ifndef PREFORKD_PIDFILE_H
#define PREFORKD_PIDFILE_H

#include <stddef.h>
#include <sys/types.h>

/* Creates or takes over path (a stale file of a dead master is replaced),
 * locks it and writes our pid. Returns the fd that holds the lock, or -1
 * with errmsg naming the file and the cause (e.g. the running master's pid). */
int pidfile_acquire(const char *path, char *errmsg, size_t len);
/* Removes the file and drops the lock. */
void pidfile_release(const char *path, int fd);
/* The pid of the master that holds path: > 0, or -errno (-ESRCH: no live
 * master holds it) with errmsg set. */
pid_t pidfile_read(const char *path, char *errmsg, size_t len);

#endif

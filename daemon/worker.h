/* worker: one worker process's life, from fork to exit. */
#ifndef PREFORKD_WORKER_H
#define PREFORKD_WORKER_H

#include <stdbool.h>
#include <signal.h>
#include <stddef.h>
#include <sys/types.h>

#include "config.h"
#include "scoreboard.h"

struct ssl_ctx_st;

/* What the master hands a worker it just forked. */
struct worker_args {
    const struct config *config;
    const int *fds;             /* listening sockets to accept on */
    const bool *fd_ssl;         /* fd_ssl[i]: fds[i] speaks TLS, with tls */
    size_t nfds;
    struct ssl_ctx_st *tls;     /* the master's context; NULL when no listener is ssl */
    struct scoreboard *sb;
    int slot;                   /* ours in sb */
    int task_id;
    unsigned generation;
    int ready_fd;               /* write end of the master's ready pipe */
    pid_t master_pid;
};

/* The message a worker writes to the ready pipe once it accepts. */
struct worker_ready_msg {
    int32_t slot;
    int32_t pid;
};

/* The signals a worker handles, blocked by the master across fork() until
 * the worker's handlers are in place (the worker unblocks them). */
const sigset_t *worker_signals(void);

/* Runs the worker in this (forked) process on the default libev loop,
 * which must hold no watcher of the master's any more. Returns the exit
 * status. */
int worker_main(const struct worker_args *a);

#endif

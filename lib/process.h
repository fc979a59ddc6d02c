/*
 * process: CPU count, Tornado's fork_processes and task ids. The daemon's
 * libev supervisor lives in the daemon; this is the library-level, blocking
 * form that a small program can call before it starts its loop.
 */
#ifndef PF_PROCESS_H
#define PF_PROCESS_H

/* Number of CPUs this process may run on (sched_getaffinity), at least 1. */
int pf_cpu_count(void);

#include <errno.h>

/* What pf_fork_processes returns in the parent once it stops supervising. */
#define PF_FORK_ALL_EXITED (-ECHILD)    /* every child exited with status 0 */
#define PF_FORK_GAVE_UP    (-EMLINK)    /* more than max_restarts restarts */
/* Tornado's default max_restarts. */
#define PF_DEFAULT_MAX_RESTARTS 100

/*
 * Forks n children (n <= 0: pf_cpu_count()). In each child it returns that
 * child's task id, 0..n-1, with the PRNG reseeded; a child gets SIGTERM if
 * the parent dies. The parent blocks: it restarts, with the same task id,
 * any child killed by a signal or exiting non-zero, and returns only when
 * supervision ends: PF_FORK_ALL_EXITED (Tornado's parent then exits 0: do
 * so too), PF_FORK_GAVE_UP after more than max_restarts restarts (< 0:
 * PF_DEFAULT_MAX_RESTARTS; the remaining children are killed and reaped), or
 * another -errno if fork fails (likewise, no child is left behind).
 */
int pf_fork_processes(int n, int max_restarts);

/* The task id given by pf_fork_processes in this process, or -1. */
int pf_task_id(void);

#endif

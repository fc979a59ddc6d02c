/*
 * process: CPU count, task ids and Tornado's fork_processes, the blocking
 * supervisor for small programs. The daemon's master supervises from its
 * own libev loop instead (daemon/master.c); what a child does is its own.
 */
#define _GNU_SOURCE     /* sched_getaffinity, CPU_COUNT */
#include "process.h"

#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* How long children get to exit on SIGTERM before SIGKILL, and how often we
 * look meanwhile. */
#define KILL_GRACE_MS 1000
#define KILL_POLL_MS 10

/* Process-wide by nature: a task id belongs to the process, as in Tornado. */
static int task_id = -1;

int pf_cpu_count(void)
{
    cpu_set_t set;
    long n;

    if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0)
        return CPU_COUNT(&set);
    n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

int pf_task_id(void)
{
    return task_id;
}

/* Children would otherwise share the parent's random sequence. */
static void reseed(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    unsigned seed = (unsigned)(ts.tv_nsec ^ ts.tv_sec ^ ((long)getpid() << 16));
    srand(seed);
    srandom(seed);
    srand48(seed);
}

/* Returns 0 in the child, the pid in the parent, or -errno. */
static pid_t start_child(int id, pid_t parent)
{
    pid_t pid = fork();

    if (pid < 0)
        return -errno;
    if (pid == 0) {
        /* No orphans: if the parent is gone, so are we. */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent)
            _exit(1);
        task_id = id;
        reseed();
    }
    return pid;
}

/* Ends and reaps every child still listed: SIGTERM first, then SIGKILL for
 * any that is still there after KILL_GRACE_MS (it may ignore SIGTERM). */
static void kill_children(pid_t *pids, int n)
{
    int left = 0;

    for (int i = 0; i < n; i++)
        if (pids[i] > 0 && kill(pids[i], SIGTERM) == 0)
            left++;
    for (int waited_ms = 0; left > 0; waited_ms += KILL_POLL_MS) {
        for (int i = 0; i < n; i++) {
            if (pids[i] <= 0)
                continue;
            if (waited_ms >= KILL_GRACE_MS)
                kill(pids[i], SIGKILL);
            pid_t r = waitpid(pids[i], NULL, waited_ms >= KILL_GRACE_MS ? 0 : WNOHANG);
            if (r == pids[i] || (r < 0 && errno == ECHILD)) {
                pids[i] = 0;
                left--;
            }
        }
        if (left > 0 && waited_ms < KILL_GRACE_MS)
            usleep(KILL_POLL_MS * 1000);
    }
}

int pf_fork_processes(int n, int max_restarts)
{
    pid_t parent = getpid();
    pid_t *pids;
    int alive = 0, restarts = 0, rc;

    if (n <= 0)
        n = pf_cpu_count();
    if (max_restarts < 0)
        max_restarts = PF_DEFAULT_MAX_RESTARTS;
    pids = calloc((size_t)n, sizeof(*pids));
    if (pids == NULL)
        return -ENOMEM;
    for (int i = 0; i < n; i++) {
        pid_t pid = start_child(i, parent);
        if (pid == 0) {
            free(pids);
            return i;
        }
        if (pid < 0) {
            rc = (int)pid;
            goto out;
        }
        pids[i] = pid;
        alive++;
    }
    while (alive > 0) {
        int status, id = -1;
        pid_t pid = wait(&status);

        if (pid < 0) {
            if (errno == EINTR)
                continue;
            rc = -errno;
            goto out;
        }
        for (int i = 0; i < n; i++)
            if (pids[i] == pid)
                id = i;
        if (id < 0)
            continue;           /* not one of ours */
        pids[id] = 0;
        alive--;
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
            continue;
        if (++restarts > max_restarts) {
            rc = PF_FORK_GAVE_UP;
            goto out;
        }
        pid = start_child(id, parent);
        if (pid == 0) {
            free(pids);
            return id;
        }
        if (pid < 0) {
            rc = (int)pid;
            goto out;
        }
        pids[id] = pid;
        alive++;
    }
    rc = PF_FORK_ALL_EXITED;
out:
    kill_children(pids, n);
    free(pids);
    return rc;
}

/* Running the built preforkd in the integration suites. main() finds the
 * daemon and makes the suite's temp dir (du_suite_begin), and after the run
 * kills and counts what failed tests left running (du_suite_end). A test
 * starts `preforkd -f -c <conf>` in a process group of its own that dies
 * with whoever started it, waits until it accepts, reads its log and its
 * workers' ps titles, runs one-shot `preforkd ...` commands, and stops
 * every process by its pid or group, never by name. What a client says to
 * the daemon is the suite's (echoclient.h for echo daemons). */
#ifndef PF_DAEMONUTIL_H
#define PF_DAEMONUTIL_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <check.h>

/* Enough for any stdout, stderr or log a test looks at. */
#define DU_OUTPUT_MAX 65536
/* The most children of a master a test looks at. */
#define DU_MAX_WORKERS 64

/* One per suite (a static), filled by du_suite_begin. */
struct du_suite {
    const char *name;           /* "check_master": starts every message */
    const char *preforkd;       /* $PREFORKD, or build/preforkd */
    char dir[64];               /* /tmp/<name>-XXXXXX, mode 0755 (workers may run
                                 * as nobody); removed by du_suite_end */
    int sanitizer_reports;      /* found by du_site_stop, in the runner */
};

/* Fills s, makes its dir and line-buffers stdout (the figures tests print
 * come out in order with Check's lines). runner_reaps: the runner itself
 * becomes a child subreaper, for daemons that unchecked fixtures start and
 * that outlive the forked tests. False, having said why on stderr, if the
 * daemon is not there or the dir cannot be made. */
bool du_suite_begin(struct du_suite *s, const char *name, bool runner_reaps);
/* After tu_run_suite (failed tests failed): kills the preforkd processes
 * that failed tests left running (in the process groups du_launch recorded,
 * then any whose command line names the suite's dir), counts them, and the
 * sanitizer reports of sites, as more failures, removes the dir. Returns
 * main()'s exit status. */
int du_suite_end(struct du_suite *s, int failed);
/* main() of a suite whose tests each start their own daemons: begin, run
 * the suite make() returns, end. */
int du_main(struct du_suite *s, const char *name, Suite *(*make)(void));
/* A tcase of s whose every test runs between setup and teardown (checked
 * fixtures, in the test's process). */
TCase *du_add_tcase(Suite *s, const char *name, int timeout_sec, void (*setup)(void),
                    void (*teardown)(void));
/* For a checked setup: a fresh dir for the test under the suite's, and the
 * test process a child subreaper (workers orphaned by a dead master, and a
 * daemonized master, become its children and are reaped by du_*). */
void du_test_begin(const struct du_suite *s, char *dir, size_t size);

/* One master under test. */
struct du_daemon {
    pid_t pid;          /* the master; 0: not started (or not known yet) */
    pid_t pgid;         /* its process group, signalled by du_stop; 0: none */
    bool reaped;        /* the master was waited for; status is valid */
    int status;         /* its wait status */
    unsigned port;      /* where du_wait_ready connects, on 127.0.0.1 */
    char conf[PATH_MAX];
    char log[PATH_MAX];     /* its stdout and stderr: its log, with -f */
    char pidfile[PATH_MAX]; /* the config's pidfile, for suites that set one */
    char cmdline[2 * PATH_MAX + 16];    /* its argv joined by spaces, as ps shows it */
};

/* Clears d; conf and log are dir/<name>.conf and dir/<name>.log. */
void du_init(struct du_daemon *d, const char *dir, const char *name);
/* The first of the n slots ds not yet taken (no conf), set up as d<i> in
 * dir with the pidfile dir/p.pid that every daemon of a test shares (a
 * second instance is one on the same pidfile); fails the test if none is
 * left. */
struct du_daemon *du_next(struct du_daemon *ds, int n, const char *dir);
/* Writes d->conf (printf-style) through a rename: a master may read it any time. */
void du_write_conf(struct du_daemon *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Starts `preforkd -f -c d->conf` with its output to d->log, in a process
 * group of its own, recorded in the suite's dir, without waiting for
 * anything. The master gets SIGKILL when the process that started it ends.
 * in_child (may be NULL) runs in the child right before the exec: limits,
 * environment; it may _exit(125). */
void du_launch(const struct du_suite *s, struct du_daemon *d, void (*in_child)(void *arg),
               void *arg);
/* Waits up to timeout_sec for the master to end; true, with d->status, if it did. */
bool du_wait_exit(struct du_daemon *d, double timeout_sec);
/* True once no process of the daemon's group is left; reaps those that
 * are ours (the master first, keeping its status). */
bool du_group_gone(struct du_daemon *d);
bool du_wait_group_gone(struct du_daemon *d, double timeout_sec);
/* SIGTERM (and SIGCONT, for a worker a test stopped) to the master and its
 * group, SIGKILL after grace_sec; reaps what it can. Fails no test (an
 * unchecked teardown may call it); false if it took SIGKILL. */
bool du_stop(struct du_daemon *d, double grace_sec);
/* du_stop for each of the n daemons ds. */
void du_stop_all(struct du_daemon *ds, int n, double grace_sec);
/* Polls connect() on 127.0.0.1:d->port until it works. False, with why in
 * why (what the master exited with, or what the connect said, and the log),
 * if the master exits or timeout_sec passes; fails no test. */
bool du_wait_ready(struct du_daemon *d, double timeout_sec, char *why, size_t size);
/* du_wait_ready, failing the test with why. */
void du_assert_ready(struct du_daemon *d, double timeout_sec);
/* du_launch without a hook, then du_assert_ready. */
void du_start(const struct du_suite *s, struct du_daemon *d, double ready_timeout_sec);
/* du_assert_ready through connect_fn(arg) (an fd, or -errno), for a daemon
 * whose listener of interest is not on 127.0.0.1 ([::1], a unix socket). */
void du_assert_ready_via(struct du_daemon *d, int (*connect_fn)(const void *arg), const void *arg,
                         double timeout_sec);

/* The log up to DU_OUTPUT_MAX, in a buffer the next call reuses. */
const char *du_log(const struct du_daemon *d);
/* Its last part, from a line start, for messages; a buffer of its own. */
const char *du_log_tail(const struct du_daemon *d);
/* The same for any file (a rotated log); the same buffer. */
const char *du_file_tail(const char *path);
size_t du_log_size(const struct du_daemon *d);
/* What it logged after byte offset; a buffer of its own. */
const char *du_log_since(const struct du_daemon *d, size_t offset);

/* Output of one finished command. */
struct du_command {
    int status;         /* wait status; -1 if it had to be killed */
    char out[DU_OUTPUT_MAX];
    char err[DU_OUTPUT_MAX];
};
/* Runs `preforkd args...` (NULL-terminated) to its end, killed after
 * timeout_sec; its stdout and stderr go through dir/cmd.out and dir/cmd.err
 * into c. Fails the test if a sanitizer reported. Returns its pid. */
pid_t du_run(const struct du_suite *s, const char *dir, struct du_command *c,
             const char *const *args, double timeout_sec);

/* One child of a master, as ps shows it. */
struct du_worker {
    pid_t pid;
    int id;             /* the task id of "preforkd: worker process #ID"; -1: not a worker */
    int generation;     /* from "(generation N)"; -1: none */
    char title[160];
};
/* The master's live children, ordered by task id (non-workers first), up
 * to DU_MAX_WORKERS; returns how many. */
int du_workers_of(pid_t master, struct du_worker *ws);
/* A worker table a test waits for. */
struct du_expect {
    int n;                      /* exactly n children, titled #0..#n-1 once each */
    int generation;             /* all of this generation; 0: any */
    const struct du_worker *keep;   /* these are still there, same pid and task id */
    int n_keep;
    const struct du_worker *gone;   /* none of these pids is among them */
    int n_gone;
};
/* Polls the master's children until they match e, first within timeout_sec
 * and again 0.1 s later (a run of forks passes through every smaller
 * table); *n and ws get the last table seen. Stops early if the master
 * exits. */
bool du_wait_workers(struct du_daemon *d, const struct du_expect *e, struct du_worker *ws,
                     int *n, double timeout_sec);
/* du_wait_workers, or fail the test saying what was expected after what;
 * returns the table's size. */
int du_assert_workers(struct du_daemon *d, const struct du_expect *e, struct du_worker *ws,
                      double timeout_sec, const char *after);
/* "#0 pid 12 generation 1, pid 14 "title"" for messages; a buffer the next
 * call reuses. */
const char *du_describe_workers(const struct du_worker *ws, int n);

/* A daemon that serves every test of a tcase: an unchecked fixture starts
 * it in the runner, so that it outlives the forked tests. That fixture
 * fails nothing; it notes why the daemon does not serve, and each test
 * requires it first. The runner should be a child subreaper (du_suite_begin
 * with runner_reaps). */
struct du_site {
    struct du_daemon d;
    char error[DU_OUTPUT_MAX];  /* why the daemon does not serve; "" if it does */
    off_t log_offset;           /* the log's size when the running test began */
};
/* The unchecked setup, once site->d's config is written: launches it and
 * waits up to ready_timeout_sec for it to accept on 127.0.0.1:site->d.port. */
void du_site_launch(const struct du_suite *s, struct du_site *site, double ready_timeout_sec);
/* The unchecked teardown: stops it (saying so if it took SIGKILL) and
 * counts a sanitizer report in its log in s. */
void du_site_stop(struct du_suite *s, struct du_site *site, double grace_sec);
/* A tcase of s whose tests share one site: start and stop run in the runner
 * around all of them (unchecked fixtures), setup and teardown around each
 * test (checked ones). */
TCase *du_add_site_tcase(Suite *s, const char *name, int timeout_sec, void (*start)(void),
                         void (*stop)(void), void (*setup)(void), void (*teardown)(void));
/* First thing in a test: fails it with site->error if there is one. */
void du_site_require(const struct du_site *site);
/* Checked fixtures: note where the log stands; after a passing test, fail
 * it if a worker died meanwhile, a sanitizer spoke, or the master is gone. */
void du_site_test_begin(struct du_site *site);
void du_site_test_end(const struct du_site *site);

#endif

/* Helpers shared by the Check suites: counting fds, connecting on loopback,
 * measuring CPU time, and running a libev loop with a deadline. */
#ifndef PF_TESTUTIL_H
#define PF_TESTUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <check.h>
#include <ev.h>

/* Open fds of this process, counted in /proc/self/fd (the count's own
 * directory fd excluded). */
int tu_fd_count(void);
/* Kernel-chosen port of a bound socket. */
unsigned tu_local_port(int fd);
/* Blocking TCP connect to addr ("127.0.0.1", "::1") and port; -errno on failure. */
int tu_connect_tcp(const char *addr, unsigned port);
/* Blocking connect to a unix socket path; -errno on failure. */
int tu_connect_unix(const char *path);
/* Reads until len bytes, EOF or timeout_ms; returns the bytes read. */
size_t tu_read_full(int fd, void *buf, size_t len, int timeout_ms);
/* Writes all len bytes (blocking); false on error. */
bool tu_write_all(int fd, const void *buf, size_t len);
/* User+system CPU seconds this process has used. */
double tu_cpu_seconds(void);
/* Runs loop until *done is true or timeout_sec passes; returns *done. */
bool tu_run_until(struct ev_loop *loop, const bool *done, double timeout_sec);
/* Monotonic seconds. */
double tu_now(void);
/* Runs s in fork mode (a crash or a setrlimit stays in one test), output
 * per CK_VERBOSITY; returns the number of tests that failed or erred. */
int tu_run_suite(Suite *s);
/* Removes path and everything below it (a test's temp dir). */
void tu_rmtree(const char *path);

/* ---- files, ports and processes, for the suites that run the daemon ---- */

/* Reads up to size-1 bytes of path into buf, NUL-terminated ("" if absent). */
void tu_read_file(const char *path, char *buf, size_t size);
/* A listening socket on addr ("127.0.0.1", "::1") and port (0: any); the
 * test owns the fd. Fails the test if it cannot bind. */
int tu_listen_on(const char *addr, unsigned port);
/* A port the kernel just handed out on addr, free again once this returns. */
unsigned tu_free_port(const char *addr);
/* For a forked child: stdin from /dev/null, stdout to out and stderr to err
 * (created or truncated; err may be the same string as out), every signal
 * at its default and none blocked (Check's fork mode leaves handlers, and
 * execve keeps ignored signals and the mask), then execv(path, argv).
 * Never returns: exits 126 if a redirection fails, 127 if execv does. */
void tu_exec_child(const char *path, char *const argv[], const char *out, const char *err)
    __attribute__((noreturn));
/* Waits up to timeout_sec for the child pid; true, with *status, if it ended. */
bool tu_wait_pid(pid_t pid, int *status, double timeout_sec);
/* What /proc/<pid>/stat says about a process. */
struct tu_proc_stat {
    char state;         /* R, S, D, T, Z, ... */
    pid_t ppid;
    pid_t pgrp;
};
/* False if pid does not exist (any more). */
bool tu_proc_stat(pid_t pid, struct tu_proc_stat *st);
/* pid's /proc/<pid>/cmdline (the ps title) with NULs as spaces, trailing
 * spaces trimmed, NUL-terminated; returns its length, 0 if there is none
 * (no such process, or a zombie). */
size_t tu_proc_cmdline(pid_t pid, char *buf, size_t size);
/* Live (not zombie) children of parent: stores up to max pids, returns the
 * full count. */
int tu_children_of(pid_t parent, pid_t *pids, int max);
bool tu_pid_in(pid_t pid, const pid_t *pids, int n);
/* Fails the test if text holds a report of ASan, LSan or UBSan: under
 * SANITIZE=1 that fails it even when the process carried on. */
void tu_assert_no_sanitizer_report(const char *text);
/* Sends len bytes while reading the echo; true if exactly those bytes came
 * back within timeout_sec. Leaves fd non-blocking. */
bool tu_echo_exchange(int fd, const void *data, size_t len, double timeout_sec);
/* SIGKILLs every process whose command line contains needle (a suite's temp
 * dir); returns how many. */
int tu_kill_matching(const char *needle);

/* ---- the integration suites' daemon bookkeeping ---- */

/* The daemon under test: $PREFORKD, or build/preforkd. NULL, after saying
 * why on stderr (suite names the suite), when it is not executable. */
const char *tu_preforkd_path(const char *suite);
/* Notes a daemon's process group in dir (a suite's temp dir), so that
 * tu_kill_recorded_groups can find what a failed test left behind. */
void tu_record_pgid(const char *dir, pid_t pgid);
/* SIGKILLs every preforkd process of a group recorded in dir that is still
 * running after grace_sec (workers of a master that died with its test go
 * by themselves), naming each on stderr; returns how many it killed. */
int tu_kill_recorded_groups(const char *dir, const char *suite, double grace_sec);

/* An integration test's setup: a fresh directory under suite_dir, its
 * path in test_dir (size bytes), and this process a child subreaper, so
 * that the workers of a master that dies become ours to reap. */
void tu_setup_test_dir(char *test_dir, size_t size, const char *suite_dir);
/* A test case of an integration suite: its timeout, and setup/teardown
 * as a checked fixture (run in each test's own process). */
TCase *tu_add_tcase(Suite *s, const char *name, double timeout_sec, SFun setup, SFun teardown);
/* An integration suite's main, once dir (its temp dir) exists: runs s
 * (tu_run_suite), SIGKILLs what failed tests left running (the preforkd
 * processes of the groups recorded in dir, after grace_sec, and any whose
 * command line names dir), counting that as one more failure, and removes
 * dir. Returns main's exit status. */
int tu_run_daemon_suite(Suite *s, const char *suite, const char *dir, double grace_sec);

#endif

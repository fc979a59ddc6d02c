/* Helpers shared by the Check suites: counting fds, connecting on loopback,
 * measuring CPU time, running a libev loop with a deadline, running child
 * processes. What reads /proc and files is in procutil.h, included here. */
#ifndef PF_TESTUTIL_H
#define PF_TESTUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <check.h>
#include <ev.h>

#include "procutil.h"

/* Open fds of this process, counted in /proc/self/fd (the count's own
 * directory fd excluded). */
int tu_fd_count(void);
/* Kernel-chosen port of a bound socket. */
unsigned tu_local_port(int fd);
/* Blocking TCP connect to addr ("127.0.0.1", "::1") and port; -errno on failure. */
int tu_connect_tcp(const char *addr, unsigned port);
/* Blocking connect to a unix socket path; -errno on failure. */
int tu_connect_unix(const char *path);
/* Connects to 127.0.0.1:port within timeout_ms; a non-blocking fd, or
 * -errno (-ETIMEDOUT when the time ran out). */
int tu_connect_loopback(unsigned port, int timeout_ms);
/* Reads until len bytes, EOF or timeout_ms; returns the bytes read. */
size_t tu_read_full(int fd, void *buf, size_t len, int timeout_ms);
/* Writes all len bytes (blocking); false on error. */
bool tu_write_all(int fd, const void *buf, size_t len);
/* The same on a socket, with MSG_NOSIGNAL: a peer that went away is
 * false with errno (EPIPE, ECONNRESET), never SIGPIPE. */
bool tu_send_all(int fd, const void *buf, size_t len);
/* User+system CPU seconds this process has used. */
double tu_cpu_seconds(void);
/* Runs loop until *done is true or timeout_sec passes; returns *done. */
bool tu_run_until(struct ev_loop *loop, const bool *done, double timeout_sec);
/* Runs loop for sec. */
void tu_run_for(struct ev_loop *loop, double sec);
/* Monotonic seconds. */
double tu_now(void);
/* Runs s in fork mode (a crash or a setrlimit stays in one test), output
 * per CK_VERBOSITY; returns the number of tests that failed or erred. */
int tu_run_suite(Suite *s);
/* A new tcase of s with this timeout (fixtures are the caller's to add). */
TCase *tu_add_tcase(Suite *s, const char *name, int timeout_sec);
/* Removes path and everything below it (a test's temp dir). */
void tu_rmtree(const char *path);

/* ---- files, ports and processes, for the suites that run the daemon ---- */

/* dir/name into buf; fails the test if it does not fit. */
void tu_path(char *buf, size_t size, const char *dir, const char *name);
/* s[0..len) with CR, LF and other bytes escaped, cut at about 2400 bytes,
 * for messages; the result stays valid for the next three calls. */
const char *tu_show(const void *s, size_t len);
/* A received message out of a buffer: buf[skip..skip+n) copied to a new
 * NUL-terminated allocation (the caller frees it), then buf[0..skip+n)
 * dropped from buf (*len bytes long). */
char *tu_take_bytes(char *buf, size_t *len, size_t skip, size_t n);
/* Lines of text that hold needle. */
int tu_count_lines_with(const char *text, const char *needle);
/* A page for a test's document root: a doctype and a title, then lines
 * "<p>line NN of what</p>" until it holds at least min_len bytes (or buf is
 * full); returns its length. */
size_t tu_html_page(char *buf, size_t size, const char *title, const char *what,
                    size_t min_len);
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
/* fork() for a child tied to the caller: it gets sig when the caller ends
 * (PR_SET_PDEATHSIG), and exits at once if that happened before it asked.
 * Fails the test if fork fails. 0 in the child, its pid in the caller. */
pid_t tu_fork_tied(int sig);
/* Waits up to timeout_sec for the child pid; true, with *status, if it ended. */
bool tu_wait_pid(pid_t pid, int *status, double timeout_sec);
/* Runs path with argv to its end through tu_exec_child (so out and err get
 * its output), as a child that dies with the test (PR_SET_PDEATHSIG). One
 * that runs over timeout_sec is killed and *status is -1. Returns its pid. */
pid_t tu_run(const char *path, char *const argv[], const char *out, const char *err,
             double timeout_sec, int *status);
/* status (from wait, or -1) is an exit with code. */
bool tu_exited_with(int status, int code);
/* Runs /usr/bin/curl with argv (argv[0] "curl") through tu_run, its stdout
 * into out; its output files go to dir. False, having said on stderr that
 * the test skips it, if there is no curl. Fails the test if curl fails or
 * runs over timeout_sec, showing its stderr and then context (may be ""). */
bool tu_run_curl(const char *const *argv, const char *dir, char *out, size_t out_size,
                 double timeout_sec, const char *context);
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

#endif

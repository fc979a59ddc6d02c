/* Helpers shared by the Check suites: counting fds, connecting on loopback,
 * measuring CPU time, and running a libev loop with a deadline. */
#ifndef PF_TESTUTIL_H
#define PF_TESTUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>
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

#endif

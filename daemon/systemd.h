/* systemd: the two ways systemd talks to a service it runs, without
 * libsystemd: the sd_notify datagram protocol and socket activation. */
#ifndef PREFORKD_SYSTEMD_H
#define PREFORKD_SYSTEMD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The notify socket from NOTIFY_SOCKET; fd -1 when not run by systemd. */
struct sd_notifier {
    int fd;
    uint64_t watchdog_usec;     /* WATCHDOG_USEC for us, 0: none */
};

/* Reads NOTIFY_SOCKET and WATCHDOG_USEC/WATCHDOG_PID, then removes them
 * from the environment so that workers never speak for the master. */
void sd_notifier_open(struct sd_notifier *n);
void sd_notifier_close(struct sd_notifier *n);
/* Sends one datagram, e.g. "READY=1\nSTATUS=2 workers". Returns 0 or -errno
 * (0 when there is no notify socket). */
int sd_notify_printf(const struct sd_notifier *n, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* CLOCK_MONOTONIC in microseconds, for RELOADING=1's MONOTONIC_USEC. */
uint64_t sd_monotonic_usec(void);

/* Listening sockets systemd passed (socket activation), fds 3.. */
struct sd_listen_fds {
    int *fds;                   /* -1 once a listener took it */
    size_t n;
};

/* Takes the fds named by LISTEN_PID/LISTEN_FDS when LISTEN_PID is us (made
 * CLOEXEC and non-blocking), and removes the variables. n = 0 otherwise. */
void sd_listen_fds_take(struct sd_listen_fds *l);
/* Closes the fds no listener claimed; returns how many. */
size_t sd_listen_fds_close_unclaimed(struct sd_listen_fds *l);

#endif

/*
 * systemd: sd_notify(3)'s datagram protocol and sd_listen_fds(3)'s socket
 * passing, written out: each is a handful of lines, documented as stable
 * interfaces, and libsystemd would be a dependency for them alone. When to
 * say READY=1 and which fd serves which `listen` is the master's business.
 */
#define _GNU_SOURCE     /* secure_getenv */
#include "systemd.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* The first passed fd (SD_LISTEN_FDS_START). */
#define LISTEN_FDS_START 3
#define NOTIFY_MSG_MAX 1024

static bool env_names_us(const char *name)
{
    const char *v = getenv(name);
    char *end;
    long pid;

    if (v == NULL)
        return false;
    pid = strtol(v, &end, 10);
    return *end == '\0' && pid == (long)getpid();
}

void sd_notifier_open(struct sd_notifier *n)
{
    const char *path = getenv("NOTIFY_SOCKET");
    const char *wd = getenv("WATCHDOG_USEC");
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    socklen_t len;

    n->fd = -1;
    n->watchdog_usec = 0;
    /* WATCHDOG_PID, when set, says whose watchdog it is. */
    if (wd != NULL && (getenv("WATCHDOG_PID") == NULL || env_names_us("WATCHDOG_PID")))
        n->watchdog_usec = strtoull(wd, NULL, 10);
    if (path != NULL && (path[0] == '/' || path[0] == '@') && strlen(path) < sizeof(sun.sun_path)) {
        memcpy(sun.sun_path, path, strlen(path));
        len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(path));
        if (path[0] == '@')
            sun.sun_path[0] = '\0';         /* an abstract socket */
        n->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (n->fd >= 0 && connect(n->fd, (struct sockaddr *)&sun, len) < 0) {
            close(n->fd);
            n->fd = -1;
        }
    }
    unsetenv("NOTIFY_SOCKET");
    unsetenv("WATCHDOG_USEC");
    unsetenv("WATCHDOG_PID");
}

void sd_notifier_close(struct sd_notifier *n)
{
    if (n->fd >= 0)
        close(n->fd);
    n->fd = -1;
}

int sd_notify_printf(const struct sd_notifier *n, const char *fmt, ...)
{
    char msg[NOTIFY_MSG_MAX];
    va_list ap;
    int len;

    if (n->fd < 0)
        return 0;
    va_start(ap, fmt);
    len = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (len < 0)
        return -EINVAL;
    if (send(n->fd, msg, (size_t)len < sizeof(msg) ? (size_t)len : sizeof(msg) - 1,
             MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
        return -errno;
    return 0;
}

uint64_t sd_monotonic_usec(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

void sd_listen_fds_take(struct sd_listen_fds *l)
{
    const char *v = getenv("LISTEN_FDS");
    long n = v ? strtol(v, NULL, 10) : 0;

    l->fds = NULL;
    l->n = 0;
    if (env_names_us("LISTEN_PID") && n > 0 && (l->fds = calloc((size_t)n, sizeof(int))) != NULL) {
        for (long i = 0; i < n; i++) {
            int fd = LISTEN_FDS_START + (int)i;
            int fl = fcntl(fd, F_GETFL);

            /* Workers inherit them by fork, not exec; accept must not block. */
            fcntl(fd, F_SETFD, FD_CLOEXEC);
            if (fl >= 0)
                fcntl(fd, F_SETFL, fl | O_NONBLOCK);
            l->fds[l->n++] = fd;
        }
    }
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
}

size_t sd_listen_fds_close_unclaimed(struct sd_listen_fds *l)
{
    size_t closed = 0;

    for (size_t i = 0; i < l->n; i++) {
        if (l->fds[i] >= 0) {
            close(l->fds[i]);
            closed++;
        }
    }
    free(l->fds);
    l->fds = NULL;
    l->n = 0;
    return closed;
}

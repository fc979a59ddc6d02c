/* Shared test helpers; see testutil.h. Blocking calls are fine here: the
 * code under test runs in its own loop or process. */
#define _GNU_SOURCE     /* nftw */
#include "testutil.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <ftw.h>
#include <stdio.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

int tu_fd_count(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    int n = 0;

    if (d == NULL)
        return -errno;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1;
}

unsigned tu_local_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);

    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        return 0;
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return 0;
}

static int connect_addr(const struct sockaddr *sa, socklen_t len)
{
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int err;

    if (fd < 0)
        return -errno;
    if (connect(fd, sa, len) < 0) {
        err = -errno;
        close(fd);
        return err;
    }
    return fd;
}

int tu_connect_tcp(const char *addr, unsigned port)
{
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(port) };
    struct sockaddr_in6 sin6 = { .sin6_family = AF_INET6, .sin6_port = htons(port) };

    if (inet_pton(AF_INET, addr, &sin.sin_addr) == 1)
        return connect_addr((struct sockaddr *)&sin, sizeof(sin));
    if (inet_pton(AF_INET6, addr, &sin6.sin6_addr) == 1)
        return connect_addr((struct sockaddr *)&sin6, sizeof(sin6));
    return -EINVAL;
}

int tu_connect_unix(const char *path)
{
    struct sockaddr_un sun = { .sun_family = AF_UNIX };

    if (strlen(path) >= sizeof(sun.sun_path))
        return -ENAMETOOLONG;
    strcpy(sun.sun_path, path);
    return connect_addr((struct sockaddr *)&sun, sizeof(sun));
}

size_t tu_read_full(int fd, void *buf, size_t len, int timeout_ms)
{
    double deadline = tu_now() + timeout_ms / 1000.0;
    size_t got = 0;

    while (got < len) {
        int left_ms = (int)((deadline - tu_now()) * 1000);
        struct pollfd p = { .fd = fd, .events = POLLIN };
        ssize_t n;

        int rc;

        if (left_ms <= 0)
            break;
        rc = poll(&p, 1, left_ms);
        if (rc < 0 && errno == EINTR)
            continue;           /* e.g. a SIGCHLD handler libev left behind */
        if (rc <= 0)
            break;
        n = read(fd, (char *)buf + got, len - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    return got;
}

bool tu_write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;

    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false;
        p += n;
        len -= (size_t)n;
    }
    return true;
}

double tu_cpu_seconds(void)
{
    struct rusage ru;

    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
           ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

double tu_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Only wakes ev_run(EVRUN_ONCE) so that the deadline is looked at again. */
static void guard_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop; (void)w; (void)revents;
}

bool tu_run_until(struct ev_loop *loop, const bool *done, double timeout_sec)
{
    double deadline = tu_now() + timeout_sec;

    /* EVRUN_ONCE with a short guard timer keeps every wait bounded. */
    while (!*done && tu_now() < deadline) {
        ev_timer guard;
        ev_timer_init(&guard, guard_cb, 0.05, 0.);
        ev_timer_start(loop, &guard);
        ev_run(loop, EVRUN_ONCE);
        ev_timer_stop(loop, &guard);
    }
    return *done;
}

int tu_run_suite(Suite *s)
{
    SRunner *sr = srunner_create(s);
    int failed;

    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_ENV);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

void tu_rmtree(const char *path)
{
    nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

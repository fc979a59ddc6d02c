/* Shared test helpers; see testutil.h. Blocking calls are fine here: the
 * code under test runs in its own loop or process. */
#define _GNU_SOURCE     /* nftw */
#include "testutil.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/un.h>
#include <sys/wait.h>
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

void tu_read_file(const char *path, char *buf, size_t size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    size_t got = 0;
    ssize_t n;

    buf[0] = '\0';
    if (fd < 0)
        return;
    while (got + 1 < size && (n = read(fd, buf + got, size - 1 - got)) > 0)
        got += (size_t)n;
    buf[got] = '\0';
    close(fd);
}

int tu_listen_on(const char *addr, unsigned port)
{
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(port) };
    struct sockaddr_in6 sin6 = { .sin6_family = AF_INET6, .sin6_port = htons(port) };
    bool v6 = strchr(addr, ':') != NULL;
    int fd = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int rc;

    ck_assert_int_ge(fd, 0);
    if (v6) {
        ck_assert_int_eq(inet_pton(AF_INET6, addr, &sin6.sin6_addr), 1);
        rc = bind(fd, (struct sockaddr *)&sin6, sizeof(sin6));
    } else {
        ck_assert_int_eq(inet_pton(AF_INET, addr, &sin.sin_addr), 1);
        rc = bind(fd, (struct sockaddr *)&sin, sizeof(sin));
    }
    ck_assert_msg(rc == 0, "bind %s:%u: %s", addr, port, strerror(errno));
    ck_assert_int_eq(listen(fd, 8), 0);
    return fd;
}

unsigned tu_free_port(const char *addr)
{
    int fd = tu_listen_on(addr, 0);
    unsigned port = tu_local_port(fd);

    close(fd);
    ck_assert_uint_ne(port, 0);
    return port;
}

void tu_exec_child(const char *path, char *const argv[], const char *out, const char *err)
{
    sigset_t none;
    int fd;

    fd = open("/dev/null", O_RDONLY);
    if (fd < 0 || dup2(fd, 0) < 0)
        _exit(126);
    fd = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0644);
    if (fd < 0 || dup2(fd, 1) < 0)
        _exit(126);
    fd = err == out ? 1 : open(err, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0644);
    if (fd < 0 || dup2(fd, 2) < 0)
        _exit(126);
    for (int sig = 1; sig < NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            signal(sig, SIG_DFL);
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    execv(path, argv);
    _exit(127);
}

bool tu_wait_pid(pid_t pid, int *status, double timeout_sec)
{
    double deadline = tu_now() + timeout_sec;
    pid_t r;

    while ((r = waitpid(pid, status, WNOHANG)) == 0 && tu_now() < deadline)
        usleep(10000);
    return r == pid;
}

bool tu_proc_stat(pid_t pid, struct tu_proc_stat *st)
{
    char path[64], stat[1024];
    const char *p;
    int ppid, pgrp;

    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    tu_read_file(path, stat, sizeof(stat));
    /* "pid (comm) S ppid pgrp ...": comm may hold spaces and ')'. */
    p = strrchr(stat, ')');
    if (p == NULL || sscanf(p + 1, " %c %d %d", &st->state, &ppid, &pgrp) != 3)
        return false;
    st->ppid = (pid_t)ppid;
    st->pgrp = (pid_t)pgrp;
    return true;
}

size_t tu_proc_cmdline(pid_t pid, char *buf, size_t size)
{
    char path[64];
    int fd;
    ssize_t len;

    buf[0] = '\0';
    snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    len = read(fd, buf, size - 1);
    close(fd);
    if (len <= 0)
        return 0;
    for (ssize_t i = 0; i < len; i++)
        if (buf[i] == '\0')
            buf[i] = ' ';
    while (len > 0 && buf[len - 1] == ' ')
        len--;
    buf[len] = '\0';
    return (size_t)len;
}

int tu_children_of(pid_t parent, pid_t *pids, int max)
{
    DIR *dir = opendir("/proc");
    struct dirent *e;
    int n = 0;

    ck_assert_ptr_nonnull(dir);
    while ((e = readdir(dir)) != NULL) {
        struct tu_proc_stat st;

        if (!isdigit((unsigned char)e->d_name[0]) || !tu_proc_stat(atoi(e->d_name), &st))
            continue;
        if (st.ppid == parent && st.state != 'Z' && st.state != 'X') {
            if (n < max)
                pids[n] = (pid_t)atoi(e->d_name);
            n++;
        }
    }
    closedir(dir);
    return n;
}

bool tu_pid_in(pid_t pid, const pid_t *pids, int n)
{
    for (int i = 0; i < n; i++)
        if (pids[i] == pid)
            return true;
    return false;
}

void tu_assert_no_sanitizer_report(const char *text)
{
    static const char *const marks[] = { "AddressSanitizer", "LeakSanitizer",
                                         "runtime error:", NULL };

    for (int i = 0; marks[i] != NULL; i++)
        ck_assert_msg(strstr(text, marks[i]) == NULL, "sanitizer report:\n%s", text);
}

bool tu_echo_exchange(int fd, const void *data, size_t len, double timeout_sec)
{
    double deadline = tu_now() + timeout_sec;
    const unsigned char *out = data;
    unsigned char *back = malloc(len);
    size_t sent = 0, got = 0;
    bool ok;

    ck_assert_ptr_nonnull(back);
    ck_assert_int_eq(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK), 0);
    while (got < len && tu_now() < deadline) {
        struct pollfd p = { .fd = fd, .events = POLLIN | (sent < len ? POLLOUT : 0) };
        ssize_t n;

        if (poll(&p, 1, 50) <= 0)
            continue;
        if ((p.revents & POLLOUT) && sent < len) {
            n = send(fd, out + sent, len - sent, MSG_NOSIGNAL);
            if (n > 0)
                sent += (size_t)n;
            else if (errno != EAGAIN && errno != EINTR)
                break;
        }
        if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
            n = read(fd, back + got, len - got);
            if (n > 0)
                got += (size_t)n;
            else if (n == 0 || (errno != EAGAIN && errno != EINTR))
                break;
        }
    }
    ok = got == len && memcmp(back, out, len) == 0;
    free(back);
    return ok;
}

int tu_kill_matching(const char *needle)
{
    DIR *dir = opendir("/proc");
    struct dirent *e;
    int n = 0;

    if (dir == NULL)
        return 0;
    while ((e = readdir(dir)) != NULL) {
        char cmdline[4096];
        pid_t pid = (pid_t)atoi(e->d_name);

        if (!isdigit((unsigned char)e->d_name[0]) ||
            tu_proc_cmdline(pid, cmdline, sizeof(cmdline)) == 0)
            continue;               /* zombies have none */
        if (strstr(cmdline, needle) != NULL && kill(pid, SIGKILL) == 0)
            n++;
    }
    closedir(dir);
    return n;
}

const char *tu_preforkd_path(const char *suite)
{
    const char *path = getenv("PREFORKD");

    if (path == NULL || path[0] == '\0')
        path = "build/preforkd";
    if (access(path, X_OK) != 0) {
        fprintf(stderr, "%s: %s: %s (build it, or set PREFORKD; run from the repo root)\n",
                suite, path, strerror(errno));
        return NULL;
    }
    return path;
}

void tu_record_pgid(const char *dir, pid_t pgid)
{
    char path[4096], line[32];
    int fd, len = snprintf(line, sizeof(line), "%d\n", (int)pgid);

    snprintf(path, sizeof(path), "%s/pgids", dir);
    fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    ck_assert_int_ge(fd, 0);
    ck_assert(tu_write_all(fd, line, (size_t)len));
    close(fd);
}

int tu_kill_recorded_groups(const char *dir, const char *suite, double grace_sec)
{
    char path[4096], text[65536];
    double deadline = tu_now() + grace_sec;
    int n;

    /* One pgid a line; a leading newline lets "\n<pgid>\n" match any. */
    snprintf(path, sizeof(path), "%s/pgids", dir);
    text[0] = '\n';
    tu_read_file(path, text + 1, sizeof(text) - 1);
    for (;;) {
        DIR *d = opendir("/proc");
        struct dirent *e;
        bool last = tu_now() >= deadline;

        n = 0;
        while (d != NULL && (e = readdir(d)) != NULL) {
            pid_t pid = (pid_t)atoi(e->d_name);
            struct tu_proc_stat st;
            char cmdline[4096], group[32];

            if (!isdigit((unsigned char)e->d_name[0]) || !tu_proc_stat(pid, &st) ||
                st.state == 'Z' || tu_proc_cmdline(pid, cmdline, sizeof(cmdline)) == 0 ||
                strstr(cmdline, "preforkd") == NULL)
                continue;
            snprintf(group, sizeof(group), "\n%d\n", (int)st.pgrp);
            if (strstr(text, group) == NULL)
                continue;
            n++;
            if (last && kill(pid, SIGKILL) == 0)
                fprintf(stderr, "%s: left running: %d \"%s\" (group %d)\n", suite, (int)pid,
                        cmdline, (int)st.pgrp);
        }
        if (d != NULL)
            closedir(d);
        if (n == 0 || last)
            return n;
        usleep(50000);
    }
}

void tu_setup_test_dir(char *test_dir, size_t size, const char *suite_dir)
{
    ck_assert_int_lt(snprintf(test_dir, size, "%s/t-XXXXXX", suite_dir), (int)size);
    ck_assert_ptr_nonnull(mkdtemp(test_dir));
    ck_assert_int_eq(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
}

TCase *tu_add_tcase(Suite *s, const char *name, double timeout_sec, SFun setup, SFun teardown)
{
    TCase *tc = tcase_create(name);

    tcase_set_timeout(tc, timeout_sec);
    tcase_add_checked_fixture(tc, setup, teardown);
    suite_add_tcase(s, tc);
    return tc;
}

int tu_run_daemon_suite(Suite *s, const char *suite, const char *dir, double grace_sec)
{
    int failed = tu_run_suite(s);
    int left = tu_kill_recorded_groups(dir, suite, grace_sec) + tu_kill_matching(dir);

    if (left > 0) {
        fprintf(stderr, "%s: killed %d preforkd process%s left running by failed tests\n",
                suite, left, left == 1 ? "" : "es");
        failed++;
    }
    tu_rmtree(dir);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

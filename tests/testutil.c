/* Shared test helpers; see testutil.h. Blocking calls are fine here: the
 * code under test runs in its own loop or process. */
#define _GNU_SOURCE     /* nftw, memmem */
#include "testutil.h"

#include <arpa/inet.h>
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

int tu_connect_loopback(unsigned port, int timeout_ms)
{
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(port),
                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    struct pollfd p = { .fd = fd, .events = POLLOUT };
    double deadline = tu_now() + timeout_ms / 1000.0;
    socklen_t len = sizeof(int);
    int err = 0, rc;

    if (fd < 0)
        return -errno;
    if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0)
        return fd;
    if (errno != EINPROGRESS) {
        err = -errno;
        close(fd);
        return err;
    }
    do
        rc = poll(&p, 1, (int)((deadline - tu_now()) * 1000) + 1);
    while (rc < 0 && errno == EINTR);
    if (rc <= 0)
        err = ETIMEDOUT;
    else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    if (err != 0) {
        close(fd);
        return -err;
    }
    return fd;
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

/* All len bytes through xfer (write or a send); false on error. */
static bool xfer_all(int fd, const void *buf, size_t len,
                     ssize_t (*xfer)(int fd, const void *buf, size_t len))
{
    const char *p = buf;

    while (len > 0) {
        ssize_t n = xfer(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            if (n == 0)
                errno = EPIPE;
            return false;
        }
        p += n;
        len -= (size_t)n;
    }
    return true;
}

static ssize_t send_nosignal(int fd, const void *buf, size_t len)
{
    return send(fd, buf, len, MSG_NOSIGNAL);
}

bool tu_write_all(int fd, const void *buf, size_t len)
{
    return xfer_all(fd, buf, len, write);
}

bool tu_send_all(int fd, const void *buf, size_t len)
{
    return xfer_all(fd, buf, len, send_nosignal);
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

void tu_run_for(struct ev_loop *loop, double sec)
{
    bool never = false;

    tu_run_until(loop, &never, sec);
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

TCase *tu_add_tcase(Suite *s, const char *name, int timeout_sec)
{
    TCase *tc = tcase_create(name);

    tcase_set_timeout(tc, timeout_sec);
    suite_add_tcase(s, tc);
    return tc;
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

void tu_path(char *buf, size_t size, const char *dir, const char *name)
{
    int n = snprintf(buf, size, "%s/%s", dir, name);

    ck_assert_msg(n > 0 && (size_t)n < size, "%s/%s: too long", dir, name);
}

const char *tu_show(const void *s, size_t len)
{
    static char bufs[4][2600];
    static int next;
    char *out = bufs[next++ % 4], *p = out;
    const unsigned char *in = s;

    for (size_t i = 0; i < len; i++) {
        if (p - out > 2400) {
            p += sprintf(p, "...(%zu bytes)", len);
            break;
        }
        if (in[i] == '\r')
            p += sprintf(p, "\\r");
        else if (in[i] == '\n')
            p += sprintf(p, "\\n");
        else if (in[i] < 0x20 || in[i] >= 0x7f)
            p += sprintf(p, "\\x%02x", in[i]);
        else
            *p++ = (char)in[i];
    }
    *p = '\0';
    return out;
}

char *tu_take_bytes(char *buf, size_t *len, size_t skip, size_t n)
{
    char *out = malloc(n + 1);

    ck_assert_ptr_nonnull(out);
    ck_assert_uint_le(skip + n, *len);
    memcpy(out, buf + skip, n);
    out[n] = '\0';
    memmove(buf, buf + skip + n, *len - skip - n);
    *len -= skip + n;
    return out;
}

int tu_count_lines_with(const char *text, const char *needle)
{
    int n = 0;

    for (const char *line = text; *line != '\0';) {
        const char *end = strchr(line, '\n');
        size_t len = end != NULL ? (size_t)(end - line) : strlen(line);

        if (memmem(line, len, needle, strlen(needle)) != NULL)
            n++;
        line += len + (end != NULL);
    }
    return n;
}

size_t tu_html_page(char *buf, size_t size, const char *title, const char *what,
                    size_t min_len)
{
    size_t n = (size_t)snprintf(buf, size, "<!DOCTYPE html>\n<title>%s</title>\n", title);

    for (int i = 0; n < min_len && n < size; i++)
        n += (size_t)snprintf(buf + n, size - n, "<p>line %02d of %s</p>\n", i, what);
    return n < size ? n : size - 1;     /* cut short: buf holds size - 1 bytes */
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

pid_t tu_fork_tied(int sig)
{
    pid_t parent = getpid(), pid = fork();

    ck_assert_msg(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, sig);
        if (getppid() != parent)
            _exit(126);
    }
    return pid;
}

pid_t tu_run(const char *path, char *const argv[], const char *out, const char *err,
             double timeout_sec, int *status)
{
    pid_t pid = tu_fork_tied(SIGKILL);

    if (pid == 0)
        tu_exec_child(path, argv, out, err);
    if (!tu_wait_pid(pid, status, timeout_sec)) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        *status = -1;
    }
    return pid;
}

bool tu_exited_with(int status, int code)
{
    return status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == code;
}

bool tu_run_curl(const char *const *argv, const char *dir, char *out, size_t out_size,
                 double timeout_sec, const char *context)
{
    static const char curl[] = "/usr/bin/curl";
    char out_path[4096], err_path[4096], err[4096];
    int status;

    if (access(curl, X_OK) != 0) {
        fprintf(stderr, "%s: %s not found: skipping a curl test\n", program_invocation_short_name,
                curl);
        return false;
    }
    snprintf(out_path, sizeof(out_path), "%s/curl-%d.out", dir, (int)getpid());
    snprintf(err_path, sizeof(err_path), "%s/curl-%d.err", dir, (int)getpid());
    tu_run(curl, (char *const *)argv, out_path, err_path, timeout_sec, &status);
    tu_read_file(out_path, out, out_size);
    tu_read_file(err_path, err, sizeof(err));
    ck_assert_msg(status != -1, "curl ran over %.0f s\n%s", timeout_sec, context);
    ck_assert_msg(tu_exited_with(status, 0), "curl failed (status 0x%x): %s\n%s",
                  (unsigned)status, err, context);
    return true;
}

struct children {
    pid_t parent;
    pid_t *pids;
    int max, n;
};

static void note_child(pid_t pid, void *arg)
{
    struct children *c = arg;
    struct tu_proc_stat st;

    if (!tu_proc_stat(pid, &st) || st.ppid != c->parent || st.state == 'Z' || st.state == 'X')
        return;
    if (c->n < c->max)
        c->pids[c->n] = pid;
    c->n++;
}

int tu_children_of(pid_t parent, pid_t *pids, int max)
{
    struct children c = { parent, pids, max, 0 };

    ck_assert(tu_each_process(note_child, &c));
    return c.n;
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

struct matching {
    const char *needle;
    int n;
};

static void kill_if_matching(pid_t pid, void *arg)
{
    struct matching *m = arg;
    char cmdline[4096];

    /* Zombies have no command line. */
    if (tu_proc_cmdline(pid, cmdline, sizeof(cmdline)) > 0 && strstr(cmdline, m->needle) != NULL &&
        kill(pid, SIGKILL) == 0)
        m->n++;
}

int tu_kill_matching(const char *needle)
{
    struct matching m = { needle, 0 };

    tu_each_process(kill_if_matching, &m);
    return m.n;
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

struct recorded {
    const char *groups;         /* one pgid a line, with a leading newline */
    const char *suite;
    bool kill;
    int n;
};

/* Counts pid if it is a preforkd of a recorded group; kills it on the last pass. */
static void note_recorded(pid_t pid, void *arg)
{
    struct recorded *r = arg;
    struct tu_proc_stat st;
    char cmdline[4096], group[32];

    if (!tu_proc_stat(pid, &st) || st.state == 'Z' ||
        tu_proc_cmdline(pid, cmdline, sizeof(cmdline)) == 0 || strstr(cmdline, "preforkd") == NULL)
        return;
    snprintf(group, sizeof(group), "\n%d\n", (int)st.pgrp);
    if (strstr(r->groups, group) == NULL)
        return;
    r->n++;
    if (r->kill && kill(pid, SIGKILL) == 0)
        fprintf(stderr, "%s: left running: %d \"%s\" (group %d)\n", r->suite, (int)pid, cmdline,
                (int)st.pgrp);
}

int tu_kill_recorded_groups(const char *dir, const char *suite, double grace_sec)
{
    static char text[65536];
    char path[4096];
    double deadline = tu_now() + grace_sec;
    struct recorded r = { text, suite, false, 0 };

    /* One pgid a line; a leading newline lets "\n<pgid>\n" match any. */
    snprintf(path, sizeof(path), "%s/pgids", dir);
    text[0] = '\n';
    tu_read_file(path, text + 1, sizeof(text) - 1);
    for (;;) {
        r.kill = tu_now() >= deadline;
        r.n = 0;
        tu_each_process(note_recorded, &r);
        if (r.n == 0 || r.kill)
            return r.n;
        usleep(50000);
    }
}

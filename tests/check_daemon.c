/*
 * check_daemon: the integration suite. Each test runs the built daemon
 * ($PREFORKD, default build/preforkd, from the repo root) as
 * `preforkd -f -c <temp conf>` on loopback and looks only at what a user
 * sees: exit codes, stdout and stderr, bytes echoed back, and the worker
 * processes under the master.
 *
 * The daemon runs in a process group of its own, so teardown can signal the
 * master and its workers by that pid; the test process is a child subreaper,
 * so workers orphaned by a dead master become its children and are reaped
 * too. If a test dies half-way, the master gets SIGKILL (PR_SET_PDEATHSIG)
 * and its workers follow it.
 */
#define _GNU_SOURCE     /* pipe2, SOCK_CLOEXEC */
#include <check.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "prefork.h"
#include "testutil.h"

#define TCASE_TIMEOUT_SEC 30
/* A daemon that does not accept connections by then failed to start. */
#define READY_TIMEOUT_SEC 5.0
/* A one-shot command (-V, -t ...) that runs longer is hung. */
#define COMMAND_TIMEOUT_SEC 5.0
/* Teardown: SIGTERM first, SIGKILL after this. */
#define STOP_GRACE_SEC 2.0
/* A killed worker is replaced within this. */
#define RESPAWN_TIMEOUT_SEC 3.0
#define ECHO_TIMEOUT_SEC 10.0
#define BIG_ECHO_SIZE (1024 * 1024)
#define MAX_WORKERS 64
/* Enough for any stdout, stderr or log a test looks at. */
#define OUTPUT_MAX 65536

/* Made by main(), removed by main() after the run (a failed test in fork mode
 * exits without teardown). */
static char suite_dir[] = "/tmp/check_daemon-XXXXXX";
/* This test's directory: config, log, outputs, unix sockets. */
static char test_dir[PATH_MAX];
static const char *preforkd_path;

/* One daemon under test. */
struct daemon {
    pid_t pid;          /* the master, also its process group; 0: not started */
    bool reaped;        /* the master was waited for; status is valid */
    int status;         /* its wait status */
    char conf[PATH_MAX];
    char log[PATH_MAX]; /* its stdout and stderr */
};

/* The daemon of the running test, stopped by the teardown when the test passes. */
static struct daemon the_daemon;

/* Where a client connects. */
struct target {
    const char *addr;   /* "127.0.0.1", "::1"; NULL for a unix socket */
    unsigned port;
    const char *path;   /* unix socket */
};

/* Output of one finished command. */
struct command {
    int status;         /* wait status; -1 if it had to be killed */
    char out[OUTPUT_MAX];
    char err[OUTPUT_MAX];
};

/* ---- files ---- */

static void path_in_test_dir(char *buf, size_t size, const char *name)
{
    int n = snprintf(buf, size, "%s/%s", test_dir, name);

    ck_assert(n > 0 && (size_t)n < size);
}

/* ---- processes ---- */

/* Runs in a forked child: preforkd with args, stdout and stderr to files. */
static void exec_preforkd(const char *out, const char *err, const char *const *args)
{
    const char *argv[16] = { "preforkd" };
    int i = 1;

    for (; args[i - 1] != NULL && i < 15; i++)
        argv[i] = args[i - 1];
    argv[i] = NULL;
    tu_exec_child(preforkd_path, (char *const *)argv, out, err);
}

/* Runs preforkd with args (NULL-terminated) to its end. */
static void run_command(struct command *c, const char *const *args)
{
    char out[PATH_MAX], err[PATH_MAX];
    pid_t test = getpid(), pid;

    path_in_test_dir(out, sizeof(out), "cmd.out");
    path_in_test_dir(err, sizeof(err), "cmd.err");
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != test)
            _exit(126);
        exec_preforkd(out, err, args);
    }
    if (!tu_wait_pid(pid, &c->status, COMMAND_TIMEOUT_SEC)) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        c->status = -1;
    }
    tu_read_file(out, c->out, sizeof(c->out));
    tu_read_file(err, c->err, sizeof(c->err));
    tu_assert_no_sanitizer_report(c->err);
}

static bool exited_with(int status, int code)
{
    return status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == code;
}

/* Writes the config (printf-style) to the test's preforkd.conf. */
static void daemon_write_conf(struct daemon *d, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void daemon_write_conf(struct daemon *d, const char *fmt, ...)
{
    va_list ap;
    FILE *f;

    path_in_test_dir(d->conf, sizeof(d->conf), "preforkd.conf");
    f = fopen(d->conf, "w");
    ck_assert_ptr_nonnull(f);
    va_start(ap, fmt);
    vfprintf(f, fmt, ap);
    va_end(ap);
    ck_assert_int_eq(fclose(f), 0);
}

/* Starts `preforkd -f -c d->conf` in a process group of its own. */
static void daemon_start(struct daemon *d)
{
    const char *args[] = { "-f", "-c", d->conf, NULL };
    pid_t test = getpid();

    path_in_test_dir(d->log, sizeof(d->log), "daemon.log");
    d->reaped = false;
    d->pid = fork();
    ck_assert_int_ge(d->pid, 0);
    if (d->pid == 0) {
        setpgid(0, 0);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != test)
            _exit(126);
        exec_preforkd(d->log, d->log, args);
    }
    /* Also here, so that the group exists before anyone signals it. */
    setpgid(d->pid, d->pid);
}

/* Waits up to timeout_sec for the master to end; true if it did. */
static bool daemon_wait_exit(struct daemon *d, double timeout_sec)
{
    if (!d->reaped && d->pid > 0)
        d->reaped = tu_wait_pid(d->pid, &d->status, timeout_sec);
    return d->reaped;
}

/* True once no process of the daemon's group is left; reaps those that
 * are ours (the master first, keeping its status). */
static bool daemon_group_gone(struct daemon *d)
{
    daemon_wait_exit(d, 0);
    while (waitpid(-d->pid, NULL, WNOHANG) > 0)
        ;
    return kill(-d->pid, 0) < 0 && errno == ESRCH;
}

/* SIGTERM to the whole group, SIGKILL after STOP_GRACE_SEC; reaps the
 * master and every worker that became ours. */
static void daemon_stop(struct daemon *d)
{
    double deadline;

    if (d->pid <= 0)
        return;
    kill(-d->pid, SIGTERM);
    deadline = tu_now() + STOP_GRACE_SEC;
    while (!daemon_group_gone(d) && tu_now() < deadline)
        usleep(10000);
    if (!daemon_group_gone(d)) {
        kill(-d->pid, SIGKILL);
        daemon_wait_exit(d, STOP_GRACE_SEC);
        deadline = tu_now() + STOP_GRACE_SEC;
        while (!daemon_group_gone(d) && tu_now() < deadline)
            usleep(10000);
    }
    daemon_wait_exit(d, 0);
    d->pid = 0;
}

static const char *daemon_log(const struct daemon *d)
{
    static char buf[OUTPUT_MAX];

    tu_read_file(d->log, buf, sizeof(buf));
    return buf;
}

static int connect_to(const struct target *t)
{
    return t->path != NULL ? tu_connect_unix(t->path) : tu_connect_tcp(t->addr, t->port);
}

/* Polls connect() until it succeeds; fails the test if the master exits
 * or READY_TIMEOUT_SEC passes. */
static void daemon_wait_ready(struct daemon *d, const struct target *t)
{
    double deadline = tu_now() + READY_TIMEOUT_SEC;
    int fd;

    while ((fd = connect_to(t)) < 0 && tu_now() < deadline) {
        ck_assert_msg(!daemon_wait_exit(d, 0), "preforkd exited (status 0x%x) before accepting:\n%s",
                      (unsigned)d->status, daemon_log(d));
        usleep(20000);
    }
    ck_assert_msg(fd >= 0, "no connection to preforkd within %.0f s: %s\n%s", READY_TIMEOUT_SEC,
                  strerror(-fd), daemon_log(d));
    close(fd);
}

/* Waits until parent has exactly want children for a moment (a run of forks
 * passes through every smaller count); returns the last count seen. */
static int wait_children(pid_t parent, int want, pid_t *pids, double timeout_sec)
{
    double deadline = tu_now() + timeout_sec;
    int n;

    for (;;) {
        n = tu_children_of(parent, pids, MAX_WORKERS);
        if (n == want) {
            usleep(300000);
            n = tu_children_of(parent, pids, MAX_WORKERS);
            if (n == want)
                return n;
        }
        if (tu_now() >= deadline)
            return n;
        usleep(20000);
    }
}

/* ---- clients ---- */

/* "hello\n", then 1 MiB that repeats only after 251 * 256 bytes, on a new
 * connection each; fails the test naming the target. */
static void assert_echo(const struct daemon *d, const struct target *t)
{
    static unsigned char big[BIG_ECHO_SIZE];
    const char *name = t->path != NULL ? t->path : t->addr;
    int fd;

    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (unsigned char)(i + i / 251);
    fd = connect_to(t);
    ck_assert_msg(fd >= 0, "connect %s port %u: %s", name, t->port, strerror(-fd));
    ck_assert_msg(tu_echo_exchange(fd, (const unsigned char *)"hello\n", 6, ECHO_TIMEOUT_SEC),
                  "\"hello\\n\" not echoed over %s\n%s", name, daemon_log(d));
    close(fd);
    fd = connect_to(t);
    ck_assert_msg(fd >= 0, "connect %s port %u: %s", name, t->port, strerror(-fd));
    ck_assert_msg(tu_echo_exchange(fd, big, sizeof(big), ECHO_TIMEOUT_SEC),
                  "1 MiB not echoed over %s\n%s", name, daemon_log(d));
    close(fd);
}

/* ---- fixtures ---- */

static void setup(void)
{
    snprintf(test_dir, sizeof(test_dir), "%s/t-XXXXXX", suite_dir);
    ck_assert_ptr_nonnull(mkdtemp(test_dir));
    /* Workers orphaned by a dead master become ours, to reap. */
    ck_assert_int_eq(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
    memset(&the_daemon, 0, sizeof(the_daemon));
}

static void teardown(void)
{
    daemon_stop(&the_daemon);
    /* Workers that exited on SIGTERM had the last word (LeakSanitizer). */
    if (the_daemon.log[0] != '\0')
        tu_assert_no_sanitizer_report(daemon_log(&the_daemon));
}

/* ---- command line ---- */

START_TEST(test_version_flag_prints_version_and_exits_0)
{
    static struct command c;
    const char *args[] = { "-V", NULL };

    run_command(&c, args);
    ck_assert_msg(exited_with(c.status, 0), "status 0x%x, stderr: %s", (unsigned)c.status, c.err);
    ck_assert_str_eq(c.out, "preforkd " PF_VERSION "\n");
}
END_TEST

START_TEST(test_help_flag_prints_usage_and_exits_0)
{
    static struct command c;
    const char *args[] = { "-h", NULL };

    run_command(&c, args);
    ck_assert_msg(exited_with(c.status, 0), "status 0x%x", (unsigned)c.status);
    ck_assert_ptr_nonnull(strstr(c.out, "usage"));
    /* Each option on a line of its own, after the synopsis. */
    ck_assert_msg(strstr(c.out, "\n  -c FILE") != NULL, "usage: %s", c.out);
    ck_assert_msg(strstr(c.out, "\n  -f ") != NULL, "usage: %s", c.out);
    ck_assert_msg(strstr(c.out, "\n  -t ") != NULL, "usage: %s", c.out);
    ck_assert_msg(strstr(c.out, "\n  -V") != NULL, "usage: %s", c.out);
    ck_assert_msg(strstr(c.out, "\n  -h") != NULL, "usage: %s", c.out);
}
END_TEST

START_TEST(test_unknown_option_exits_1_with_usage)
{
    static struct command c;
    const char *args[] = { "-Z", NULL };

    run_command(&c, args);
    ck_assert_msg(exited_with(c.status, 1), "status 0x%x", (unsigned)c.status);
    ck_assert_ptr_nonnull(strstr(c.err, "usage"));
}
END_TEST

/* -t binds nothing: it succeeds while the test itself holds the port. */
START_TEST(test_config_test_accepts_valid_config_without_binding)
{
    static struct command c;
    struct daemon *d = &the_daemon;
    int held = tu_listen_on("127.0.0.1", 0);
    const char *args[] = { "-t", "-c", d->conf, NULL };

    daemon_write_conf(d, "[daemon]\nworkers = 2\n[server]\nlisten = 127.0.0.1:%u\nhandler = echo\n",
                      tu_local_port(held));
    run_command(&c, args);
    close(held);
    ck_assert_msg(exited_with(c.status, 0), "status 0x%x, stderr: %s", (unsigned)c.status, c.err);
    ck_assert_msg(strstr(c.out, "test is successful") != NULL, "stdout: %s", c.out);
}
END_TEST

START_TEST(test_config_test_rejects_bad_backlog_naming_file_line_and_key)
{
    static struct command c;
    struct daemon *d = &the_daemon;
    const char *args[] = { "-t", "-c", d->conf, NULL };

    daemon_write_conf(d, "[daemon]\n"
                         "workers = 1\n"
                         "[server]\n"
                         "listen = 127.0.0.1:%u\n"
                         "backlog = 12x\n"
                         "handler = echo\n", tu_free_port("127.0.0.1"));
    run_command(&c, args);
    ck_assert_msg(exited_with(c.status, 1), "status 0x%x", (unsigned)c.status);
    ck_assert_msg(strstr(c.err, d->conf) != NULL, "stderr does not name the file: %s", c.err);
    ck_assert_msg(strstr(c.err, ":5:") != NULL, "stderr does not name line 5: %s", c.err);
    ck_assert_msg(strstr(c.err, "backlog") != NULL, "stderr does not name the key: %s", c.err);
    ck_assert_msg(strstr(c.err, "not a number") != NULL, "stderr: %s", c.err);
    ck_assert_ptr_null(strstr(c.out, "successful"));
}
END_TEST

START_TEST(test_config_test_on_missing_file_exits_1_naming_it)
{
    static struct command c;
    char path[PATH_MAX];
    const char *args[] = { "-t", "-c", path, NULL };

    path_in_test_dir(path, sizeof(path), "no-such.conf");
    run_command(&c, args);
    ck_assert_msg(exited_with(c.status, 1), "status 0x%x", (unsigned)c.status);
    ck_assert_msg(strstr(c.err, path) != NULL, "stderr does not name the file: %s", c.err);
    ck_assert_msg(strstr(c.err, strerror(ENOENT)) != NULL, "stderr does not say why: %s", c.err);
    ck_assert_ptr_null(strstr(c.out, "successful"));
}
END_TEST

/* ---- serving ---- */

/* One daemon on 127.0.0.1, [::1] and a unix socket; *t gets the target of
 * kind ("4", "6" or "unix"). */
static void start_echo_everywhere(struct daemon *d, const char *kind, struct target *t)
{
    static char sock[PATH_MAX];
    unsigned p4 = tu_free_port("127.0.0.1"), p6 = tu_free_port("::1");

    path_in_test_dir(sock, sizeof(sock), "s.sock");
    daemon_write_conf(d, "[daemon]\n"
                         "workers = 2\n"
                         "[server]\n"
                         "listen = 127.0.0.1:%u\n"
                         "listen = [::1]:%u\n"
                         "listen = unix:%s\n"
                         "handler = echo\n", p4, p6, sock);
    if (strcmp(kind, "4") == 0)
        *t = (struct target){ .addr = "127.0.0.1", .port = p4 };
    else if (strcmp(kind, "6") == 0)
        *t = (struct target){ .addr = "::1", .port = p6 };
    else
        *t = (struct target){ .path = sock };
    daemon_start(d);
    daemon_wait_ready(d, t);
}

START_TEST(test_echo_round_trip_over_ipv4)
{
    struct target t;

    start_echo_everywhere(&the_daemon, "4", &t);
    assert_echo(&the_daemon, &t);
}
END_TEST

START_TEST(test_echo_round_trip_over_ipv6)
{
    struct target t;

    start_echo_everywhere(&the_daemon, "6", &t);
    assert_echo(&the_daemon, &t);
}
END_TEST

START_TEST(test_echo_round_trip_over_unix_socket)
{
    struct target t;

    start_echo_everywhere(&the_daemon, "unix", &t);
    assert_echo(&the_daemon, &t);
}
END_TEST

/* Starts an echo daemon with workers on 127.0.0.1; *t is its target. */
static void start_echo_workers(struct daemon *d, int workers, struct target *t)
{
    *t = (struct target){ .addr = "127.0.0.1", .port = tu_free_port("127.0.0.1") };
    daemon_write_conf(d, "[daemon]\nworkers = %d\n[server]\nlisten = 127.0.0.1:%u\nhandler = echo\n",
                      workers, t->port);
    daemon_start(d);
    daemon_wait_ready(d, t);
}

START_TEST(test_workers_2_runs_two_worker_processes)
{
    struct daemon *d = &the_daemon;
    struct target t;
    pid_t pids[MAX_WORKERS];
    int n;

    start_echo_workers(d, 2, &t);
    n = wait_children(d->pid, 2, pids, READY_TIMEOUT_SEC);
    ck_assert_msg(n == 2, "master %d has %d children, expected 2\n%s", (int)d->pid, n,
                  daemon_log(d));
}
END_TEST

START_TEST(test_port_in_use_fails_with_exit_1_and_leaves_nothing_running)
{
    struct daemon *d = &the_daemon;
    int held = tu_listen_on("127.0.0.1", 0);
    char listen_value[64];
    const char *log;

    snprintf(listen_value, sizeof(listen_value), "127.0.0.1:%u", tu_local_port(held));
    daemon_write_conf(d, "[daemon]\nworkers = 2\n[server]\nlisten = %s\nhandler = echo\n",
                      listen_value);
    daemon_start(d);
    ck_assert_msg(daemon_wait_exit(d, READY_TIMEOUT_SEC), "preforkd still runs on a port in use");
    close(held);
    log = daemon_log(d);
    ck_assert_msg(exited_with(d->status, 1), "status 0x%x\n%s", (unsigned)d->status, log);
    ck_assert_msg(strstr(log, listen_value) != NULL, "stderr does not name %s: %s", listen_value, log);
    ck_assert_msg(strstr(log, "Address already in use") != NULL, "stderr: %s", log);
    ck_assert_msg(daemon_group_gone(d), "processes of preforkd's group are still running");
}
END_TEST

START_TEST(test_http_root_missing_is_refused_with_exit_1_naming_root)
{
    struct daemon *d = &the_daemon;
    const char *log;

    daemon_write_conf(d, "[daemon]\nworkers = 1\n[server]\nlisten = 127.0.0.1:%u\nhandler = http\n"
                      "[http]\nroot = /nonexistent/preforkd-www\n", tu_free_port("127.0.0.1"));
    daemon_start(d);
    ck_assert_msg(daemon_wait_exit(d, READY_TIMEOUT_SEC), "preforkd serves a missing root");
    log = daemon_log(d);
    ck_assert_msg(exited_with(d->status, 1), "status 0x%x\n%s", (unsigned)d->status, log);
    ck_assert_msg(strstr(log, "root") != NULL && strstr(log, "/nonexistent/preforkd-www") != NULL &&
                  strstr(log, "No such file or directory") != NULL,
                  "stderr does not name the root and the cause: %s", log);
    ck_assert_msg(daemon_group_gone(d), "processes of preforkd's group are still running");
}
END_TEST

START_TEST(test_worker_killed_with_sigkill_is_replaced)
{
    struct daemon *d = &the_daemon;
    struct target t;
    pid_t before[MAX_WORKERS], after[MAX_WORKERS], victim, fresh = 0;
    double deadline;
    int n;

    start_echo_workers(d, 2, &t);
    n = wait_children(d->pid, 2, before, READY_TIMEOUT_SEC);
    ck_assert_int_eq(n, 2);
    victim = before[0];
    ck_assert_int_eq(kill(victim, SIGKILL), 0);

    deadline = tu_now() + RESPAWN_TIMEOUT_SEC;
    do {
        usleep(20000);
        n = tu_children_of(d->pid, after, MAX_WORKERS);
    } while ((n != 2 || tu_pid_in(victim, after, n)) && tu_now() < deadline);
    ck_assert_msg(n == 2 && !tu_pid_in(victim, after, n),
                  "%d children %.1f s after killing worker %d\n%s", n, RESPAWN_TIMEOUT_SEC,
                  (int)victim, daemon_log(d));
    for (int i = 0; i < n; i++)
        if (!tu_pid_in(after[i], before, 2))
            fresh = after[i];
    ck_assert_msg(fresh != 0, "no new worker pid");
    ck_assert(tu_pid_in(before[1], after, n));
    /* Every connection works, whichever worker accepts it. */
    for (int i = 0; i < 4; i++) {
        int fd = connect_to(&t);

        ck_assert_int_ge(fd, 0);
        ck_assert_msg(tu_echo_exchange(fd, (const unsigned char *)"hello\n", 6, ECHO_TIMEOUT_SEC),
                      "no echo after a worker restart\n%s", daemon_log(d));
        close(fd);
    }
}
END_TEST

/* DESIGN.md: "If the master dies, its workers exit by themselves". */
START_TEST(test_workers_exit_when_master_is_killed)
{
    struct daemon *d = &the_daemon;
    struct target t;
    pid_t pids[MAX_WORKERS];
    bool gone = false;
    double deadline;
    int n, fd;

    start_echo_workers(d, 2, &t);
    n = wait_children(d->pid, 2, pids, READY_TIMEOUT_SEC);
    ck_assert_int_eq(n, 2);
    kill(d->pid, SIGKILL);
    ck_assert(daemon_wait_exit(d, STOP_GRACE_SEC));
    /* The workers are ours now (subreaper): gone once reaped. */
    deadline = tu_now() + 2.0;
    while (!(gone = daemon_group_gone(d)) && tu_now() < deadline)
        usleep(20000);
    if (!gone)
        daemon_stop(d);
    ck_assert_msg(gone, "workers still run 2 s after their master was killed\n%s", daemon_log(d));
    fd = connect_to(&t);
    if (fd >= 0)
        close(fd);
    ck_assert_msg(fd < 0, "a connection was accepted with the master and workers gone");
}
END_TEST

/* SIGTERM to the master alone stops the master and every worker. */
START_TEST(test_sigterm_to_master_stops_everything)
{
    struct daemon *d = &the_daemon;
    struct target t;
    pid_t pids[MAX_WORKERS];
    bool gone = false;
    double deadline;
    int fd;

    start_echo_workers(d, 2, &t);
    ck_assert_int_eq(wait_children(d->pid, 2, pids, READY_TIMEOUT_SEC), 2);
    kill(d->pid, SIGTERM);
    ck_assert_msg(daemon_wait_exit(d, STOP_GRACE_SEC), "master still runs 2 s after SIGTERM");
    /* DESIGN.md asks for exit status 0; the interim serve.c master dies of
     * the signal. Tighten this to exited_with(d->status, 0) with master.c. */
    ck_assert_msg(exited_with(d->status, 0) ||
                  (WIFSIGNALED(d->status) && WTERMSIG(d->status) == SIGTERM),
                  "master status 0x%x after SIGTERM", (unsigned)d->status);
    deadline = tu_now() + 2.0;
    while (!(gone = daemon_group_gone(d)) && tu_now() < deadline)
        usleep(20000);
    if (!gone)
        daemon_stop(d);
    ck_assert_msg(gone, "workers still run 2 s after SIGTERM to the master\n%s", daemon_log(d));
    fd = connect_to(&t);
    if (fd >= 0)
        close(fd);
    ck_assert_msg(fd < 0, "a connection was accepted after shutdown");
}
END_TEST

static Suite *daemon_suite(void)
{
    Suite *s = suite_create("daemon");
    TCase *tc = tcase_create("command_line");

    tcase_set_timeout(tc, TCASE_TIMEOUT_SEC);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_version_flag_prints_version_and_exits_0);
    tcase_add_test(tc, test_help_flag_prints_usage_and_exits_0);
    tcase_add_test(tc, test_unknown_option_exits_1_with_usage);
    tcase_add_test(tc, test_config_test_accepts_valid_config_without_binding);
    tcase_add_test(tc, test_config_test_rejects_bad_backlog_naming_file_line_and_key);
    tcase_add_test(tc, test_config_test_on_missing_file_exits_1_naming_it);
    suite_add_tcase(s, tc);

    tc = tcase_create("serving");
    tcase_set_timeout(tc, TCASE_TIMEOUT_SEC);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_echo_round_trip_over_ipv4);
    tcase_add_test(tc, test_echo_round_trip_over_ipv6);
    tcase_add_test(tc, test_echo_round_trip_over_unix_socket);
    tcase_add_test(tc, test_workers_2_runs_two_worker_processes);
    tcase_add_test(tc, test_port_in_use_fails_with_exit_1_and_leaves_nothing_running);
    tcase_add_test(tc, test_http_root_missing_is_refused_with_exit_1_naming_root);
    tcase_add_test(tc, test_worker_killed_with_sigkill_is_replaced);
    tcase_add_test(tc, test_workers_exit_when_master_is_killed);
    tcase_add_test(tc, test_sigterm_to_master_stops_everything);
    suite_add_tcase(s, tc);
    return s;
}

/* A test that failed half-way exits without teardown; its master died with
 * it (PR_SET_PDEATHSIG) but workers that outlive a master are exactly what
 * some tests look for. Every process still running with a config from
 * suite_dir on its command line is ours: kill it by pid. */
static int kill_leftovers(void)
{
    return tu_kill_matching(suite_dir);
}

int main(void)
{
    int failed, n_left;

    preforkd_path = tu_preforkd_path("check_daemon");
    if (preforkd_path == NULL)
        return 1;
    if (mkdtemp(suite_dir) == NULL) {
        perror("check_daemon: mkdtemp");
        return 1;
    }
    failed = tu_run_suite(daemon_suite());
    n_left = kill_leftovers();
    if (n_left > 0) {
        fprintf(stderr, "check_daemon: killed %d preforkd process%s left running by failed tests\n",
                n_left, n_left == 1 ? "" : "es");
        failed++;
    }
    tu_rmtree(suite_dir);
    return failed == 0 ? 0 : 1;
}

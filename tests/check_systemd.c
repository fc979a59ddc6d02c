/* check_systemd: the daemon as systemd runs it: the sd_notify messages it
 * sends and their order, the watchdog, and socket activation through the
 * real systemd-socket-activate. */
#define _GNU_SOURCE
#include <check.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "daemonutil.h"
#include "testutil.h"

#define SOCKET_ACTIVATE "/usr/bin/systemd-socket-activate"
#define MSG_TIMEOUT_SEC 5.0

/* Set up by main(): the daemon under test and the suite's temp dir. */
static struct du_suite suite;

struct run {
    pid_t pid;
    int notify;                 /* our end of NOTIFY_SOCKET, or -1 */
    unsigned port;
    char conf[128], log[128];
};

static void write_conf(struct run *r, const char *extra)
{
    FILE *f;

    snprintf(r->conf, sizeof(r->conf), "%s/p.conf", suite.dir);
    snprintf(r->log, sizeof(r->log), "%s/p.log", suite.dir);
    f = fopen(r->conf, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f, "[daemon]\nworkers = 2\n%s[server]\nlisten = 127.0.0.1:%u\nhandler = echo\n",
            extra, r->port);
    ck_assert_int_eq(fclose(f), 0);
}

static int notify_socket(const char *path)
{
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);

    ck_assert_int_ge(fd, 0);
    snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
    unlink(path);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
    return fd;
}

/* Starts preforkd (through systemd-socket-activate when activate) with the
 * given extra environment ("NAME=VALUE", NULL-terminated). */
static void start(struct run *r, bool activate, const char *const *env)
{
    r->pid = fork();
    ck_assert_int_ge(r->pid, 0);
    if (r->pid == 0) {
        char listen[64];
        char *plain[] = { (char *)suite.preforkd, "-f", "-c", r->conf, NULL };
        char *sa[] = { SOCKET_ACTIVATE, "-l", listen, (char *)suite.preforkd, "-f", "-c", r->conf, NULL };

        snprintf(listen, sizeof(listen), "127.0.0.1:%u", r->port);
        for (; env != NULL && *env != NULL; env++)
            putenv((char *)*env);
        setpgid(0, 0);
        tu_exec_child(activate ? SOCKET_ACTIVATE : suite.preforkd, activate ? sa : plain, r->log, r->log);
    }
}

static int stop(struct run *r)
{
    int status = -1;

    kill(r->pid, SIGTERM);
    if (!tu_wait_pid(r->pid, &status, 3.0)) {
        kill(-r->pid, SIGKILL);
        tu_wait_pid(r->pid, &status, 2.0);
    }
    if (r->notify >= 0)
        close(r->notify);
    return status;
}

/* The next message that is not only a watchdog ping or a status update. */
static bool next_event(struct run *r, char *buf, size_t len)
{
    double deadline = tu_now() + MSG_TIMEOUT_SEC;

    while (tu_now() < deadline) {
        struct timeval tv = { .tv_sec = 0, .tv_usec = 100000 };
        ssize_t n;

        setsockopt(r->notify, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        n = recv(r->notify, buf, len - 1, 0);
        if (n <= 0)
            continue;
        buf[n] = '\0';
        if (strncmp(buf, "WATCHDOG=1\n", 11) != 0 && strncmp(buf, "STATUS=", 7) != 0)
            return true;
    }
    return false;
}

static bool echo_once(unsigned port)
{
    char buf[5];
    int fd = tu_connect_tcp("127.0.0.1", port);
    bool ok;

    if (fd < 0)
        return false;
    ok = tu_write_all(fd, "ping", 4) && tu_read_full(fd, buf, 4, 2000) == 4 &&
         memcmp(buf, "ping", 4) == 0;
    close(fd);
    return ok;
}

static uint64_t monotonic_usec(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

START_TEST(test_notify_ready_reloading_ready_stopping_in_order)
{
    struct run r = { .port = tu_free_port("127.0.0.1") };
    char path[128], env[160], msg[1024];
    const char *envs[] = { env, NULL };
    unsigned long long mono;
    uint64_t before, after;

    snprintf(path, sizeof(path), "%s/notify", suite.dir);
    snprintf(env, sizeof(env), "NOTIFY_SOCKET=%s", path);
    r.notify = notify_socket(path);
    write_conf(&r, "");
    start(&r, false, envs);

    ck_assert_msg(next_event(&r, msg, sizeof(msg)), "no READY=1");
    ck_assert_msg(strncmp(msg, "READY=1\n", 8) == 0, "first message: %s", msg);
    ck_assert_ptr_nonnull(strstr(msg, "STATUS=2 workers, generation 1"));
    /* READY=1 means every worker accepts: a client is served at once. */
    ck_assert(echo_once(r.port));

    before = monotonic_usec();
    kill(r.pid, SIGHUP);
    ck_assert(next_event(&r, msg, sizeof(msg)));
    after = monotonic_usec();
    ck_assert_msg(sscanf(msg, "RELOADING=1\nMONOTONIC_USEC=%llu", &mono) == 1, "after HUP: %s", msg);
    ck_assert(mono >= before && mono <= after);
    ck_assert(next_event(&r, msg, sizeof(msg)));
    ck_assert_msg(strncmp(msg, "READY=1\n", 8) == 0 && strstr(msg, "generation 2"), "%s", msg);

    /* A broken config: systemd still hears READY=1, with the reason. */
    write_conf(&r, "backlog = 12x\n");
    kill(r.pid, SIGHUP);
    ck_assert(next_event(&r, msg, sizeof(msg)));
    ck_assert_msg(strncmp(msg, "RELOADING=1\n", 12) == 0, "%s", msg);
    ck_assert(next_event(&r, msg, sizeof(msg)));
    ck_assert_msg(strncmp(msg, "READY=1\n", 8) == 0 && strstr(msg, "reload failed") &&
                  strstr(msg, "backlog"), "%s", msg);
    ck_assert(echo_once(r.port));

    kill(r.pid, SIGTERM);
    ck_assert(next_event(&r, msg, sizeof(msg)));
    ck_assert_msg(strncmp(msg, "STOPPING=1", 10) == 0, "%s", msg);
    ck_assert_int_eq(stop(&r), 0);
}
END_TEST

static int count_pings(struct run *r, double sec)
{
    double deadline = tu_now() + sec;
    char buf[512];
    int n = 0;

    while (tu_now() < deadline) {
        struct timeval tv = { .tv_sec = 0, .tv_usec = 50000 };
        ssize_t len;

        setsockopt(r->notify, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        len = recv(r->notify, buf, sizeof(buf) - 1, 0);
        if (len > 0) {
            buf[len] = '\0';
            n += strncmp(buf, "WATCHDOG=1\n", 11) == 0;
        }
    }
    return n;
}

START_TEST(test_watchdog_pings_at_half_the_interval_only_for_us)
{
    struct run r = { .port = tu_free_port("127.0.0.1") };
    char path[128], env[160], msg[1024];
    const char *envs[] = { env, "WATCHDOG_USEC=300000", NULL };
    const char *other[] = { env, "WATCHDOG_USEC=300000", "WATCHDOG_PID=1", NULL };
    int n;

    snprintf(path, sizeof(path), "%s/notify", suite.dir);
    snprintf(env, sizeof(env), "NOTIFY_SOCKET=%s", path);
    r.notify = notify_socket(path);
    write_conf(&r, "");
    start(&r, false, envs);
    ck_assert(next_event(&r, msg, sizeof(msg)));
    /* 300 ms: a ping every 150 ms, so about 8 in 1.2 s. */
    n = count_pings(&r, 1.2);
    ck_assert_msg(n >= 5 && n <= 10, "%d pings in 1.2 s", n);
    ck_assert_int_eq(stop(&r), 0);

    /* WATCHDOG_PID names another process: no pings. */
    r.notify = notify_socket(path);
    start(&r, false, other);
    ck_assert(next_event(&r, msg, sizeof(msg)));
    ck_assert_int_eq(count_pings(&r, 0.8), 0);
    ck_assert_int_eq(stop(&r), 0);
}
END_TEST

/* A client loop in a child: connect and echo until told to stop; exits
 * with the number of failures (capped). */
static pid_t client_loop(unsigned port, double sec)
{
    pid_t pid = fork();

    if (pid == 0) {
        double deadline = tu_now() + sec;
        int fails = 0, n = 0;

        while (tu_now() < deadline) {
            fails += !echo_once(port);
            n++;
        }
        _exit(n < 20 ? 250 : fails > 200 ? 200 : fails);
    }
    return pid;
}

START_TEST(test_socket_activation_serves_and_survives_hup)
{
    struct run r = { .port = tu_free_port("127.0.0.1"), .notify = -1 };
    char log[8192];
    int status;
    pid_t cl;

    if (access(SOCKET_ACTIVATE, X_OK) != 0)
        ck_abort_msg(SOCKET_ACTIVATE " is missing: `make deps` installs systemd");
    write_conf(&r, "");
    start(&r, true, NULL);
    /* systemd-socket-activate execs preforkd on the first connection,
     * which waits in the passed socket's queue meanwhile. */
    for (double t = tu_now() + 3; tu_now() < t && tu_connect_tcp("127.0.0.1", r.port) < 0;)
        usleep(20000);
    ck_assert(echo_once(r.port));
    tu_read_file(r.log, log, sizeof(log));
    ck_assert_msg(strstr(log, "using the socket systemd passed") != NULL, "%s", log);

    cl = client_loop(r.port, 1.5);
    for (int i = 0; i < 3; i++) {
        usleep(300000);
        kill(r.pid, SIGHUP);
    }
    ck_assert(tu_wait_pid(cl, &status, 10));
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "client loop: %d failures during HUPs", WEXITSTATUS(status));
    ck_assert(echo_once(r.port));
    ck_assert_int_eq(stop(&r), 0);
}
END_TEST

static Suite *systemd_suite(void)
{
    Suite *s = suite_create("systemd");
    TCase *tc = tu_add_tcase(s, "notify", 30);

    tcase_add_test(tc, test_notify_ready_reloading_ready_stopping_in_order);
    tcase_add_test(tc, test_watchdog_pings_at_half_the_interval_only_for_us);
    tc = tu_add_tcase(s, "activation", 30);
    tcase_add_test(tc, test_socket_activation_serves_and_survives_hup);
    return s;
}

int main(void)
{
    return du_main(&suite, "check_systemd", systemd_suite);
}

/*
 * check_master: the supervising master, seen from outside. Each test runs
 * the built daemon ($PREFORKD, default build/preforkd, from the repo root)
 * with an echo config on 127.0.0.1 and checks what an operator sees: ps
 * titles, worker pids under the master, refused or served connections,
 * exit statuses, the pidfile and log lines, around kill -9, HUP, QUIT,
 * TERM, TTIN/TTOU, `preforkd -s` and privilege dropping.
 *
 * Every daemon runs in a process group of its own (a daemonized one in its
 * own session), recorded in the suite's dir; the test process is a child
 * subreaper, so workers orphaned by a dead master, and a master whose
 * launcher exited, become its children and are reaped here. A test that
 * fails exits without teardown: its masters get SIGKILL (PR_SET_PDEATHSIG),
 * and main() kills and counts whatever is left in the recorded groups
 * (daemonutil.h).
 */
#define _GNU_SOURCE     /* strcasestr */
#include <check.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemonutil.h"
#include "echoclient.h"
#include "testutil.h"

#define TCASE_TIMEOUT_SEC 30
/* A daemon that does not accept connections by then failed to start. */
#define READY_TIMEOUT_SEC 5.0
/* A one-shot command (-s, a second instance, a launcher) that runs longer is hung. */
#define COMMAND_TIMEOUT_SEC 5.0
/* Teardown: SIGTERM first, SIGKILL after this. */
#define STOP_GRACE_SEC 2.0
/* graceful_timeout in the generated configs, short to keep the suite fast. */
#define GRACEFUL_TIMEOUT_SEC 2
/* DESIGN.md's reload: old workers are gone by graceful_timeout; 2 s for the rest. */
#define RELOAD_TIMEOUT_SEC (GRACEFUL_TIMEOUT_SEC + 2.0)
/* A dead worker's replacement, after the master's restart backoff. */
#define RESPAWN_TIMEOUT_SEC 5.0
#define CONNECT_TIMEOUT_MS 2000
#define MAX_LISTENERS 2
#define MAX_DAEMONS 2

static const char master_title_prefix[] = "preforkd: master process ";
static const char worker_title_prefix[] = "preforkd: worker process #";

/* Set up by main(). */
static struct du_suite suite;
/* This test's directory: configs, logs, pidfile, outputs. */
static char test_dir[PATH_MAX];

/* The daemons of the running test, stopped by the teardown of a passing test. */
static struct du_daemon daemons[MAX_DAEMONS];

/* A generated config: [daemon] workers, graceful_timeout, pidfile (the
 * test's p.pid), then daemon_extra; [server] handler = echo, a listen line
 * per non-zero port, then server_extra. */
struct conf {
    int workers;
    unsigned graceful_timeout_sec;
    unsigned ports[MAX_LISTENERS];
    const char *daemon_extra;   /* whole lines, or NULL */
    const char *server_extra;   /* whole lines, or NULL */
};

/* ---- files ---- */

static bool file_exists(const char *path)
{
    return access(path, F_OK) == 0;
}

/* 1-based number of the line of path that holds needle; 0 if none. */
static int line_of(const char *path, const char *needle)
{
    static char text[DU_OUTPUT_MAX];
    const char *hit;
    int line = 1;

    tu_read_file(path, text, sizeof(text));
    hit = strstr(text, needle);
    if (hit == NULL)
        return 0;
    for (const char *p = text; p < hit; p++)
        line += *p == '\n';
    return line;
}

/* True if text holds n as a whole number (no digit right before or after). */
static bool has_number(const char *text, long n)
{
    char digits[32];
    size_t len = (size_t)snprintf(digits, sizeof(digits), "%ld", n);

    for (const char *p = strstr(text, digits); p != NULL; p = strstr(p + 1, digits))
        if ((p == text || !isdigit((unsigned char)p[-1])) && !isdigit((unsigned char)p[len]))
            return true;
    return false;
}

/* ---- processes ---- */

static bool pid_exists(pid_t pid)
{
    return kill(pid, 0) == 0 || errno != ESRCH;
}

/* SIGKILLs and reaps every process that is still our child. */
static void kill_our_children(void)
{
    pid_t pids[DU_MAX_WORKERS];
    double deadline = tu_now() + STOP_GRACE_SEC;
    int n;

    while ((n = tu_children_of(getpid(), pids, DU_MAX_WORKERS)) > 0 && tu_now() < deadline) {
        for (int i = 0; i < n && i < DU_MAX_WORKERS; i++)
            kill(pids[i], SIGKILL);
        usleep(10000);
        while (waitpid(-1, NULL, WNOHANG) > 0)
            ;
    }
    while (waitpid(-1, NULL, WNOHANG) > 0)
        ;
}

/* The next free daemon slot of this test, with its file names set. */
static struct du_daemon *daemon_new(void)
{
    return du_next(daemons, MAX_DAEMONS, test_dir);
}

/* Writes c as d's config. */
static void write_conf(struct du_daemon *d, const struct conf *c)
{
    char listen[MAX_LISTENERS * 48] = "";
    size_t len = 0;

    for (int i = 0; i < MAX_LISTENERS; i++)
        if (c->ports[i] != 0)
            len += (size_t)snprintf(listen + len, sizeof(listen) - len,
                                    "listen = 127.0.0.1:%u\n", c->ports[i]);
    du_write_conf(d, "[daemon]\nworkers = %d\ngraceful_timeout = %u\npidfile = %s\n%s"
                     "[server]\nhandler = echo\n%s%s",
                  c->workers, c->graceful_timeout_sec, d->pidfile,
                  c->daemon_extra != NULL ? c->daemon_extra : "", listen,
                  c->server_extra != NULL ? c->server_extra : "");
    if (d->port == 0)
        d->port = c->ports[0];
}

/* An echo config with this many workers on a fresh port. */
static struct conf echo_conf(int workers)
{
    return (struct conf){ .workers = workers, .graceful_timeout_sec = GRACEFUL_TIMEOUT_SEC,
                          .ports = { tu_free_port("127.0.0.1") } };
}

/* `preforkd -c d->conf -s signal`; fails the test unless it exits with code. */
static void run_signal_command(const struct du_daemon *d, const char *signal_name, int code)
{
    static struct du_command c;
    const char *args[] = { "-c", d->conf, "-s", signal_name, NULL };

    du_run(&suite, test_dir, &c, args, COMMAND_TIMEOUT_SEC);
    ck_assert_msg(tu_exited_with(c.status, code), "preforkd -s %s: status 0x%x, expected exit %d\n"
                  "stdout: %s\nstderr: %s", signal_name, (unsigned)c.status, code, c.out, c.err);
}

/* The pid in a pidfile if it holds exactly "<pid>\n"; 0 otherwise. */
static pid_t pidfile_pid(const char *path)
{
    char text[64], expect[32];
    long pid;

    tu_read_file(path, text, sizeof(text));
    pid = strtol(text, NULL, 10);
    snprintf(expect, sizeof(expect), "%ld\n", pid);
    return pid > 0 && strcmp(text, expect) == 0 ? (pid_t)pid : 0;
}

/* Writes c and starts a foreground daemon that accepts on c->ports[0]. */
static struct du_daemon *start_daemon(const struct conf *c)
{
    struct du_daemon *d = daemon_new();

    write_conf(d, c);
    du_start(&suite, d, READY_TIMEOUT_SEC);
    return d;
}

/* Starts an echo daemon with this many workers and waits for them; ws gets them. */
static struct du_daemon *start_workers(struct conf *c, struct du_worker *ws)
{
    struct du_daemon *d = start_daemon(c);

    du_assert_workers(d, &(struct du_expect){ .n = c->workers }, ws, READY_TIMEOUT_SEC, "start");
    return d;
}

/* ---- fixtures ---- */

static void setup(void)
{
    du_test_begin(&suite, test_dir, sizeof(test_dir));
    memset(daemons, 0, sizeof(daemons));
}

static void teardown(void)
{
    du_stop_all(daemons, MAX_DAEMONS, STOP_GRACE_SEC);
    kill_our_children();
    /* Workers that exited on SIGTERM had the last word (LeakSanitizer). */
    for (int i = 0; i < MAX_DAEMONS; i++)
        if (daemons[i].log[0] != '\0')
            tu_assert_no_sanitizer_report(du_log(&daemons[i]));
}

/* ---- titles ---- */

START_TEST(test_titles_show_master_command_line_and_worker_task_ids)
{
    struct du_worker ws[DU_MAX_WORKERS];
    struct conf c = echo_conf(3);
    struct du_daemon *d = start_workers(&c, ws);
    char title[4096], expect[sizeof(master_title_prefix) + sizeof(d->cmdline)];

    snprintf(expect, sizeof(expect), "%s%s", master_title_prefix, d->cmdline);
    tu_proc_cmdline(d->pid, title, sizeof(title));
    ck_assert_str_eq(title, expect);
    for (int i = 0; i < 3; i++) {
        char want[64];

        snprintf(want, sizeof(want), "%s%d", worker_title_prefix, i);
        ck_assert_msg(strncmp(ws[i].title, want, strlen(want)) == 0, "worker title \"%s\"",
                      ws[i].title);
    }
}
END_TEST

/* ---- restarts ---- */

START_TEST(test_sigkill_of_worker_1_is_replaced_within_1s_and_no_connect_fails)
{
    struct du_worker before[DU_MAX_WORKERS], after[DU_MAX_WORKERS];
    struct conf c = echo_conf(3);
    struct du_daemon *d = start_workers(&c, before);
    struct ec_load cl;
    bool replaced;
    int n;

    ec_load_start(&cl, d->port);
    usleep(300000);
    ck_assert_int_eq(kill(before[1].pid, SIGKILL), 0);
    replaced = du_wait_workers(d, &(struct du_expect){
                                   .n = 3, .keep = (struct du_worker[]){ before[0], before[2] },
                                   .n_keep = 2, .gone = &before[1], .n_gone = 1 },
                               after, &n, 1.0);
    usleep(300000);
    ec_load_stop(&cl);
    ck_assert_msg(replaced, "1 s after kill -9 of #1 (pid %d), expected a new #1 and #0, #2 kept "
                  "(%d, %d); master has: %s\n%s", (int)before[1].pid, (int)before[0].pid,
                  (int)before[2].pid, du_describe_workers(after, n), du_log_tail(d));
    /* Only a connection the killed worker had accepted may fail: at most
     * one in flight per client thread. */
    ec_assert_load(d, &cl, EC_LOAD_THREADS);
}
END_TEST

START_TEST(test_worker_stopped_past_worker_timeout_is_killed_and_replaced)
{
    struct du_worker before[DU_MAX_WORKERS], after[DU_MAX_WORKERS];
    struct conf c = echo_conf(1);
    struct du_daemon *d;

    c.daemon_extra = "worker_timeout = 1\n";
    d = start_workers(&c, before);
    ck_assert_int_eq(kill(before[0].pid, SIGSTOP), 0);
    du_assert_workers(d, &(struct du_expect){ .n = 1, .gone = before, .n_gone = 1 }, after, 3.0,
                      "SIGSTOP of #0 with worker_timeout = 1");
    ck_assert_msg(!pid_exists(before[0].pid), "the stopped worker %d still exists (not reaped)",
                  (int)before[0].pid);
    ec_assert_serving(d, d->port, "after the stopped worker was replaced");
}
END_TEST

START_TEST(test_crash_loop_past_max_restarts_stops_master_with_error)
{
    struct du_worker ws[DU_MAX_WORKERS], killed[4];
    struct conf c = echo_conf(1);
    struct du_daemon *d;
    const char *log;

    c.daemon_extra = "max_restarts = 3\nrestart_window = 60\n";
    d = start_workers(&c, ws);
    for (int i = 0; i < 4; i++) {
        if (i > 0)
            du_assert_workers(d, &(struct du_expect){ .n = 1, .gone = killed, .n_gone = i }, ws,
                              RESPAWN_TIMEOUT_SEC, "restart after a kill -9");
        killed[i] = ws[0];
        ck_assert_int_eq(kill(ws[0].pid, SIGKILL), 0);
    }
    ck_assert_msg(du_wait_exit(d, RESPAWN_TIMEOUT_SEC),
                  "master still runs %.0f s after the 4th death with max_restarts = 3; "
                  "children: %s\n%s",
                  RESPAWN_TIMEOUT_SEC, du_describe_workers(ws, du_workers_of(d->pid, ws)),
                  du_log_tail(d));
    log = du_log_tail(d);
    ck_assert_msg(WIFEXITED(d->status) && WEXITSTATUS(d->status) != 0,
                  "master status 0x%x, expected a non-zero exit\n%s", (unsigned)d->status, log);
    ck_assert_msg(strstr(log, "max_restarts") != NULL, "the log does not say max_restarts:\n%s",
                  log);
    ck_assert_msg(du_wait_group_gone(d, 1.0), "workers outlive the master that gave up");
}
END_TEST

/* kill -9 of the master: every worker in ws (n of them) must be gone
 * within 2 s, by itself. */
static void assert_workers_exit_when_master_is_killed(struct du_daemon *d,
                                                      const struct du_worker *ws, int n)
{
    char left[512] = "";
    size_t len = 0;

    ck_assert_int_eq(kill(d->pid, SIGKILL), 0);
    ck_assert(du_wait_exit(d, STOP_GRACE_SEC));
    /* They are ours now (subreaper): gone once reaped. */
    if (du_wait_group_gone(d, 2.0))
        return;
    for (int i = 0; i < n && len < sizeof(left); i++)
        if (pid_exists(ws[i].pid))
            len += (size_t)snprintf(left + len, sizeof(left) - len, " #%d (pid %d)", ws[i].id,
                                    (int)ws[i].pid);
    ck_abort_msg("2 s after kill -9 of the master, still running:%s\n%s", left,
                 du_log_tail(d));
}

START_TEST(test_workers_exit_within_2s_when_master_is_killed)
{
    struct du_worker ws[DU_MAX_WORKERS];
    struct conf c = echo_conf(3);
    struct du_daemon *d = start_workers(&c, ws);

    assert_workers_exit_when_master_is_killed(d, ws, 3);
}
END_TEST

/* ---- reload ---- */

START_TEST(test_five_hups_under_load_replace_every_worker_without_a_failure)
{
    struct du_worker before[DU_MAX_WORKERS], after[DU_MAX_WORKERS];
    struct conf c = echo_conf(2);
    struct du_daemon *d = start_workers(&c, before);
    struct ec_load cl;
    bool renewed;
    int n, fd, session_failed_at = 0;

    ec_load_start(&cl, d->port);
    /* Accepted by an old worker: it must serve it on while it drains. */
    fd = ec_open_session(d);
    usleep(200000);
    for (int i = 1; i <= 5; i++) {
        kill(d->pid, SIGHUP);
        for (int j = 0; j < 3; j++) {
            usleep(100000);
            if (session_failed_at == 0 && !ec_session_echoes(fd, 3 * i + j))
                session_failed_at = i;
        }
    }
    close(fd);
    renewed = du_wait_workers(d, &(struct du_expect){ .n = 2, .gone = before, .n_gone = 2 },
                              after, &n, RELOAD_TIMEOUT_SEC);
    ec_load_stop(&cl);
    ck_assert_msg(!du_wait_exit(d, 0), "master exited (status 0x%x) during reloads\n%s",
                  (unsigned)d->status, du_log_tail(d));
    ck_assert_msg(renewed, "%.0f s after 5 HUPs, expected 2 new workers and no old one; was "
                  "#0 pid %d, #1 pid %d; master has: %s\n%s", RELOAD_TIMEOUT_SEC,
                  (int)before[0].pid, (int)before[1].pid, du_describe_workers(after, n),
                  du_log_tail(d));
    ck_assert_msg(session_failed_at == 0, "a session open across the HUPs stopped echoing after "
                  "HUP %d (graceful_timeout = %d)\n%s", session_failed_at, GRACEFUL_TIMEOUT_SEC,
                  du_log_tail(d));
    ec_assert_load(d, &cl, 0);
}
END_TEST

START_TEST(test_hup_with_bad_config_keeps_workers_and_logs_file_line_and_key)
{
    struct du_worker before[DU_MAX_WORKERS], after[DU_MAX_WORKERS];
    struct conf c = echo_conf(2);
    struct du_daemon *d = start_workers(&c, before);
    char where[32];
    size_t offset;
    const char *log;
    int line;

    c.server_extra = "backlog = 12x\n";
    write_conf(d, &c);
    line = line_of(d->conf, "backlog = 12x");
    offset = du_log_size(d);
    ck_assert_int_eq(kill(d->pid, SIGHUP), 0);
    usleep(1000000);
    ck_assert_msg(!du_wait_exit(d, 0), "master exited (status 0x%x) on a bad config\n%s",
                  (unsigned)d->status, du_log_tail(d));
    du_assert_workers(d, &(struct du_expect){ .n = 2, .keep = before, .n_keep = 2 }, after, 0,
                      "1 s after HUP with a bad config");
    ec_assert_serving(d, d->port, "after HUP with a bad config");
    log = du_log_since(d, offset);
    snprintf(where, sizeof(where), ":%d:", line);
    ck_assert_msg(strstr(log, d->conf) != NULL, "the log does not name %s:\n%s", d->conf, log);
    ck_assert_msg(strstr(log, where) != NULL, "the log does not name line %d:\n%s", line, log);
    ck_assert_msg(strstr(log, "backlog") != NULL, "the log does not name backlog:\n%s", log);
    ck_assert_msg(strcasestr(log, "reload") != NULL, "the log does not say reload:\n%s", log);
}
END_TEST

/* Rewrites d's config as c, sends HUP and waits for a new generation of
 * c->workers with every worker of old (n_old) gone. */
static void reload_and_wait(struct du_daemon *d, const struct conf *c, const struct du_worker *old,
                            int n_old, struct du_worker *ws)
{
    write_conf(d, c);
    ck_assert_int_eq(kill(d->pid, SIGHUP), 0);
    du_assert_workers(d, &(struct du_expect){ .n = c->workers, .gone = old, .n_gone = n_old }, ws,
                      RELOAD_TIMEOUT_SEC, "HUP");
}

START_TEST(test_hup_with_workers_3_instead_of_2_runs_3_new_workers)
{
    struct du_worker before[DU_MAX_WORKERS], after[DU_MAX_WORKERS];
    struct conf c = echo_conf(2);
    struct du_daemon *d = start_workers(&c, before);

    c.workers = 3;
    reload_and_wait(d, &c, before, 2, after);
    ec_assert_serving(d, d->port, "after HUP");
}
END_TEST

START_TEST(test_listener_added_on_hup_accepts)
{
    struct du_worker before[DU_MAX_WORKERS], after[DU_MAX_WORKERS];
    struct conf c = echo_conf(2);
    struct du_daemon *d = start_workers(&c, before);

    c.ports[1] = tu_free_port("127.0.0.1");
    reload_and_wait(d, &c, before, 2, after);
    ec_assert_serving(d, c.ports[1], "the listener added on HUP");
    ec_assert_serving(d, c.ports[0], "the listener kept on HUP");
}
END_TEST

START_TEST(test_listener_removed_on_hup_refuses_once_old_workers_exit)
{
    struct du_worker before[DU_MAX_WORKERS], after[DU_MAX_WORKERS];
    struct conf c = echo_conf(2);
    struct du_daemon *d;
    unsigned removed = c.ports[0];
    int fd;

    c.ports[1] = tu_free_port("127.0.0.1");
    d = start_workers(&c, before);
    ec_assert_serving(d, c.ports[1], "second listener at start");
    c.ports[0] = c.ports[1];
    c.ports[1] = 0;
    reload_and_wait(d, &c, before, 2, after);
    fd = tu_connect_loopback(removed, CONNECT_TIMEOUT_MS);
    if (fd >= 0)
        close(fd);
    ck_assert_msg(fd == -ECONNREFUSED, "connect to the removed listener 127.0.0.1:%u: %s, "
                  "expected %s\n%s", removed, fd >= 0 ? "accepted" : strerror(-fd),
                  strerror(ECONNREFUSED), du_log_tail(d));
    ec_assert_serving(d, c.ports[0], "the listener kept on HUP");
}
END_TEST

START_TEST(test_signal_reload_command_replaces_workers)
{
    struct du_worker before[DU_MAX_WORKERS], after[DU_MAX_WORKERS];
    struct conf c = echo_conf(2);
    struct du_daemon *d = start_workers(&c, before);

    run_signal_command(d, "reload", 0);
    du_assert_workers(d, &(struct du_expect){ .n = 2, .gone = before, .n_gone = 2 }, after,
                      RELOAD_TIMEOUT_SEC, "preforkd -s reload");
}
END_TEST

/* ---- scaling ---- */

START_TEST(test_ttin_adds_worker_with_next_task_id)
{
    struct du_worker before[DU_MAX_WORKERS], after[DU_MAX_WORKERS];
    struct conf c = echo_conf(2);
    struct du_daemon *d = start_workers(&c, before);

    ck_assert_int_eq(kill(d->pid, SIGTTIN), 0);
    du_assert_workers(d, &(struct du_expect){ .n = 3, .keep = before, .n_keep = 2 }, after,
                      RESPAWN_TIMEOUT_SEC, "TTIN with 2 workers");
}
END_TEST

START_TEST(test_ttou_stops_the_worker_with_the_highest_task_id)
{
    struct du_worker before[DU_MAX_WORKERS], after[DU_MAX_WORKERS];
    struct conf c = echo_conf(3);
    struct du_daemon *d = start_workers(&c, before);

    ck_assert_int_eq(kill(d->pid, SIGTTOU), 0);
    du_assert_workers(d, &(struct du_expect){ .n = 2, .keep = before, .n_keep = 2,
                                           .gone = &before[2], .n_gone = 1 },
                      after, RELOAD_TIMEOUT_SEC, "TTOU with 3 workers");
}
END_TEST

START_TEST(test_ttou_never_goes_below_one_worker)
{
    struct du_worker before[DU_MAX_WORKERS], after[DU_MAX_WORKERS];
    struct conf c = echo_conf(2);
    struct du_daemon *d = start_workers(&c, before);

    ck_assert_int_eq(kill(d->pid, SIGTTOU), 0);
    du_assert_workers(d, &(struct du_expect){ .n = 1, .keep = before, .n_keep = 1,
                                           .gone = &before[1], .n_gone = 1 },
                      after, RELOAD_TIMEOUT_SEC, "TTOU with 2 workers");
    ck_assert_int_eq(kill(d->pid, SIGTTOU), 0);
    usleep(100000);
    ck_assert_int_eq(kill(d->pid, SIGTTOU), 0);
    usleep(1000000);
    du_assert_workers(d, &(struct du_expect){ .n = 1, .keep = before, .n_keep = 1 }, after, 0,
                      "1 s after two more TTOUs with 1 worker");
    ec_assert_serving(d, d->port, "with 1 worker after TTOUs");
}
END_TEST

/* ---- shutdown ---- */

/* Sends sig to the master, or runs `preforkd -s command` if command is not NULL. */
static void ask_master(const struct du_daemon *d, int sig, const char *command)
{
    if (command != NULL)
        run_signal_command(d, command, 0);
    else
        ck_assert_int_eq(kill(d->pid, sig), 0);
}

/* Once the master stopped: exit status 0, no worker left, pidfile removed. */
static void assert_stopped_cleanly(struct du_daemon *d, const char *after)
{
    ck_assert_msg(tu_exited_with(d->status, 0), "master status 0x%x after %s\n%s",
                  (unsigned)d->status, after, du_log_tail(d));
    ck_assert_msg(du_wait_group_gone(d, 0.5), "workers outlive the master after %s", after);
    ck_assert_msg(!file_exists(d->pidfile), "pidfile %s left after %s", d->pidfile, after);
}

/* QUIT (or -s quit) with an echo session open and graceful_timeout = 10:
 * new connections are refused within 0.5 s, the session still echoes 1 s
 * later, and once it closes the master exits 0 well before the timeout. */
static void assert_graceful_shutdown(int sig, const char *command, const char *what)
{
    struct du_worker ws[DU_MAX_WORKERS];
    struct conf c = echo_conf(2);
    struct du_daemon *d;
    double asked_at;
    int fd;

    c.graceful_timeout_sec = 10;
    d = start_workers(&c, ws);
    fd = ec_open_session(d);
    ask_master(d, sig, command);
    asked_at = tu_now();
    ck_assert_msg(ec_wait_refused(d->port, 0.5), "connections still accepted 0.5 s after %s\n%s",
                  what, du_log_tail(d));
    for (int i = 0; tu_now() < asked_at + 1.2; i++) {
        ck_assert_msg(ec_session_echoes(fd, i),
                      "the open session stopped echoing %.2f s after %s\n%s",
                      tu_now() - asked_at, what, du_log_tail(d));
        usleep(200000);
    }
    ck_assert_msg(!du_wait_exit(d, 0), "master exited (status 0x%x) with a session open",
                  (unsigned)d->status);
    close(fd);
    ck_assert_msg(du_wait_exit(d, 3.0), "master still runs 3 s after the last session closed "
                  "(graceful_timeout = 10); children: %s\n%s",
                  du_describe_workers(ws, du_workers_of(d->pid, ws)), du_log_tail(d));
    assert_stopped_cleanly(d, what);
}

/* TERM (or -s stop) with 3 idle echo sessions open and graceful_timeout =
 * 10: the master exits 0 within 1 s. */
static void assert_fast_shutdown(int sig, const char *command, const char *what)
{
    struct du_worker ws[DU_MAX_WORKERS];
    struct conf c = echo_conf(2);
    struct du_daemon *d;
    int fds[3];

    c.graceful_timeout_sec = 10;    /* a fast stop must not wait for this */
    d = start_workers(&c, ws);
    for (int i = 0; i < 3; i++)
        fds[i] = ec_open_session(d);
    ask_master(d, sig, command);
    ck_assert_msg(du_wait_exit(d, 1.0), "master still runs 1 s after %s\n%s", what,
                  du_log_tail(d));
    for (int i = 0; i < 3; i++)
        close(fds[i]);
    assert_stopped_cleanly(d, what);
}

START_TEST(test_quit_refuses_new_connections_and_finishes_open_session)
{
    assert_graceful_shutdown(SIGQUIT, NULL, "QUIT");
}
END_TEST

START_TEST(test_signal_quit_command_refuses_new_connections_and_finishes_open_session)
{
    assert_graceful_shutdown(0, "quit", "preforkd -s quit");
}
END_TEST

START_TEST(test_term_with_open_sessions_exits_0_within_1s)
{
    assert_fast_shutdown(SIGTERM, NULL, "TERM");
}
END_TEST

START_TEST(test_signal_stop_command_with_open_sessions_exits_0_within_1s)
{
    assert_fast_shutdown(0, "stop", "preforkd -s stop");
}
END_TEST

/* ---- pidfile and -s ---- */

START_TEST(test_pidfile_holds_master_pid_and_newline)
{
    struct du_worker ws[DU_MAX_WORKERS];
    struct conf c = echo_conf(1);
    struct du_daemon *d = start_workers(&c, ws);
    char text[64];

    tu_read_file(d->pidfile, text, sizeof(text));
    ck_assert_msg(pidfile_pid(d->pidfile) == d->pid, "pidfile holds \"%s\", master is %d", text,
                  (int)d->pid);
}
END_TEST

START_TEST(test_second_instance_with_same_pidfile_exits_1_naming_it_and_first_serves)
{
    struct du_worker ws[DU_MAX_WORKERS];
    struct conf c = echo_conf(1), c2 = echo_conf(1);
    struct du_daemon *d = start_workers(&c, ws), *second = daemon_new();
    const char *log;

    write_conf(second, &c2);
    du_launch(&suite, second, NULL, NULL);
    ck_assert_msg(du_wait_exit(second, COMMAND_TIMEOUT_SEC),
                  "a second instance with the same pidfile still runs\n%s",
                  du_log_tail(second));
    log = du_log_tail(second);
    ck_assert_msg(tu_exited_with(second->status, 1), "second instance: status 0x%x\n%s",
                  (unsigned)second->status, log);
    ck_assert_msg(strstr(log, d->pidfile) != NULL, "second instance does not name %s:\n%s",
                  d->pidfile, log);
    ck_assert_msg(has_number(log, d->pid), "second instance does not name pid %d:\n%s", (int)d->pid,
                  log);
    ck_assert_msg(du_wait_group_gone(second, 1.0), "the second instance left processes");
    ec_assert_serving(d, d->port, "the first instance after a second one was refused");
    ck_assert_int_eq(pidfile_pid(d->pidfile), d->pid);
}
END_TEST

START_TEST(test_stale_pidfile_is_replaced_with_new_pid)
{
    struct du_worker ws[DU_MAX_WORKERS];
    struct conf c = echo_conf(1);
    struct du_daemon *d = daemon_new();
    pid_t dead = fork();
    FILE *f;

    ck_assert_int_ge(dead, 0);
    if (dead == 0)
        _exit(0);
    ck_assert_int_eq(waitpid(dead, NULL, 0), dead);
    f = fopen(d->pidfile, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f, "%d\n", (int)dead);
    ck_assert_int_eq(fclose(f), 0);

    write_conf(d, &c);
    du_launch(&suite, d, NULL, NULL);
    du_assert_ready(d, READY_TIMEOUT_SEC);
    du_assert_workers(d, &(struct du_expect){ .n = 1 }, ws, READY_TIMEOUT_SEC,
                      "start over a stale pidfile");
    ck_assert_msg(pidfile_pid(d->pidfile) == d->pid, "pidfile does not hold the new master %d",
                  (int)d->pid);
    ec_assert_serving(d, d->port, "start over a stale pidfile");
}
END_TEST

START_TEST(test_signal_without_running_master_exits_1_naming_pidfile)
{
    static struct du_command cmd;
    struct conf c = echo_conf(1);
    struct du_daemon *d = daemon_new();
    const char *args[] = { "-c", d->conf, "-s", "reload", NULL };

    write_conf(d, &c);
    du_run(&suite, test_dir, &cmd, args, COMMAND_TIMEOUT_SEC);
    ck_assert_msg(tu_exited_with(cmd.status, 1), "status 0x%x\nstderr: %s", (unsigned)cmd.status,
                  cmd.err);
    ck_assert_msg(strstr(cmd.err, d->pidfile) != NULL, "stderr does not name %s: %s", d->pidfile,
                  cmd.err);
}
END_TEST

/* With a master running, so that only the signal name can make it fail. */
START_TEST(test_signal_bogus_exits_1_and_leaves_master_alone)
{
    struct du_worker before[DU_MAX_WORKERS], after[DU_MAX_WORKERS];
    struct conf c = echo_conf(2);
    struct du_daemon *d = start_workers(&c, before);

    run_signal_command(d, "bogus", 1);
    usleep(500000);
    ck_assert_msg(!du_wait_exit(d, 0), "master exited (status 0x%x) after -s bogus",
                  (unsigned)d->status);
    du_assert_workers(d, &(struct du_expect){ .n = 2, .keep = before, .n_keep = 2 }, after, 0,
                      "0.5 s after -s bogus");
}
END_TEST

/* ---- daemonized ---- */

/* Starts `preforkd -c conf` (no -f) with `log = <test dir>/a.log`; checks
 * that the launcher exits 0 with the pidfile in place and fills d from it.
 * *launcher gets the launcher's pid. */
static struct du_daemon *start_daemonized(struct conf *c, pid_t *launcher)
{
    static struct du_command cmd;
    static char extra[PATH_MAX + 16];
    char log_path[PATH_MAX];
    struct du_daemon *d = daemon_new();
    const char *args[] = { "-c", d->conf, NULL };
    struct tu_proc_stat st;

    tu_path(log_path, sizeof(log_path), test_dir, "a.log");
    snprintf(extra, sizeof(extra), "log = %s\n", log_path);
    c->daemon_extra = extra;
    write_conf(d, c);
    /* The master's log is a.log from now on, for failure messages. */
    snprintf(d->log, sizeof(d->log), "%s", log_path);
    *launcher = du_run(&suite, test_dir, &cmd, args, COMMAND_TIMEOUT_SEC);
    ck_assert_msg(tu_exited_with(cmd.status, 0), "launcher status 0x%x\nstdout: %s\nstderr: %s\n%s",
                  (unsigned)cmd.status, cmd.out, cmd.err, du_log_tail(d));
    d->pid = pidfile_pid(d->pidfile);
    ck_assert_msg(d->pid > 0, "no pid in %s once the launcher exited\n%s", d->pidfile,
                  du_log_tail(d));
    ck_assert_msg(tu_proc_stat(d->pid, &st), "master %d from the pidfile does not run",
                  (int)d->pid);
    d->pgid = st.pgrp;
    tu_record_pgid(suite.dir, d->pgid);
    du_assert_ready(d, READY_TIMEOUT_SEC);
    return d;
}

START_TEST(test_daemonized_master_has_no_launcher_parent_cwd_root_and_null_stdio)
{
    struct conf c = echo_conf(1);
    pid_t launcher;
    struct du_daemon *d = start_daemonized(&c, &launcher);
    struct tu_proc_stat st;
    char path[64], target[PATH_MAX];
    ssize_t len;

    ck_assert(tu_proc_stat(d->pid, &st));
    ck_assert_msg(st.ppid != launcher, "daemonized master %d is a child of its launcher %d",
                  (int)d->pid, (int)launcher);
    snprintf(path, sizeof(path), "/proc/%d/cwd", (int)d->pid);
    len = readlink(path, target, sizeof(target) - 1);
    ck_assert_int_gt(len, 0);
    target[len] = '\0';
    ck_assert_msg(strcmp(target, "/") == 0, "daemonized master's cwd is %s", target);
    for (int fd = 0; fd <= 2; fd++) {
        snprintf(path, sizeof(path), "/proc/%d/fd/%d", (int)d->pid, fd);
        len = readlink(path, target, sizeof(target) - 1);
        ck_assert_msg(len > 0, "daemonized master has no fd %d", fd);
        target[len] = '\0';
        ck_assert_msg(strcmp(target, "/dev/null") == 0, "daemonized master's fd %d is %s", fd,
                      target);
    }
    ec_assert_serving(d, d->port, "daemonized");
    run_signal_command(d, "stop", 0);
    ck_assert_msg(du_wait_exit(d, 3.0), "daemonized master still runs 3 s after -s stop");
    ck_assert_msg(tu_exited_with(d->status, 0), "daemonized master status 0x%x after -s stop\n%s",
                  (unsigned)d->status, du_log_tail(d));
    ck_assert_msg(!file_exists(d->pidfile), "pidfile %s left after -s stop", d->pidfile);
}
END_TEST

START_TEST(test_signal_reopen_makes_master_write_a_new_log_file)
{
    struct conf c = echo_conf(1);
    pid_t launcher;
    struct du_daemon *d = start_daemonized(&c, &launcher);
    char rotated[PATH_MAX + 8], text[DU_OUTPUT_MAX];
    double deadline;

    snprintf(rotated, sizeof(rotated), "%s.1", d->log);
    ck_assert_int_eq(rename(d->log, rotated), 0);
    run_signal_command(d, "reopen", 0);
    run_signal_command(d, "reload", 0);
    deadline = tu_now() + 3.0;
    do {
        usleep(50000);
        tu_read_file(d->log, text, sizeof(text));
    } while (strcasestr(text, "reload") == NULL && tu_now() < deadline);
    ck_assert_msg(strcasestr(text, "reload") != NULL, "%s after -s reopen and -s reload:\n%s\n"
                  "%s:\n%s", d->log, file_exists(d->log) ? text : "(none)", rotated,
                  du_file_tail(rotated));
    tu_read_file(rotated, text, sizeof(text));
    ck_assert_msg(text[0] != '\0', "%s was empty before the rotation", rotated);
}
END_TEST

/* ---- privileges ---- */

/* The four uids of /proc/<pid>/status's Uid line; false if unreadable. */
static bool proc_uids(pid_t pid, unsigned uids[4])
{
    char path[64], text[8192];
    const char *p;

    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    tu_read_file(path, text, sizeof(text));
    p = strstr(text, "\nUid:");
    return p != NULL &&
           sscanf(p, "\nUid: %u %u %u %u", &uids[0], &uids[1], &uids[2], &uids[3]) == 4;
}

static void assert_uids(pid_t pid, unsigned uid, const char *who)
{
    unsigned uids[4];

    ck_assert_msg(proc_uids(pid, uids), "no Uid line for %s %d", who, (int)pid);
    ck_assert_msg(uids[0] == uid && uids[1] == uid && uids[2] == uid && uids[3] == uid,
                  "%s %d runs with uids %u %u %u %u, expected %u", who, (int)pid, uids[0], uids[1],
                  uids[2], uids[3], uid);
}

START_TEST(test_user_nobody_runs_workers_as_nobody_and_master_as_root)
{
    struct du_worker ws[DU_MAX_WORKERS];
    struct conf c = echo_conf(2);
    struct passwd *pw = getpwnam("nobody");
    struct du_daemon *d;

    if (geteuid() != 0) {
        fprintf(stderr, "check_master: not root, skipping a user = nobody test\n");
        return;
    }
    ck_assert_ptr_nonnull(pw);
    c.daemon_extra = "user = nobody\n";
    d = start_workers(&c, ws);
    assert_uids(d->pid, 0, "master");
    for (int i = 0; i < 2; i++)
        assert_uids(ws[i].pid, pw->pw_uid, "worker");
    ec_assert_serving(d, d->port, "workers as nobody");
}
END_TEST

/* Dropping privileges must not drop the way workers learn of the master's
 * death (PR_SET_PDEATHSIG is cleared by a change of credentials). */
START_TEST(test_workers_as_nobody_exit_within_2s_when_master_is_killed)
{
    struct du_worker ws[DU_MAX_WORKERS];
    struct conf c = echo_conf(2);
    struct du_daemon *d;

    if (geteuid() != 0) {
        fprintf(stderr, "check_master: not root, skipping a user = nobody test\n");
        return;
    }
    c.daemon_extra = "user = nobody\n";
    d = start_workers(&c, ws);
    assert_workers_exit_when_master_is_killed(d, ws, 2);
}
END_TEST

static Suite *master_suite(void)
{
    Suite *s = suite_create("master");
    TCase *tc = du_add_tcase(s, "titles", TCASE_TIMEOUT_SEC, setup, teardown);

    tcase_add_test(tc, test_titles_show_master_command_line_and_worker_task_ids);

    tc = du_add_tcase(s, "restarts", TCASE_TIMEOUT_SEC, setup, teardown);
    tcase_add_test(tc, test_sigkill_of_worker_1_is_replaced_within_1s_and_no_connect_fails);
    tcase_add_test(tc, test_worker_stopped_past_worker_timeout_is_killed_and_replaced);
    tcase_add_test(tc, test_crash_loop_past_max_restarts_stops_master_with_error);
    tcase_add_test(tc, test_workers_exit_within_2s_when_master_is_killed);

    tc = du_add_tcase(s, "reload", TCASE_TIMEOUT_SEC, setup, teardown);
    tcase_add_test(tc, test_five_hups_under_load_replace_every_worker_without_a_failure);
    tcase_add_test(tc, test_hup_with_bad_config_keeps_workers_and_logs_file_line_and_key);
    tcase_add_test(tc, test_hup_with_workers_3_instead_of_2_runs_3_new_workers);
    tcase_add_test(tc, test_listener_added_on_hup_accepts);
    tcase_add_test(tc, test_listener_removed_on_hup_refuses_once_old_workers_exit);
    tcase_add_test(tc, test_signal_reload_command_replaces_workers);

    tc = du_add_tcase(s, "scaling", TCASE_TIMEOUT_SEC, setup, teardown);
    tcase_add_test(tc, test_ttin_adds_worker_with_next_task_id);
    tcase_add_test(tc, test_ttou_stops_the_worker_with_the_highest_task_id);
    tcase_add_test(tc, test_ttou_never_goes_below_one_worker);

    tc = du_add_tcase(s, "shutdown", TCASE_TIMEOUT_SEC, setup, teardown);
    tcase_add_test(tc, test_quit_refuses_new_connections_and_finishes_open_session);
    tcase_add_test(tc, test_term_with_open_sessions_exits_0_within_1s);
    tcase_add_test(tc, test_signal_quit_command_refuses_new_connections_and_finishes_open_session);
    tcase_add_test(tc, test_signal_stop_command_with_open_sessions_exits_0_within_1s);

    tc = du_add_tcase(s, "pidfile", TCASE_TIMEOUT_SEC, setup, teardown);
    tcase_add_test(tc, test_pidfile_holds_master_pid_and_newline);
    tcase_add_test(tc, test_second_instance_with_same_pidfile_exits_1_naming_it_and_first_serves);
    tcase_add_test(tc, test_stale_pidfile_is_replaced_with_new_pid);
    tcase_add_test(tc, test_signal_without_running_master_exits_1_naming_pidfile);
    tcase_add_test(tc, test_signal_bogus_exits_1_and_leaves_master_alone);

    tc = du_add_tcase(s, "daemonized", TCASE_TIMEOUT_SEC, setup, teardown);
    tcase_add_test(tc, test_daemonized_master_has_no_launcher_parent_cwd_root_and_null_stdio);
    tcase_add_test(tc, test_signal_reopen_makes_master_write_a_new_log_file);

    tc = du_add_tcase(s, "privileges", TCASE_TIMEOUT_SEC, setup, teardown);
    tcase_add_test(tc, test_user_nobody_runs_workers_as_nobody_and_master_as_root);
    tcase_add_test(tc, test_workers_as_nobody_exit_within_2s_when_master_is_killed);
    return s;
}

int main(void)
{
    return du_main(&suite, "check_master", master_suite);
}

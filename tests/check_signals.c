/*
 * check_signals: signals at bad moments (issue #9, item 4). Each test runs
 * the built daemon ($PREFORKD, default build/preforkd, from the repo root)
 * with an echo config on 127.0.0.1, sends its master signals while it is
 * busy with another one (a reload, a graceful stop), kills its processes,
 * or deletes its pidfile, and checks the outcome an operator sees: exit
 * statuses, worker tables and generations in the ps titles, served or
 * refused connections, log and command output.
 *
 * Whatever a test did, once its master has exited no process of its group
 * may remain and its port must be free (nothing listens on a socket nobody
 * accepts on): the teardown checks this for every daemon, after stopping
 * the ones still running, and the tests that stop a master check it at once.
 *
 * Every daemon runs in a process group of its own, recorded in the suite
 * dir; the test process is a child subreaper, so workers orphaned by a dead
 * master become its children and are reaped here. A test that fails exits
 * without teardown: its masters get SIGKILL (PR_SET_PDEATHSIG), and main()
 * kills and counts whatever is left in the recorded groups (daemonutil.h).
 */
#define _GNU_SOURCE
#include <check.h>
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "daemonutil.h"
#include "echoclient.h"
#include "testutil.h"

#define TCASE_TIMEOUT_SEC 30
/* A daemon that does not accept connections by then failed to start. */
#define READY_TIMEOUT_SEC 5.0
/* A one-shot command (-s, a second instance) that runs longer is hung. */
#define COMMAND_TIMEOUT_SEC 5.0
/* Teardown: SIGTERM first, SIGKILL after this. */
#define STOP_GRACE_SEC 2.0
/* Every test's daemon runs this many workers. */
#define WORKERS 2
/* graceful_timeout of the configs, short: old workers of a reload drain by then. */
#define GRACEFUL_TIMEOUT_SEC 2
/* A graceful stop that must not end by the timeout (a session stays open). */
#define LONG_GRACEFUL_TIMEOUT_SEC 10
/* Old generations are gone by graceful_timeout; 2 s for the rest. */
#define RELOAD_TIMEOUT_SEC (GRACEFUL_TIMEOUT_SEC + 2.0)
/* TERM promises an exit within this (DESIGN.md, README). */
#define FAST_STOP_SEC 1.0
/* Workers of a master killed with -9 are gone within this (README). */
#define ORPHAN_EXIT_SEC 2.0
/* QUIT closes the listeners at once: refused within this. */
#define REFUSE_TIMEOUT_SEC 0.5
/* Once the master is gone, its group is gone within this. */
#define GROUP_GONE_SEC 0.5
#define CONNECT_TIMEOUT_MS 2000
#define MAX_DAEMONS 2
#define MAX_SESSIONS 40
/* The most sockets of a worker looked through for a session's. */
#define MAX_SOCKETS 256
/* HUP pairs: the second HUP of a pair comes HUP_GAP_MS after the first,
 * while the reload it started is under way; pairs HUP_PAIR_GAP_MS apart. */
#define HUP_PAIRS 5
#define HUP_GAP_MS 10
#define HUP_PAIR_GAP_MS 150

/* Set up by main(). */
static struct du_suite suite;
static char test_dir[PATH_MAX];

static struct du_daemon daemons[MAX_DAEMONS];

/* ---- files and logs ---- */

static bool file_exists(const char *path)
{
    return access(path, F_OK) == 0;
}

/* ---- processes ---- */

struct members {
    pid_t pgid;
    char buf[2048];
    size_t len;
    int n;
};

static void note_member(pid_t pid, void *arg)
{
    struct members *m = arg;
    struct tu_proc_stat st;
    char title[160];

    if (!tu_proc_stat(pid, &st) || st.pgrp != m->pgid || st.state == 'Z')
        return;
    m->n++;
    tu_proc_cmdline(pid, title, sizeof(title));
    if (m->len < sizeof(m->buf))
        m->len += (size_t)snprintf(m->buf + m->len, sizeof(m->buf) - m->len, "%s%d \"%s\"",
                                   m->len ? ", " : "", (int)pid, title);
}

/* Live processes of group pgid, as "pid "title"" items; *count (may be
 * NULL) gets how many. */
static const char *group_members(pid_t pgid, int *count)
{
    static struct members m;

    memset(&m, 0, sizeof(m));
    m.pgid = pgid;
    tu_each_process(note_member, &m);
    if (count != NULL)
        *count = m.n;
    return m.n == 0 ? "none" : m.buf;
}

static const char *describe_group(pid_t pgid)
{
    return group_members(pgid, NULL);
}

/* ---- clients ---- */

/* True if the server ends fd (EOF or reset) within timeout_sec. */
static bool session_ends(int fd, double timeout_sec)
{
    double deadline = tu_now() + timeout_sec;

    while (tu_now() < deadline) {
        struct pollfd p = { .fd = fd, .events = POLLIN };
        char buf[256];
        ssize_t n;

        if (poll(&p, 1, 10) <= 0)
            continue;
        n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
            return true;
    }
    return false;
}

/* Nobody listens on 127.0.0.1:port and a new listener may bind it. */
static void assert_port_free(unsigned port, const char *when)
{
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(port),
                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    int fd = tu_connect_loopback(port, CONNECT_TIMEOUT_MS), one = 1, rc;

    if (fd >= 0)
        close(fd);
    ck_assert_msg(fd == -ECONNREFUSED, "%s: a connect to 127.0.0.1:%u got %s, not refused: a "
                  "socket listens there with nobody to serve it", when, port,
                  fd >= 0 ? "accepted" : strerror(-fd));
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    rc = bind(fd, (struct sockaddr *)&sin, sizeof(sin));
    if (rc == 0)
        rc = listen(fd, 1);
    ck_assert_msg(rc == 0, "%s: 127.0.0.1:%u cannot be bound: %s", when, port, strerror(errno));
    close(fd);
}

/* Once d's master exited: no process of its group is left, the port is free. */
static void assert_nothing_left(struct du_daemon *d, const char *after)
{
    ck_assert_msg(du_wait_group_gone(d, GROUP_GONE_SEC), "%.1f s after the master exited "
                  "(%s), its group still has: %s\n%s", GROUP_GONE_SEC, after,
                  describe_group(d->pgid), du_log_tail(d));
    assert_port_free(d->port, after);
}

/* Sends TERM (what: "TERM during a reload") to d's master, which must exit
 * 0 within FAST_STOP_SEC; prints how long it took. */
static void assert_term_exits_0_fast(struct du_daemon *d, const char *what)
{
    double termed_at;

    ck_assert_int_eq(kill(d->pid, SIGTERM), 0);
    termed_at = tu_now();
    ck_assert_msg(du_wait_exit(d, FAST_STOP_SEC), "master still runs %.1f s after %s; "
                  "group: %s\n%s", FAST_STOP_SEC, what, describe_group(d->pgid), du_log_tail(d));
    printf("check_signals: %s: master exited after %.0f ms\n", what,
           (tu_now() - termed_at) * 1000);
    ck_assert_msg(tu_exited_with(d->status, 0), "master status 0x%x after %s\n%s",
                  (unsigned)d->status, what, du_log_tail(d));
}

/* ---- the daemon ---- */

/* The next free daemon slot of this test, with its file names set. */
static struct du_daemon *daemon_new(void)
{
    return du_next(daemons, MAX_DAEMONS, test_dir);
}

/* Waits for WORKERS workers, all of generation, and nothing else. */
static bool wait_generation(struct du_daemon *d, int generation, struct du_worker *ws, int *n,
                            double timeout_sec)
{
    return du_wait_workers(d, &(struct du_expect){ .n = WORKERS, .generation = generation }, ws,
                           n, timeout_sec);
}

/* An echo daemon with WORKERS workers and graceful_timeout on a fresh port,
 * accepting with all its workers (ws gets them). */
static struct du_daemon *start_daemon(unsigned graceful_timeout_sec, struct du_worker *ws)
{
    struct du_daemon *d = daemon_new();

    d->port = tu_free_port("127.0.0.1");
    du_write_conf(d, "[daemon]\nworkers = %d\ngraceful_timeout = %u\npidfile = %s\n"
                     "[server]\nhandler = echo\nlisten = 127.0.0.1:%u\n",
                  WORKERS, graceful_timeout_sec, d->pidfile, d->port);
    du_start(&suite, d, READY_TIMEOUT_SEC);
    du_assert_workers(d, &(struct du_expect){ .n = WORKERS, .generation = 1 }, ws,
                      READY_TIMEOUT_SEC, "start");
    return d;
}

/* A second master on d's config (same port, same pidfile), with a log of
 * its own; not waited for. */
static struct du_daemon *launch_again(const struct du_daemon *d)
{
    struct du_daemon *next = daemon_new();

    next->port = d->port;
    memcpy(next->conf, d->conf, sizeof(next->conf));
    memcpy(next->pidfile, d->pidfile, sizeof(next->pidfile));
    du_launch(&suite, next, NULL, NULL);
    return next;
}

/* ---- which worker holds a connection ---- */

/* The inode of the server's end of the connection whose client end is fd
 * (from /proc/net/tcp); 0 if not found. */
static unsigned long server_socket_inode(int fd, unsigned server_port)
{
    struct sockaddr_in me;
    socklen_t len = sizeof(me);
    char line[512];
    unsigned long inode = 0;
    FILE *f;

    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&me, &len), 0);
    f = fopen("/proc/net/tcp", "re");
    ck_assert_ptr_nonnull(f);
    while (inode == 0 && fgets(line, sizeof(line), f) != NULL) {
        unsigned lport, rport;
        unsigned long ino;

        /* "sl local rem st tx:rx tr:when retrnsmt uid timeout inode" */
        if (sscanf(line, " %*d: %*x:%x %*x:%x %*x %*x:%*x %*x:%*x %*x %*u %*u %lu", &lport,
                   &rport, &ino) == 3 && lport == server_port && rport == ntohs(me.sin_port))
            inode = ino;
    }
    fclose(f);
    return inode;
}

/* True if pid has the socket inode among its fds. */
static bool process_holds_socket(pid_t pid, unsigned long inode)
{
    unsigned long inodes[MAX_SOCKETS];
    int n = tu_proc_socket_inodes(pid, inodes, MAX_SOCKETS);

    for (int i = 0; i < n; i++)
        if (inodes[i] == inode)
            return true;
    return false;
}

/* ---- fixtures ---- */

static void setup(void)
{
    du_test_begin(&suite, test_dir, sizeof(test_dir));
    memset(daemons, 0, sizeof(daemons));
}

/* Stops what still runs; then, for every daemon: nothing of it is left,
 * its port is free, no sanitizer spoke. */
static void teardown(void)
{
    du_stop_all(daemons, MAX_DAEMONS, STOP_GRACE_SEC);
    for (int i = 0; i < MAX_DAEMONS; i++) {
        struct du_daemon *d = &daemons[i];

        if (d->pid <= 0)
            continue;
        ck_assert_msg(du_group_gone(d), "daemon %d's group outlives SIGKILL: %s", i,
                      describe_group(d->pgid));
        assert_port_free(d->port, "once every daemon of the test stopped");
        tu_assert_no_sanitizer_report(du_log(d));
    }
}

/* ---- HUP during a reload ---- */

START_TEST(test_hup_pairs_10ms_apart_end_with_only_newest_generation_and_no_failed_client)
{
    struct du_worker ws[DU_MAX_WORKERS];
    struct du_daemon *d = start_daemon(GRACEFUL_TIMEOUT_SEC, ws);
    struct ec_load cl;
    int n, reloads, newest, rounds, cf, ef;
    const char *members;
    bool settled;

    ec_load_start(&cl, d->port);
    usleep(200000);
    for (int i = 0; i < HUP_PAIRS; i++) {
        ck_assert_int_eq(kill(d->pid, SIGHUP), 0);
        usleep(HUP_GAP_MS * 1000);
        ck_assert_int_eq(kill(d->pid, SIGHUP), 0);
        usleep(HUP_PAIR_GAP_MS * 1000);
    }
    /* Every HUP the master took is a "reloading" line and one generation
     * more (two signals that arrive before it looks are one, as POSIX
     * allows; 10 ms apart they should not). */
    usleep(200000);
    reloads = tu_count_lines_with(du_log(d), "reloading ");
    newest = 1 + reloads;
    settled = wait_generation(d, newest, ws, &n, RELOAD_TIMEOUT_SEC);
    usleep(200000);
    ec_load_stop(&cl);
    rounds = atomic_load(&cl.rounds);
    cf = atomic_load(&cl.connect_failures);
    ef = atomic_load(&cl.echo_failures);
    printf("check_signals: %d HUPs in pairs %d ms apart: %d reloads; %d clients served, %d "
           "connects and %d echoes failed\n", 2 * HUP_PAIRS, HUP_GAP_MS, reloads, rounds, cf, ef);

    ck_assert_msg(!du_wait_exit(d, 0), "master exited (status 0x%x) during the reloads\n%s",
                  (unsigned)d->status, du_log_tail(d));
    ck_assert_msg(reloads >= HUP_PAIRS && reloads <= 2 * HUP_PAIRS, "%d reloads logged for %d "
                  "HUPs\n%s", reloads, 2 * HUP_PAIRS, du_log_tail(d));
    ck_assert_msg(settled, "%.0f s after the last HUP, expected 2 workers of generation %d and "
                  "nothing else; master has: %s\n%s", RELOAD_TIMEOUT_SEC, newest,
                  du_describe_workers(ws, n), du_log_tail(d));
    /* Nothing else either: an old worker gone astray would still be in
     * the group. */
    members = group_members(d->pgid, &n);
    ck_assert_msg(n == 1 + WORKERS, "the daemon's group has %d processes, not the master and "
                  "%d workers: %s", n, WORKERS, members);
    /* No connect and no echo may have failed during the reloads. */
    ec_assert_load(d, &cl, 0);
    ec_assert_serving(d, d->port, "after the reloads");
}
END_TEST

/* ---- TERM during a reload ---- */

START_TEST(test_term_during_reload_exits_0_within_1s_and_leaves_no_worker)
{
    struct du_worker ws[DU_MAX_WORKERS];
    struct du_daemon *d = start_daemon(GRACEFUL_TIMEOUT_SEC, ws);
    double deadline;
    bool new_started = false;
    int n;

    ck_assert_int_eq(kill(d->pid, SIGHUP), 0);
    /* TERM once the new generation runs, while the old one still does. */
    deadline = tu_now() + 1.0;
    while (!new_started && tu_now() < deadline) {
        n = du_workers_of(d->pid, ws);
        for (int i = 0; i < n; i++)
            new_started = new_started || ws[i].generation == 2;
        if (!new_started)
            usleep(500);
    }
    ck_assert_msg(new_started, "no worker of generation 2 within 1 s of HUP\n%s", du_log_tail(d));
    assert_term_exits_0_fast(d, "TERM during a reload");
    assert_nothing_left(d, "TERM during a reload");
    ck_assert_msg(!file_exists(d->pidfile), "pidfile %s left", d->pidfile);
}
END_TEST

/* ---- QUIT, then TERM ---- */

START_TEST(test_term_200ms_after_quit_with_open_session_wins_and_exits_0_within_1s)
{
    struct du_worker ws[DU_MAX_WORKERS];
    struct du_daemon *d = start_daemon(LONG_GRACEFUL_TIMEOUT_SEC, ws);
    int fd = ec_open_session(d);

    ck_assert_int_eq(kill(d->pid, SIGQUIT), 0);
    usleep(200000);
    ck_assert_msg(!du_wait_exit(d, 0), "master exited (status 0x%x) 200 ms after QUIT with "
                  "a session open (graceful_timeout = %d)\n%s", (unsigned)d->status,
                  LONG_GRACEFUL_TIMEOUT_SEC, du_log_tail(d));
    ck_assert_msg(ec_session_echoes(fd, 1), "the open session stopped echoing after QUIT\n%s",
                  du_log_tail(d));
    assert_term_exits_0_fast(d, "TERM after QUIT");
    ck_assert_msg(session_ends(fd, 0.5), "the session is still open after the master exited");
    close(fd);
    assert_nothing_left(d, "QUIT then TERM");
}
END_TEST

/* ---- a worker killed during a graceful stop ---- */

START_TEST(test_worker_killed_during_graceful_stop_is_not_replaced_and_master_exits_0)
{
    struct du_worker ws[DU_MAX_WORKERS], now[DU_MAX_WORKERS];
    struct du_daemon *d = start_daemon(LONG_GRACEFUL_TIMEOUT_SEC, ws);
    int fds[MAX_SESSIONS], holder[MAX_SESSIONS], nfds = 0, n, victim_fd = -1, other_fd = -1;
    pid_t victim, survivor;
    double closed_at;

    /* Sessions until each worker holds one: the survivor then drains. */
    while (nfds < MAX_SESSIONS && (victim_fd < 0 || other_fd < 0)) {
        unsigned long inode;

        fds[nfds] = ec_open_session(d);
        inode = server_socket_inode(fds[nfds], d->port);
        holder[nfds] = -1;
        for (int w = 0; w < 2; w++)
            if (inode != 0 && process_holds_socket(ws[w].pid, inode))
                holder[nfds] = w;
        if (holder[nfds] == 0 && victim_fd < 0)
            victim_fd = fds[nfds];
        if (holder[nfds] == 1 && other_fd < 0)
            other_fd = fds[nfds];
        nfds++;
    }
    ck_assert_msg(victim_fd >= 0 && other_fd >= 0, "%d sessions did not reach both workers",
                  nfds);
    victim = ws[0].pid;
    survivor = ws[1].pid;

    ck_assert_int_eq(kill(d->pid, SIGQUIT), 0);
    ck_assert_msg(ec_wait_refused(d->port, REFUSE_TIMEOUT_SEC), "connections still accepted "
                  "%.1f s after QUIT\n%s", REFUSE_TIMEOUT_SEC, du_log_tail(d));
    ck_assert_int_eq(kill(victim, SIGKILL), 0);
    usleep(500000);
    ck_assert_msg(!du_wait_exit(d, 0), "master exited (status 0x%x) with sessions open on "
                  "the surviving worker\n%s", (unsigned)d->status, du_log_tail(d));
    n = du_workers_of(d->pid, now);
    ck_assert_msg(n == 1 && now[0].pid == survivor, "0.5 s after kill -9 of worker %d during "
                  "QUIT, expected only worker %d; master has: %s\n%s", (int)victim,
                  (int)survivor, du_describe_workers(now, n), du_log_tail(d));
    ck_assert_msg(ec_session_echoes(other_fd, 1), "the survivor's session stopped echoing\n%s",
                  du_log_tail(d));
    ck_assert_msg(session_ends(victim_fd, 0.5), "the killed worker's session is still open");

    for (int i = 0; i < nfds; i++)
        close(fds[i]);
    closed_at = tu_now();
    ck_assert_msg(du_wait_exit(d, FAST_STOP_SEC + 0.5), "master still runs %.1f s after the "
                  "last session closed; group: %s\n%s", FAST_STOP_SEC + 0.5,
                  describe_group(d->pgid), du_log_tail(d));
    printf("check_signals: worker killed during QUIT: master exited %.0f ms after the last "
           "session closed\n", (tu_now() - closed_at) * 1000);
    ck_assert_msg(tu_exited_with(d->status, 0), "master status 0x%x after a worker was killed "
                  "during QUIT\n%s", (unsigned)d->status, du_log_tail(d));
    ck_assert_msg(strstr(du_log(d), "restarting") == NULL, "the master restarted a "
                  "worker during QUIT:\n%s", du_log_tail(d));
    assert_nothing_left(d, "QUIT with a worker killed");
}
END_TEST

/* ---- the master killed ---- */

START_TEST(test_master_killed_workers_exit_within_2s_and_new_master_binds_at_once)
{
    struct du_worker ws[DU_MAX_WORKERS], ws2[DU_MAX_WORKERS];
    struct du_daemon *d = start_daemon(GRACEFUL_TIMEOUT_SEC, ws), *next;
    int fd = ec_open_session(d), n;
    double killed_at;
    const char *log;

    ck_assert_int_eq(kill(d->pid, SIGKILL), 0);
    killed_at = tu_now();
    ck_assert(du_wait_exit(d, STOP_GRACE_SEC));
    /* At once, on the same config (same port, same pidfile). */
    next = launch_again(d);

    ck_assert_msg(du_wait_group_gone(d, ORPHAN_EXIT_SEC - (tu_now() - killed_at)),
                  "%.0f s after kill -9 of the master, still running: %s", ORPHAN_EXIT_SEC,
                  describe_group(d->pgid));
    printf("check_signals: kill -9 of the master: its workers were gone after %.0f ms\n",
           (tu_now() - killed_at) * 1000);
    ck_assert_msg(session_ends(fd, 0.5), "a session of a dead worker is still open");
    close(fd);

    du_wait_exit(next, 0.5);
    log = du_log_tail(next);
    ck_assert_msg(!next->reaped, "a master started right after kill -9 of the old one exited "
                  "(status 0x%x):\n%s", (unsigned)next->status, log);
    du_assert_ready(next, READY_TIMEOUT_SEC);
    ck_assert_msg(wait_generation(next, 1, ws2, &n, READY_TIMEOUT_SEC),
                  "the new master has: %s\n%s", du_describe_workers(ws2, n), du_log_tail(next));
    ec_assert_serving(next, next->port, "the new master");
}
END_TEST

/* ---- the pidfile deleted ---- */

/*
 * The pidfile is deleted under a running master. What is right:
 *  - the master keeps serving: the pidfile is for finding it, not for
 *    running;
 *  - `preforkd -s reload` cannot find it any more: it fails (exit 1) and
 *    names the pidfile, so the operator knows what is missing;
 *  - a second instance with the same config can take the pidfile path
 *    (the first one's lock is on the deleted inode), but not the port: it
 *    must fail to bind, exit 1 with a message naming the listen address and
 *    the cause, and leave neither a process nor a pidfile naming itself;
 *    the first instance serves on, untouched.
 * Refusing the second instance because of the pidfile would be nicer but is
 * impossible (nothing on disk says the first runs); both serving the port
 * is what SO_REUSEPORT would allow and reuse_port = no forbids.
 */
START_TEST(test_deleted_pidfile_master_serves_on_reload_names_it_second_instance_fails_bind)
{
    static struct du_command cmd;
    struct du_worker ws[DU_MAX_WORKERS], after[DU_MAX_WORKERS];
    struct du_daemon *d = start_daemon(GRACEFUL_TIMEOUT_SEC, ws), *second;
    const char *args[] = { "-c", d->conf, "-s", "reload", NULL };
    char where[64];
    const char *log;
    int n;

    ck_assert_int_eq(unlink(d->pidfile), 0);
    usleep(200000);
    ec_assert_serving(d, d->port, "with its pidfile deleted");

    du_run(&suite, test_dir, &cmd, args, COMMAND_TIMEOUT_SEC);
    ck_assert_msg(tu_exited_with(cmd.status, 1), "-s reload without the pidfile: status 0x%x\n"
                  "stdout: %s\nstderr: %s", (unsigned)cmd.status, cmd.out, cmd.err);
    ck_assert_msg(strstr(cmd.err, d->pidfile) != NULL, "-s reload does not name %s:\n%s",
                  d->pidfile, cmd.err);

    second = launch_again(d);
    ck_assert_msg(du_wait_exit(second, COMMAND_TIMEOUT_SEC), "a second instance on the same "
                  "port still runs %.0f s later; group: %s\n%s", COMMAND_TIMEOUT_SEC,
                  describe_group(second->pgid), du_log_tail(second));
    log = du_log_tail(second);
    ck_assert_msg(tu_exited_with(second->status, 1), "second instance: status 0x%x\n%s",
                  (unsigned)second->status, log);
    snprintf(where, sizeof(where), "127.0.0.1:%u", d->port);
    ck_assert_msg(strstr(log, where) != NULL && strstr(log, strerror(EADDRINUSE)) != NULL,
                  "the second instance does not say that %s is in use:\n%s", where, log);
    ck_assert_msg(du_wait_group_gone(second, GROUP_GONE_SEC), "the second instance left: %s",
                  describe_group(second->pgid));
    ck_assert_msg(!file_exists(d->pidfile), "the failed second instance left a pidfile %s",
                  d->pidfile);

    ck_assert_msg(!du_wait_exit(d, 0), "the first master exited (status 0x%x)\n%s",
                  (unsigned)d->status, du_log_tail(d));
    n = du_workers_of(d->pid, after);
    ck_assert_msg(n == 2 && ((after[0].pid == ws[0].pid && after[1].pid == ws[1].pid) ||
                             (after[0].pid == ws[1].pid && after[1].pid == ws[0].pid)),
                  "the first master's workers changed: %s (were %s)", du_describe_workers(after, n),
                  du_describe_workers(ws, 2));
    ec_assert_serving(d, d->port, "the first instance after the second failed");
}
END_TEST

/* ---- suite ---- */

static Suite *signals_suite(void)
{
    Suite *s = suite_create("signals");
    TCase *tc = du_add_tcase(s, "during_reload", TCASE_TIMEOUT_SEC, setup, teardown);

    tcase_add_test(tc, test_hup_pairs_10ms_apart_end_with_only_newest_generation_and_no_failed_client);
    tcase_add_test(tc, test_term_during_reload_exits_0_within_1s_and_leaves_no_worker);

    tc = du_add_tcase(s, "during_shutdown", TCASE_TIMEOUT_SEC, setup, teardown);
    tcase_add_test(tc, test_term_200ms_after_quit_with_open_session_wins_and_exits_0_within_1s);
    tcase_add_test(tc, test_worker_killed_during_graceful_stop_is_not_replaced_and_master_exits_0);

    tc = du_add_tcase(s, "lost_master", TCASE_TIMEOUT_SEC, setup, teardown);
    tcase_add_test(tc, test_master_killed_workers_exit_within_2s_and_new_master_binds_at_once);
    tcase_add_test(tc, test_deleted_pidfile_master_serves_on_reload_names_it_second_instance_fails_bind);
    return s;
}

int main(void)
{
    return du_main(&suite, "check_signals", signals_suite);
}

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
 * kills and counts whatever is left in the recorded groups.
 */
#define _GNU_SOURCE     /* memmem */
#include <check.h>
#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"

#define TCASE_TIMEOUT_SEC 30
/* A daemon that does not accept connections by then failed to start. */
#define READY_TIMEOUT_SEC 5.0
/* A one-shot command (-s, a second instance) that runs longer is hung. */
#define COMMAND_TIMEOUT_SEC 5.0
/* Teardown: SIGTERM first, SIGKILL after this. */
#define STOP_GRACE_SEC 2.0
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
/* A worker table must look the same twice this far apart. */
#define SETTLE_SEC 0.1
#define ECHO_TIMEOUT_SEC 2.0
#define CONNECT_TIMEOUT_MS 2000
#define MAX_WORKERS 64
#define MAX_DAEMONS 2
#define MAX_SESSIONS 40
/* HUP pairs: the second HUP of a pair comes HUP_GAP_MS after the first,
 * while the reload it started is under way; pairs HUP_PAIR_GAP_MS apart. */
#define HUP_PAIRS 5
#define HUP_GAP_MS 10
#define HUP_PAIR_GAP_MS 150
#define OUTPUT_MAX 65536
#define LOG_TAIL_MAX 2500
/* Client threads in a load loop: each has at most one connection in flight. */
#define CLIENT_THREADS 2
#define MIN_CLIENT_ROUNDS 50
#define CLIENT_PAUSE_US 1000
#define CLIENT_MSG_LEN 16

static const char worker_title_prefix[] = "preforkd: worker process #";

/* Made by main(), removed by main() after the run. */
static char suite_dir[] = "/tmp/check_signals-XXXXXX";
static char test_dir[PATH_MAX];
static const char *preforkd_path;

/* One master under test. */
struct daemon {
    pid_t pid;          /* the master; 0: not started */
    pid_t pgid;         /* its process group; 0: none */
    bool reaped;        /* the master was waited for; status is valid */
    int status;         /* its wait status */
    unsigned port;
    int workers;        /* the config's */
    unsigned graceful_timeout_sec;
    char conf[PATH_MAX];
    char log[PATH_MAX];
    char pidfile[PATH_MAX];
};

static struct daemon daemons[MAX_DAEMONS];

/* One child of a master, as ps shows it. */
struct worker {
    pid_t pid;
    int id;             /* task id in its title; -1: not titled as a worker */
    int generation;     /* from "(generation N)"; -1: none */
    char title[160];
};

/* Output of one finished command. */
struct command {
    int status;         /* wait status; -1 if it had to be killed */
    char out[OUTPUT_MAX];
    char err[OUTPUT_MAX];
};

/* Clients that connect, echo CLIENT_MSG_LEN bytes and close, in a loop. */
struct client_loop {
    unsigned port;
    atomic_bool stop;
    atomic_int rounds;
    atomic_int connect_failures;
    atomic_int echo_failures;
    atomic_int first_connect_errno;
    struct client {
        struct client_loop *loop;
        int index;
        pthread_t thread;
    } clients[CLIENT_THREADS];
};

/* ---- files and logs ---- */

static void path_in_test_dir(char *buf, size_t size, const char *name)
{
    int n = snprintf(buf, size, "%s/%s", test_dir, name);

    ck_assert(n > 0 && (size_t)n < size);
}

static bool file_exists(const char *path)
{
    return access(path, F_OK) == 0;
}

/* The whole of a log (up to OUTPUT_MAX), in a buffer the next call reuses. */
static const char *read_log(const char *path)
{
    static char buf[OUTPUT_MAX];

    tu_read_file(path, buf, sizeof(buf));
    return buf;
}

static const char *log_tail(const struct daemon *d)
{
    const char *buf = read_log(d->log), *p;
    size_t len = strlen(buf);

    if (len <= LOG_TAIL_MAX)
        return buf;
    p = strchr(buf + len - LOG_TAIL_MAX, '\n');
    return p != NULL ? p + 1 : buf + len - LOG_TAIL_MAX;
}

/* Lines of text that hold needle. */
static int count_lines_with(const char *text, const char *needle)
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

/* ---- processes ---- */

static bool exited_with(int status, int code)
{
    return status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == code;
}

/* Reaps every child that has ended (we are a subreaper), keeping the
 * status of masters. */
static void reap_children(void)
{
    pid_t pid;
    int status;

    while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
        for (int i = 0; i < MAX_DAEMONS; i++)
            if (daemons[i].pid == pid && !daemons[i].reaped) {
                daemons[i].reaped = true;
                daemons[i].status = status;
            }
}

/* Waits up to timeout_sec for the master to end; true if it did. */
static bool daemon_wait_exit(struct daemon *d, double timeout_sec)
{
    double deadline = tu_now() + timeout_sec;

    for (;;) {
        reap_children();
        if (d->reaped || tu_now() >= deadline)
            return d->reaped;
        usleep(5000);
    }
}

static bool daemon_group_gone(struct daemon *d)
{
    reap_children();
    return d->pgid <= 0 || (kill(-d->pgid, 0) < 0 && errno == ESRCH);
}

static bool daemon_wait_group_gone(struct daemon *d, double timeout_sec)
{
    double deadline = tu_now() + timeout_sec;
    bool gone;

    while (!(gone = daemon_group_gone(d)) && tu_now() < deadline)
        usleep(5000);
    return gone;
}

/* Live processes of group pgid, as "pid "title"" items; *count (may be
 * NULL) gets how many. */
static const char *group_members(pid_t pgid, int *count)
{
    static char buf[2048];
    DIR *dir = opendir("/proc");
    struct dirent *e;
    size_t len = 0;
    int n = 0;

    buf[0] = '\0';
    while (dir != NULL && (e = readdir(dir)) != NULL) {
        pid_t pid = (pid_t)atoi(e->d_name);
        struct tu_proc_stat st;
        char title[160];

        if (!isdigit((unsigned char)e->d_name[0]) || !tu_proc_stat(pid, &st) ||
            st.pgrp != pgid || st.state == 'Z')
            continue;
        n++;
        tu_proc_cmdline(pid, title, sizeof(title));
        if (len < sizeof(buf))
            len += (size_t)snprintf(buf + len, sizeof(buf) - len, "%s%d \"%s\"",
                                    len ? ", " : "", (int)pid, title);
    }
    if (dir != NULL)
        closedir(dir);
    if (count != NULL)
        *count = n;
    return n == 0 ? "none" : buf;
}

static const char *describe_group(pid_t pgid)
{
    return group_members(pgid, NULL);
}

/* SIGTERM to the master and its group, SIGKILL after STOP_GRACE_SEC. */
static void daemon_stop(struct daemon *d)
{
    if (d->pid <= 0)
        return;
    if (!d->reaped)
        kill(d->pid, SIGTERM);
    if (d->pgid > 0)
        kill(-d->pgid, SIGTERM);
    if (!daemon_wait_group_gone(d, STOP_GRACE_SEC)) {
        if (!d->reaped)
            kill(d->pid, SIGKILL);
        if (d->pgid > 0)
            kill(-d->pgid, SIGKILL);
        daemon_wait_group_gone(d, STOP_GRACE_SEC);
    }
    daemon_wait_exit(d, 0);
}

/* ---- clients ---- */

/* Connects to 127.0.0.1:port within timeout_ms; the fd, or -errno. */
static int connect_port(unsigned port, int timeout_ms)
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

/* A new connection to port echoes "ping\n". */
static bool echo_ok(unsigned port)
{
    int fd = connect_port(port, CONNECT_TIMEOUT_MS);
    bool ok;

    if (fd < 0)
        return false;
    ok = tu_echo_exchange(fd, "ping\n", 5, ECHO_TIMEOUT_SEC);
    close(fd);
    return ok;
}

static void assert_serving(const struct daemon *d, const char *when)
{
    ck_assert_msg(echo_ok(d->port), "%s: no echo on 127.0.0.1:%u\n%s", when, d->port,
                  log_tail(d));
}

/* An open connection that echoed once: a worker has accepted it. */
static int open_session(const struct daemon *d)
{
    int fd = connect_port(d->port, CONNECT_TIMEOUT_MS);

    ck_assert_msg(fd >= 0, "connect 127.0.0.1:%u: %s", d->port, strerror(-fd));
    ck_assert_msg(tu_echo_exchange(fd, "hello\n", 6, ECHO_TIMEOUT_SEC),
                  "no echo on a new session\n%s", log_tail(d));
    return fd;
}

static bool session_echoes(int fd, int round)
{
    char msg[32];
    int len = snprintf(msg, sizeof(msg), "still here %d\n", round);

    return tu_echo_exchange(fd, msg, (size_t)len, ECHO_TIMEOUT_SEC);
}

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

static bool wait_refused(unsigned port, double timeout_sec)
{
    double deadline = tu_now() + timeout_sec;

    do {
        int fd = connect_port(port, 100);

        if (fd == -ECONNREFUSED)
            return true;
        if (fd >= 0)
            close(fd);
        usleep(5000);
    } while (tu_now() < deadline);
    return false;
}

/* Nobody listens on 127.0.0.1:port and a new listener may bind it. */
static void assert_port_free(unsigned port, const char *when)
{
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(port),
                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    int fd = connect_port(port, CONNECT_TIMEOUT_MS), one = 1, rc;

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
static void assert_nothing_left(struct daemon *d, const char *after)
{
    ck_assert_msg(daemon_wait_group_gone(d, GROUP_GONE_SEC), "%.1f s after the master exited "
                  "(%s), its group still has: %s\n%s", GROUP_GONE_SEC, after,
                  describe_group(d->pgid), log_tail(d));
    assert_port_free(d->port, after);
}

/* ---- load ---- */

static void *client_thread(void *arg)
{
    struct client *client = arg;
    struct client_loop *cl = client->loop;

    for (long round = 0; !atomic_load(&cl->stop); round++) {
        char msg[48];   /* CLIENT_MSG_LEN bytes are sent: "t1-000000000042\n" */
        int fd = connect_port(cl->port, CONNECT_TIMEOUT_MS);

        snprintf(msg, sizeof(msg), "t%u-%012lu\n", (unsigned)client->index % 10u,
                 (unsigned long)round % 1000000000000UL);
        if (fd < 0) {
            int none = 0;

            atomic_compare_exchange_strong(&cl->first_connect_errno, &none, -fd);
            atomic_fetch_add(&cl->connect_failures, 1);
        } else {
            if (tu_echo_exchange(fd, msg, CLIENT_MSG_LEN, ECHO_TIMEOUT_SEC))
                atomic_fetch_add(&cl->rounds, 1);
            else
                atomic_fetch_add(&cl->echo_failures, 1);
            close(fd);
        }
        usleep(CLIENT_PAUSE_US);
    }
    return NULL;
}

static void client_loop_start(struct client_loop *cl, unsigned port)
{
    memset(cl, 0, sizeof(*cl));
    cl->port = port;
    for (int i = 0; i < CLIENT_THREADS; i++) {
        cl->clients[i].loop = cl;
        cl->clients[i].index = i;
        ck_assert_int_eq(pthread_create(&cl->clients[i].thread, NULL, client_thread,
                                        &cl->clients[i]), 0);
    }
}

static void client_loop_stop(struct client_loop *cl)
{
    atomic_store(&cl->stop, true);
    for (int i = 0; i < CLIENT_THREADS; i++)
        pthread_join(cl->clients[i].thread, NULL);
}

/* ---- the daemon ---- */

static struct daemon *daemon_new(void)
{
    for (int i = 0; i < MAX_DAEMONS; i++) {
        struct daemon *d = &daemons[i];
        char name[32];

        if (d->conf[0] != '\0')
            continue;
        snprintf(name, sizeof(name), "d%d.conf", i);
        path_in_test_dir(d->conf, sizeof(d->conf), name);
        snprintf(name, sizeof(name), "d%d.log", i);
        path_in_test_dir(d->log, sizeof(d->log), name);
        path_in_test_dir(d->pidfile, sizeof(d->pidfile), "p.pid");
        return d;
    }
    ck_abort_msg("more than %d daemons in one test", MAX_DAEMONS);
    return NULL;
}

/* An echo config: workers, graceful_timeout, the test's pidfile, the port. */
static void write_conf(struct daemon *d)
{
    FILE *f = fopen(d->conf, "w");

    ck_assert_ptr_nonnull(f);
    fprintf(f, "[daemon]\nworkers = %d\ngraceful_timeout = %u\npidfile = %s\n"
               "[server]\nhandler = echo\nlisten = 127.0.0.1:%u\n",
            d->workers, d->graceful_timeout_sec, d->pidfile, d->port);
    ck_assert_int_eq(fclose(f), 0);
}

/* Starts `preforkd -f -c d->conf` in a process group of its own. */
static void daemon_launch(struct daemon *d)
{
    const char *argv[] = { preforkd_path, "-f", "-c", d->conf, NULL };
    pid_t test = getpid();

    d->reaped = false;
    d->pid = fork();
    ck_assert_int_ge(d->pid, 0);
    if (d->pid == 0) {
        setpgid(0, 0);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != test)
            _exit(126);
        tu_exec_child(preforkd_path, (char *const *)argv, d->log, d->log);
    }
    setpgid(d->pid, d->pid);
    d->pgid = d->pid;
    tu_record_pgid(suite_dir, d->pgid);
}

/* "#0 pid 12 gen 2, ..." for failure messages. */
static const char *describe_workers(const struct worker *ws, int n)
{
    static char buf[2048];
    size_t len = 0;

    buf[0] = '\0';
    for (int i = 0; i < n && len < sizeof(buf); i++)
        len += (size_t)snprintf(buf + len, sizeof(buf) - len, "%s#%d pid %d generation %d",
                                i ? ", " : "", ws[i].id, (int)ws[i].pid, ws[i].generation);
    return n == 0 ? "no worker" : buf;
}

/* The master's live children with their task ids and generations. */
static int workers_of(pid_t master, struct worker *ws)
{
    pid_t pids[MAX_WORKERS];
    int n = tu_children_of(master, pids, MAX_WORKERS);

    n = n < MAX_WORKERS ? n : MAX_WORKERS;
    for (int i = 0; i < n; i++) {
        const char *t = ws[i].title, *g;

        ws[i].pid = pids[i];
        tu_proc_cmdline(pids[i], ws[i].title, sizeof(ws[i].title));
        ws[i].id = strncmp(t, worker_title_prefix, strlen(worker_title_prefix)) == 0
                       ? atoi(t + strlen(worker_title_prefix)) : -1;
        g = strstr(t, "(generation ");
        ws[i].generation = g != NULL ? atoi(g + strlen("(generation ")) : -1;
    }
    return n;
}

/* Exactly d->workers children, task ids 0..workers-1 once each, all of
 * generation (any if generation < 0). */
static bool workers_are(const struct worker *ws, int n, int workers, int generation)
{
    bool seen[MAX_WORKERS] = { false };

    if (n != workers)
        return false;
    for (int i = 0; i < n; i++) {
        if (ws[i].id < 0 || ws[i].id >= workers || seen[ws[i].id] ||
            (generation >= 0 && ws[i].generation != generation))
            return false;
        seen[ws[i].id] = true;
    }
    return true;
}

/* Polls until the table matches, twice SETTLE_SEC apart, within timeout_sec. */
static bool wait_workers(struct daemon *d, int generation, struct worker *ws, int *n,
                         double timeout_sec)
{
    double deadline = tu_now() + timeout_sec;

    for (;;) {
        *n = workers_of(d->pid, ws);
        if (workers_are(ws, *n, d->workers, generation)) {
            usleep((useconds_t)(SETTLE_SEC * 1e6));
            *n = workers_of(d->pid, ws);
            if (workers_are(ws, *n, d->workers, generation))
                return true;
        }
        if (tu_now() >= deadline || daemon_wait_exit(d, 0))
            return false;
        usleep(5000);
    }
}

static void daemon_wait_ready(struct daemon *d)
{
    double deadline = tu_now() + READY_TIMEOUT_SEC;
    int fd;

    while ((fd = connect_port(d->port, 100)) < 0 && tu_now() < deadline) {
        ck_assert_msg(!daemon_wait_exit(d, 0), "preforkd exited (status 0x%x) before "
                      "accepting:\n%s", (unsigned)d->status, log_tail(d));
        usleep(10000);
    }
    ck_assert_msg(fd >= 0, "no connection to preforkd within %.0f s: %s\n%s", READY_TIMEOUT_SEC,
                  strerror(-fd), log_tail(d));
    close(fd);
}

/* An echo daemon with this many workers and graceful_timeout on a fresh
 * port, accepting with all its workers (ws gets them). */
static struct daemon *start_daemon(int workers, unsigned graceful_timeout_sec, struct worker *ws)
{
    struct daemon *d = daemon_new();
    int n;

    d->workers = workers;
    d->graceful_timeout_sec = graceful_timeout_sec;
    d->port = tu_free_port("127.0.0.1");
    write_conf(d);
    daemon_launch(d);
    daemon_wait_ready(d);
    ck_assert_msg(wait_workers(d, 1, ws, &n, READY_TIMEOUT_SEC), "start: expected %d workers of "
                  "generation 1; master has: %s\n%s", workers, describe_workers(ws, n),
                  log_tail(d));
    return d;
}

/* Runs `preforkd args...` (NULL-terminated) to its end. */
static void run_preforkd(struct command *c, const char *const *args)
{
    const char *argv[16] = { preforkd_path };
    char out[PATH_MAX], err[PATH_MAX];
    pid_t test = getpid(), pid;
    int i = 1;

    for (; args[i - 1] != NULL && i < 15; i++)
        argv[i] = args[i - 1];
    argv[i] = NULL;
    path_in_test_dir(out, sizeof(out), "cmd.out");
    path_in_test_dir(err, sizeof(err), "cmd.err");
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != test)
            _exit(126);
        tu_exec_child(preforkd_path, (char *const *)argv, out, err);
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
    char dir_path[64], want[64];
    DIR *dir;
    struct dirent *e;
    bool found = false;

    snprintf(dir_path, sizeof(dir_path), "/proc/%d/fd", (int)pid);
    snprintf(want, sizeof(want), "socket:[%lu]", inode);
    dir = opendir(dir_path);
    while (dir != NULL && !found && (e = readdir(dir)) != NULL) {
        char path[sizeof(dir_path) + sizeof(e->d_name) + 1], link[64];
        ssize_t len;

        snprintf(path, sizeof(path), "%s/%s", dir_path, e->d_name);
        len = readlink(path, link, sizeof(link) - 1);
        if (len > 0) {
            link[len] = '\0';
            found = strcmp(link, want) == 0;
        }
    }
    if (dir != NULL)
        closedir(dir);
    return found;
}

/* ---- fixtures ---- */

static void setup(void)
{
    snprintf(test_dir, sizeof(test_dir), "%s/t-XXXXXX", suite_dir);
    ck_assert_ptr_nonnull(mkdtemp(test_dir));
    ck_assert_int_eq(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
    memset(daemons, 0, sizeof(daemons));
}

/* Stops what still runs; then, for every daemon: nothing of it is left,
 * its port is free, no sanitizer spoke. */
static void teardown(void)
{
    for (int i = 0; i < MAX_DAEMONS; i++)
        daemon_stop(&daemons[i]);
    for (int i = 0; i < MAX_DAEMONS; i++) {
        struct daemon *d = &daemons[i];

        if (d->pid <= 0)
            continue;
        ck_assert_msg(daemon_group_gone(d), "daemon %d's group outlives SIGKILL: %s", i,
                      describe_group(d->pgid));
        assert_port_free(d->port, "once every daemon of the test stopped");
        tu_assert_no_sanitizer_report(read_log(d->log));
    }
}

/* ---- HUP during a reload ---- */

START_TEST(test_hup_pairs_10ms_apart_end_with_only_newest_generation_and_no_failed_client)
{
    struct worker ws[MAX_WORKERS];
    struct daemon *d = start_daemon(2, GRACEFUL_TIMEOUT_SEC, ws);
    struct client_loop cl;
    int n, reloads, newest, rounds, cf, ef;
    const char *members;
    bool settled;

    client_loop_start(&cl, d->port);
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
    reloads = count_lines_with(read_log(d->log), "reloading ");
    newest = 1 + reloads;
    settled = wait_workers(d, newest, ws, &n, RELOAD_TIMEOUT_SEC);
    usleep(200000);
    client_loop_stop(&cl);
    rounds = atomic_load(&cl.rounds);
    cf = atomic_load(&cl.connect_failures);
    ef = atomic_load(&cl.echo_failures);
    printf("check_signals: %d HUPs in pairs %d ms apart: %d reloads; %d clients served, %d "
           "connects and %d echoes failed\n", 2 * HUP_PAIRS, HUP_GAP_MS, reloads, rounds, cf, ef);

    ck_assert_msg(!daemon_wait_exit(d, 0), "master exited (status 0x%x) during the reloads\n%s",
                  (unsigned)d->status, log_tail(d));
    ck_assert_msg(reloads >= HUP_PAIRS && reloads <= 2 * HUP_PAIRS, "%d reloads logged for %d "
                  "HUPs\n%s", reloads, 2 * HUP_PAIRS, log_tail(d));
    ck_assert_msg(settled, "%.0f s after the last HUP, expected 2 workers of generation %d and "
                  "nothing else; master has: %s\n%s", RELOAD_TIMEOUT_SEC, newest,
                  describe_workers(ws, n), log_tail(d));
    /* Nothing else either: an old worker gone astray would still be in
     * the group. */
    members = group_members(d->pgid, &n);
    ck_assert_msg(n == 1 + d->workers, "the daemon's group has %d processes, not the master and "
                  "%d workers: %s", n, d->workers, members);
    ck_assert_msg(cf == 0, "%d of %d connects failed during the reloads, the first with %s\n%s",
                  cf, rounds + cf + ef, strerror(atomic_load(&cl.first_connect_errno)),
                  log_tail(d));
    ck_assert_msg(ef == 0, "%d of %d connections failed to echo during the reloads\n%s", ef,
                  rounds + ef, log_tail(d));
    ck_assert_msg(rounds >= MIN_CLIENT_ROUNDS, "only %d round trips: the load did not run",
                  rounds);
    assert_serving(d, "after the reloads");
}
END_TEST

/* ---- TERM during a reload ---- */

START_TEST(test_term_during_reload_exits_0_within_1s_and_leaves_no_worker)
{
    struct worker ws[MAX_WORKERS];
    struct daemon *d = start_daemon(2, GRACEFUL_TIMEOUT_SEC, ws);
    double deadline, termed_at;
    bool new_started = false;
    int n;

    ck_assert_int_eq(kill(d->pid, SIGHUP), 0);
    /* TERM once the new generation runs, while the old one still does. */
    deadline = tu_now() + 1.0;
    while (!new_started && tu_now() < deadline) {
        n = workers_of(d->pid, ws);
        for (int i = 0; i < n; i++)
            new_started = new_started || ws[i].generation == 2;
        if (!new_started)
            usleep(500);
    }
    ck_assert_int_eq(kill(d->pid, SIGTERM), 0);
    termed_at = tu_now();
    ck_assert_msg(new_started, "no worker of generation 2 within 1 s of HUP\n%s", log_tail(d));
    ck_assert_msg(daemon_wait_exit(d, FAST_STOP_SEC), "master still runs %.1f s after TERM "
                  "during a reload; group: %s\n%s", FAST_STOP_SEC, describe_group(d->pgid),
                  log_tail(d));
    printf("check_signals: TERM during a reload: master exited after %.0f ms\n",
           (tu_now() - termed_at) * 1000);
    ck_assert_msg(exited_with(d->status, 0), "master status 0x%x after TERM during a reload\n%s",
                  (unsigned)d->status, log_tail(d));
    assert_nothing_left(d, "TERM during a reload");
    ck_assert_msg(!file_exists(d->pidfile), "pidfile %s left", d->pidfile);
}
END_TEST

/* ---- QUIT, then TERM ---- */

START_TEST(test_term_200ms_after_quit_with_open_session_wins_and_exits_0_within_1s)
{
    struct worker ws[MAX_WORKERS];
    struct daemon *d = start_daemon(2, LONG_GRACEFUL_TIMEOUT_SEC, ws);
    int fd = open_session(d);
    double termed_at;

    ck_assert_int_eq(kill(d->pid, SIGQUIT), 0);
    usleep(200000);
    ck_assert_msg(!daemon_wait_exit(d, 0), "master exited (status 0x%x) 200 ms after QUIT with "
                  "a session open (graceful_timeout = %d)\n%s", (unsigned)d->status,
                  LONG_GRACEFUL_TIMEOUT_SEC, log_tail(d));
    ck_assert_msg(session_echoes(fd, 1), "the open session stopped echoing after QUIT\n%s",
                  log_tail(d));
    ck_assert_int_eq(kill(d->pid, SIGTERM), 0);
    termed_at = tu_now();
    ck_assert_msg(daemon_wait_exit(d, FAST_STOP_SEC), "master still runs %.1f s after TERM "
                  "that followed QUIT; group: %s\n%s", FAST_STOP_SEC, describe_group(d->pgid),
                  log_tail(d));
    printf("check_signals: TERM after QUIT: master exited after %.0f ms\n",
           (tu_now() - termed_at) * 1000);
    ck_assert_msg(exited_with(d->status, 0), "master status 0x%x after QUIT then TERM\n%s",
                  (unsigned)d->status, log_tail(d));
    ck_assert_msg(session_ends(fd, 0.5), "the session is still open after the master exited");
    close(fd);
    assert_nothing_left(d, "QUIT then TERM");
}
END_TEST

/* ---- a worker killed during a graceful stop ---- */

START_TEST(test_worker_killed_during_graceful_stop_is_not_replaced_and_master_exits_0)
{
    struct worker ws[MAX_WORKERS], now[MAX_WORKERS];
    struct daemon *d = start_daemon(2, LONG_GRACEFUL_TIMEOUT_SEC, ws);
    int fds[MAX_SESSIONS], holder[MAX_SESSIONS], nfds = 0, n, victim_fd = -1, other_fd = -1;
    pid_t victim, survivor;
    double closed_at;

    /* Sessions until each worker holds one: the survivor then drains. */
    while (nfds < MAX_SESSIONS && (victim_fd < 0 || other_fd < 0)) {
        unsigned long inode;

        fds[nfds] = open_session(d);
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
    ck_assert_msg(wait_refused(d->port, REFUSE_TIMEOUT_SEC), "connections still accepted "
                  "%.1f s after QUIT\n%s", REFUSE_TIMEOUT_SEC, log_tail(d));
    ck_assert_int_eq(kill(victim, SIGKILL), 0);
    usleep(500000);
    ck_assert_msg(!daemon_wait_exit(d, 0), "master exited (status 0x%x) with sessions open on "
                  "the surviving worker\n%s", (unsigned)d->status, log_tail(d));
    n = workers_of(d->pid, now);
    ck_assert_msg(n == 1 && now[0].pid == survivor, "0.5 s after kill -9 of worker %d during "
                  "QUIT, expected only worker %d; master has: %s\n%s", (int)victim,
                  (int)survivor, describe_workers(now, n), log_tail(d));
    ck_assert_msg(session_echoes(other_fd, 1), "the survivor's session stopped echoing\n%s",
                  log_tail(d));
    ck_assert_msg(session_ends(victim_fd, 0.5), "the killed worker's session is still open");

    for (int i = 0; i < nfds; i++)
        close(fds[i]);
    closed_at = tu_now();
    ck_assert_msg(daemon_wait_exit(d, FAST_STOP_SEC + 0.5), "master still runs %.1f s after the "
                  "last session closed; group: %s\n%s", FAST_STOP_SEC + 0.5,
                  describe_group(d->pgid), log_tail(d));
    printf("check_signals: worker killed during QUIT: master exited %.0f ms after the last "
           "session closed\n", (tu_now() - closed_at) * 1000);
    ck_assert_msg(exited_with(d->status, 0), "master status 0x%x after a worker was killed "
                  "during QUIT\n%s", (unsigned)d->status, log_tail(d));
    ck_assert_msg(strstr(read_log(d->log), "restarting") == NULL, "the master restarted a "
                  "worker during QUIT:\n%s", log_tail(d));
    assert_nothing_left(d, "QUIT with a worker killed");
}
END_TEST

/* ---- the master killed ---- */

START_TEST(test_master_killed_workers_exit_within_2s_and_new_master_binds_at_once)
{
    struct worker ws[MAX_WORKERS], ws2[MAX_WORKERS];
    struct daemon *d = start_daemon(2, GRACEFUL_TIMEOUT_SEC, ws), *next;
    int fd = open_session(d), n;
    double killed_at;
    const char *log;

    ck_assert_int_eq(kill(d->pid, SIGKILL), 0);
    killed_at = tu_now();
    ck_assert(daemon_wait_exit(d, STOP_GRACE_SEC));
    /* At once, on the same config (same port, same pidfile). */
    next = daemon_new();
    *next = (struct daemon){ .port = d->port, .workers = d->workers,
                             .graceful_timeout_sec = d->graceful_timeout_sec };
    memcpy(next->conf, d->conf, sizeof(next->conf));
    memcpy(next->pidfile, d->pidfile, sizeof(next->pidfile));
    path_in_test_dir(next->log, sizeof(next->log), "d1.log");
    daemon_launch(next);

    ck_assert_msg(daemon_wait_group_gone(d, ORPHAN_EXIT_SEC - (tu_now() - killed_at)),
                  "%.0f s after kill -9 of the master, still running: %s", ORPHAN_EXIT_SEC,
                  describe_group(d->pgid));
    printf("check_signals: kill -9 of the master: its workers were gone after %.0f ms\n",
           (tu_now() - killed_at) * 1000);
    ck_assert_msg(session_ends(fd, 0.5), "a session of a dead worker is still open");
    close(fd);

    daemon_wait_exit(next, 0.5);
    log = log_tail(next);
    ck_assert_msg(!next->reaped, "a master started right after kill -9 of the old one exited "
                  "(status 0x%x):\n%s", (unsigned)next->status, log);
    daemon_wait_ready(next);
    ck_assert_msg(wait_workers(next, 1, ws2, &n, READY_TIMEOUT_SEC), "the new master has: %s\n%s",
                  describe_workers(ws2, n), log_tail(next));
    assert_serving(next, "the new master");
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
    static struct command cmd;
    struct worker ws[MAX_WORKERS], after[MAX_WORKERS];
    struct daemon *d = start_daemon(2, GRACEFUL_TIMEOUT_SEC, ws), *second;
    const char *args[] = { "-c", d->conf, "-s", "reload", NULL };
    char where[64];
    const char *log;
    int n;

    ck_assert_int_eq(unlink(d->pidfile), 0);
    usleep(200000);
    assert_serving(d, "with its pidfile deleted");

    run_preforkd(&cmd, args);
    ck_assert_msg(exited_with(cmd.status, 1), "-s reload without the pidfile: status 0x%x\n"
                  "stdout: %s\nstderr: %s", (unsigned)cmd.status, cmd.out, cmd.err);
    ck_assert_msg(strstr(cmd.err, d->pidfile) != NULL, "-s reload does not name %s:\n%s",
                  d->pidfile, cmd.err);

    second = daemon_new();
    *second = (struct daemon){ .port = d->port, .workers = d->workers,
                               .graceful_timeout_sec = d->graceful_timeout_sec };
    memcpy(second->conf, d->conf, sizeof(second->conf));
    memcpy(second->pidfile, d->pidfile, sizeof(second->pidfile));
    path_in_test_dir(second->log, sizeof(second->log), "d1.log");
    daemon_launch(second);
    ck_assert_msg(daemon_wait_exit(second, COMMAND_TIMEOUT_SEC), "a second instance on the same "
                  "port still runs %.0f s later; group: %s\n%s", COMMAND_TIMEOUT_SEC,
                  describe_group(second->pgid), log_tail(second));
    log = log_tail(second);
    ck_assert_msg(exited_with(second->status, 1), "second instance: status 0x%x\n%s",
                  (unsigned)second->status, log);
    snprintf(where, sizeof(where), "127.0.0.1:%u", d->port);
    ck_assert_msg(strstr(log, where) != NULL && strstr(log, strerror(EADDRINUSE)) != NULL,
                  "the second instance does not say that %s is in use:\n%s", where, log);
    ck_assert_msg(daemon_wait_group_gone(second, GROUP_GONE_SEC), "the second instance left: %s",
                  describe_group(second->pgid));
    ck_assert_msg(!file_exists(d->pidfile), "the failed second instance left a pidfile %s",
                  d->pidfile);

    ck_assert_msg(!daemon_wait_exit(d, 0), "the first master exited (status 0x%x)\n%s",
                  (unsigned)d->status, log_tail(d));
    n = workers_of(d->pid, after);
    ck_assert_msg(n == 2 && ((after[0].pid == ws[0].pid && after[1].pid == ws[1].pid) ||
                             (after[0].pid == ws[1].pid && after[1].pid == ws[0].pid)),
                  "the first master's workers changed: %s (were %s)", describe_workers(after, n),
                  describe_workers(ws, 2));
    assert_serving(d, "the first instance after the second failed");
}
END_TEST

/* ---- suite ---- */

static TCase *new_tcase(Suite *s, const char *name)
{
    TCase *tc = tcase_create(name);

    tcase_set_timeout(tc, TCASE_TIMEOUT_SEC);
    tcase_add_checked_fixture(tc, setup, teardown);
    suite_add_tcase(s, tc);
    return tc;
}

static Suite *signals_suite(void)
{
    Suite *s = suite_create("signals");
    TCase *tc = new_tcase(s, "during_reload");

    tcase_add_test(tc, test_hup_pairs_10ms_apart_end_with_only_newest_generation_and_no_failed_client);
    tcase_add_test(tc, test_term_during_reload_exits_0_within_1s_and_leaves_no_worker);

    tc = new_tcase(s, "during_shutdown");
    tcase_add_test(tc, test_term_200ms_after_quit_with_open_session_wins_and_exits_0_within_1s);
    tcase_add_test(tc, test_worker_killed_during_graceful_stop_is_not_replaced_and_master_exits_0);

    tc = new_tcase(s, "lost_master");
    tcase_add_test(tc, test_master_killed_workers_exit_within_2s_and_new_master_binds_at_once);
    tcase_add_test(tc, test_deleted_pidfile_master_serves_on_reload_names_it_second_instance_fails_bind);
    return s;
}

int main(void)
{
    int failed, n_left;

    preforkd_path = tu_preforkd_path("check_signals");
    if (preforkd_path == NULL)
        return 1;
    if (mkdtemp(suite_dir) == NULL) {
        perror("check_signals: mkdtemp");
        return 1;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    failed = tu_run_suite(signals_suite());
    n_left = tu_kill_recorded_groups(suite_dir, "check_signals", 1.0);
    if (n_left > 0) {
        fprintf(stderr, "check_signals: killed %d preforkd process%s left running by failed "
                "tests\n", n_left, n_left == 1 ? "" : "es");
        failed++;
    }
    tu_rmtree(suite_dir);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

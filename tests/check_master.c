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
 * and main() kills and counts whatever is left in the recorded groups.
 */
#define _GNU_SOURCE     /* strcasestr */
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
#include <pwd.h>
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
/* A worker table must look the same twice this far apart: a run of forks
 * passes through every smaller count. */
#define SETTLE_SEC 0.1
#define ECHO_TIMEOUT_SEC 2.0
#define CONNECT_TIMEOUT_MS 2000
#define MAX_WORKERS 64
#define MAX_LISTENERS 2
#define MAX_DAEMONS 2
/* Enough for any stdout, stderr or log a test looks at. */
#define OUTPUT_MAX 65536
/* The part of a log a failure message shows (Check cuts messages at 4 KiB). */
#define LOG_TAIL_MAX 2500
/* Client threads in a load loop: each has at most one connection in flight. */
#define CLIENT_THREADS 2
/* A load loop with fewer round trips than this did not load anything. */
#define MIN_CLIENT_ROUNDS 50
/* Between two round trips of a load loop: ~1000 connections/s per thread
 * exercise every window while leaving ephemeral ports for the rest. */
#define CLIENT_PAUSE_US 1000
/* Bytes per round trip of a load loop. */
#define CLIENT_MSG_LEN 16

static const char master_title_prefix[] = "preforkd: master process ";
static const char worker_title_prefix[] = "preforkd: worker process #";

/* Made by main(), removed by main() after the run. */
static char suite_dir[] = "/tmp/check_master-XXXXXX";
/* This test's directory: configs, logs, pidfile, outputs. */
static char test_dir[PATH_MAX];
static const char *preforkd_path;

/* One master under test. */
struct daemon {
    pid_t pid;          /* the master; 0: not started (or not known yet) */
    pid_t pgid;         /* its process group, signalled by teardown; 0: none */
    bool reaped;        /* the master was waited for; status is valid */
    int status;         /* its wait status */
    unsigned port;      /* its first listener on 127.0.0.1 */
    char conf[PATH_MAX];
    char log[PATH_MAX];     /* its stdout and stderr (its log, with -f) */
    char pidfile[PATH_MAX];
    char cmdline[2 * PATH_MAX];     /* its argv joined by spaces, as ps shows it */
};

/* The daemons of the running test, stopped by the teardown of a passing test. */
static struct daemon daemons[MAX_DAEMONS];

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

/* One child of a master, as ps shows it. */
struct worker {
    pid_t pid;
    int id;             /* the task id in its title; -1: not titled as a worker */
    char title[160];
};

/* A worker table a test waits for. */
struct expect {
    int n;                      /* exactly n children, titled #0..#n-1 once each */
    const struct worker *keep;  /* these are still there, same pid and task id */
    int n_keep;
    const struct worker *gone;  /* none of these pids is among them */
    int n_gone;
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
    atomic_int rounds;              /* round trips that echoed */
    atomic_int connect_failures;
    atomic_int echo_failures;       /* reset, EOF, timeout or wrong bytes */
    atomic_int first_connect_errno;
    struct client {
        struct client_loop *loop;
        int index;                  /* tells its bytes from the others' */
        pthread_t thread;
    } clients[CLIENT_THREADS];
};

/* ---- files ---- */

static void path_in_test_dir(char *buf, size_t size, const char *name)
{
    int n = snprintf(buf, size, "%s/%s", test_dir, name);

    ck_assert(n > 0 && (size_t)n < size);
}

static bool file_exists(const char *path)
{
    return access(path, F_OK) == 0;
}

/* 1-based number of the line of path that holds needle; 0 if none. */
static int line_of(const char *path, const char *needle)
{
    static char text[OUTPUT_MAX];
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

static bool exited_with(int status, int code)
{
    return status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == code;
}

static bool pid_exists(pid_t pid)
{
    return kill(pid, 0) == 0 || errno != ESRCH;
}

/* Reaps every child that has ended (we are a subreaper: orphaned workers
 * and daemonized masters end up here), keeping the status of masters. */
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
        usleep(10000);
    }
}

/* True once no process of the daemon's group is left (reaping ours). */
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
        usleep(10000);
    return gone;
}

/* SIGTERM to the master and its group, SIGKILL after STOP_GRACE_SEC. */
static void daemon_stop(struct daemon *d)
{
    if (d->pid <= 0)
        return;
    kill(d->pid, SIGTERM);
    if (d->pgid > 0)
        kill(-d->pgid, SIGTERM);
    if (!daemon_wait_group_gone(d, STOP_GRACE_SEC)) {
        kill(d->pid, SIGKILL);
        if (d->pgid > 0)
            kill(-d->pgid, SIGKILL);
        daemon_wait_group_gone(d, STOP_GRACE_SEC);
    }
    daemon_wait_exit(d, 0);
}

/* SIGKILLs and reaps every process that is still our child. */
static void kill_our_children(void)
{
    pid_t pids[MAX_WORKERS];
    double deadline = tu_now() + STOP_GRACE_SEC;
    int n;

    while ((n = tu_children_of(getpid(), pids, MAX_WORKERS)) > 0 && tu_now() < deadline) {
        for (int i = 0; i < n && i < MAX_WORKERS; i++)
            kill(pids[i], SIGKILL);
        usleep(10000);
        reap_children();
    }
    reap_children();
}

/* The next free daemon slot of this test, with its file names set. */
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

/* Writes c as d's config, atomically (a master may read it any time). */
static void write_conf(struct daemon *d, const struct conf *c)
{
    char tmp[PATH_MAX + 8];
    FILE *f;

    snprintf(tmp, sizeof(tmp), "%s.new", d->conf);
    f = fopen(tmp, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f, "[daemon]\nworkers = %d\ngraceful_timeout = %u\npidfile = %s\n%s",
            c->workers, c->graceful_timeout_sec, d->pidfile,
            c->daemon_extra != NULL ? c->daemon_extra : "");
    fprintf(f, "[server]\nhandler = echo\n");
    for (int i = 0; i < MAX_LISTENERS; i++)
        if (c->ports[i] != 0)
            fprintf(f, "listen = 127.0.0.1:%u\n", c->ports[i]);
    fprintf(f, "%s", c->server_extra != NULL ? c->server_extra : "");
    ck_assert_int_eq(fclose(f), 0);
    ck_assert_int_eq(rename(tmp, d->conf), 0);
    if (d->port == 0)
        d->port = c->ports[0];
}

/* An echo config with this many workers on a fresh port. */
static struct conf echo_conf(int workers)
{
    return (struct conf){ .workers = workers, .graceful_timeout_sec = GRACEFUL_TIMEOUT_SEC,
                          .ports = { tu_free_port("127.0.0.1") } };
}

/* Starts `preforkd -f -c d->conf` in a process group of its own, without
 * waiting for anything. */
static void daemon_launch(struct daemon *d)
{
    const char *argv[] = { preforkd_path, "-f", "-c", d->conf, NULL };
    pid_t test = getpid();

    snprintf(d->cmdline, sizeof(d->cmdline), "%s -f -c %s", preforkd_path, d->conf);
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
    /* Also here, so that the group exists before anyone signals it. */
    setpgid(d->pid, d->pid);
    d->pgid = d->pid;
    tu_record_pgid(suite_dir, d->pgid);
}

/* The whole of a log (up to OUTPUT_MAX), in a buffer the next call reuses. */
static const char *read_log(const char *path)
{
    static char buf[OUTPUT_MAX];

    tu_read_file(path, buf, sizeof(buf));
    return buf;
}

/* The last LOG_TAIL_MAX bytes of a log, from a line start. */
static const char *log_tail(const char *path)
{
    const char *buf = read_log(path), *p;
    size_t len = strlen(buf);

    if (len <= LOG_TAIL_MAX)
        return buf;
    p = strchr(buf + len - LOG_TAIL_MAX, '\n');
    return p != NULL ? p + 1 : buf + len - LOG_TAIL_MAX;
}

static const char *daemon_log_tail(const struct daemon *d)
{
    return log_tail(d->log);
}

/* The daemon's log from byte offset on (what it logged after offset). */
static const char *daemon_log_since(const struct daemon *d, size_t offset)
{
    const char *buf = read_log(d->log);

    return strlen(buf) >= offset ? buf + offset : "";
}

static size_t daemon_log_size(const struct daemon *d)
{
    struct stat st;

    return stat(d->log, &st) == 0 ? (size_t)st.st_size : 0;
}

/* Runs `preforkd args...` (NULL-terminated) to its end; returns its pid. */
static pid_t run_preforkd(struct command *c, const char *const *args)
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
    return pid;
}

/* `preforkd -c d->conf -s signal`; fails the test unless it exits with code. */
static void run_signal_command(const struct daemon *d, const char *signal_name, int code)
{
    static struct command c;
    const char *args[] = { "-c", d->conf, "-s", signal_name, NULL };

    run_preforkd(&c, args);
    ck_assert_msg(exited_with(c.status, code), "preforkd -s %s: status 0x%x, expected exit %d\n"
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

static void assert_serving(const struct daemon *d, unsigned port, const char *when)
{
    ck_assert_msg(echo_ok(port), "%s: no echo on 127.0.0.1:%u\n%s", when, port, daemon_log_tail(d));
}

/* An open connection that echoed once: a worker has accepted it. */
static int open_session(const struct daemon *d)
{
    int fd = connect_port(d->port, CONNECT_TIMEOUT_MS);

    ck_assert_msg(fd >= 0, "connect 127.0.0.1:%u: %s", d->port, strerror(-fd));
    ck_assert_msg(tu_echo_exchange(fd, "hello\n", 6, ECHO_TIMEOUT_SEC),
                  "no echo on a new session\n%s", daemon_log_tail(d));
    return fd;
}

/* One more round trip on an open session; false if it failed. */
static bool session_echoes(int fd, int round)
{
    char msg[32];
    int len = snprintf(msg, sizeof(msg), "still here %d\n", round);

    return tu_echo_exchange(fd, msg, (size_t)len, ECHO_TIMEOUT_SEC);
}

/* Polls connects to port until one is refused; true if one was within timeout_sec. */
static bool wait_refused(unsigned port, double timeout_sec)
{
    double deadline = tu_now() + timeout_sec;

    do {
        int fd = connect_port(port, 100);

        if (fd == -ECONNREFUSED)
            return true;
        if (fd >= 0)
            close(fd);
        usleep(10000);
    } while (tu_now() < deadline);
    return false;
}

/* Polls connect() until it succeeds; fails the test if the master exits or
 * READY_TIMEOUT_SEC passes. */
static void daemon_wait_ready(struct daemon *d)
{
    double deadline = tu_now() + READY_TIMEOUT_SEC;
    int fd;

    while ((fd = connect_port(d->port, 100)) < 0 && tu_now() < deadline) {
        ck_assert_msg(!daemon_wait_exit(d, 0),
                      "preforkd exited (status 0x%x) before accepting:\n%s",
                      (unsigned)d->status, daemon_log_tail(d));
        usleep(20000);
    }
    ck_assert_msg(fd >= 0, "no connection to preforkd within %.0f s: %s\n%s", READY_TIMEOUT_SEC,
                  strerror(-fd), daemon_log_tail(d));
    close(fd);
}

/* Writes c and starts a foreground daemon that accepts on c->ports[0]. */
static struct daemon *start_daemon(const struct conf *c)
{
    struct daemon *d = daemon_new();

    write_conf(d, c);
    daemon_launch(d);
    daemon_wait_ready(d);
    return d;
}

/* One client thread: connect, echo CLIENT_MSG_LEN bytes, close, until stop. */
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
        struct client *client = &cl->clients[i];

        client->loop = cl;
        client->index = i;
        ck_assert_int_eq(pthread_create(&client->thread, NULL, client_thread, client), 0);
    }
}

static void client_loop_stop(struct client_loop *cl)
{
    atomic_store(&cl->stop, true);
    for (int i = 0; i < CLIENT_THREADS; i++)
        pthread_join(cl->clients[i].thread, NULL);
}

/* Fails the test if the loop made too few round trips, any connect failed,
 * or more than max_echo_failures round trips failed after connecting. */
static void assert_client_loop(const struct daemon *d, struct client_loop *cl,
                               int max_echo_failures)
{
    int rounds = atomic_load(&cl->rounds), cf = atomic_load(&cl->connect_failures),
        ef = atomic_load(&cl->echo_failures), first = atomic_load(&cl->first_connect_errno);

    ck_assert_msg(cf == 0, "%d of %d connects failed, the first with %s\n%s", cf, rounds + cf + ef,
                  strerror(first), daemon_log_tail(d));
    ck_assert_msg(ef <= max_echo_failures,
                  "%d of %d connections failed to echo (at most %d may)\n%s",
                  ef, rounds + ef, max_echo_failures, daemon_log_tail(d));
    ck_assert_msg(rounds >= MIN_CLIENT_ROUNDS, "only %d round trips: the load loop did not run\n%s",
                  rounds, daemon_log_tail(d));
}

/* ---- worker tables ---- */

/* The task id in a worker title "preforkd: worker process #ID[ more]"; -1
 * if title is not one. */
static int worker_id(const char *title)
{
    const char *p = title + strlen(worker_title_prefix);
    char *end;
    long id;

    if (strncmp(title, worker_title_prefix, strlen(worker_title_prefix)) != 0 ||
        !isdigit((unsigned char)*p))
        return -1;
    id = strtol(p, &end, 10);
    return (*end == '\0' || *end == ' ') && id < INT_MAX ? (int)id : -1;
}

static int compare_workers(const void *a, const void *b)
{
    const struct worker *x = a, *y = b;

    if (x->id != y->id)
        return (x->id > y->id) - (x->id < y->id);
    return (x->pid > y->pid) - (x->pid < y->pid);
}

/* The master's live children, ordered by task id (non-workers first). */
static int workers_of(pid_t master, struct worker *ws)
{
    pid_t pids[MAX_WORKERS];
    int n = tu_children_of(master, pids, MAX_WORKERS);

    if (n > MAX_WORKERS)
        n = MAX_WORKERS;
    for (int i = 0; i < n; i++) {
        ws[i].pid = pids[i];
        tu_proc_cmdline(pids[i], ws[i].title, sizeof(ws[i].title));
        ws[i].id = worker_id(ws[i].title);
    }
    qsort(ws, (size_t)n, sizeof(*ws), compare_workers);
    return n;
}

/* "#0 pid 12, #1 pid 13, pid 14 "title"" for failure messages. */
static const char *describe_workers(const struct worker *ws, int n)
{
    static char buf[2048];
    size_t len = 0;

    buf[0] = '\0';
    for (int i = 0; i < n && len < sizeof(buf); i++) {
        if (ws[i].id >= 0)
            len += (size_t)snprintf(buf + len, sizeof(buf) - len, "%s#%d pid %d", i ? ", " : "",
                                    ws[i].id, (int)ws[i].pid);
        else
            len += (size_t)snprintf(buf + len, sizeof(buf) - len, "%spid %d \"%s\"", i ? ", " : "",
                                    (int)ws[i].pid, ws[i].title);
    }
    return n == 0 ? "no child" : buf;
}

static bool workers_match(const struct worker *ws, int n, const struct expect *e)
{
    if (n != e->n)
        return false;
    for (int i = 0; i < n; i++)
        if (ws[i].id != i)
            return false;
    for (int k = 0; k < e->n_keep; k++) {
        bool found = false;

        for (int i = 0; i < n; i++)
            found = found || (ws[i].pid == e->keep[k].pid && ws[i].id == e->keep[k].id);
        if (!found)
            return false;
    }
    for (int g = 0; g < e->n_gone; g++)
        for (int i = 0; i < n; i++)
            if (ws[i].pid == e->gone[g].pid)
                return false;
    return true;
}

/* Polls the master's children until they match e, first within timeout_sec
 * and again SETTLE_SEC later; *n and ws get the last table seen. Stops
 * early if the master exits. */
static bool wait_workers(struct daemon *d, const struct expect *e, struct worker *ws, int *n,
                         double timeout_sec)
{
    double deadline = tu_now() + timeout_sec;

    for (;;) {
        *n = workers_of(d->pid, ws);
        if (workers_match(ws, *n, e)) {
            usleep((useconds_t)(SETTLE_SEC * 1e6));
            *n = workers_of(d->pid, ws);
            if (workers_match(ws, *n, e))
                return true;
        }
        if (tu_now() >= deadline || daemon_wait_exit(d, 0))
            return false;
        usleep(10000);
    }
}

/* wait_workers, or fail the test saying what was expected after what. */
static int assert_workers(struct daemon *d, const struct expect *e, struct worker *ws,
                          double timeout_sec, const char *after)
{
    int n;

    if (wait_workers(d, e, ws, &n, timeout_sec))
        return n;
    ck_abort_msg("%s: expected %d workers titled #0..#%d (%d kept, %d pids gone) within %.1f s; "
                 "master %d %s has: %s\n%s", after, e->n, e->n - 1, e->n_keep, e->n_gone,
                 timeout_sec, (int)d->pid, d->reaped ? "exited" : "is running",
                 describe_workers(ws, n), daemon_log_tail(d));
    return n;
}

/* Starts an echo daemon with this many workers and waits for them; ws gets them. */
static struct daemon *start_workers(struct conf *c, struct worker *ws)
{
    struct daemon *d = start_daemon(c);

    assert_workers(d, &(struct expect){ .n = c->workers }, ws, READY_TIMEOUT_SEC, "start");
    return d;
}

/* ---- fixtures ---- */

static void setup(void)
{
    snprintf(test_dir, sizeof(test_dir), "%s/t-XXXXXX", suite_dir);
    ck_assert_ptr_nonnull(mkdtemp(test_dir));
    /* nobody's workers may need to look inside (user = nobody). */
    chmod(test_dir, 0755);
    /* Orphaned workers and daemonized masters become ours, to reap. */
    ck_assert_int_eq(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
    memset(daemons, 0, sizeof(daemons));
}

static void teardown(void)
{
    for (int i = 0; i < MAX_DAEMONS; i++)
        daemon_stop(&daemons[i]);
    kill_our_children();
    /* Workers that exited on SIGTERM had the last word (LeakSanitizer). */
    for (int i = 0; i < MAX_DAEMONS; i++)
        if (daemons[i].log[0] != '\0')
            tu_assert_no_sanitizer_report(read_log(daemons[i].log));
}

/* ---- titles ---- */

START_TEST(test_titles_show_master_command_line_and_worker_task_ids)
{
    struct worker ws[MAX_WORKERS];
    struct conf c = echo_conf(3);
    struct daemon *d = start_workers(&c, ws);
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
    struct worker before[MAX_WORKERS], after[MAX_WORKERS];
    struct conf c = echo_conf(3);
    struct daemon *d = start_workers(&c, before);
    struct client_loop cl;
    bool replaced;
    int n;

    client_loop_start(&cl, d->port);
    usleep(300000);
    ck_assert_int_eq(kill(before[1].pid, SIGKILL), 0);
    replaced = wait_workers(d, &(struct expect){ .n = 3,
                                                 .keep = (struct worker[]){ before[0], before[2] },
                                                 .n_keep = 2, .gone = &before[1], .n_gone = 1 },
                            after, &n, 1.0);
    usleep(300000);
    client_loop_stop(&cl);
    ck_assert_msg(replaced, "1 s after kill -9 of #1 (pid %d), expected a new #1 and #0, #2 kept "
                  "(%d, %d); master has: %s\n%s", (int)before[1].pid, (int)before[0].pid,
                  (int)before[2].pid, describe_workers(after, n), daemon_log_tail(d));
    /* Only a connection the killed worker had accepted may fail: at most
     * one in flight per client thread. */
    assert_client_loop(d, &cl, CLIENT_THREADS);
}
END_TEST

START_TEST(test_worker_stopped_past_worker_timeout_is_killed_and_replaced)
{
    struct worker before[MAX_WORKERS], after[MAX_WORKERS];
    struct conf c = echo_conf(1);
    struct daemon *d;

    c.daemon_extra = "worker_timeout = 1\n";
    d = start_workers(&c, before);
    ck_assert_int_eq(kill(before[0].pid, SIGSTOP), 0);
    assert_workers(d, &(struct expect){ .n = 1, .gone = before, .n_gone = 1 }, after, 3.0,
                   "SIGSTOP of #0 with worker_timeout = 1");
    ck_assert_msg(!pid_exists(before[0].pid), "the stopped worker %d still exists (not reaped)",
                  (int)before[0].pid);
    assert_serving(d, d->port, "after the stopped worker was replaced");
}
END_TEST

START_TEST(test_crash_loop_past_max_restarts_stops_master_with_error)
{
    struct worker ws[MAX_WORKERS], killed[4];
    struct conf c = echo_conf(1);
    struct daemon *d;
    const char *log;

    c.daemon_extra = "max_restarts = 3\nrestart_window = 60\n";
    d = start_workers(&c, ws);
    for (int i = 0; i < 4; i++) {
        if (i > 0)
            assert_workers(d, &(struct expect){ .n = 1, .gone = killed, .n_gone = i }, ws,
                           RESPAWN_TIMEOUT_SEC, "restart after a kill -9");
        killed[i] = ws[0];
        ck_assert_int_eq(kill(ws[0].pid, SIGKILL), 0);
    }
    ck_assert_msg(daemon_wait_exit(d, RESPAWN_TIMEOUT_SEC),
                  "master still runs %.0f s after the 4th death with max_restarts = 3; "
                  "children: %s\n%s",
                  RESPAWN_TIMEOUT_SEC, describe_workers(ws, workers_of(d->pid, ws)),
                  daemon_log_tail(d));
    log = daemon_log_tail(d);
    ck_assert_msg(WIFEXITED(d->status) && WEXITSTATUS(d->status) != 0,
                  "master status 0x%x, expected a non-zero exit\n%s", (unsigned)d->status, log);
    ck_assert_msg(strstr(log, "max_restarts") != NULL, "the log does not say max_restarts:\n%s",
                  log);
    ck_assert_msg(daemon_wait_group_gone(d, 1.0), "workers outlive the master that gave up");
}
END_TEST

/* kill -9 of the master: every worker in ws (n of them) must be gone
 * within 2 s, by itself. */
static void assert_workers_exit_when_master_is_killed(struct daemon *d, const struct worker *ws,
                                                      int n)
{
    char left[512] = "";
    size_t len = 0;

    ck_assert_int_eq(kill(d->pid, SIGKILL), 0);
    ck_assert(daemon_wait_exit(d, STOP_GRACE_SEC));
    /* They are ours now (subreaper): gone once reaped. */
    if (daemon_wait_group_gone(d, 2.0))
        return;
    for (int i = 0; i < n && len < sizeof(left); i++)
        if (pid_exists(ws[i].pid))
            len += (size_t)snprintf(left + len, sizeof(left) - len, " #%d (pid %d)", ws[i].id,
                                    (int)ws[i].pid);
    ck_abort_msg("2 s after kill -9 of the master, still running:%s\n%s", left,
                 daemon_log_tail(d));
}

START_TEST(test_workers_exit_within_2s_when_master_is_killed)
{
    struct worker ws[MAX_WORKERS];
    struct conf c = echo_conf(3);
    struct daemon *d = start_workers(&c, ws);

    assert_workers_exit_when_master_is_killed(d, ws, 3);
}
END_TEST

/* ---- reload ---- */

START_TEST(test_five_hups_under_load_replace_every_worker_without_a_failure)
{
    struct worker before[MAX_WORKERS], after[MAX_WORKERS];
    struct conf c = echo_conf(2);
    struct daemon *d = start_workers(&c, before);
    struct client_loop cl;
    bool renewed;
    int n, fd, session_failed_at = 0;

    client_loop_start(&cl, d->port);
    /* Accepted by an old worker: it must serve it on while it drains. */
    fd = open_session(d);
    usleep(200000);
    for (int i = 1; i <= 5; i++) {
        kill(d->pid, SIGHUP);
        for (int j = 0; j < 3; j++) {
            usleep(100000);
            if (session_failed_at == 0 && !session_echoes(fd, 3 * i + j))
                session_failed_at = i;
        }
    }
    close(fd);
    renewed = wait_workers(d, &(struct expect){ .n = 2, .gone = before, .n_gone = 2 }, after, &n,
                           RELOAD_TIMEOUT_SEC);
    client_loop_stop(&cl);
    ck_assert_msg(!daemon_wait_exit(d, 0), "master exited (status 0x%x) during reloads\n%s",
                  (unsigned)d->status, daemon_log_tail(d));
    ck_assert_msg(renewed, "%.0f s after 5 HUPs, expected 2 new workers and no old one; was "
                  "#0 pid %d, #1 pid %d; master has: %s\n%s", RELOAD_TIMEOUT_SEC,
                  (int)before[0].pid, (int)before[1].pid, describe_workers(after, n),
                  daemon_log_tail(d));
    ck_assert_msg(session_failed_at == 0, "a session open across the HUPs stopped echoing after "
                  "HUP %d (graceful_timeout = %d)\n%s", session_failed_at, GRACEFUL_TIMEOUT_SEC,
                  daemon_log_tail(d));
    assert_client_loop(d, &cl, 0);
}
END_TEST

START_TEST(test_hup_with_bad_config_keeps_workers_and_logs_file_line_and_key)
{
    struct worker before[MAX_WORKERS], after[MAX_WORKERS];
    struct conf c = echo_conf(2);
    struct daemon *d = start_workers(&c, before);
    char where[32];
    size_t offset;
    const char *log;
    int line;

    c.server_extra = "backlog = 12x\n";
    write_conf(d, &c);
    line = line_of(d->conf, "backlog = 12x");
    offset = daemon_log_size(d);
    ck_assert_int_eq(kill(d->pid, SIGHUP), 0);
    usleep(1000000);
    ck_assert_msg(!daemon_wait_exit(d, 0), "master exited (status 0x%x) on a bad config\n%s",
                  (unsigned)d->status, daemon_log_tail(d));
    assert_workers(d, &(struct expect){ .n = 2, .keep = before, .n_keep = 2 }, after, 0,
                   "1 s after HUP with a bad config");
    assert_serving(d, d->port, "after HUP with a bad config");
    log = daemon_log_since(d, offset);
    snprintf(where, sizeof(where), ":%d:", line);
    ck_assert_msg(strstr(log, d->conf) != NULL, "the log does not name %s:\n%s", d->conf, log);
    ck_assert_msg(strstr(log, where) != NULL, "the log does not name line %d:\n%s", line, log);
    ck_assert_msg(strstr(log, "backlog") != NULL, "the log does not name backlog:\n%s", log);
    ck_assert_msg(strcasestr(log, "reload") != NULL, "the log does not say reload:\n%s", log);
}
END_TEST

/* Rewrites d's config as c, sends HUP and waits for a new generation of
 * c->workers with every worker of old (n_old) gone. */
static void reload_and_wait(struct daemon *d, const struct conf *c, const struct worker *old,
                            int n_old, struct worker *ws)
{
    write_conf(d, c);
    ck_assert_int_eq(kill(d->pid, SIGHUP), 0);
    assert_workers(d, &(struct expect){ .n = c->workers, .gone = old, .n_gone = n_old }, ws,
                   RELOAD_TIMEOUT_SEC, "HUP");
}

START_TEST(test_hup_with_workers_3_instead_of_2_runs_3_new_workers)
{
    struct worker before[MAX_WORKERS], after[MAX_WORKERS];
    struct conf c = echo_conf(2);
    struct daemon *d = start_workers(&c, before);

    c.workers = 3;
    reload_and_wait(d, &c, before, 2, after);
    assert_serving(d, d->port, "after HUP");
}
END_TEST

START_TEST(test_listener_added_on_hup_accepts)
{
    struct worker before[MAX_WORKERS], after[MAX_WORKERS];
    struct conf c = echo_conf(2);
    struct daemon *d = start_workers(&c, before);

    c.ports[1] = tu_free_port("127.0.0.1");
    reload_and_wait(d, &c, before, 2, after);
    assert_serving(d, c.ports[1], "the listener added on HUP");
    assert_serving(d, c.ports[0], "the listener kept on HUP");
}
END_TEST

START_TEST(test_listener_removed_on_hup_refuses_once_old_workers_exit)
{
    struct worker before[MAX_WORKERS], after[MAX_WORKERS];
    struct conf c = echo_conf(2);
    struct daemon *d;
    unsigned removed = c.ports[0];
    int fd;

    c.ports[1] = tu_free_port("127.0.0.1");
    d = start_workers(&c, before);
    assert_serving(d, c.ports[1], "second listener at start");
    c.ports[0] = c.ports[1];
    c.ports[1] = 0;
    reload_and_wait(d, &c, before, 2, after);
    fd = connect_port(removed, CONNECT_TIMEOUT_MS);
    if (fd >= 0)
        close(fd);
    ck_assert_msg(fd == -ECONNREFUSED, "connect to the removed listener 127.0.0.1:%u: %s, "
                  "expected %s\n%s", removed, fd >= 0 ? "accepted" : strerror(-fd),
                  strerror(ECONNREFUSED), daemon_log_tail(d));
    assert_serving(d, c.ports[0], "the listener kept on HUP");
}
END_TEST

START_TEST(test_signal_reload_command_replaces_workers)
{
    struct worker before[MAX_WORKERS], after[MAX_WORKERS];
    struct conf c = echo_conf(2);
    struct daemon *d = start_workers(&c, before);

    run_signal_command(d, "reload", 0);
    assert_workers(d, &(struct expect){ .n = 2, .gone = before, .n_gone = 2 }, after,
                   RELOAD_TIMEOUT_SEC, "preforkd -s reload");
}
END_TEST

/* ---- scaling ---- */

START_TEST(test_ttin_adds_worker_with_next_task_id)
{
    struct worker before[MAX_WORKERS], after[MAX_WORKERS];
    struct conf c = echo_conf(2);
    struct daemon *d = start_workers(&c, before);

    ck_assert_int_eq(kill(d->pid, SIGTTIN), 0);
    assert_workers(d, &(struct expect){ .n = 3, .keep = before, .n_keep = 2 }, after,
                   RESPAWN_TIMEOUT_SEC, "TTIN with 2 workers");
}
END_TEST

START_TEST(test_ttou_stops_the_worker_with_the_highest_task_id)
{
    struct worker before[MAX_WORKERS], after[MAX_WORKERS];
    struct conf c = echo_conf(3);
    struct daemon *d = start_workers(&c, before);

    ck_assert_int_eq(kill(d->pid, SIGTTOU), 0);
    assert_workers(d, &(struct expect){ .n = 2, .keep = before, .n_keep = 2,
                                        .gone = &before[2], .n_gone = 1 },
                   after, RELOAD_TIMEOUT_SEC, "TTOU with 3 workers");
}
END_TEST

START_TEST(test_ttou_never_goes_below_one_worker)
{
    struct worker before[MAX_WORKERS], after[MAX_WORKERS];
    struct conf c = echo_conf(2);
    struct daemon *d = start_workers(&c, before);

    ck_assert_int_eq(kill(d->pid, SIGTTOU), 0);
    assert_workers(d, &(struct expect){ .n = 1, .keep = before, .n_keep = 1,
                                        .gone = &before[1], .n_gone = 1 },
                   after, RELOAD_TIMEOUT_SEC, "TTOU with 2 workers");
    ck_assert_int_eq(kill(d->pid, SIGTTOU), 0);
    usleep(100000);
    ck_assert_int_eq(kill(d->pid, SIGTTOU), 0);
    usleep(1000000);
    assert_workers(d, &(struct expect){ .n = 1, .keep = before, .n_keep = 1 }, after, 0,
                   "1 s after two more TTOUs with 1 worker");
    assert_serving(d, d->port, "with 1 worker after TTOUs");
}
END_TEST

/* ---- shutdown ---- */

/* Sends sig to the master, or runs `preforkd -s command` if command is not NULL. */
static void ask_master(const struct daemon *d, int sig, const char *command)
{
    if (command != NULL)
        run_signal_command(d, command, 0);
    else
        ck_assert_int_eq(kill(d->pid, sig), 0);
}

/* Once the master stopped: exit status 0, no worker left, pidfile removed. */
static void assert_stopped_cleanly(struct daemon *d, const char *after)
{
    ck_assert_msg(exited_with(d->status, 0), "master status 0x%x after %s\n%s",
                  (unsigned)d->status, after, daemon_log_tail(d));
    ck_assert_msg(daemon_wait_group_gone(d, 0.5), "workers outlive the master after %s", after);
    ck_assert_msg(!file_exists(d->pidfile), "pidfile %s left after %s", d->pidfile, after);
}

/* QUIT (or -s quit) with an echo session open and graceful_timeout = 10:
 * new connections are refused within 0.5 s, the session still echoes 1 s
 * later, and once it closes the master exits 0 well before the timeout. */
static void assert_graceful_shutdown(int sig, const char *command, const char *what)
{
    struct worker ws[MAX_WORKERS];
    struct conf c = echo_conf(2);
    struct daemon *d;
    double asked_at;
    int fd;

    c.graceful_timeout_sec = 10;
    d = start_workers(&c, ws);
    fd = open_session(d);
    ask_master(d, sig, command);
    asked_at = tu_now();
    ck_assert_msg(wait_refused(d->port, 0.5), "connections still accepted 0.5 s after %s\n%s",
                  what, daemon_log_tail(d));
    for (int i = 0; tu_now() < asked_at + 1.2; i++) {
        ck_assert_msg(session_echoes(fd, i), "the open session stopped echoing %.2f s after %s\n%s",
                      tu_now() - asked_at, what, daemon_log_tail(d));
        usleep(200000);
    }
    ck_assert_msg(!daemon_wait_exit(d, 0), "master exited (status 0x%x) with a session open",
                  (unsigned)d->status);
    close(fd);
    ck_assert_msg(daemon_wait_exit(d, 3.0), "master still runs 3 s after the last session closed "
                  "(graceful_timeout = 10); children: %s\n%s",
                  describe_workers(ws, workers_of(d->pid, ws)), daemon_log_tail(d));
    assert_stopped_cleanly(d, what);
}

/* TERM (or -s stop) with 3 idle echo sessions open and graceful_timeout =
 * 10: the master exits 0 within 1 s. */
static void assert_fast_shutdown(int sig, const char *command, const char *what)
{
    struct worker ws[MAX_WORKERS];
    struct conf c = echo_conf(2);
    struct daemon *d;
    int fds[3];

    c.graceful_timeout_sec = 10;    /* a fast stop must not wait for this */
    d = start_workers(&c, ws);
    for (int i = 0; i < 3; i++)
        fds[i] = open_session(d);
    ask_master(d, sig, command);
    ck_assert_msg(daemon_wait_exit(d, 1.0), "master still runs 1 s after %s\n%s", what,
                  daemon_log_tail(d));
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
    struct worker ws[MAX_WORKERS];
    struct conf c = echo_conf(1);
    struct daemon *d = start_workers(&c, ws);
    char text[64];

    tu_read_file(d->pidfile, text, sizeof(text));
    ck_assert_msg(pidfile_pid(d->pidfile) == d->pid, "pidfile holds \"%s\", master is %d", text,
                  (int)d->pid);
}
END_TEST

START_TEST(test_second_instance_with_same_pidfile_exits_1_naming_it_and_first_serves)
{
    struct worker ws[MAX_WORKERS];
    struct conf c = echo_conf(1), c2 = echo_conf(1);
    struct daemon *d = start_workers(&c, ws), *second = daemon_new();
    const char *log;

    write_conf(second, &c2);
    daemon_launch(second);
    ck_assert_msg(daemon_wait_exit(second, COMMAND_TIMEOUT_SEC),
                  "a second instance with the same pidfile still runs\n%s",
                  daemon_log_tail(second));
    log = daemon_log_tail(second);
    ck_assert_msg(exited_with(second->status, 1), "second instance: status 0x%x\n%s",
                  (unsigned)second->status, log);
    ck_assert_msg(strstr(log, d->pidfile) != NULL, "second instance does not name %s:\n%s",
                  d->pidfile, log);
    ck_assert_msg(has_number(log, d->pid), "second instance does not name pid %d:\n%s", (int)d->pid,
                  log);
    ck_assert_msg(daemon_wait_group_gone(second, 1.0), "the second instance left processes");
    assert_serving(d, d->port, "the first instance after a second one was refused");
    ck_assert_int_eq(pidfile_pid(d->pidfile), d->pid);
}
END_TEST

START_TEST(test_stale_pidfile_is_replaced_with_new_pid)
{
    struct worker ws[MAX_WORKERS];
    struct conf c = echo_conf(1);
    struct daemon *d = daemon_new();
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
    daemon_launch(d);
    daemon_wait_ready(d);
    assert_workers(d, &(struct expect){ .n = 1 }, ws, READY_TIMEOUT_SEC,
                   "start over a stale pidfile");
    ck_assert_msg(pidfile_pid(d->pidfile) == d->pid, "pidfile does not hold the new master %d",
                  (int)d->pid);
    assert_serving(d, d->port, "start over a stale pidfile");
}
END_TEST

START_TEST(test_signal_without_running_master_exits_1_naming_pidfile)
{
    static struct command cmd;
    struct conf c = echo_conf(1);
    struct daemon *d = daemon_new();
    const char *args[] = { "-c", d->conf, "-s", "reload", NULL };

    write_conf(d, &c);
    run_preforkd(&cmd, args);
    ck_assert_msg(exited_with(cmd.status, 1), "status 0x%x\nstderr: %s", (unsigned)cmd.status,
                  cmd.err);
    ck_assert_msg(strstr(cmd.err, d->pidfile) != NULL, "stderr does not name %s: %s", d->pidfile,
                  cmd.err);
}
END_TEST

/* With a master running, so that only the signal name can make it fail. */
START_TEST(test_signal_bogus_exits_1_and_leaves_master_alone)
{
    struct worker before[MAX_WORKERS], after[MAX_WORKERS];
    struct conf c = echo_conf(2);
    struct daemon *d = start_workers(&c, before);

    run_signal_command(d, "bogus", 1);
    usleep(500000);
    ck_assert_msg(!daemon_wait_exit(d, 0), "master exited (status 0x%x) after -s bogus",
                  (unsigned)d->status);
    assert_workers(d, &(struct expect){ .n = 2, .keep = before, .n_keep = 2 }, after, 0,
                   "0.5 s after -s bogus");
}
END_TEST

/* ---- daemonized ---- */

/* Starts `preforkd -c conf` (no -f) with `log = <test dir>/a.log`; checks
 * that the launcher exits 0 with the pidfile in place and fills d from it.
 * *launcher gets the launcher's pid. */
static struct daemon *start_daemonized(struct conf *c, pid_t *launcher)
{
    static struct command cmd;
    static char extra[PATH_MAX + 16];
    char log_path[PATH_MAX];
    struct daemon *d = daemon_new();
    const char *args[] = { "-c", d->conf, NULL };
    struct tu_proc_stat st;

    path_in_test_dir(log_path, sizeof(log_path), "a.log");
    snprintf(extra, sizeof(extra), "log = %s\n", log_path);
    c->daemon_extra = extra;
    write_conf(d, c);
    /* The master's log is a.log from now on, for failure messages. */
    snprintf(d->log, sizeof(d->log), "%s", log_path);
    *launcher = run_preforkd(&cmd, args);
    ck_assert_msg(exited_with(cmd.status, 0), "launcher status 0x%x\nstdout: %s\nstderr: %s\n%s",
                  (unsigned)cmd.status, cmd.out, cmd.err, daemon_log_tail(d));
    d->pid = pidfile_pid(d->pidfile);
    ck_assert_msg(d->pid > 0, "no pid in %s once the launcher exited\n%s", d->pidfile,
                  daemon_log_tail(d));
    ck_assert_msg(tu_proc_stat(d->pid, &st), "master %d from the pidfile does not run",
                  (int)d->pid);
    d->pgid = st.pgrp;
    tu_record_pgid(suite_dir, d->pgid);
    daemon_wait_ready(d);
    return d;
}

START_TEST(test_daemonized_master_has_no_launcher_parent_cwd_root_and_null_stdio)
{
    struct conf c = echo_conf(1);
    pid_t launcher;
    struct daemon *d = start_daemonized(&c, &launcher);
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
    assert_serving(d, d->port, "daemonized");
    run_signal_command(d, "stop", 0);
    ck_assert_msg(daemon_wait_exit(d, 3.0), "daemonized master still runs 3 s after -s stop");
    ck_assert_msg(exited_with(d->status, 0), "daemonized master status 0x%x after -s stop\n%s",
                  (unsigned)d->status, daemon_log_tail(d));
    ck_assert_msg(!file_exists(d->pidfile), "pidfile %s left after -s stop", d->pidfile);
}
END_TEST

START_TEST(test_signal_reopen_makes_master_write_a_new_log_file)
{
    struct conf c = echo_conf(1);
    pid_t launcher;
    struct daemon *d = start_daemonized(&c, &launcher);
    char rotated[PATH_MAX + 8], text[OUTPUT_MAX];
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
                  log_tail(rotated));
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
    struct worker ws[MAX_WORKERS];
    struct conf c = echo_conf(2);
    struct passwd *pw = getpwnam("nobody");
    struct daemon *d;

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
    assert_serving(d, d->port, "workers as nobody");
}
END_TEST

/* Dropping privileges must not drop the way workers learn of the master's
 * death (PR_SET_PDEATHSIG is cleared by a change of credentials). */
START_TEST(test_workers_as_nobody_exit_within_2s_when_master_is_killed)
{
    struct worker ws[MAX_WORKERS];
    struct conf c = echo_conf(2);
    struct daemon *d;

    if (geteuid() != 0) {
        fprintf(stderr, "check_master: not root, skipping a user = nobody test\n");
        return;
    }
    c.daemon_extra = "user = nobody\n";
    d = start_workers(&c, ws);
    assert_workers_exit_when_master_is_killed(d, ws, 2);
}
END_TEST

static TCase *new_tcase(Suite *s, const char *name)
{
    TCase *tc = tcase_create(name);

    tcase_set_timeout(tc, TCASE_TIMEOUT_SEC);
    tcase_add_checked_fixture(tc, setup, teardown);
    suite_add_tcase(s, tc);
    return tc;
}

static Suite *master_suite(void)
{
    Suite *s = suite_create("master");
    TCase *tc = new_tcase(s, "titles");

    tcase_add_test(tc, test_titles_show_master_command_line_and_worker_task_ids);

    tc = new_tcase(s, "restarts");
    tcase_add_test(tc, test_sigkill_of_worker_1_is_replaced_within_1s_and_no_connect_fails);
    tcase_add_test(tc, test_worker_stopped_past_worker_timeout_is_killed_and_replaced);
    tcase_add_test(tc, test_crash_loop_past_max_restarts_stops_master_with_error);
    tcase_add_test(tc, test_workers_exit_within_2s_when_master_is_killed);

    tc = new_tcase(s, "reload");
    tcase_add_test(tc, test_five_hups_under_load_replace_every_worker_without_a_failure);
    tcase_add_test(tc, test_hup_with_bad_config_keeps_workers_and_logs_file_line_and_key);
    tcase_add_test(tc, test_hup_with_workers_3_instead_of_2_runs_3_new_workers);
    tcase_add_test(tc, test_listener_added_on_hup_accepts);
    tcase_add_test(tc, test_listener_removed_on_hup_refuses_once_old_workers_exit);
    tcase_add_test(tc, test_signal_reload_command_replaces_workers);

    tc = new_tcase(s, "scaling");
    tcase_add_test(tc, test_ttin_adds_worker_with_next_task_id);
    tcase_add_test(tc, test_ttou_stops_the_worker_with_the_highest_task_id);
    tcase_add_test(tc, test_ttou_never_goes_below_one_worker);

    tc = new_tcase(s, "shutdown");
    tcase_add_test(tc, test_quit_refuses_new_connections_and_finishes_open_session);
    tcase_add_test(tc, test_term_with_open_sessions_exits_0_within_1s);
    tcase_add_test(tc, test_signal_quit_command_refuses_new_connections_and_finishes_open_session);
    tcase_add_test(tc, test_signal_stop_command_with_open_sessions_exits_0_within_1s);

    tc = new_tcase(s, "pidfile");
    tcase_add_test(tc, test_pidfile_holds_master_pid_and_newline);
    tcase_add_test(tc, test_second_instance_with_same_pidfile_exits_1_naming_it_and_first_serves);
    tcase_add_test(tc, test_stale_pidfile_is_replaced_with_new_pid);
    tcase_add_test(tc, test_signal_without_running_master_exits_1_naming_pidfile);
    tcase_add_test(tc, test_signal_bogus_exits_1_and_leaves_master_alone);

    tc = new_tcase(s, "daemonized");
    tcase_add_test(tc, test_daemonized_master_has_no_launcher_parent_cwd_root_and_null_stdio);
    tcase_add_test(tc, test_signal_reopen_makes_master_write_a_new_log_file);

    tc = new_tcase(s, "privileges");
    tcase_add_test(tc, test_user_nobody_runs_workers_as_nobody_and_master_as_root);
    tcase_add_test(tc, test_workers_as_nobody_exit_within_2s_when_master_is_killed);
    return s;
}

int main(void)
{
    int failed, n_left;

    preforkd_path = tu_preforkd_path("check_master");
    if (preforkd_path == NULL)
        return 1;
    if (mkdtemp(suite_dir) == NULL) {
        perror("check_master: mkdtemp");
        return 1;
    }
    chmod(suite_dir, 0755);
    failed = tu_run_suite(master_suite());
    n_left = tu_kill_recorded_groups(suite_dir, "check_master", 0);
    usleep(200000);     /* those killed are zombies by now, without a command line */
    n_left += tu_kill_matching(suite_dir);
    if (n_left > 0) {
        fprintf(stderr, "check_master: killed %d preforkd process%s left running by failed tests\n",
                n_left, n_left == 1 ? "" : "es");
        failed++;
    }
    tu_rmtree(suite_dir);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

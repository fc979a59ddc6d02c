/*
 * check_reuseport: `reuse_port = yes`, seen from outside. Each test runs the
 * built daemon ($PREFORKD, default build/preforkd, from the repo root) on
 * 127.0.0.1 and checks what the kernel and an operator see: which process
 * holds which listening socket (/proc/<pid>/fd against /proc/net/tcp and
 * /proc/net/unix), the port every socket is bound to, how connections
 * spread over the workers (the http status page), connections that fail
 * while workers die, reload or change in number, and the log.
 *
 * Every daemon runs in a process group of its own, recorded in the suite's
 * dir; the test process is a child subreaper, so workers orphaned by a dead
 * master are reaped here. The teardown stops every daemon by pid and group
 * and checks that nothing of it is left: no process, no listening socket on
 * its port. A test that fails exits without teardown: its masters get
 * SIGKILL (PR_SET_PDEATHSIG), and main() kills what is left in the groups.
 */
#define _GNU_SOURCE
#include <check.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemonutil.h"
#include "testutil.h"

#define TCASE_TIMEOUT_SEC 40
/* A daemon that does not accept by then failed to start. */
#define READY_TIMEOUT_SEC 5.0
/* Teardown: TERM first, KILL after this. */
#define STOP_GRACE_SEC 2.0
/* graceful_timeout of the configs: old workers of a reload are gone by then. */
#define GRACEFUL_TIMEOUT_SEC 2
/* A reload's new generation accepts and its old one is gone by then. */
#define RELOAD_TIMEOUT_SEC (GRACEFUL_TIMEOUT_SEC + 3.0)
/* A worker killed with -9 is replaced by then (backoff included). */
#define RESPAWN_TIMEOUT_SEC 3.0
/* A process table must look the same twice this far apart to count. */
#define SETTLE_SEC 0.1
#define IO_TIMEOUT_SEC 2.0
#define MAX_WORKERS 64
#define MAX_DAEMONS 2
#define MAX_SOCKETS 256
#define LOG_MAX 65536
/* Short connections of the fairness test, and the least share a worker of
 * two may get (an even split gives 50 %; 20 % is 11 sigmas away). */
#define FAIR_CONNECTIONS 200
#define FAIR_MIN_SHARE 0.20
/* Connections opened while a worker is stopped: about half wait on its
 * socket (the chance that none does is 2^-40). */
#define TTOU_CONNECTIONS 40
/* Client threads of a load loop, each with one connection at a time, and
 * the pause between two of its round trips. */
#define CLIENT_THREADS 2
#define CLIENT_PAUSE_US 1000
/* A load loop with fewer round trips did not load anything. */
#define MIN_CLIENT_ROUNDS 50

static struct du_suite suite;
static char test_dir[PATH_MAX];
/* A daemon's port is its TCP listen on 127.0.0.1 (0 in the config: the one it got). */
static struct du_daemon daemons[MAX_DAEMONS];

/* What a test's config says. */
struct conf {
    int workers;
    bool reuse_port;
    bool http;              /* handler = http with /status, else echo */
    const char *extra;      /* more [server] lines, or NULL */
};

/* A master's workers by task id, of one generation. */
struct workers {
    int n;
    pid_t pid[MAX_WORKERS];
};

/* Clients that connect, echo a line and close, until stopped. */
struct load {
    unsigned port;
    atomic_bool stop;
    atomic_int rounds, connect_failures, echo_failures, first_errno;
    pthread_t threads[CLIENT_THREADS];
};

/* ---- daemons ---- */

/* How many lines of d's log hold needle; *level gets the level of the
 * first ("notice" for "[notice]"). */
static int log_lines(const struct du_daemon *d, const char *needle, char level[16])
{
    const char *buf = du_log(d);
    int n = 0;

    level[0] = '\0';
    for (const char *p = strstr(buf, needle); p != NULL; p = strstr(p + 1, needle)) {
        const char *line = p;

        while (line > buf && line[-1] != '\n')
            line--;
        if (n++ == 0 && sscanf(line, "%*s [%15[a-z]]", level) != 1)
            level[0] = '\0';
    }
    return n;
}

static void write_conf(struct du_daemon *d, const struct conf *c)
{
    char root[PATH_MAX];

    ck_assert_int_lt(snprintf(root, sizeof(root), "%s/www", test_dir), (int)sizeof(root));
    mkdir(root, 0755);
    du_write_conf(d, "[daemon]\nworkers = %d\ngraceful_timeout = %d\n[server]\n"
                  "listen = 127.0.0.1:%u\nreuse_port = %s\nhandler = %s\n%s"
                  "[http]\nroot = %s\nstatus_path = /status\n",
                  c->workers, GRACEFUL_TIMEOUT_SEC, d->port, c->reuse_port ? "yes" : "no",
                  c->http ? "http" : "echo", c->extra ? c->extra : "", root);
}

/* Starts `preforkd -f -c conf` for c, on port (0: the kernel picks); hook
 * (may be NULL) runs in the child before the exec. */
static struct du_daemon *daemon_launch(const struct conf *c, unsigned port,
                                       void (*hook)(void *arg), void *arg)
{
    struct du_daemon *d = du_next(daemons, MAX_DAEMONS, test_dir);

    d->port = port;
    write_conf(d, c);
    du_launch(&suite, d, hook, arg);
    return d;
}

static bool daemon_exited(struct du_daemon *d)
{
    return du_wait_exit(d, 0);
}

/* ---- sockets seen from /proc ---- */

/* Inodes of the TCP sockets listening on 127.0.0.1:port (port 0: any). */
static int tcp_listeners(unsigned port, unsigned long *inodes, unsigned *ports, int max)
{
    FILE *f = fopen("/proc/net/tcp", "r");
    char line[512];
    int n = 0;

    ck_assert_ptr_nonnull(f);
    while (fgets(line, sizeof(line), f) != NULL) {
        unsigned addr, lport, state;
        unsigned long inode;

        if (sscanf(line, " %*d: %x:%x %*x:%*x %x %*x:%*x %*x:%*x %*x %*u %*u %lu", &addr,
                   &lport, &state, &inode) != 4 || state != 0x0A ||
            addr != htonl(INADDR_LOOPBACK) || (port != 0 && lport != port) || n == max)
            continue;
        if (ports != NULL)
            ports[n] = lport;
        inodes[n++] = inode;
    }
    fclose(f);
    return n;
}

/* Inode of the unix socket listening at path; 0 if none. */
static unsigned long unix_listener(const char *path)
{
    FILE *f = fopen("/proc/net/unix", "r");
    char line[PATH_MAX + 128], where[PATH_MAX];
    unsigned long inode = 0, ino;
    unsigned flags;

    ck_assert_ptr_nonnull(f);
    while (fgets(line, sizeof(line), f) != NULL)
        if (sscanf(line, "%*x: %*x %*x %x %*x %*x %lu %s", &flags, &ino, where) == 3 &&
            (flags & 0x10000) && strcmp(where, path) == 0)     /* __SO_ACCEPTCON */
            inode = ino;
    fclose(f);
    return inode;
}

/* The socket inodes among inodes[0..n) that pid has an fd of, into held
 * (max of them); returns how many. */
static int held_by(pid_t pid, const unsigned long *inodes, int n, unsigned long *held, int max)
{
    char dir[64], path[PATH_MAX], target[64];
    struct dirent *e;
    DIR *d;
    int k = 0;

    snprintf(dir, sizeof(dir), "/proc/%d/fd", (int)pid);
    d = opendir(dir);
    if (d == NULL)
        return 0;
    while ((e = readdir(d)) != NULL) {
        unsigned long ino;
        ssize_t len;

        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        len = readlink(path, target, sizeof(target) - 1);
        if (len <= 0)
            continue;
        target[len] = '\0';
        if (sscanf(target, "socket:[%lu]", &ino) != 1)
            continue;
        for (int i = 0; i < n; i++)
            if (inodes[i] == ino && k < max)
                held[k++] = ino;
    }
    closedir(d);
    return k;
}

/* Who holds the listening sockets of d's port. */
struct holdings {
    int n;                                  /* sockets listening on the port */
    unsigned long all[MAX_SOCKETS];
    int master;                             /* how many the master holds */
    unsigned long by_master[MAX_SOCKETS];
    int per_worker[MAX_WORKERS];            /* how many each worker holds */
    unsigned long of_worker[MAX_WORKERS];   /* the first each worker holds */
};

static void holdings_of(const struct du_daemon *d, const struct workers *ws, struct holdings *h)
{
    memset(h, 0, sizeof(*h));
    h->n = tcp_listeners(d->port, h->all, NULL, MAX_SOCKETS);
    h->master = held_by(d->pid, h->all, h->n, h->by_master, MAX_SOCKETS);
    for (int i = 0; i < ws->n; i++) {
        unsigned long held[MAX_SOCKETS];

        h->per_worker[i] = held_by(ws->pid[i], h->all, h->n, held, MAX_SOCKETS);
        h->of_worker[i] = h->per_worker[i] > 0 ? held[0] : 0;
    }
}

static const char *describe_holdings(const struct holdings *h, const struct workers *ws)
{
    static char buf[1024];
    int len = snprintf(buf, sizeof(buf), "%d sockets listen on the port, the master holds %d",
                       h->n, h->master);

    for (int i = 0; i < ws->n && len < (int)sizeof(buf); i++)
        len += snprintf(buf + len, sizeof(buf) - (size_t)len, ", #%d holds %d (inode %lu)", i,
                        h->per_worker[i], h->of_worker[i]);
    return buf;
}

/*
 * The shape reuse_port promises with n workers: n sockets listen on the
 * port, the master holds every one, each worker holds exactly one and no
 * two workers the same one. shared instead: one socket, held by all.
 */
static bool holdings_are(const struct holdings *h, const struct workers *ws, bool shared)
{
    int want = shared ? 1 : ws->n;

    if (h->n != want || h->master != want)
        return false;
    for (int i = 0; i < ws->n; i++) {
        if (h->per_worker[i] != 1)
            return false;
        for (int j = 0; j < i; j++)
            if ((h->of_worker[i] == h->of_worker[j]) != shared)
                return false;
    }
    return true;
}

/* ---- workers ---- */

/* Task id and generation of a worker title that accepts, else false. */
static bool accepting_worker(pid_t pid, int *id, unsigned *generation)
{
    char title[256];
    int end = 0;

    tu_proc_cmdline(pid, title, sizeof(title));
    return sscanf(title, "preforkd: worker process #%d (generation %u)%n", id, generation,
                  &end) == 2 && end > 0 && title[end] == '\0';
}

/* True when the master's children are exactly n accepting workers #0..#n-1
 * of generation g (0: any one generation); fills ws. */
static bool workers_are(const struct du_daemon *d, int n, unsigned g, struct workers *ws)
{
    pid_t pids[MAX_WORKERS];
    int k = tu_children_of(d->pid, pids, MAX_WORKERS);
    unsigned seen = g;

    if (k != n)
        return false;
    ws->n = n;
    memset(ws->pid, 0, sizeof(ws->pid));
    for (int i = 0; i < k; i++) {
        unsigned gen;
        int id;

        if (!accepting_worker(pids[i], &id, &gen) || id < 0 || id >= n || ws->pid[id] != 0 ||
            (seen != 0 && gen != seen))
            return false;
        seen = gen;
        ws->pid[id] = pids[i];
    }
    return true;
}

/* Waits until workers_are(d, n, g) holds twice SETTLE_SEC apart and, if
 * shared is 0 or 1, the holdings look so (1: shared). Fails the test on
 * timeout or if the master exits. */
static void wait_workers(struct du_daemon *d, int n, unsigned g, int shared, struct workers *ws,
                         double timeout_sec, const char *after)
{
    double deadline = tu_now() + timeout_sec;
    struct holdings h = { 0 };

    for (;;) {
        if (workers_are(d, n, g, ws)) {
            holdings_of(d, ws, &h);
            if (shared < 0 || holdings_are(&h, ws, shared)) {
                usleep((useconds_t)(SETTLE_SEC * 1e6));
                if (workers_are(d, n, g, ws)) {
                    holdings_of(d, ws, &h);
                    if (shared < 0 || holdings_are(&h, ws, shared))
                        return;
                }
            }
        }
        ck_assert_msg(!daemon_exited(d), "%s: the master exited (status 0x%x)\n%s", after,
                      (unsigned)d->status, du_log_tail(d));
        ck_assert_msg(tu_now() < deadline, "%s: expected %d workers of generation %u, each with "
                      "%s, within %.1f s; %s\n%s", after, n, g,
                      shared == 1 ? "the one shared socket" : "a socket of its own", timeout_sec,
                      describe_holdings(&h, ws), du_log_tail(d));
        usleep(10000);
    }
}

/* ---- clients ---- */

/* A blocking connection to 127.0.0.1:port, with IO_TIMEOUT_SEC on connect,
 * reads and writes; -errno on failure. */
static int dial(unsigned port)
{
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(port),
                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    struct timeval tv = { .tv_sec = (time_t)IO_TIMEOUT_SEC };
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), err;

    if (fd < 0)
        return -errno;
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0)
        return fd;
    err = -errno;
    close(fd);
    return err;
}

static void wait_serving(struct du_daemon *d)
{
    double deadline = tu_now() + READY_TIMEOUT_SEC;
    int fd;

    while ((fd = dial(d->port)) < 0) {
        ck_assert_msg(!daemon_exited(d), "preforkd exited (status 0x%x) before accepting:\n%s",
                      (unsigned)d->status, du_log_tail(d));
        ck_assert_msg(tu_now() < deadline, "nothing accepts on 127.0.0.1:%u: %s\n%s", d->port,
                      strerror(-fd), du_log_tail(d));
        usleep(20000);
    }
    close(fd);
}

/* One echo round trip on a new connection; 0, or the failing step's -errno
 * (-EPROTO: wrong bytes or EOF). */
static int echo_once(unsigned port, const char *msg, bool *connected)
{
    size_t len = strlen(msg);
    char back[64];
    int fd = dial(port), rc = 0;

    *connected = fd >= 0;
    if (fd < 0)
        return fd;
    if (!tu_write_all(fd, msg, len))
        rc = -errno;
    else if (tu_read_full(fd, back, len, (int)(IO_TIMEOUT_SEC * 1000)) != len ||
             memcmp(back, msg, len) != 0)
        rc = -EPROTO;
    close(fd);
    return rc;
}

static void *load_thread(void *arg)
{
    struct load *l = arg;

    for (unsigned long round = 0; !atomic_load(&l->stop); round++) {
        char msg[32];
        bool connected;
        int rc, none = 0;

        snprintf(msg, sizeof(msg), "round %lu\n", round);
        rc = echo_once(l->port, msg, &connected);
        if (rc == 0)
            atomic_fetch_add(&l->rounds, 1);
        else {
            atomic_compare_exchange_strong(&l->first_errno, &none, -rc);
            atomic_fetch_add(connected ? &l->echo_failures : &l->connect_failures, 1);
        }
        usleep(CLIENT_PAUSE_US);
    }
    return NULL;
}

static void load_start(struct load *l, unsigned port)
{
    memset(l, 0, sizeof(*l));
    l->port = port;
    for (int i = 0; i < CLIENT_THREADS; i++)
        ck_assert_int_eq(pthread_create(&l->threads[i], NULL, load_thread, l), 0);
}

/* Stops the clients; fails the test if a connect failed, more than
 * max_echo_failures round trips failed after connecting, or the loop did
 * not run. */
static void load_stop(struct load *l, const struct du_daemon *d, int max_echo_failures,
                      const char *during)
{
    int rounds, cf, ef;

    atomic_store(&l->stop, true);
    for (int i = 0; i < CLIENT_THREADS; i++)
        pthread_join(l->threads[i], NULL);
    rounds = atomic_load(&l->rounds);
    cf = atomic_load(&l->connect_failures);
    ef = atomic_load(&l->echo_failures);
    ck_assert_msg(cf == 0 && ef <= max_echo_failures, "%s: %d connects and %d round trips "
                  "failed (at most %d may) of %d, the first with %s\n%s", during, cf, ef,
                  max_echo_failures, rounds + cf + ef, strerror(atomic_load(&l->first_errno)),
                  du_log_tail(d));
    ck_assert_msg(rounds >= MIN_CLIENT_ROUNDS, "%s: only %d round trips\n%s", during, rounds,
                  du_log_tail(d));
}

/* Rewrites d's config as c, sends HUP, and waits for generation g. */
static void reload(struct du_daemon *d, const struct conf *c, unsigned g, struct workers *ws,
                   const char *what)
{
    write_conf(d, c);
    ck_assert_int_eq(kill(d->pid, SIGHUP), 0);
    wait_workers(d, c->workers, g, !c->reuse_port, ws, RELOAD_TIMEOUT_SEC, what);
}

/* ---- fixtures ---- */

static void setup(void)
{
    du_test_begin(&suite, test_dir, sizeof(test_dir));
    memset(daemons, 0, sizeof(daemons));
}

/* Every daemon stopped by pid and group: no process and no listening
 * socket of it may be left. */
static void teardown(void)
{
    for (int i = 0; i < MAX_DAEMONS; i++) {
        struct du_daemon *d = &daemons[i];
        unsigned long left[MAX_SOCKETS];

        if (d->pid == 0)
            continue;
        du_stop(d, STOP_GRACE_SEC);
        ck_assert_msg(du_group_gone(d), "processes of master %d survived SIGKILL", (int)d->pid);
        ck_assert_msg(d->port == 0 || tcp_listeners(d->port, left, NULL, MAX_SOCKETS) == 0,
                      "a socket still listens on 127.0.0.1:%u once preforkd is gone", d->port);
        tu_assert_no_sanitizer_report(du_log(d));
    }
}

static struct du_daemon *start(const struct conf *c, struct workers *ws)
{
    struct du_daemon *d = daemon_launch(c, tu_free_port("127.0.0.1"), NULL, NULL);

    wait_serving(d);
    wait_workers(d, c->workers, 1, !c->reuse_port, ws, READY_TIMEOUT_SEC, "start");
    return d;
}

/* ---- the sockets and the spread ---- */

/* The accepted counts of /status, by task id; returns the workers seen. */
static int accepted_by_worker(unsigned port, unsigned long *accepted, int max)
{
    static const char req[] = "GET /status HTTP/1.0\r\n\r\n";
    static char page[LOG_MAX];
    const char *p = page;
    int fd = dial(port), n = 0;
    size_t len;

    ck_assert_msg(fd >= 0, "connect for /status: %s", strerror(-fd));
    ck_assert(tu_write_all(fd, req, sizeof(req) - 1));
    len = tu_read_full(fd, page, sizeof(page) - 1, (int)(IO_TIMEOUT_SEC * 1000));
    close(fd);
    page[len] = '\0';
    while ((p = strstr(p, "\npreforkd_worker_connections_accepted_total{worker=\"")) != NULL) {
        int id;
        unsigned long count;

        p++;
        if (sscanf(p, "preforkd_worker_connections_accepted_total{worker=\"%d\",%*[^}]} %lu",
                   &id, &count) == 2 && id >= 0 && id < max) {
            accepted[id] = count;
            n++;
        }
    }
    ck_assert_msg(n > 0, "no per-worker accepted counts in /status:\n%.2000s", page);
    return n;
}

START_TEST(test_2_workers_hold_a_socket_each_and_share_200_connections_fairly)
{
    struct conf c = { .workers = 2, .reuse_port = true, .http = true };
    struct workers ws;
    struct du_daemon *d = start(&c, &ws);
    unsigned long accepted[MAX_WORKERS] = { 0 }, total = 0;
    struct holdings h;

    holdings_of(d, &ws, &h);
    ck_assert_msg(holdings_are(&h, &ws, false), "%s", describe_holdings(&h, &ws));
    for (int i = 0; i < FAIR_CONNECTIONS; i++) {
        static const char req[] = "GET / HTTP/1.0\r\n\r\n";
        char reply[512];
        int fd = dial(d->port);

        ck_assert_msg(fd >= 0, "connection %d: %s\n%s", i, strerror(-fd), du_log_tail(d));
        ck_assert(tu_write_all(fd, req, sizeof(req) - 1));
        ck_assert_msg(tu_read_full(fd, reply, sizeof(reply), (int)(IO_TIMEOUT_SEC * 1000)) > 0,
                      "connection %d: no reply\n%s", i, du_log_tail(d));
        close(fd);
    }
    ck_assert_int_eq(accepted_by_worker(d->port, accepted, MAX_WORKERS), 2);
    total = accepted[0] + accepted[1];
    ck_assert_msg(total >= FAIR_CONNECTIONS, "the workers accepted %lu connections of %d",
                  total, FAIR_CONNECTIONS);
    for (int i = 0; i < 2; i++)
        ck_assert_msg(accepted[i] >= FAIR_MIN_SHARE * (double)total,
                      "worker #%d accepted %lu of %lu connections (less than %.0f %%)", i,
                      accepted[i], total, FAIR_MIN_SHARE * 100);
}
END_TEST

START_TEST(test_sigkill_of_a_worker_keeps_its_socket_for_the_replacement_and_no_connect_fails)
{
    struct conf c = { .workers = 3, .reuse_port = true };
    struct workers before, after;
    struct du_daemon *d = start(&c, &before);
    struct holdings h0, h1;
    struct load l;
    double killed_at;

    holdings_of(d, &before, &h0);
    load_start(&l, d->port);
    usleep(300000);
    ck_assert_int_eq(kill(before.pid[1], SIGKILL), 0);
    killed_at = tu_now();
    do {
        wait_workers(d, 3, 1, 0, &after, RESPAWN_TIMEOUT_SEC, "kill -9 of worker #1");
    } while (after.pid[1] == before.pid[1] && tu_now() < killed_at + RESPAWN_TIMEOUT_SEC);
    usleep(300000);
    /* Only what the killed worker had accepted may fail: one a thread. */
    load_stop(&l, d, CLIENT_THREADS, "kill -9 of worker #1");
    ck_assert_msg(after.pid[0] == before.pid[0] && after.pid[2] == before.pid[2] &&
                  after.pid[1] != before.pid[1], "expected a new #1 only: was %d %d %d, is %d "
                  "%d %d", (int)before.pid[0], (int)before.pid[1], (int)before.pid[2],
                  (int)after.pid[0], (int)after.pid[1], (int)after.pid[2]);
    holdings_of(d, &after, &h1);
    for (int i = 0; i < 3; i++)
        ck_assert_msg(h1.of_worker[i] == h0.of_worker[i], "worker #%d accepts on socket %lu, "
                      "its task's socket was %lu: the queue did not survive", i, h1.of_worker[i],
                      h0.of_worker[i]);
}
END_TEST

/*
 * Starts confs[0], then under load reloads confs[1], confs[2], ... in turn,
 * each time waiting for its generation with the holdings its reuse_port
 * promises; no connection may fail, and the first `kept` sockets of the
 * start must be those of workers #0..#kept-1 after every reload.
 */
static void reload_under_load(const struct conf *confs, int n, int kept, const char *what)
{
    struct workers ws0, ws;
    struct du_daemon *d = start(&confs[0], &ws0);
    struct holdings h0, h;
    struct load l;

    holdings_of(d, &ws0, &h0);
    load_start(&l, d->port);
    for (int i = 1; i < n; i++) {
        char step[64];

        usleep(200000);
        snprintf(step, sizeof(step), "%s: reload %d", what, i);
        reload(d, &confs[i], (unsigned)i + 1, &ws, step);
        holdings_of(d, &ws, &h);
        for (int k = 0; k < kept; k++)
            ck_assert_msg(h.of_worker[k] == h0.of_worker[k], "%s: worker #%d does not accept "
                          "on socket %lu of the start: %s", step, k, h0.of_worker[k],
                          describe_holdings(&h, &ws));
    }
    usleep(200000);
    load_stop(&l, d, 0, what);
}

/* HUP from 2 to 3 workers and back, under load: the sockets follow the
 * count, 0 and 1 are kept throughout, and no connection fails. */
START_TEST(test_hup_to_3_workers_and_back_to_2_moves_the_sockets_and_fails_no_connection)
{
    const struct conf confs[] = { { .workers = 2, .reuse_port = true },
                                  { .workers = 3, .reuse_port = true },
                                  { .workers = 2, .reuse_port = true } };

    reload_under_load(confs, 3, 2, "HUPs from 2 to 3 to 2 workers");
}
END_TEST

/* Turning reuse_port on by HUP makes the shared socket socket 0; turning
 * it off makes it the shared one again. */
START_TEST(test_hup_turning_reuse_port_on_then_off_keeps_socket_0_and_fails_no_connection)
{
    const struct conf confs[] = { { .workers = 2, .reuse_port = false },
                                  { .workers = 2, .reuse_port = true },
                                  { .workers = 2, .reuse_port = false } };

    reload_under_load(confs, 3, 1, "HUPs turning reuse_port on and off");
}
END_TEST

/*
 * TTOU with connections queued on the leaving worker's socket (the worker
 * is stopped, so they wait there): the master closes its copy, the worker
 * accepts what was queued as it quits, and every one of them is served.
 */
START_TEST(test_ttou_serves_what_the_leaving_workers_socket_had_queued)
{
    struct conf c = { .workers = 2, .reuse_port = true };
    struct workers ws, after;
    struct du_daemon *d = start(&c, &ws);
    int fds[TTOU_CONNECTIONS];

    ck_assert_int_eq(kill(ws.pid[1], SIGSTOP), 0);
    for (int i = 0; i < TTOU_CONNECTIONS; i++) {
        fds[i] = dial(d->port);
        ck_assert_msg(fds[i] >= 0, "connection %d: %s", i, strerror(-fds[i]));
        ck_assert(tu_write_all(fds[i], "queued\n", 7));
    }
    ck_assert_int_eq(kill(d->pid, SIGTTOU), 0);
    usleep(200000);
    ck_assert_int_eq(kill(ws.pid[1], SIGCONT), 0);
    for (int i = 0; i < TTOU_CONNECTIONS; i++) {
        char back[8];
        size_t got = tu_read_full(fds[i], back, 7, (int)(IO_TIMEOUT_SEC * 1000));

        ck_assert_msg(got == 7 && memcmp(back, "queued\n", 7) == 0, "connection %d of %d got "
                      "%zu bytes of its echo after TTOU: %s\n%s", i, TTOU_CONNECTIONS, got,
                      strerror(errno), du_log_tail(d));
        close(fds[i]);
    }
    wait_workers(d, 1, 1, 0, &after, RELOAD_TIMEOUT_SEC, "TTOU");
    ck_assert_int_eq(after.pid[0], ws.pid[0]);
}
END_TEST

/* listen = 127.0.0.1:0: the master's sockets, those TTIN adds included,
 * are all on the one port the kernel chose. */
START_TEST(test_port_0_puts_every_worker_socket_on_the_one_port_the_kernel_chose)
{
    struct conf c = { .workers = 3, .reuse_port = true };
    struct du_daemon *d = daemon_launch(&c, 0, NULL, NULL);
    unsigned long all[MAX_SOCKETS], mine[MAX_SOCKETS];
    unsigned ports[MAX_SOCKETS];
    struct workers ws;
    double deadline = tu_now() + READY_TIMEOUT_SEC;
    int n, k = 0;

    for (int want = 3; want <= 4; want++) {
        do {
            ck_assert_msg(!daemon_exited(d), "preforkd exited:\n%s", du_log_tail(d));
            ck_assert_msg(tu_now() < deadline, "the master holds %d listening sockets, not "
                          "%d\n%s", k, want, du_log_tail(d));
            usleep(20000);
            n = tcp_listeners(0, all, ports, MAX_SOCKETS);
            k = held_by(d->pid, all, n, mine, MAX_SOCKETS);
        } while (k != want);
        d->port = 0;
        for (int i = 0; i < n; i++) {
            for (int j = 0; j < k; j++) {
                if (all[i] != mine[j])
                    continue;
                ck_assert_msg(d->port == 0 || ports[i] == d->port, "the master's sockets "
                              "listen on ports %u and %u", d->port, ports[i]);
                d->port = ports[i];
            }
        }
        wait_workers(d, want, 1, 0, &ws, READY_TIMEOUT_SEC, "listen on port 0");
        wait_serving(d);
        if (want == 3)
            ck_assert_int_eq(kill(d->pid, SIGTTIN), 0);
    }
}
END_TEST

/* ---- what reuse_port leaves shared ---- */

START_TEST(test_unix_listener_stays_shared_and_a_notice_says_why_once)
{
    char path[PATH_MAX + 16], extra[PATH_MAX + 32];
    struct conf c = { .workers = 2, .reuse_port = true, .extra = extra };
    struct workers ws;
    struct du_daemon *d;
    unsigned long inode, held;
    char level[16];

    snprintf(path, sizeof(path), "%s/s.sock", test_dir);
    snprintf(extra, sizeof(extra), "listen = unix:%s\n", path);
    d = start(&c, &ws);
    inode = unix_listener(path);
    ck_assert_msg(inode != 0, "nothing listens on %s", path);
    ck_assert_int_eq(held_by(d->pid, &inode, 1, &held, 1), 1);
    for (int i = 0; i < 2; i++)
        ck_assert_msg(held_by(ws.pid[i], &inode, 1, &held, 1) == 1, "worker #%d does not "
                      "accept on the unix socket", i);
    ck_assert_msg(log_lines(d, "does not apply to unix sockets", level) == 1 &&
                  strcmp(level, "notice") == 0, "no notice (or more than one) that reuse_port "
                  "leaves the unix listener shared:\n%s", du_log_tail(d));
    c.workers = 3;
    reload(d, &c, 2, &ws, "HUP with workers = 3");
    ck_assert_msg(log_lines(d, "does not apply to unix sockets", level) == 1, "the notice came "
                  "again on reload:\n%s", du_log_tail(d));
    ck_assert_int_eq(unix_listener(path), inode);
}
END_TEST

/* In the child: the listening socket *arg becomes fd 3, passed to the
 * daemon as systemd passes one (LISTEN_FDS). */
static void pass_socket(void *arg)
{
    char pid[32];

    /* dup2 clears CLOEXEC, but not when the fd is 3 already. */
    if (dup2(*(int *)arg, 3) < 0 || fcntl(3, F_SETFD, 0) < 0)
        _exit(126);
    snprintf(pid, sizeof(pid), "%d", (int)getpid());
    setenv("LISTEN_PID", pid, 1);
    setenv("LISTEN_FDS", "1", 1);
}

START_TEST(test_socket_passed_by_systemd_stays_shared_and_a_notice_says_why)
{
    struct conf c = { .workers = 2, .reuse_port = true };
    int fd = tu_listen_on("127.0.0.1", 0);
    struct du_daemon *d = daemon_launch(&c, tu_local_port(fd), pass_socket, &fd);
    struct workers ws;
    char level[16];

    close(fd);
    wait_serving(d);
    wait_workers(d, 2, 1, 1, &ws, READY_TIMEOUT_SEC, "start with a passed socket");
    ck_assert_msg(log_lines(d, "does not apply to the socket systemd passed", level) == 1 &&
                  strcmp(level, "notice") == 0, "no notice that reuse_port leaves the passed "
                  "socket shared:\n%s", du_log_tail(d));
}
END_TEST

/* ---- errors ---- */

/* In the child: at most *arg open files, so that binding many sockets fails. */
static void limit_files(void *arg)
{
    struct rlimit rl = { .rlim_cur = *(rlim_t *)arg, .rlim_max = *(rlim_t *)arg };

    if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
        _exit(126);
}

START_TEST(test_reload_that_cannot_bind_a_worker_socket_names_it_and_keeps_the_service)
{
    static const rlim_t max_files = 32;
    struct conf c = { .workers = 2, .reuse_port = true };
    struct du_daemon *d = daemon_launch(&c, tu_free_port("127.0.0.1"), limit_files,
                                     (void *)&max_files);
    struct workers before, after;
    char where[PATH_MAX + 64];
    const char *log;

    wait_serving(d);
    wait_workers(d, 2, 1, 0, &before, READY_TIMEOUT_SEC, "start");
    c.workers = MAX_WORKERS;
    write_conf(d, &c);
    ck_assert_int_eq(kill(d->pid, SIGHUP), 0);
    usleep(1000000);
    wait_workers(d, 2, 1, 0, &after, 0, "a reload to more sockets than open files");
    ck_assert(memcmp(before.pid, after.pid, sizeof(before.pid)) == 0);
    wait_serving(d);
    log = du_log_tail(d);
    snprintf(where, sizeof(where), "%s:5: [server] listen = 127.0.0.1:%u: reuse_port socket #",
             d->conf, d->port);
    ck_assert_msg(strstr(log, where) != NULL && strstr(log, strerror(EMFILE)) != NULL &&
                  strstr(log, "reload failed") != NULL, "the log does not name the socket "
                  "that failed (%s...), the cause and the failed reload:\n%s", where, log);
}
END_TEST

static Suite *reuseport_suite(void)
{
    Suite *s = suite_create("reuseport");
    TCase *tc = du_add_tcase(s, "sockets", TCASE_TIMEOUT_SEC, setup, teardown);

    tcase_add_test(tc, test_2_workers_hold_a_socket_each_and_share_200_connections_fairly);
    tcase_add_test(tc, test_sigkill_of_a_worker_keeps_its_socket_for_the_replacement_and_no_connect_fails);
    tcase_add_test(tc, test_port_0_puts_every_worker_socket_on_the_one_port_the_kernel_chose);

    tc = du_add_tcase(s, "reload", TCASE_TIMEOUT_SEC, setup, teardown);
    tcase_add_test(tc, test_hup_to_3_workers_and_back_to_2_moves_the_sockets_and_fails_no_connection);
    tcase_add_test(tc, test_hup_turning_reuse_port_on_then_off_keeps_socket_0_and_fails_no_connection);
    tcase_add_test(tc, test_reload_that_cannot_bind_a_worker_socket_names_it_and_keeps_the_service);
    tcase_add_test(tc, test_ttou_serves_what_the_leaving_workers_socket_had_queued);

    tc = du_add_tcase(s, "shared", TCASE_TIMEOUT_SEC, setup, teardown);
    tcase_add_test(tc, test_unix_listener_stays_shared_and_a_notice_says_why_once);
    tcase_add_test(tc, test_socket_passed_by_systemd_stays_shared_and_a_notice_says_why);
    return s;
}

int main(void)
{
    return du_main(&suite, "check_reuseport", reuseport_suite);
}

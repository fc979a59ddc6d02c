/*
 * check_abuse: exhaustion and abuse (issue #9, item 3). Each test starts
 * the built daemon ($PREFORKD, default build/preforkd, from the repo root)
 * with handler = http on 127.0.0.1, does to it what a hostile or broken
 * client, or a hostile machine, would do, and checks what a user notices:
 * answers and their latency, when connections close, and the workers' fds,
 * RSS and CPU time in /proc.
 *
 * Every daemon runs in a process group of its own, recorded in the suite
 * dir, and dies with the test that started it (PR_SET_PDEATHSIG); the test
 * is a child subreaper, so its workers are reaped here too. A test that
 * fails exits without teardown: main() kills and counts whatever is left in
 * the recorded groups.
 */
#define _GNU_SOURCE     /* memmem, strcasestr */
#include <check.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemonutil.h"
#include "testutil.h"

#define TCASE_TIMEOUT_SEC 30
/* A daemon that does not accept connections by then failed to start. */
#define READY_TIMEOUT_SEC 5.0
/* Teardown: SIGTERM first, SIGKILL after this. */
#define STOP_GRACE_SEC 3.0
#define CONNECT_TIMEOUT_MS 2000
/* A GET that takes longer is not answered. */
#define GET_TIMEOUT_SEC 2.0
#define MAX_WORKERS 8
#define KIB 1024L
#define MIB (1024L * 1024L)

/* slowloris: SLOW_CONNS clients each send a header byte per
 * SLOW_BYTE_INTERVAL_SEC; header_timeout closes them. Meanwhile a GET every
 * SLOW_GET_INTERVAL_SEC on a new connection: their median must be at most
 * SLOW_GET_MEDIAN_MAX_SEC. The median, not the max: on a 2-CPU machine
 * that runs other suites beside this one, one GET in 40 may wait for the
 * scheduler (quiet, the max is 5-40 ms). The max must stay under
 * SLOW_GET_MAX_SEC, half of header_timeout: no GET waited for the slow
 * clients to be dropped. */
#define SLOW_CONNS 2000
#define SLOW_HEADER_TIMEOUT_SEC 2
#define SLOW_BYTE_INTERVAL_SEC 1.0
#define SLOW_GET_INTERVAL_SEC 0.05
#define SLOW_GET_MEDIAN_MAX_SEC 0.100
#define SLOW_GET_MAX_SEC (SLOW_HEADER_TIMEOUT_SEC / 2.0)
/* How often the slow clients look whether it is their turn to send. */
#define SLOW_POLL_MS 10
/* The fewest GETs that make a latency figure; ~30 fit before the first close. */
#define SLOW_GETS_MIN 20
/* header_timeout counts from the accept, which follows our connect: no
 * close may come sooner than this after the connect... */
#define SLOW_CLOSE_MIN_SEC (SLOW_HEADER_TIMEOUT_SEC - 0.1)
/* ...and every one must have come by this. */
#define SLOW_CLOSE_MAX_SEC (SLOW_HEADER_TIMEOUT_SEC + 1.5)
/* fds for each daemon process: every slow client in one worker, and room. */
#define SLOW_DAEMON_NOFILE (2 * SLOW_CONNS + 256)
#define SLOW_TEST_NOFILE (SLOW_CONNS + 256)
#define SLOW_GETS_MAX 400

/* EMFILE: one worker with EMFILE_NOFILE fds gets EMFILE_CONNS connections. */
#define EMFILE_NOFILE 64
#define EMFILE_CONNS 100
/* Waiting to run out of fds, and the CPU time it may burn meanwhile. */
#define EMFILE_FILL_SEC 3.0
#define EMFILE_CPU_WINDOW_SEC 1.0
#define EMFILE_CPU_MAX_SEC 0.2
/* A process that only burns CPU runs beside the worker meanwhile: a worker
 * that spins gets about as much as it does, however busy the machine is
 * (other suites may run beside this one); one that waits gets next to none. */
#define EMFILE_CPU_SHARE_MAX 0.25
/* Once the clients close, a new GET is answered within this. */
#define EMFILE_RECOVER_SEC 1.0
/* The worker reports accept pauses on its heartbeat (at most 1 s apart). */
#define EMFILE_REPORT_SEC 3.0

/* A 100 MiB file that the client asks for and never reads. */
#define HUGE_FILE_SIZE (100 * MIB)
#define HUGE_IDLE_TIMEOUT_SEC 2
/* sendfile keeps the file out of user memory: a worker grows by less. */
#define HUGE_RSS_GROWTH_MAX_KIB (8 * 1024L)
/* When RSS is looked at: the socket buffers are full by then. */
#define HUGE_STALL_SEC 0.5
#define HUGE_CLOSE_MIN_SEC (HUGE_IDLE_TIMEOUT_SEC - 0.5)
#define HUGE_CLOSE_MAX_SEC (HUGE_IDLE_TIMEOUT_SEC + 2.0)

/* Leak check: LEAK_CONNS keep-alive connections at once, each sending
 * LEAK_REQUESTS_PER_CONN requests one after another: 50 000 requests over
 * 1 000 connections. 100 000 take 2.5-6 s here (3-16 s under SANITIZE=1)
 * as other suites run beside this one, too close to the suite's 25 s. The
 * warm-up has the same concurrency, so that every pool and cache is at its
 * high-water mark before the figures are taken. */
#define LEAK_CONNS 1000
#define LEAK_REQUESTS_PER_CONN 50
#define LEAK_WARMUP_REQUESTS_PER_CONN 5
#define LEAK_RUN_TIMEOUT_SEC 20.0
#define LEAK_RSS_MARGIN_KIB 1024L
/* A worker has closed what the clients closed within this. */
#define LEAK_SETTLE_SEC 3.0
/* fd counts that stay the same this long have settled. */
#define LEAK_STABLE_SEC 0.3
/* The largest response a load client buffers: /status with a few workers. */
#define LOAD_BUF_SIZE (64 * 1024)

/* Unwritable access log: requests that must all be answered 200. */
#define FULL_LOG_REQUESTS 50
#define FULL_LOG_WORKERS 2
/* Log lines may trail the responses by this much. */
#define LOG_POLL_SEC 0.5

/* Set up by main(). */
static struct du_suite suite;
/* This test's directory: www/, config, log. */
static char test_dir[PATH_MAX];

/* The daemon under test (one per test), and its document root. */
static struct du_daemon site;
static char www_root[PATH_MAX];

/* What a test's config changes. The base is handler = http on site.port,
 * graceful_timeout = 2, worker_timeout = 10, root = www/, status_path =
 * /status. Extra lines must not repeat a key of the base. */
struct site_conf {
    int workers;
    rlim_t nofile;              /* RLIMIT_NOFILE of the daemon; 0: ours */
    const char *server_extra;   /* whole lines for [server], or NULL */
    const char *http_extra;     /* whole lines for [http], or NULL */
    bool no_quarantine;         /* under ASan: free() gives memory back at once */
};

/* What the document root holds. */
static char index_body[1024];
static size_t index_len;
#define FILE64K_SIZE 65536

/* ---- files ---- */

/* root/name, where root is the document root. */
static void www_path(char *buf, size_t size, const char *name)
{
    tu_path(buf, size, www_root, name);
}

static void write_file(const char *path, const void *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

    ck_assert_msg(fd >= 0, "%s: %s", path, strerror(errno));
    ck_assert(tu_write_all(fd, data, len));
    ck_assert_int_eq(close(fd), 0);
}

static void make_www(void)
{
    unsigned char *big = malloc(FILE64K_SIZE);
    char path[PATH_MAX];

    ck_assert_ptr_nonnull(big);
    tu_path(www_root, sizeof(www_root), test_dir, "www");
    ck_assert_int_eq(mkdir(www_root, 0755), 0);
    www_path(path, sizeof(path), "index.html");
    write_file(path, index_body, index_len);
    for (size_t i = 0; i < FILE64K_SIZE; i++)
        big[i] = (unsigned char)(i + i / 251);
    www_path(path, sizeof(path), "file64k.bin");
    write_file(path, big, FILE64K_SIZE);
    free(big);
}

static const char *log_tail(void)
{
    return du_log_tail(&site);
}

/* ---- /proc ---- */

/* Open fds of pid below below_fd; -1 if pid is gone. */
static int proc_fds_below(pid_t pid, int below_fd)
{
    char path[64];
    int n = 0;
    DIR *d;
    struct dirent *e;

    snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
    d = opendir(path);
    if (d == NULL)
        return -1;
    while ((e = readdir(d)) != NULL)
        if (isdigit((unsigned char)e->d_name[0]) && atoi(e->d_name) < below_fd)
            n++;
    closedir(d);
    return n;
}

static int proc_socket_count(pid_t pid)
{
    unsigned long inodes[SLOW_DAEMON_NOFILE];

    return tu_proc_socket_inodes(pid, inodes, SLOW_DAEMON_NOFILE);
}

/* User + system CPU seconds of pid; -1 if it is gone. */
static double proc_cpu_sec(pid_t pid)
{
    char path[64], text[1024];
    unsigned long utime, stime;
    const char *p;

    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    tu_read_file(path, text, sizeof(text));
    /* "pid (comm) S ppid ...": fields 14 and 15 are utime and stime. */
    p = strrchr(text, ')');
    if (p == NULL || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
                            &utime, &stime) != 2)
        return -1;
    return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

/* Seconds pid ran on a CPU (schedstat: in ns, where /proc/PID/stat counts
 * clock ticks); -1 if it is gone. */
static double proc_on_cpu_sec(pid_t pid)
{
    char path[64], text[256];
    unsigned long long on_cpu_ns;

    snprintf(path, sizeof(path), "/proc/%d/schedstat", (int)pid);
    tu_read_file(path, text, sizeof(text));
    return sscanf(text, "%llu", &on_cpu_ns) == 1 ? (double)on_cpu_ns / 1e9 : -1;
}

/* The master's workers, ordered by pid; returns how many. */
static int site_workers(pid_t *pids, int max)
{
    int n = tu_children_of(site.pid, pids, max);

    return n < max ? n : max;
}

static int sum_fds(const pid_t *pids, int n)
{
    int sum = 0;

    for (int i = 0; i < n; i++)
        sum += tu_proc_fd_count(pids[i]);
    return sum;
}

/* ---- clients ---- */

/* Sends all of req on a non-blocking fd before deadline; false if not. */
static bool send_all(int fd, const char *req, size_t len, double deadline)
{
    while (len > 0 && tu_now() < deadline) {
        struct pollfd p = { .fd = fd, .events = POLLOUT };
        ssize_t n = send(fd, req, len, MSG_NOSIGNAL);

        if (n > 0) {
            req += n;
            len -= (size_t)n;
        } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            poll(&p, 1, 10);
        } else {
            return false;
        }
    }
    return len == 0;
}

/* GET target on a new connection with Connection: close, read to EOF.
 * Returns the status, or 0 if no whole answer came within timeout_sec (or
 * -errno if the connect failed); *elapsed_sec (may be NULL) is how long
 * it took from the connect on. */
static int http_get(unsigned port, const char *target, double timeout_sec, double *elapsed_sec)
{
    double start = tu_now(), deadline = start + timeout_sec;
    char req[512], head[64];
    size_t got = 0;
    int fd, status = 0, len;

    len = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                   "Connection: close\r\n\r\n", target);
    fd = tu_connect_loopback(port, (int)(timeout_sec * 1000));
    if (fd < 0)
        return fd;
    if (send_all(fd, req, (size_t)len, deadline)) {
        for (;;) {
            struct pollfd p = { .fd = fd, .events = POLLIN };
            char buf[16384];
            int left_ms = (int)((deadline - tu_now()) * 1000);
            ssize_t n;

            if (left_ms <= 0 || poll(&p, 1, left_ms) <= 0)
                break;
            n = recv(fd, buf, sizeof(buf), 0);
            if (n < 0 && (errno == EAGAIN || errno == EINTR))
                continue;
            if (n <= 0) {
                /* EOF after a status line: the answer is whole. */
                if (n == 0 && got >= 12 && strncmp(head, "HTTP/1.", 7) == 0)
                    status = atoi(head + 9);
                break;
            }
            if (got < sizeof(head) - 1) {
                size_t take = (size_t)n < sizeof(head) - 1 - got ? (size_t)n
                                                                 : sizeof(head) - 1 - got;
                memcpy(head + got, buf, take);
                head[got + take] = '\0';
            }
            got += (size_t)n;
        }
    }
    if (elapsed_sec != NULL)
        *elapsed_sec = tu_now() - start;
    close(fd);
    return status;
}

/* ---- the daemon ---- */

/* RLIMIT_NOFILE soft limit of this process raised to at least want (up to
 * the hard limit); fails the test if the hard limit is lower. */
static void raise_nofile(rlim_t want)
{
    struct rlimit rl;

    ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
    ck_assert_msg(rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= want,
                  "RLIMIT_NOFILE hard limit %llu < %llu: this test cannot run here",
                  (unsigned long long)rl.rlim_max, (unsigned long long)want);
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < want) {
        rl.rlim_cur = want;
        ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
    }
}

/* For a child about to exec the daemon: c->nofile fds and, under
 * SANITIZE=1 with c->no_quarantine, no ASan quarantine. ASan keeps freed
 * memory in a quarantine of up to 256 MiB, so a process's RSS grows with
 * every free() until that fills; without it, RSS tells a leak again. */
static void prepare_daemon_child(void *arg)
{
    const struct site_conf *c = arg;

    if (c->nofile != 0) {
        struct rlimit rl = { c->nofile, c->nofile };

        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
            _exit(125);
    }
#ifdef __SANITIZE_ADDRESS__
    if (c->no_quarantine) {
        const char *old = getenv("ASAN_OPTIONS");
        char opts[1024];

        snprintf(opts, sizeof(opts), "%s%squarantine_size_mb=0:thread_local_quarantine_size_kb=0",
                 old != NULL ? old : "", old != NULL && old[0] != '\0' ? ":" : "");
        setenv("ASAN_OPTIONS", opts, 1);
    }
#endif
}

/* Starts `preforkd -f -c conf` for c in a process group of its own, with
 * c->nofile fds, and waits until it accepts and its workers run. */
static void site_start(const struct site_conf *c)
{
    pid_t pids[MAX_WORKERS];
    double deadline = tu_now() + READY_TIMEOUT_SEC;

    du_init(&site, test_dir, "preforkd");
    site.port = tu_free_port("127.0.0.1");
    du_write_conf(&site, "[daemon]\nworkers = %d\ngraceful_timeout = 2\nworker_timeout = 10\n"
                         "[server]\nlisten = 127.0.0.1:%u\nhandler = http\n%s"
                         "[http]\nroot = %s\nstatus_path = /status\n%s",
                  c->workers, site.port, c->server_extra != NULL ? c->server_extra : "", www_root,
                  c->http_extra != NULL ? c->http_extra : "");
    du_launch(&suite, &site, prepare_daemon_child, (void *)c);
    du_assert_ready(&site, READY_TIMEOUT_SEC);
    while (site_workers(pids, MAX_WORKERS) != c->workers && tu_now() < deadline)
        usleep(10000);
    ck_assert_msg(site_workers(pids, MAX_WORKERS) == c->workers, "expected %d workers\n%s",
                  c->workers, log_tail());
}

/* ---- fixtures ---- */

static void setup(void)
{
    memset(&site, 0, sizeof(site));
    du_test_begin(&suite, test_dir, sizeof(test_dir));
    make_www();
}

static void teardown(void)
{
    du_stop(&site, STOP_GRACE_SEC);
    /* Workers that exited on SIGTERM had the last word (LeakSanitizer). */
    if (site.log[0] != '\0')
        tu_assert_no_sanitizer_report(du_log(&site));
}

/* ---- slowloris ---- */

/* GETs on new connections, one per SLOW_GET_INTERVAL_SEC, until stop. */
struct get_loop {
    unsigned port;
    atomic_bool stop;
    int n;                      /* GETs made */
    int failed;                 /* not answered 200 */
    int first_failure;          /* its status (0: none in time, <0: -errno) */
    double sec[SLOW_GETS_MAX];  /* each one's time, connect to EOF */
    pthread_t thread;
};

static void *get_loop_thread(void *arg)
{
    struct get_loop *g = arg;

    while (!atomic_load(&g->stop) && g->n < SLOW_GETS_MAX) {
        int status = http_get(g->port, "/index.html", GET_TIMEOUT_SEC, &g->sec[g->n]);

        if (status != 200 && g->failed++ == 0)
            g->first_failure = status;
        g->n++;
        usleep((useconds_t)(SLOW_GET_INTERVAL_SEC * 1e6));
    }
    return NULL;
}

static int compare_doubles(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

struct slow_conn {
    int fd;                     /* -1 once closed */
    double opened;              /* when its connect completed */
    double closed_after;        /* seconds from opened to the server's close */
    double next_byte;           /* when it sends its next byte */
    size_t sent;                /* bytes of slow_request sent */
};

/* The slow clients' request: never finished within header_timeout. */
static const char slow_request[] = "GET /index.html HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                   "X-Slowloris: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

/* Marks c closed if the server closed it (EOF or reset); drains what came. */
static bool slow_conn_check_closed(struct slow_conn *c, double now)
{
    char buf[4096];
    ssize_t n;

    while ((n = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT)) > 0)
        ;
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return false;
    close(c->fd);
    c->fd = -1;
    c->closed_after = now - c->opened;
    return true;
}

START_TEST(test_slowloris_2000_conns_leave_gets_fast_and_close_after_header_timeout)
{
    static struct slow_conn conns[SLOW_CONNS];
    static struct pollfd pfds[SLOW_CONNS];
    static int index_of[SLOW_CONNS];
    static struct get_loop g;
    struct site_conf c = { .workers = 2, .nofile = SLOW_DAEMON_NOFILE };
    char server_extra[256], http_extra[128];
    pid_t workers[MAX_WORKERS];
    int nworkers, base_fds, max_held = 0, open_count = SLOW_CONNS, early = 0, late = 0;
    double start, next_sample = 0, deadline, min_close = 0, max_close = 0, median;

    raise_nofile(SLOW_TEST_NOFILE);
    snprintf(server_extra, sizeof(server_extra), "backlog = 4096\nmax_connections = %d\n"
             "idle_timeout = 30\n", 2 * SLOW_CONNS);
    snprintf(http_extra, sizeof(http_extra), "header_timeout = %d\n", SLOW_HEADER_TIMEOUT_SEC);
    c.server_extra = server_extra;
    c.http_extra = http_extra;
    site_start(&c);
    nworkers = site_workers(workers, MAX_WORKERS);
    base_fds = sum_fds(workers, nworkers);

    for (int i = 0; i < SLOW_CONNS; i++) {
        conns[i].fd = tu_connect_loopback(site.port, CONNECT_TIMEOUT_MS);
        ck_assert_msg(conns[i].fd >= 0, "slow client %d: connect: %s\n%s", i,
                      strerror(-conns[i].fd), log_tail());
        conns[i].opened = tu_now();
        ck_assert_int_eq(send(conns[i].fd, slow_request, 1, MSG_NOSIGNAL), 1);
        conns[i].sent = 1;
    }
    memset(&g, 0, sizeof(g));
    g.port = site.port;
    ck_assert_int_eq(pthread_create(&g.thread, NULL, get_loop_thread, &g), 0);

    /* Each client's bytes come a second apart; the clients' turns are
     * spread over the second, as they would be from many machines (a burst
     * of 2000 sends would only measure this test's own CPU use). */
    start = tu_now();
    for (int i = 0; i < SLOW_CONNS; i++)
        conns[i].next_byte = start + SLOW_BYTE_INTERVAL_SEC * (1.0 + (double)i / SLOW_CONNS);
    deadline = conns[SLOW_CONNS - 1].opened + SLOW_CLOSE_MAX_SEC + 1.0;
    while (open_count > 0 && tu_now() < deadline) {
        int n = 0, rc;
        double now = tu_now();

        if (now >= next_sample) {
            int held = sum_fds(workers, nworkers) - base_fds;

            max_held = held > max_held ? held : max_held;
            next_sample = now + 0.1;
        }
        for (int i = 0; i < SLOW_CONNS; i++) {
            struct slow_conn *sc = &conns[i];

            if (sc->fd < 0)
                continue;
            if (now >= sc->next_byte) {
                /* One more header byte; the request never ends in time. */
                sc->sent++;
                sc->next_byte += SLOW_BYTE_INTERVAL_SEC;
                if (send(sc->fd, slow_request + sc->sent % (sizeof(slow_request) - 1), 1,
                         MSG_NOSIGNAL | MSG_DONTWAIT) < 0 && errno != EAGAIN &&
                    slow_conn_check_closed(sc, now)) {
                    open_count--;
                    continue;
                }
            }
            pfds[n] = (struct pollfd){ .fd = sc->fd, .events = POLLIN | POLLRDHUP };
            index_of[n++] = i;
        }
        rc = poll(pfds, (nfds_t)n, SLOW_POLL_MS);
        now = tu_now();
        for (int k = 0; rc > 0 && k < n; k++)
            if (pfds[k].revents != 0 && slow_conn_check_closed(&conns[index_of[k]], now))
                open_count--;
    }
    atomic_store(&g.stop, true);
    pthread_join(g.thread, NULL);

    for (int i = 0; i < SLOW_CONNS; i++) {
        if (conns[i].fd >= 0) {
            close(conns[i].fd);
            continue;
        }
        early += conns[i].closed_after < SLOW_CLOSE_MIN_SEC;
        late += conns[i].closed_after > SLOW_CLOSE_MAX_SEC;
        if (min_close == 0 || conns[i].closed_after < min_close)
            min_close = conns[i].closed_after;
        max_close = conns[i].closed_after > max_close ? conns[i].closed_after : max_close;
    }
    qsort(g.sec, (size_t)g.n, sizeof(g.sec[0]), compare_doubles);
    median = g.n > 0 ? g.sec[g.n / 2] : 0;
    printf("check_abuse: slowloris: %d connections held by the workers at once; closed "
           "%.2f..%.2f s after connect (header_timeout = %d); %d GETs meanwhile: median %.1f ms, "
           "max %.1f ms\n", max_held, min_close, max_close, SLOW_HEADER_TIMEOUT_SEC, g.n,
           median * 1000, g.n > 0 ? g.sec[g.n - 1] * 1000 : 0);

    ck_assert_msg(max_held >= SLOW_CONNS, "the workers held at most %d of the %d slow "
                  "connections at once: the test did not load them\n%s", max_held, SLOW_CONNS,
                  log_tail());
    ck_assert_msg(open_count == 0, "%d of %d slow connections still open %.1f s after the last "
                  "connect (header_timeout = %d)\n%s", open_count, SLOW_CONNS,
                  SLOW_CLOSE_MAX_SEC + 1.0, SLOW_HEADER_TIMEOUT_SEC, log_tail());
    ck_assert_msg(early == 0, "%d slow connections closed before header_timeout = %d (the first "
                  "after %.2f s)", early, SLOW_HEADER_TIMEOUT_SEC, min_close);
    ck_assert_msg(late == 0, "%d slow connections closed later than %.1f s (the last after "
                  "%.2f s; header_timeout = %d)", late, SLOW_CLOSE_MAX_SEC, max_close,
                  SLOW_HEADER_TIMEOUT_SEC);
    ck_assert_msg(g.failed == 0, "%d of %d GETs during the slowloris were not answered 200 "
                  "(the first: %d)\n%s", g.failed, g.n, g.first_failure, log_tail());
    ck_assert_msg(g.n >= SLOW_GETS_MIN, "only %d GETs during the slowloris", g.n);
    ck_assert_msg(median <= SLOW_GET_MEDIAN_MAX_SEC, "with %d slow clients connected, the median "
                  "GET took %.1f ms (at most %.0f ms; max %.1f ms of %d)", SLOW_CONNS,
                  median * 1000, SLOW_GET_MEDIAN_MAX_SEC * 1000, g.sec[g.n - 1] * 1000, g.n);
    ck_assert_msg(g.sec[g.n - 1] < SLOW_GET_MAX_SEC, "with %d slow clients connected, a GET took "
                  "%.1f ms: it waited for them (header_timeout = %d s; median %.1f ms of %d)",
                  SLOW_CONNS, g.sec[g.n - 1] * 1000, SLOW_HEADER_TIMEOUT_SEC, median * 1000, g.n);
}
END_TEST

/* ---- EMFILE ---- */

/* A child that only burns CPU until stop_spinner(). */
static pid_t start_spinner(void)
{
    pid_t pid = tu_fork_tied(SIGKILL);

    if (pid == 0) {
        for (volatile unsigned long i = 0;; i++)
            ;
    }
    return pid;
}

static void stop_spinner(pid_t pid)
{
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

START_TEST(test_out_of_fds_worker_does_not_spin_and_serves_again_once_clients_close)
{
    static int fds[EMFILE_CONNS];
    struct site_conf c = { .workers = 1, .nofile = EMFILE_NOFILE,
                           .server_extra = "backlog = 256\nidle_timeout = 30\n",
                           .http_extra = "header_timeout = 30\n" };
    pid_t worker, spinner, now_worker;
    double deadline, cpu0, cpu1, on_cpu0, on_cpu1, spinner0, spinner1, closed_at, took;
    int held = 0, held_after, status;

    site_start(&c);
    ck_assert_int_eq(site_workers(&worker, 1), 1);
    /* Idle connections: neither timeout frees an fd during the test. */
    for (int i = 0; i < EMFILE_CONNS; i++) {
        fds[i] = tu_connect_loopback(site.port, CONNECT_TIMEOUT_MS);
        ck_assert_msg(fds[i] >= 0, "connect %d: %s\n%s", i, strerror(-fds[i]), log_tail());
    }
    deadline = tu_now() + EMFILE_FILL_SEC;
    /* Out of fds: every number below the limit is taken (an fd inherited
     * from our own parent may sit above it). */
    while ((held = proc_fds_below(worker, EMFILE_NOFILE)) < EMFILE_NOFILE && tu_now() < deadline)
        usleep(10000);
    ck_assert_msg(held == EMFILE_NOFILE, "the worker holds %d fds below its limit %d after %d "
                  "connections\n%s", held, EMFILE_NOFILE, EMFILE_CONNS, log_tail());

    /* Out of fds, with connections queued: the listener stays readable. */
    usleep(100000);
    spinner = start_spinner();
    cpu0 = proc_cpu_sec(worker);
    on_cpu0 = proc_on_cpu_sec(worker);
    spinner0 = proc_on_cpu_sec(spinner);
    usleep((useconds_t)(EMFILE_CPU_WINDOW_SEC * 1e6));
    cpu1 = proc_cpu_sec(worker);
    on_cpu1 = proc_on_cpu_sec(worker);
    spinner1 = proc_on_cpu_sec(spinner);
    stop_spinner(spinner);
    held_after = proc_fds_below(worker, EMFILE_NOFILE);
    printf("check_abuse: EMFILE: worker at %d of %d fds used %.3f s CPU in %.1f s (%.4f s on "
           "CPU; a busy loop beside it %.3f s)\n", held_after, EMFILE_NOFILE, cpu1 - cpu0,
           EMFILE_CPU_WINDOW_SEC, on_cpu1 - on_cpu0, spinner1 - spinner0);
    ck_assert_msg(cpu0 >= 0 && cpu1 >= 0 && on_cpu1 >= 0, "the worker %d died\n%s", (int)worker,
                  log_tail());
    ck_assert_msg(held_after == EMFILE_NOFILE, "the worker held %d fds below its limit %d at "
                  "the end of the window", held_after, EMFILE_NOFILE);
    ck_assert_msg(cpu1 - cpu0 < EMFILE_CPU_MAX_SEC, "out of fds, the worker used %.3f s of CPU "
                  "in %.1f s (it spins on accept)\n%s", cpu1 - cpu0, EMFILE_CPU_WINDOW_SEC,
                  log_tail());
    ck_assert_msg(on_cpu1 - on_cpu0 < EMFILE_CPU_SHARE_MAX * (spinner1 - spinner0),
                  "out of fds, the worker ran %.4f s in %.1f s, a busy loop beside it %.4f s: it "
                  "spins on accept\n%s", on_cpu1 - on_cpu0, EMFILE_CPU_WINDOW_SEC,
                  spinner1 - spinner0, log_tail());

    /* The operator learns why new connections wait, and what to raise. */
    deadline = tu_now() + EMFILE_REPORT_SEC;
    while (strstr(du_log(&site), "accepting paused") == NULL && tu_now() < deadline)
        usleep(50000);
    ck_assert_msg(strstr(du_log(&site), "accepting paused") != NULL
                  && strstr(du_log(&site), "Too many open files") != NULL
                  && strstr(du_log(&site), "RLIMIT_NOFILE 64") != NULL,
                  "out of fds, the log does not say accepting paused, why and the limit\n%s",
                  log_tail());

    for (int i = 0; i < EMFILE_CONNS; i++)
        close(fds[i]);
    closed_at = tu_now();
    status = http_get(site.port, "/index.html", EMFILE_RECOVER_SEC, &took);
    printf("check_abuse: EMFILE: served again %.1f ms after the clients closed\n",
           (tu_now() - closed_at) * 1000);
    ck_assert_msg(status == 200, "a GET %.2f s after the %d clients closed got %d (200 "
                  "expected within %.1f s)\n%s", took, EMFILE_CONNS, status, EMFILE_RECOVER_SEC,
                  log_tail());
    ck_assert_msg(site_workers(&now_worker, 1) == 1 && now_worker == worker,
                  "the worker %d was replaced: it recovered by dying\n%s", (int)worker, log_tail());
}
END_TEST

/* ---- a huge file never read ---- */

START_TEST(test_unread_100mib_file_costs_no_user_memory_and_closes_after_idle_timeout)
{
    struct site_conf c = { .workers = 2, .server_extra = "idle_timeout = 2\n",
                           .http_extra = "header_timeout = 10\n" };
    static const char req[] = "GET /huge.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    pid_t workers[MAX_WORKERS];
    long rss0[MAX_WORKERS], growth = 0;
    int socks0[MAX_WORKERS], nworkers, fd, served_by = -1;
    double asked_at, closed_after = -1, deadline;
    char path[PATH_MAX];
    long long got = 0;
    bool eof = false;

    /* Sparse: a read into user memory would show in RSS all the same. */
    www_path(path, sizeof(path), "huge.bin");
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(ftruncate(fd, HUGE_FILE_SIZE), 0);
    close(fd);
    site_start(&c);
    nworkers = site_workers(workers, MAX_WORKERS);
    /* Warm-up: both workers have served and cached what they will. */
    for (int i = 0; i < 20; i++)
        ck_assert_int_eq(http_get(site.port, "/index.html", GET_TIMEOUT_SEC, NULL), 200);
    usleep(100000);
    for (int i = 0; i < nworkers; i++) {
        rss0[i] = tu_proc_rss_kib(workers[i]);
        socks0[i] = proc_socket_count(workers[i]);
    }

    fd = tu_connect_loopback(site.port, CONNECT_TIMEOUT_MS);
    ck_assert_int_ge(fd, 0);
    ck_assert(send_all(fd, req, strlen(req), tu_now() + 1));
    asked_at = tu_now();
    usleep((useconds_t)(HUGE_STALL_SEC * 1e6));
    for (int i = 0; i < nworkers; i++) {
        long g = tu_proc_rss_kib(workers[i]) - rss0[i];

        growth = g > growth ? g : growth;
        if (proc_socket_count(workers[i]) > socks0[i])
            served_by = i;
    }
    ck_assert_msg(served_by >= 0, "no worker holds the connection %.1f s after the request\n%s",
                  HUGE_STALL_SEC, log_tail());
    /* Still stalled, just before the idle timeout. */
    usleep((useconds_t)((HUGE_CLOSE_MIN_SEC - HUGE_STALL_SEC - 0.2) * 1e6));
    {
        long g = tu_proc_rss_kib(workers[served_by]) - rss0[served_by];

        growth = g > growth ? g : growth;
    }
    deadline = asked_at + HUGE_CLOSE_MAX_SEC;
    while (tu_now() < deadline) {
        /* Sockets, not fds: the file stays open in the worker's cache. */
        if (proc_socket_count(workers[served_by]) <= socks0[served_by]) {
            closed_after = tu_now() - asked_at;
            break;
        }
        usleep(10000);
    }
    /* What the client sees: what was in flight, then the end; never the file. */
    deadline = tu_now() + 3.0;
    while (!eof && tu_now() < deadline) {
        struct pollfd p = { .fd = fd, .events = POLLIN };
        char buf[65536];
        ssize_t n;

        if (poll(&p, 1, 100) <= 0)
            continue;
        n = recv(fd, buf, sizeof(buf), 0);
        if (n > 0)
            got += n;
        else if (n == 0 || (errno != EAGAIN && errno != EINTR))
            eof = true;
    }
    close(fd);
    printf("check_abuse: unread 100 MiB: worker RSS grew by %ld KiB; the server closed after "
           "%.2f s (idle_timeout = %d); the client then read %.1f MiB and %s\n", growth,
           closed_after, HUGE_IDLE_TIMEOUT_SEC, (double)got / MIB, eof ? "the end" : "no end");
    ck_assert_msg(growth < HUGE_RSS_GROWTH_MAX_KIB, "a worker's RSS grew by %ld KiB while a "
                  "100 MiB response sat unread (at most %ld KiB)", growth, HUGE_RSS_GROWTH_MAX_KIB);
    ck_assert_msg(closed_after >= 0, "the stalled connection still open %.1f s after the request "
                  "(idle_timeout = %d)\n%s", HUGE_CLOSE_MAX_SEC, HUGE_IDLE_TIMEOUT_SEC, log_tail());
    ck_assert_msg(closed_after >= HUGE_CLOSE_MIN_SEC, "the stalled connection closed after %.2f s, "
                  "before idle_timeout = %d", closed_after, HUGE_IDLE_TIMEOUT_SEC);
    ck_assert_msg(eof && got < HUGE_FILE_SIZE, "after the close the client read %lld bytes and %s",
                  got, eof ? "the end" : "no end within 3 s");
}
END_TEST

/* ---- leak check ---- */

/* The requests of a load, in turn: each kind with the status it must get. */
enum load_kind { LOAD_INDEX, LOAD_MISSING, LOAD_HEAD, LOAD_RANGE, LOAD_STATUS, LOAD_KINDS };

static const int load_status[LOAD_KINDS] = { 200, 404, 200, 206, 200 };

static int load_request(enum load_kind kind, int id, char *buf, size_t size)
{
    static const char host[] = " HTTP/1.1\r\nHost: 127.0.0.1\r\n";

    switch (kind) {
    case LOAD_INDEX:
        return snprintf(buf, size, "GET /index.html%s\r\n", host);
    case LOAD_MISSING:
        return snprintf(buf, size, "GET /missing-%d.html%s\r\n", id, host);
    case LOAD_HEAD:
        return snprintf(buf, size, "HEAD /index.html%s\r\n", host);
    case LOAD_RANGE:
        return snprintf(buf, size, "GET /file64k.bin%sRange: bytes=100-1099\r\n\r\n", host);
    default:
        return snprintf(buf, size, "GET /status%s\r\n", host);
    }
}

struct load_conn {
    int fd;                     /* -1: done */
    int id;
    int sent;                   /* requests sent; one in flight at most */
    enum load_kind kind;        /* of the one in flight */
    size_t len;                 /* bytes in buf */
    char *buf;
};

struct load {
    long responses;
    long failures;              /* bad status, malformed answer, early close */
    char first_failure[256];
};

static void load_fail(struct load *l, struct load_conn *c, const char *why)
{
    if (l->failures++ == 0)
        snprintf(l->first_failure, sizeof(l->first_failure), "connection %d, request %d: %s",
                 c->id, c->sent, why);
    close(c->fd);
    c->fd = -1;
}

/* If buf holds a whole response: its length, with *status; 0 if not yet;
 * -1 if it is malformed. */
static long response_length(const char *buf, size_t len, bool head, int *status)
{
    const char *end = memmem(buf, len, "\r\n\r\n", 4), *cl;
    char text[4096];
    size_t head_len;
    long body;

    if (end == NULL)
        return len < sizeof(text) ? 0 : -1;
    head_len = (size_t)(end - buf) + 4;
    if (head_len >= sizeof(text) || strncmp(buf, "HTTP/1.1 ", 9) != 0)
        return -1;
    memcpy(text, buf, head_len);
    text[head_len] = '\0';
    *status = atoi(text + 9);
    cl = strcasestr(text, "\r\nContent-Length:");
    if (cl == NULL)
        return -1;
    body = head || *status == 304 ? 0 : strtol(cl + 17, NULL, 10);
    return head_len + body <= len ? (long)head_len + body : 0;
}

static bool load_send_next(struct load_conn *c)
{
    char req[256];
    int len;

    c->kind = (enum load_kind)((c->id + c->sent) % LOAD_KINDS);
    len = load_request(c->kind, c->id, req, sizeof(req));
    c->sent++;
    return send(c->fd, req, (size_t)len, MSG_NOSIGNAL) == len;
}

/* Reads what c has; answers each whole response with the next request. */
static void load_read(struct load *l, struct load_conn *c, int per_conn, int *active)
{
    for (;;) {
        ssize_t n = recv(c->fd, c->buf + c->len, LOAD_BUF_SIZE - c->len, 0);
        long whole;
        int status;

        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        if (n <= 0) {
            load_fail(l, c, n == 0 ? "the server closed" : strerror(errno));
            (*active)--;
            return;
        }
        c->len += (size_t)n;
        whole = response_length(c->buf, c->len, c->kind == LOAD_HEAD, &status);
        if (whole == 0)
            continue;
        if (whole < 0 || status != load_status[c->kind]) {
            char why[128];

            snprintf(why, sizeof(why), "status %d, %d expected", whole < 0 ? -1 : status,
                     load_status[c->kind]);
            load_fail(l, c, why);
            (*active)--;
            return;
        }
        l->responses++;
        if ((size_t)whole != c->len) {
            load_fail(l, c, "bytes after the response");
            (*active)--;
            return;
        }
        c->len = 0;
        if (c->sent == per_conn) {
            close(c->fd);
            c->fd = -1;
            (*active)--;
            return;
        }
        if (!load_send_next(c)) {
            load_fail(l, c, "send failed");
            (*active)--;
            return;
        }
    }
}

/* nconns keep-alive connections at once, each sending per_conn requests in
 * turn (the next once the last is answered); all closed on return. */
static void load_run(struct load *l, int nconns, int per_conn)
{
    struct load_conn *conns = calloc((size_t)nconns, sizeof(*conns));
    struct epoll_event evs[256];
    double deadline = tu_now() + LEAK_RUN_TIMEOUT_SEC;
    int ep = epoll_create1(EPOLL_CLOEXEC), active = 0;

    ck_assert_ptr_nonnull(conns);
    ck_assert_int_ge(ep, 0);
    memset(l, 0, sizeof(*l));
    for (int i = 0; i < nconns; i++) {
        struct load_conn *c = &conns[i];
        struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };

        c->id = i;
        c->buf = malloc(LOAD_BUF_SIZE);
        ck_assert_ptr_nonnull(c->buf);
        c->fd = tu_connect_loopback(site.port, CONNECT_TIMEOUT_MS);
        ck_assert_msg(c->fd >= 0, "load connection %d: %s\n%s", i, strerror(-c->fd), log_tail());
        ck_assert_int_eq(epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev), 0);
        active++;
        if (!load_send_next(c)) {
            load_fail(l, c, "send failed");
            active--;
        }
    }
    while (active > 0 && tu_now() < deadline) {
        int n = epoll_wait(ep, evs, 256, 100);

        for (int k = 0; k < n; k++) {
            struct load_conn *c = evs[k].data.ptr;

            if (c->fd >= 0)
                load_read(l, c, per_conn, &active);
        }
    }
    for (int i = 0; i < nconns; i++) {
        if (conns[i].fd >= 0)
            load_fail(l, &conns[i], "no answer before the load's deadline");
        free(conns[i].buf);
    }
    close(ep);
    free(conns);
}

/* Waits until each worker's fd count stays the same for LEAK_STABLE_SEC
 * (within LEAK_SETTLE_SEC); fds gets the counts. */
static void wait_fds_stable(const pid_t *workers, int n, int *fds)
{
    double deadline = tu_now() + LEAK_SETTLE_SEC, stable_since = tu_now();
    int last[MAX_WORKERS];

    for (int i = 0; i < n; i++)
        last[i] = tu_proc_fd_count(workers[i]);
    while (tu_now() < deadline) {
        bool same = true;

        usleep(20000);
        for (int i = 0; i < n; i++) {
            fds[i] = tu_proc_fd_count(workers[i]);
            same = same && fds[i] == last[i];
            last[i] = fds[i];
        }
        if (!same)
            stable_since = tu_now();
        else if (tu_now() - stable_since >= LEAK_STABLE_SEC)
            return;
    }
}

START_TEST(test_many_requests_leak_no_fd_and_no_memory_in_any_worker)
{
    struct site_conf c = { .workers = 2, .server_extra = "backlog = 2048\nidle_timeout = 30\n",
                           .http_extra = "header_timeout = 10\n", .no_quarantine = true };
    pid_t workers[MAX_WORKERS], now_workers[MAX_WORKERS];
    int nworkers, fds_warm[MAX_WORKERS], fds_after[MAX_WORKERS];
    long rss_warm[MAX_WORKERS], rss_after[MAX_WORKERS];
    struct load l;
    double started;

    raise_nofile(LEAK_CONNS + 256);
    site_start(&c);
    nworkers = site_workers(workers, MAX_WORKERS);

    load_run(&l, LEAK_CONNS, LEAK_WARMUP_REQUESTS_PER_CONN);
    ck_assert_msg(l.failures == 0, "warm-up: %ld of %ld requests failed; the first: %s\n%s",
                  l.failures, l.responses + l.failures, l.first_failure, log_tail());
    wait_fds_stable(workers, nworkers, fds_warm);
    for (int i = 0; i < nworkers; i++)
        rss_warm[i] = tu_proc_rss_kib(workers[i]);

    started = tu_now();
    load_run(&l, LEAK_CONNS, LEAK_REQUESTS_PER_CONN);
    printf("check_abuse: leak check: %ld requests over %d connections in %.1f s\n", l.responses,
           LEAK_CONNS, tu_now() - started);
    ck_assert_msg(l.failures == 0, "%ld of %ld requests failed; the first: %s\n%s", l.failures,
                  l.responses + l.failures, l.first_failure, log_tail());
    ck_assert_int_eq(l.responses, (long)LEAK_CONNS * LEAK_REQUESTS_PER_CONN);
    wait_fds_stable(workers, nworkers, fds_after);
    ck_assert_msg(site_workers(now_workers, MAX_WORKERS) == nworkers &&
                  memcmp(now_workers, workers, (size_t)nworkers * sizeof(pid_t)) == 0,
                  "the workers changed during the load\n%s", log_tail());
    for (int i = 0; i < nworkers; i++) {
        rss_after[i] = tu_proc_rss_kib(workers[i]);
        printf("check_abuse: leak check: worker %d: fds %d -> %d, RSS %ld -> %ld KiB\n",
               (int)workers[i], fds_warm[i], fds_after[i], rss_warm[i], rss_after[i]);
    }
    for (int i = 0; i < nworkers; i++) {
        ck_assert_msg(fds_after[i] == fds_warm[i], "worker %d holds %d fds after the load, %d "
                      "after the warm-up", (int)workers[i], fds_after[i], fds_warm[i]);
        ck_assert_msg(rss_after[i] - rss_warm[i] <= LEAK_RSS_MARGIN_KIB, "worker %d: RSS %ld KiB "
                      "after the load, %ld KiB after the warm-up (at most %ld KiB more)",
                      (int)workers[i], rss_after[i], rss_warm[i], LEAK_RSS_MARGIN_KIB);
    }
}
END_TEST

/* ---- an unwritable access log ---- */

/* /dev/full accepts the open and fails every write with ENOSPC, as a full
 * disk does. (A read-only directory would not do: the daemon runs as root
 * here, and it keeps the file it opened anyway.) */
START_TEST(test_access_log_on_full_disk_keeps_serving_and_says_so_once)
{
    struct site_conf c = { .workers = FULL_LOG_WORKERS, .http_extra = "access_log = /dev/full\n" };
    size_t offset;
    const char *log;
    int lines;

    site_start(&c);
    offset = du_log_size(&site);
    for (int i = 0; i < FULL_LOG_REQUESTS; i++) {
        int status = http_get(site.port, "/index.html", GET_TIMEOUT_SEC, NULL);

        ck_assert_msg(status == 200, "request %d with the access log on a full disk got %d\n%s",
                      i + 1, status, log_tail());
    }
    usleep((useconds_t)(LOG_POLL_SEC * 1e6));
    log = du_log_since(&site, offset);
    lines = tu_count_lines_with(log, "/dev/full");
    printf("check_abuse: access log on /dev/full: %d requests, %d log lines naming it\n",
           FULL_LOG_REQUESTS, lines);
    /* Once per worker at most: each finds out by itself. */
    ck_assert_msg(lines >= 1, "%d requests could not be logged, and the log does not name "
                  "/dev/full:\n%s", FULL_LOG_REQUESTS, log);
    ck_assert_msg(lines <= FULL_LOG_WORKERS, "%d log lines name /dev/full after %d requests "
                  "(once per worker at most, %d workers):\n%s", lines, FULL_LOG_REQUESTS,
                  FULL_LOG_WORKERS, log);
    ck_assert_msg(strstr(log, strerror(ENOSPC)) != NULL, "the log does not say \"%s\":\n%s",
                  strerror(ENOSPC), log);
}
END_TEST

/* ---- suite ---- */

static Suite *abuse_suite(void)
{
    Suite *s = suite_create("abuse");
    TCase *tc = du_add_tcase(s, "slow_clients", TCASE_TIMEOUT_SEC, setup, teardown);

    tcase_add_test(tc, test_slowloris_2000_conns_leave_gets_fast_and_close_after_header_timeout);
    tcase_add_test(tc, test_unread_100mib_file_costs_no_user_memory_and_closes_after_idle_timeout);

    tc = du_add_tcase(s, "exhaustion", TCASE_TIMEOUT_SEC, setup, teardown);
    tcase_add_test(tc, test_out_of_fds_worker_does_not_spin_and_serves_again_once_clients_close);
    tcase_add_test(tc, test_many_requests_leak_no_fd_and_no_memory_in_any_worker);

    tc = du_add_tcase(s, "access_log", TCASE_TIMEOUT_SEC, setup, teardown);
    tcase_add_test(tc, test_access_log_on_full_disk_keeps_serving_and_says_so_once);
    return s;
}

int main(void)
{
    if (!du_suite_begin(&suite, "check_abuse", false))
        return EXIT_FAILURE;
    index_len = tu_html_page(index_body, sizeof(index_body), "check_abuse", "the index page",
                             600);
    return du_suite_end(&suite, tu_run_suite(abuse_suite()));
}

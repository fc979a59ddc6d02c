/* preforkd under test; see daemonutil.h. */
#define _GNU_SOURCE
#include "daemonutil.h"
#include "testutil.h"

#include <ctype.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* The part of a log a failure message shows (Check cuts messages at 4 KiB). */
#define LOG_TAIL_MAX 2500
/* A worker table must look the same twice this far apart. */
#define WORKERS_SETTLE_SEC 0.1
#define POLL_US 5000

static const char worker_title_prefix[] = "preforkd: worker process #";

bool du_suite_begin(struct du_suite *s, const char *name, bool runner_reaps)
{
    s->name = name;
    s->preforkd = tu_preforkd_path(name);
    if (s->preforkd == NULL)
        return false;
    if ((size_t)snprintf(s->dir, sizeof(s->dir), "/tmp/%s-XXXXXX", name) >= sizeof(s->dir) ||
        mkdtemp(s->dir) == NULL || chmod(s->dir, 0755) != 0) {
        fprintf(stderr, "%s: making %s: %s\n", name, s->dir, strerror(errno));
        return false;
    }
    if (runner_reaps && prctl(PR_SET_CHILD_SUBREAPER, 1) != 0) {
        fprintf(stderr, "%s: PR_SET_CHILD_SUBREAPER: %s\n", name, strerror(errno));
        tu_rmtree(s->dir);
        return false;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    return true;
}

int du_suite_end(struct du_suite *s, int failed)
{
    /* Workers of a master that died with its test go by themselves; a
     * second is theirs before they count as left behind. */
    int n_left = tu_kill_recorded_groups(s->dir, s->name, 1.0);

    if (n_left > 0)
        usleep(200000);     /* those killed are zombies by now, without a command line */
    n_left += tu_kill_matching(s->dir);
    if (n_left > 0) {
        fprintf(stderr, "%s: killed %d preforkd process%s left running by failed tests\n",
                s->name, n_left, n_left == 1 ? "" : "es");
        failed++;
    }
    tu_rmtree(s->dir);
    return failed + s->sanitizer_reports == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

int du_main(struct du_suite *s, const char *name, Suite *(*make)(void))
{
    if (!du_suite_begin(s, name, false))
        return EXIT_FAILURE;
    return du_suite_end(s, tu_run_suite(make()));
}

TCase *du_add_tcase(Suite *s, const char *name, int timeout_sec, void (*setup)(void),
                    void (*teardown)(void))
{
    TCase *tc = tu_add_tcase(s, name, timeout_sec);

    tcase_add_checked_fixture(tc, setup, teardown);
    return tc;
}

void du_test_begin(const struct du_suite *s, char *dir, size_t size)
{
    int n = snprintf(dir, size, "%s/t-XXXXXX", s->dir);

    ck_assert(n > 0 && (size_t)n < size);
    ck_assert_ptr_nonnull(mkdtemp(dir));
    /* Workers that run as nobody may need to look inside. */
    ck_assert_int_eq(chmod(dir, 0755), 0);
    ck_assert_int_eq(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
}

void du_init(struct du_daemon *d, const char *dir, const char *name)
{
    char file[NAME_MAX];

    memset(d, 0, sizeof(*d));
    snprintf(file, sizeof(file), "%s.conf", name);
    tu_path(d->conf, sizeof(d->conf), dir, file);
    snprintf(file, sizeof(file), "%s.log", name);
    tu_path(d->log, sizeof(d->log), dir, file);
}

struct du_daemon *du_next(struct du_daemon *ds, int n, const char *dir)
{
    for (int i = 0; i < n; i++) {
        struct du_daemon *d = &ds[i];
        char name[32];

        if (d->conf[0] != '\0')
            continue;
        snprintf(name, sizeof(name), "d%d", i);
        du_init(d, dir, name);
        tu_path(d->pidfile, sizeof(d->pidfile), dir, "p.pid");
        return d;
    }
    ck_abort_msg("more than %d daemons in one test", n);
    return NULL;
}

void du_write_conf(struct du_daemon *d, const char *fmt, ...)
{
    char tmp[PATH_MAX + 8];
    va_list ap;
    FILE *f;

    snprintf(tmp, sizeof(tmp), "%s.new", d->conf);
    f = fopen(tmp, "w");
    ck_assert_msg(f != NULL, "%s: %s", tmp, strerror(errno));
    va_start(ap, fmt);
    vfprintf(f, fmt, ap);
    va_end(ap);
    ck_assert_int_eq(fclose(f), 0);
    ck_assert_int_eq(rename(tmp, d->conf), 0);
}

void du_launch(const struct du_suite *s, struct du_daemon *d, void (*in_child)(void *arg),
               void *arg)
{
    const char *argv[] = { s->preforkd, "-f", "-c", d->conf, NULL };

    snprintf(d->cmdline, sizeof(d->cmdline), "%s -f -c %s", s->preforkd, d->conf);
    d->reaped = false;
    d->pid = tu_fork_tied(SIGKILL);
    if (d->pid == 0) {
        setpgid(0, 0);
        if (in_child != NULL)
            in_child(arg);
        tu_exec_child(s->preforkd, (char *const *)argv, d->log, d->log);
    }
    /* Also here, so that the group exists before anyone signals it. */
    setpgid(d->pid, d->pid);
    d->pgid = d->pid;
    tu_record_pgid(s->dir, d->pgid);
}

/* Reaps the master if it ended; true once it is reaped. */
static bool reap_master(struct du_daemon *d)
{
    int status;

    if (!d->reaped && d->pid > 0 && waitpid(d->pid, &status, WNOHANG) == d->pid) {
        d->reaped = true;
        d->status = status;
    }
    return d->reaped;
}

bool du_wait_exit(struct du_daemon *d, double timeout_sec)
{
    double deadline = tu_now() + timeout_sec;

    while (!reap_master(d) && tu_now() < deadline)
        usleep(POLL_US);
    return d->reaped;
}

bool du_group_gone(struct du_daemon *d)
{
    reap_master(d);
    if (d->pgid <= 0)
        return true;
    while (waitpid(-d->pgid, NULL, WNOHANG) > 0)
        ;
    return kill(-d->pgid, 0) < 0 && errno == ESRCH;
}

bool du_wait_group_gone(struct du_daemon *d, double timeout_sec)
{
    double deadline = tu_now() + timeout_sec;
    bool gone;

    while (!(gone = du_group_gone(d)) && tu_now() < deadline)
        usleep(POLL_US);
    return gone;
}

bool du_stop(struct du_daemon *d, double grace_sec)
{
    bool clean;

    if (d->pid <= 0)
        return true;
    if (!reap_master(d))
        kill(d->pid, SIGTERM);
    if (d->pgid > 0) {
        kill(-d->pgid, SIGTERM);
        kill(-d->pgid, SIGCONT);
    }
    clean = du_wait_group_gone(d, grace_sec);
    if (!clean) {
        if (!reap_master(d))
            kill(d->pid, SIGKILL);
        if (d->pgid > 0)
            kill(-d->pgid, SIGKILL);
        du_wait_group_gone(d, grace_sec);
    }
    du_wait_exit(d, 0);
    return clean;
}

void du_stop_all(struct du_daemon *ds, int n, double grace_sec)
{
    for (int i = 0; i < n; i++)
        du_stop(&ds[i], grace_sec);
}

static int connect_port(const void *arg)
{
    const struct du_daemon *d = arg;

    return tu_connect_loopback(d->port, 100);
}

static bool wait_ready(struct du_daemon *d, int (*connect_fn)(const void *arg), const void *arg,
                       double timeout_sec, char *why, size_t size)
{
    double deadline = tu_now() + timeout_sec;
    int fd;

    while ((fd = connect_fn(arg)) < 0 && tu_now() < deadline) {
        if (du_wait_exit(d, 0)) {
            snprintf(why, size, "preforkd exited (status 0x%x) before accepting; its log:\n%s",
                     (unsigned)d->status, du_log_tail(d));
            return false;
        }
        usleep(20000);
    }
    if (fd < 0) {
        snprintf(why, size, "no connection to preforkd within %.0f s: %s\n%s", timeout_sec,
                 strerror(-fd), du_log_tail(d));
        return false;
    }
    close(fd);
    return true;
}

bool du_wait_ready(struct du_daemon *d, double timeout_sec, char *why, size_t size)
{
    return wait_ready(d, connect_port, d, timeout_sec, why, size);
}

void du_assert_ready(struct du_daemon *d, double timeout_sec)
{
    du_assert_ready_via(d, connect_port, d, timeout_sec);
}

void du_start(const struct du_suite *s, struct du_daemon *d, double ready_timeout_sec)
{
    du_launch(s, d, NULL, NULL);
    du_assert_ready(d, ready_timeout_sec);
}

void du_assert_ready_via(struct du_daemon *d, int (*connect_fn)(const void *arg), const void *arg,
                         double timeout_sec)
{
    static char why[LOG_TAIL_MAX + 512];

    ck_assert_msg(wait_ready(d, connect_fn, arg, timeout_sec, why, sizeof(why)), "%s", why);
}

const char *du_log(const struct du_daemon *d)
{
    static char buf[DU_OUTPUT_MAX];

    tu_read_file(d->log, buf, sizeof(buf));
    return buf;
}

const char *du_log_tail(const struct du_daemon *d)
{
    return du_file_tail(d->log);
}

const char *du_file_tail(const char *path)
{
    static char buf[LOG_TAIL_MAX + 1];
    off_t size = tu_file_size(path);
    const char *p;

    if (size <= LOG_TAIL_MAX) {
        tu_read_file(path, buf, sizeof(buf));
        return buf;
    }
    tu_read_file_from(path, size - LOG_TAIL_MAX, buf, sizeof(buf));
    p = strchr(buf, '\n');
    return p != NULL ? p + 1 : buf;
}

size_t du_log_size(const struct du_daemon *d)
{
    return (size_t)tu_file_size(d->log);
}

const char *du_log_since(const struct du_daemon *d, size_t offset)
{
    static char buf[DU_OUTPUT_MAX];

    tu_read_file_from(d->log, (off_t)offset, buf, sizeof(buf));
    return buf;
}

pid_t du_run(const struct du_suite *s, const char *dir, struct du_command *c,
             const char *const *args, double timeout_sec)
{
    const char *argv[16] = { s->preforkd };
    char out[PATH_MAX], err[PATH_MAX];
    pid_t pid;
    int i = 1;

    for (; args[i - 1] != NULL && i < 15; i++)
        argv[i] = args[i - 1];
    argv[i] = NULL;
    tu_path(out, sizeof(out), dir, "cmd.out");
    tu_path(err, sizeof(err), dir, "cmd.err");
    pid = tu_run(s->preforkd, (char *const *)argv, out, err, timeout_sec, &c->status);
    tu_read_file(out, c->out, sizeof(c->out));
    tu_read_file(err, c->err, sizeof(c->err));
    tu_assert_no_sanitizer_report(c->err);
    return pid;
}

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
    const struct du_worker *x = a, *y = b;

    if (x->id != y->id)
        return (x->id > y->id) - (x->id < y->id);
    return (x->pid > y->pid) - (x->pid < y->pid);
}

int du_workers_of(pid_t master, struct du_worker *ws)
{
    pid_t pids[DU_MAX_WORKERS];
    int n = tu_children_of(master, pids, DU_MAX_WORKERS);

    if (n > DU_MAX_WORKERS)
        n = DU_MAX_WORKERS;
    for (int i = 0; i < n; i++) {
        const char *g;

        ws[i].pid = pids[i];
        tu_proc_cmdline(pids[i], ws[i].title, sizeof(ws[i].title));
        ws[i].id = worker_id(ws[i].title);
        g = strstr(ws[i].title, "(generation ");
        ws[i].generation = g != NULL ? atoi(g + strlen("(generation ")) : -1;
    }
    qsort(ws, (size_t)n, sizeof(*ws), compare_workers);
    return n;
}

const char *du_describe_workers(const struct du_worker *ws, int n)
{
    static char buf[2048];
    size_t len = 0;

    buf[0] = '\0';
    for (int i = 0; i < n && len < sizeof(buf); i++) {
        if (ws[i].id >= 0)
            len += (size_t)snprintf(buf + len, sizeof(buf) - len, "%s#%d pid %d generation %d",
                                    i ? ", " : "", ws[i].id, (int)ws[i].pid, ws[i].generation);
        else
            len += (size_t)snprintf(buf + len, sizeof(buf) - len, "%spid %d \"%s\"", i ? ", " : "",
                                    (int)ws[i].pid, ws[i].title);
    }
    return n == 0 ? "no child" : buf;
}

static bool workers_match(const struct du_worker *ws, int n, const struct du_expect *e)
{
    if (n != e->n)
        return false;
    for (int i = 0; i < n; i++)
        if (ws[i].id != i || (e->generation > 0 && ws[i].generation != e->generation))
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

bool du_wait_workers(struct du_daemon *d, const struct du_expect *e, struct du_worker *ws,
                     int *n, double timeout_sec)
{
    double deadline = tu_now() + timeout_sec;

    for (;;) {
        *n = du_workers_of(d->pid, ws);
        if (workers_match(ws, *n, e)) {
            usleep((useconds_t)(WORKERS_SETTLE_SEC * 1e6));
            *n = du_workers_of(d->pid, ws);
            if (workers_match(ws, *n, e))
                return true;
        }
        if (tu_now() >= deadline || du_wait_exit(d, 0))
            return false;
        usleep(POLL_US);
    }
}

int du_assert_workers(struct du_daemon *d, const struct du_expect *e, struct du_worker *ws,
                      double timeout_sec, const char *after)
{
    char generation[48] = "";
    int n;

    if (du_wait_workers(d, e, ws, &n, timeout_sec))
        return n;
    if (e->generation > 0)
        snprintf(generation, sizeof(generation), " of generation %d", e->generation);
    ck_abort_msg("%s: expected %d workers%s titled #0..#%d (%d kept, %d pids gone) within "
                 "%.1f s; master %d %s has: %s\n%s", after, e->n, generation, e->n - 1, e->n_keep,
                 e->n_gone, timeout_sec, (int)d->pid, d->reaped ? "exited" : "is running",
                 du_describe_workers(ws, n), du_log_tail(d));
    return n;
}

void du_site_launch(const struct du_suite *s, struct du_site *site, double ready_timeout_sec)
{
    site->error[0] = '\0';
    du_launch(s, &site->d, NULL, NULL);
    du_wait_ready(&site->d, ready_timeout_sec, site->error, sizeof(site->error));
}

void du_site_stop(struct du_suite *s, struct du_site *site, double grace_sec)
{
    const char *log;

    if (site->d.pid > 0 && !du_stop(&site->d, grace_sec))
        fprintf(stderr, "%s: preforkd (pid %d) still ran %.0f s after SIGTERM\n", s->name,
                (int)site->d.pid, grace_sec);
    log = du_log(&site->d);
    if (strstr(log, "AddressSanitizer") != NULL || strstr(log, "LeakSanitizer") != NULL ||
        strstr(log, "runtime error:") != NULL) {
        fprintf(stderr, "%s: sanitizer report in %s:\n%s\n", s->name, site->d.log, log);
        s->sanitizer_reports++;
    }
}

TCase *du_add_site_tcase(Suite *s, const char *name, int timeout_sec, void (*start)(void),
                         void (*stop)(void), void (*setup)(void), void (*teardown)(void))
{
    TCase *tc = du_add_tcase(s, name, timeout_sec, setup, teardown);

    tcase_add_unchecked_fixture(tc, start, stop);
    return tc;
}

void du_site_require(const struct du_site *site)
{
    ck_assert_msg(site->error[0] == '\0', "%s", site->error);
}

void du_site_test_begin(struct du_site *site)
{
    site->log_offset = tu_file_size(site->d.log);
}

void du_site_test_end(const struct du_site *site)
{
    const char *log = du_log_since(&site->d, (size_t)site->log_offset);
    struct tu_proc_stat st;

    ck_assert_msg(strstr(log, "restarting in") == NULL,
                  "a worker died during this test; the daemon's log says:\n%s", log);
    tu_assert_no_sanitizer_report(log);
    ck_assert_msg(site->d.pid > 0 && tu_proc_stat(site->d.pid, &st) && st.state != 'Z',
                  "the master (pid %d) is gone; its log:\n%s", (int)site->d.pid, log);
}

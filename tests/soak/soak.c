/*
 * soak: the chaos soak of issue #9. Runs an http and an echo preforkd
 * (workers = 2, worker_timeout = 2, graceful_timeout = 5) under clients at
 * full speed for SOAK_SECONDS (default 60), while faults.c sends HUP (with
 * edited and broken configs), TTIN/TTOU, USR1, kill -9 and SIGSTOP at random
 * intervals of 100-500 ms. Then checks what must hold, prints a report and
 * exits 0 iff it all held:
 *   - HUP, TTIN/TTOU and USR1 cost no client any error;
 *   - kill -9 and SIGSTOP cost only connections the victim held, and a
 *     stopped worker is gone within worker_timeout (plus slack);
 *   - no connect to a configured listener is ever refused;
 *   - afterwards each master runs the configured workers of its newest
 *     generation and nothing else, with the fds and (within a margin) the
 *     RSS it had at the start, and QUIT ends it with exit 0.
 *
 * Usage: soak [--preforkd PATH] [--seconds N] [--seed N] [--keep]
 * Environment: SOAK_SECONDS, SOAK_SEED, PREFORKD, SOAK_RSS_MARGIN_KB, and
 * SOAK_GAP_MS=MIN-MAX (the pause between faults, default 100-500) and
 * SOAK_FAULTS=kill,ttin,... (only these kinds), to explore; SOAK_TRACE=1
 * prints each fault on stderr as it happens.
 * Exit: 0 all held, 1 something did not (the report says what), 2 the
 * soak itself could not run.
 */
#define _GNU_SOURCE
#include "soak.h"
#include "../procutil.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_SECONDS 60
#define DEFAULT_RSS_MARGIN_KB 2048
/* Load without faults before the baseline is taken. */
#define WARMUP_SEC 1.0
/* Between two faults (SOAK_GAP_MS=MIN-MAX changes it, to explore). */
#define FAULT_GAP_MIN_SEC 0.1
#define FAULT_GAP_MAX_SEC 0.5
/* After the faults: a restart backoff (up to 5 s) or a drain
 * (graceful_timeout) may still be under way. */
#define SETTLE_TIMEOUT_SEC (SOAK_GRACEFUL_TIMEOUT_SEC + 7.0)
#define QUIT_TIMEOUT_SEC (SOAK_GRACEFUL_TIMEOUT_SEC + 3.0)
/* Operations each client kind must at least have done, or it did not load. */
#define MIN_OPS_PER_KIND 20
#define FAILURES_LISTED 25

struct soak soak;
/* The report, written to stdout as it goes and kept for report.txt. */
static FILE *rep;
static char *rep_text;
static size_t rep_len, rep_shown;

/* Shows on stdout what the report got since the last call. */
static void report_flush(void)
{
    fflush(rep);
    fwrite(rep_text + rep_shown, 1, rep_len - rep_shown, stdout);
    fflush(stdout);
    rep_shown = rep_len;
}

/* report.txt next to the daemons' logs. */
static void report_keep(void)
{
    char path[sizeof(soak.dir) + 16];

    report_flush();
    snprintf(path, sizeof(path), "%s/report.txt", soak.dir);
    write_file(path, rep_text, rep_len);
}

static const char *const client_names[C_NKINDS] = {
    [C_HTTP_KA] = "http keep-alive", [C_HTTP_KA_PACED] = "http ka, paced",
    [C_HTTP_NEW] = "http new conn",
    [C_ECHO_KA] = "echo session", [C_ECHO_NEW] = "echo new conn",
};

static void vadd(char (*list)[400], int *n, int max, const char *fmt, va_list ap)
{
    pthread_mutex_lock(&soak.msg_lock);
    if (*n < max)
        vsnprintf(list[(*n)++], sizeof(list[0]), fmt, ap);
    else if (*n == max)
        snprintf(list[max - 1], sizeof(list[0]), "(more not shown)");
    pthread_mutex_unlock(&soak.msg_lock);
}

void problem(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vadd(soak.problems, &soak.nproblems, 64, fmt, ap);
    va_end(ap);
}

void note(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vadd(soak.notes, &soak.nnotes, 64, fmt, ap);
    va_end(ap);
}

/* On INT or TERM (or our parent's death, by PR_SET_PDEATHSIG in the Check
 * suite): no daemon outlives us. Only async-signal-safe calls. */
static void on_fatal_signal(int sig)
{
    for (int i = 0; i < SOAK_MAX_DAEMONS; i++)
        if (soak.d[i].pid > 0) {
            kill(-soak.d[i].pid, SIGKILL);
            kill(soak.d[i].pid, SIGKILL);
        }
    signal(sig, SIG_DFL);
    raise(sig);
}

static void usage(void)
{
    fprintf(stderr, "usage: soak [--preforkd PATH] [--seconds N] [--seed N] [--keep]\n"
            "  env: SOAK_SECONDS (default %d), SOAK_SEED, PREFORKD, SOAK_RSS_MARGIN_KB (%d),\n"
            "       SOAK_GAP_MS=MIN-MAX (default 100-500), SOAK_TRACE=1,\n"
            "       SOAK_FAULTS=hup,workers,listener,broken,ttin,ttou,usr1,kill,stop\n",
            DEFAULT_SECONDS, DEFAULT_RSS_MARGIN_KB);
    exit(2);
}

static void setup_files(void)
{
    char path[PATH_MAX + 16];

    snprintf(soak.dir, sizeof(soak.dir), "/tmp/preforkd-soak-XXXXXX");
    if (mkdtemp(soak.dir) == NULL) {
        perror("soak: mkdtemp");
        exit(2);
    }
    chmod(soak.dir, 0755);
    snprintf(soak.www, sizeof(soak.www), "%s/www", soak.dir);
    if (mkdir(soak.www, 0755) < 0) {
        perror("soak: mkdir www");
        exit(2);
    }
    fill_pattern(soak.small, sizeof(soak.small), soak.seed ^ 0x5a11);
    fill_pattern(soak.big, sizeof(soak.big), soak.seed ^ 0xb16);
    snprintf(path, sizeof(path), "%s/small.bin", soak.www);
    if (!write_file(path, soak.small, sizeof(soak.small)))
        exit(2);
    snprintf(path, sizeof(path), "%s/big.bin", soak.www);
    if (!write_file(path, soak.big, sizeof(soak.big)))
        exit(2);
    for (int i = 0; i < SOAK_MAX_DAEMONS; i++) {
        struct daemon *d = &soak.d[i];

        d->index = i;
        d->http = i == 0;
        d->name = d->http ? "http" : "echo";
        snprintf(d->conf, sizeof(d->conf), "%s/%s.conf", soak.dir, d->name);
        snprintf(d->log, sizeof(d->log), "%s/%s.log", soak.dir, d->name);
        snprintf(d->access_log, sizeof(d->access_log), "%s/access.log", soak.dir);
        d->port = free_port();
        do
            d->third_port = free_port();
        while (d->third_port == d->port || (i > 0 && (d->third_port == soak.d[0].port ||
                                                      d->third_port == soak.d[0].third_port ||
                                                      d->port == soak.d[0].port ||
                                                      d->port == soak.d[0].third_port)));
        if (d->port == 0 || d->third_port == 0) {
            fprintf(stderr, "soak: no free port\n");
            exit(2);
        }
    }
}

/* Sleeps until t, watching stopped workers and the masters meanwhile;
 * false if a master exited. */
static bool sleep_until(double t)
{
    while (soak_now() < t) {
        double left = t - soak_now();

        usleep(left > 0.02 ? 20000 : (useconds_t)(left * 1e6) + 1);
        for (int i = 0; i < SOAK_MAX_DAEMONS; i++) {
            if (!daemon_alive(&soak.d[i]))
                return false;
            daemon_watch_restarts(&soak.d[i]);
        }
    }
    return true;
}

static bool held_by(const struct fault *f, const struct failure *x)
{
    for (int i = 0; i < f->nheld; i++)
        if (f->held[i].server_port == x->server_port && f->held[i].client_port == x->client_port)
            return true;
    return false;
}

/* Charges each failure to a fault: to the kill or stop whose victim held
 * its connection (expected), else to the latest fault on its daemon before
 * it (unexpected). */
static void attribute_failures(void)
{
    for (int i = 0; i < soak.nfailures; i++) {
        struct failure *x = &soak.failures[i];

        x->fault = -1;
        x->expected = false;
        for (int j = soak.nfaults - 1; j >= 0; j--) {
            const struct fault *f = &soak.faults[j];

            if (f->t > x->t_fail)
                continue;
            if (!x->refused && x->client_port != 0 && (f->kind == F_KILL || f->kind == F_STOP) &&
                f->t >= x->t_open && held_by(f, x)) {
                x->fault = j;
                x->expected = true;
                break;
            }
        }
        if (x->expected)
            continue;
        for (int j = soak.nfaults - 1; j >= 0; j--)
            if (soak.faults[j].t <= x->t_fail && soak.faults[j].daemon == x->daemon) {
                x->fault = j;
                break;
            }
    }
}

static bool is_victim(pid_t pid, enum fault_kind kind)
{
    for (int i = 0; i < soak.nfaults; i++)
        if (soak.faults[i].kind == kind && soak.faults[i].victim == pid)
            return true;
    return false;
}

/* Reads what the masters logged about worker deaths and anything else a
 * person should see. */
static void scan_log(const struct daemon *d)
{
    char *text = read_file_from(d->log, 0, NULL), *line, *save = NULL;
    int heartbeat_kills = 0, graceful_cuts = 0;

    if (text == NULL) {
        problem("%s daemon: cannot read its log %s", d->name, d->log);
        return;
    }
    for (line = strtok_r(text, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
        const char *p = strstr(line, "(pid ");
        pid_t pid = p ? (pid_t)atoi(p + 5) : 0;
        const char *msg = strstr(line, "]: ");

        msg = msg ? msg + 3 : line;
        if (strstr(line, "AddressSanitizer") || strstr(line, "LeakSanitizer") ||
            strstr(line, "runtime error:")) {
            problem("%s daemon: sanitizer report: %s", d->name, line);
        } else if (strstr(line, "sent no heartbeat")) {
            heartbeat_kills++;
            if (!is_victim(pid, F_STOP))
                problem("%s daemon: a worker we did not stop was killed for its heartbeat: %s",
                        d->name, msg);
        } else if (strstr(line, "restarting in") || (strstr(line, "[warning]") &&
                   strstr(line, " of generation ") && (strstr(line, "killed by signal") ||
                                                        strstr(line, "exited with status")))) {
            /* A death the master did not cause (kill -9 / heartbeat are ours). */
            bool ours = strstr(line, "killed by signal 9") &&
                        (is_victim(pid, F_KILL) || is_victim(pid, F_STOP));
            if (!ours)
                problem("%s daemon: a worker died unexpectedly: %s", d->name, msg);
        } else if (strstr(line, " of generation ") && (strstr(line, "killed by signal") ||
                                                       strstr(line, "exited with status 1"))) {
            /* A retiring worker (TTOU, old generation, QUIT) that did not exit 0. */
            if (!is_victim(pid, F_KILL) && !is_victim(pid, F_STOP))
                note("%s daemon: a retiring worker did not exit cleanly: %s", d->name, msg);
        } else if (strstr(line, "graceful_timeout") && strstr(line, "reached")) {
            graceful_cuts++;
            if (!strstr(line, "closing 0 connections"))
                note("%s daemon: a drain reached graceful_timeout: %s", d->name, msg);
        } else if (strstr(line, "giving up")) {
            problem("%s daemon: %s", d->name, msg);
        } else if (strstr(line, "[error]") && !strstr(line, "reload failed") &&
                   !strstr(line, "[server] listen") && !strstr(line, "root =")) {
            note("%s daemon logged: %s", d->name, msg);
        }
    }
    (void)heartbeat_kills;
    (void)graceful_cuts;
    free(text);
}

static void print_faults(void)
{
    fprintf(rep, "\nfaults (%d, every %.0f-%.0f ms)\n", soak.nfaults, soak.gap_min * 1000,
            soak.gap_max * 1000);
    fprintf(rep, "  %-24s %8s %8s %10s %10s  %s\n", "kind", "injected", "http/echo", "expected",
            "unexpected", "figures");
    for (int k = 0; k < F_NKINDS; k++) {
        int n = 0, nd[2] = { 0, 0 }, held = 0, exp = 0, unexp = 0, notes = 0;
        double gmin = 1e9, gmax = 0, gsum = 0;
        int gn = 0;
        char fig[200] = "";

        for (int i = 0; i < soak.nfaults; i++) {
            const struct fault *f = &soak.faults[i];

            if (f->kind != (enum fault_kind)k)
                continue;
            n++;
            nd[f->daemon]++;
            held += f->nheld;
            notes += f->note[0] != '\0' && strstr(f->note, "still held") == NULL;
            if (f->kind == F_STOP && f->gone_after >= 0) {
                gn++;
                gsum += f->gone_after;
                gmin = f->gone_after < gmin ? f->gone_after : gmin;
                gmax = f->gone_after > gmax ? f->gone_after : gmax;
            }
        }
        for (int i = 0; i < soak.nfailures; i++) {
            const struct failure *x = &soak.failures[i];

            if (x->fault >= 0 && soak.faults[x->fault].kind == (enum fault_kind)k) {
                exp += x->expected;
                unexp += !x->expected;
            }
        }
        switch (k) {
        case F_HUP_LISTENER: {
            int added = 0, removed = 0;
            for (int i = 0; i < soak.nfaults; i++) {
                added += soak.faults[i].kind == F_HUP_LISTENER &&
                         strstr(soak.faults[i].note, "added") != NULL;
                removed += soak.faults[i].kind == F_HUP_LISTENER &&
                           strstr(soak.faults[i].note, "removed") != NULL;
            }
            snprintf(fig, sizeof(fig), "%d added (each served), %d removed", added, removed);
            break;
        }
        case F_HUP_BROKEN:
            snprintf(fig, sizeof(fig), "%d rejected", notes);
            break;
        case F_USR1:
            snprintf(fig, sizeof(fig), "%d access log rotations", notes);
            break;
        case F_KILL:
            snprintf(fig, sizeof(fig), "%d connections held by the victims", held);
            break;
        case F_STOP:
            if (gn > 0)
                snprintf(fig, sizeof(fig), "%d connections held; victims gone after "
                         "%.1f/%.1f/%.1f s (min/avg/max)", held, gmin, gsum / gn, gmax);
            else
                snprintf(fig, sizeof(fig), "%d connections held", held);
            break;
        default:
            snprintf(fig, sizeof(fig), "each confirmed in the master's log or worker table");
            break;
        }
        fprintf(rep, "  %-24s %8d %4d/%-4d %10d %10d  %s\n", fault_name((enum fault_kind)k), n,
                nd[0], nd[1], exp, unexp, fig);
    }
    {
        int before = 0;
        for (int i = 0; i < soak.nfailures; i++)
            before += soak.failures[i].fault < 0;
        if (before > 0)
            fprintf(rep, "  %-24s %8s %9s %10d %10d\n", "(before any fault)", "", "", 0, before);
    }
}

static void print_clients(double seconds)
{
    fprintf(rep, "\nclients (%d threads for %.1f s, from the warm-up to the end checks; "
            "I/O timeout %d s)\n", soak.nclients, seconds, SOAK_IO_TIMEOUT_SEC);
    fprintf(rep, "  %-16s %9s %8s %8s %9s %8s %10s %9s %8s\n", "kind", "ops", "ops/s", "conns",
            "reconnect", "failures", "unexpected", "max lat", "slow>1s");
    for (int k = 0; k < C_NKINDS; k++) {
        struct client_stats t = { 0 };
        int fails = 0, unexp = 0;

        for (int i = 0; i < soak.nclients; i++) {
            const struct client_stats *s = &soak.clients[i].st;

            if (soak.clients[i].kind != (enum client_kind)k)
                continue;
            t.ops += s->ops;
            t.conns += s->conns;
            t.server_closes += s->server_closes;
            t.bytes += s->bytes;
            t.slow += s->slow;
            t.max_latency = s->max_latency > t.max_latency ? s->max_latency : t.max_latency;
        }
        for (int i = 0; i < soak.nfailures; i++)
            if (soak.failures[i].client == (enum client_kind)k) {
                fails++;
                unexp += !soak.failures[i].expected;
            }
        fprintf(rep, "  %-16s %9lu %8.0f %8lu %9lu %8d %10d %8.3fs %8lu\n", client_names[k], t.ops,
                t.ops / seconds, t.conns, t.server_closes, fails, unexp, t.max_latency, t.slow);
        if (t.ops < MIN_OPS_PER_KIND)
            problem("%s clients did only %lu operations: the load did not run", client_names[k],
                    t.ops);
    }
    fprintf(rep, "  (reconnect: a keep-alive answer with Connection: close, from a draining worker;"
            " not an error)\n");
}

static void print_failures(void)
{
    int shown = 0, unexp = 0;

    for (int i = 0; i < soak.nfailures; i++)
        unexp += !soak.failures[i].expected;
    if (unexp == 0)
        return;
    fprintf(rep, "\nunexpected client failures: %d (the first %d)\n", unexp,
            unexp < FAILURES_LISTED ? unexp : FAILURES_LISTED);
    for (int i = 0; i < soak.nfailures && shown < FAILURES_LISTED; i++) {
        const struct failure *x = &soak.failures[i];
        char last[240] = "before any fault", open_at[200] = "";

        if (x->expected)
            continue;
        shown++;
        if (x->fault >= 0) {
            const struct fault *f = &soak.faults[x->fault];
            snprintf(last, sizeof(last), "%.3f s after %s%s%s", x->t_fail - f->t,
                     fault_name(f->kind), f->note[0] ? " (" : "", f->note[0] ? f->note : "");
            if (f->note[0])
                strncat(last, ")", sizeof(last) - strlen(last) - 1);
        }
        /* Open across a kill or stop that did not hold it: worth saying. */
        for (int j = 0; j < soak.nfaults; j++) {
            const struct fault *f = &soak.faults[j];
            if ((f->kind == F_KILL || f->kind == F_STOP) && f->daemon == x->daemon &&
                f->t >= x->t_open && f->t <= x->t_fail)
                snprintf(open_at, sizeof(open_at), "; open across %s of pid %d %.3f s before, "
                         "not among its %d connections", fault_name(f->kind), (int)f->victim,
                         x->t_fail - f->t, f->nheld);
        }
        fprintf(rep, "  t=%7.3f %-15s 127.0.0.1:%u->:%u opened %.3f s before: %s [%s%s]\n",
                x->t_fail - soak.t0, client_names[x->client], x->client_port, x->server_port,
                x->t_fail - x->t_open, x->what, last, open_at);
    }
}

/* Options from the environment, then the command line; exits 2 on a bad one. */
static void parse_options(int argc, char **argv, bool *keep)
{
    const char *env;

    soak.preforkd = getenv("PREFORKD");
    if (soak.preforkd == NULL || soak.preforkd[0] == '\0')
        soak.preforkd = "build/preforkd";
    soak.seconds = (env = getenv("SOAK_SECONDS")) && *env ? atof(env) : DEFAULT_SECONDS;
    soak.seed = (env = getenv("SOAK_SEED")) && *env ? strtoull(env, NULL, 0)
                                                    : (uint64_t)time(NULL) ^ (uint64_t)getpid();
    soak.rss_margin_kb = (env = getenv("SOAK_RSS_MARGIN_KB")) && *env ? atol(env)
                                                                      : DEFAULT_RSS_MARGIN_KB;
    soak.gap_min = FAULT_GAP_MIN_SEC;
    soak.gap_max = FAULT_GAP_MAX_SEC;
    if ((env = getenv("SOAK_GAP_MS")) && *env) {
        unsigned lo, hi;

        if (sscanf(env, "%u-%u", &lo, &hi) != 2 || lo > hi) {
            fprintf(stderr, "soak: SOAK_GAP_MS=%s: expected MIN-MAX in ms\n", env);
            exit(2);
        }
        soak.gap_min = lo / 1000.0;
        soak.gap_max = hi / 1000.0;
    }
    soak.trace = (env = getenv("SOAK_TRACE")) && *env && strcmp(env, "0") != 0;
    if ((env = getenv("SOAK_FAULTS")) && *env && faults_select(env) < 0) {
        fprintf(stderr, "soak: SOAK_FAULTS=%s: expected a comma-separated subset of hup, "
                "workers, listener, broken, ttin, ttou, usr1, kill, stop\n", env);
        exit(2);
    }
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--preforkd") == 0 && i + 1 < argc)
            soak.preforkd = argv[++i];
        else if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc)
            soak.seconds = atof(argv[++i]);
        else if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc)
            soak.seed = strtoull(argv[++i], NULL, 0);
        else if (strcmp(argv[i], "--keep") == 0)
            *keep = true;
        else
            usage();
    }
    if (soak.seconds < 2) {
        fprintf(stderr, "soak: SOAK_SECONDS must be at least 2\n");
        exit(2);
    }
    if (access(soak.preforkd, X_OK) != 0) {
        fprintf(stderr, "soak: %s: %s (build it, or set PREFORKD)\n", soak.preforkd,
                strerror(errno));
        exit(2);
    }
}

/* Faults every gap_min..gap_max until t_end; false if a master exited. */
static bool run_chaos(double t_end)
{
    uint64_t rng = soak.seed;

    while (soak_now() < t_end) {
        if (!sleep_until(soak_now() + rng_uniform(&rng, soak.gap_min, soak.gap_max)))
            return false;
        if (soak_now() >= t_end)
            break;
        fault_inject_random(&rng);
    }
    return true;
}

/* After the faults: the worker table must settle to what the master was
 * told; then back to the first config (for the fd count to compare). */
static void settle(struct daemon *d)
{
    char why[2048];
    size_t off;
    int rc;

    if (!daemon_wait_settled(d, SETTLE_TIMEOUT_SEC, why, sizeof(why))) {
        problem("%s daemon, %.0f s after the last fault: %s", d->name, SETTLE_TIMEOUT_SEC, why);
        return;
    }
    if (d->conf_workers == SOAK_WORKERS && !d->conf_third && d->expected_workers == SOAK_WORKERS)
        return;
    daemon_write_conf(d, SOAK_WORKERS, false);
    off = daemon_log_size(d);
    kill(d->pid, SIGHUP);
    rc = daemon_await_reload(d, off, 5.0, why, sizeof(why));
    if (rc != 1) {
        problem("%s daemon: the final HUP back to the first config: %s", d->name, why);
        return;
    }
    d->generation++;
    d->conf_workers = d->expected_workers = SOAK_WORKERS;
    d->conf_third = false;
    if (!daemon_wait_settled(d, SETTLE_TIMEOUT_SEC, why, sizeof(why)))
        problem("%s daemon, after the final HUP: %s", d->name, why);
}

/* The master as at the start: fds, RSS, listeners. */
static void check_master_end(struct daemon *d)
{
    char why[512] = "";
    struct stat st;

    d->end_fds = tu_proc_fd_count(d->pid);
    d->end_rss_kb = tu_proc_rss_kib(d->pid);
    if (d->end_fds != d->base_fds)
        problem("%s daemon: the master has %d fds, %d at the start", d->name, d->end_fds,
                d->base_fds);
    if (d->end_rss_kb - d->base_rss_kb > soak.rss_margin_kb)
        problem("%s daemon: the master's RSS grew from %ld to %ld KiB (margin %ld KiB)",
                d->name, d->base_rss_kb, d->end_rss_kb, soak.rss_margin_kb);
    if (probe_listener(d, d->third_port, 1.0, why, sizeof(why)) ||
        strstr(why, "Connection refused") == NULL)
        problem("%s daemon: the removed listener 127.0.0.1:%u is not refused: %s", d->name,
                d->third_port, why[0] ? why : "it serves");
    if (d->http && (stat(d->access_log, &st) < 0 || st.st_size == 0))
        problem("http daemon: no access log written at %s after the last USR1", d->access_log);
}

/* QUIT, one master after the other, then what their logs say. */
static void quit_all(void)
{
    for (int i = 0; i < SOAK_MAX_DAEMONS; i++) {
        struct daemon *d = &soak.d[i];
        char why[256];

        if (daemon_quit(d, QUIT_TIMEOUT_SEC, why, sizeof(why)))
            note("%s daemon: QUIT: %s", d->name, why);
        else
            problem("%s daemon, QUIT: %s", d->name, why);
        daemon_kill_group(d);
        scan_log(d);
    }
}

/* The whole report; returns the count of unexpected failures. */
static int print_report(double load_seconds)
{
    int unexpected = 0;

    attribute_failures();
    for (int i = 0; i < soak.nfailures; i++)
        unexpected += !soak.failures[i].expected;
    print_faults();
    print_clients(load_seconds);
    print_failures();
    fprintf(rep, "\nmasters at the end\n");
    for (int i = 0; i < SOAK_MAX_DAEMONS; i++) {
        const struct daemon *d = &soak.d[i];

        fprintf(rep, "  %s: generation %u, %d workers; fds %d -> %d; RSS %ld -> %ld KiB "
                "(margin %ld); %d restarts announced, %d seen back\n", d->name, d->generation,
                d->expected_workers, d->base_fds, d->end_fds, d->base_rss_kb, d->end_rss_kb,
                soak.rss_margin_kb, d->restarts_seen, d->restarts_checked);
    }
    if (soak.nnotes > 0) {
        fprintf(rep, "\nnotes\n");
        for (int i = 0; i < soak.nnotes; i++)
            fprintf(rep, "  %s\n", soak.notes[i]);
    }
    if (soak.nproblems > 0) {
        fprintf(rep, "\nproblems\n");
        for (int i = 0; i < soak.nproblems; i++)
            fprintf(rep, "  %s\n", soak.problems[i]);
    }
    return unexpected;
}

int main(int argc, char **argv)
{
    bool keep = false, started = true;
    double t_load, seconds, load_seconds;
    int unexpected;

    parse_options(argc, argv, &keep);
    setvbuf(stdout, NULL, _IOLBF, 0);
    rep = open_memstream(&rep_text, &rep_len);
    if (rep == NULL) {
        perror("soak: open_memstream");
        return 2;
    }
    pthread_mutex_init(&soak.lock, NULL);
    pthread_mutex_init(&soak.msg_lock, NULL);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, on_fatal_signal);
    signal(SIGTERM, on_fatal_signal);
    setup_files();

    soak.t0 = soak_now();
    for (int i = 0; i < SOAK_MAX_DAEMONS; i++)
        started = started && daemon_start(&soak.d[i]);
    if (!started) {
        for (int i = 0; i < SOAK_MAX_DAEMONS; i++)
            daemon_kill_group(&soak.d[i]);
        fprintf(stderr, "soak: logs kept in %s\n", soak.dir);
        return 2;
    }
    fprintf(rep, "preforkd chaos soak: %.0f s, seed %llu (SOAK_SEED=%llu repeats the fault "
            "sequence)\n", soak.seconds, (unsigned long long)soak.seed,
            (unsigned long long)soak.seed);
    fprintf(rep, "  %s; workers = %d, worker_timeout = %d, graceful_timeout = %d\n",
            soak.preforkd, SOAK_WORKERS, SOAK_WORKER_TIMEOUT_SEC, SOAK_GRACEFUL_TIMEOUT_SEC);
    for (int i = 0; i < SOAK_MAX_DAEMONS; i++)
        fprintf(rep, "  %s daemon: master %d on 127.0.0.1:%u (3rd listener 127.0.0.1:%u)\n",
                soak.d[i].name, (int)soak.d[i].pid, soak.d[i].port, soak.d[i].third_port);
    report_flush();

    t_load = soak_now();
    clients_start();
    faults_monitor_start();
    sleep_until(t_load + WARMUP_SEC);
    for (int i = 0; i < SOAK_MAX_DAEMONS; i++) {
        soak.d[i].base_fds = tu_proc_fd_count(soak.d[i].pid);
        soak.d[i].base_rss_kb = tu_proc_rss_kib(soak.d[i].pid);
    }
    run_chaos(t_load + soak.seconds);
    seconds = soak_now() - t_load;

    /* The end: no more faults, the clients still run. */
    faults_check_stopped(true);
    faults_monitor_stop();
    for (int i = 0; i < SOAK_MAX_DAEMONS; i++) {
        if (!daemon_alive(&soak.d[i])) {
            problem("%s daemon: the master exited during the soak (wait status 0x%x)",
                    soak.d[i].name, (unsigned)soak.d[i].status);
            continue;
        }
        settle(&soak.d[i]);
        check_master_end(&soak.d[i]);
    }
    clients_stop();
    load_seconds = soak_now() - t_load;
    quit_all();

    unexpected = print_report(load_seconds);
    if (unexpected == 0 && soak.nproblems == 0) {
        fprintf(rep, "\nRESULT: PASS (%.0f s, %d faults, every check held)\n", seconds,
                soak.nfaults);
        if (keep) {
            fprintf(rep, "files kept in %s\n", soak.dir);
            report_keep();
        } else {
            report_flush();
            rmtree(soak.dir);
        }
        return 0;
    }
    fprintf(rep, "\nRESULT: FAIL (%d unexpected client failure%s, %d problem%s); logs and "
            "report.txt kept in %s\n", unexpected, unexpected == 1 ? "" : "s", soak.nproblems,
            soak.nproblems == 1 ? "" : "s", soak.dir);
    report_keep();
    return 1;
}

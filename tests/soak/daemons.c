/*
 * daemons: the two preforkd masters under test (one http, one echo). Writes
 * their configs, starts them in process groups of their own, and reads
 * what they did from their logs and from /proc: whether a HUP took, what
 * TTIN/TTOU made of the worker count, whether the worker table settled,
 * whether QUIT ended everything. Which fault to inject is faults.c's.
 */
#define _GNU_SOURCE     /* memmem */
#include "soak.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define CONF_MAX 2048
/* A master that does not serve by then failed to start. */
#define START_TIMEOUT_SEC 5.0
#define POLL_US 5000
/* Far above what the soak's faults cost, so that max_restarts never ends
 * the service in the middle of a run (the limit has suites of its own). */
#define SOAK_MAX_RESTARTS 10000

void daemon_write_conf(struct daemon *d, int workers, bool third)
{
    char text[CONF_MAX];
    int n;

    n = snprintf(text, sizeof(text),
                 "; written by the chaos soak (tests/soak)\n"
                 "[daemon]\nworkers = %d\nworker_timeout = %d\ngraceful_timeout = %d\n"
                 "max_restarts = %d\nrestart_window = 60\nlog = stderr\nlog_level = info\n"
                 "[server]\nhandler = %s\nbacklog = 512\nlisten = 127.0.0.1:%u\n",
                 workers, SOAK_WORKER_TIMEOUT_SEC, SOAK_GRACEFUL_TIMEOUT_SEC, SOAK_MAX_RESTARTS,
                 d->http ? "http" : "echo", d->port);
    if (third)
        n += snprintf(text + n, sizeof(text) - (size_t)n, "listen = 127.0.0.1:%u\n",
                      d->third_port);
    if (d->http)
        n += snprintf(text + n, sizeof(text) - (size_t)n, "[http]\nroot = %s\naccess_log = %s\n",
                      soak.www, d->access_log);
    if (!write_file(d->conf, text, (size_t)n)) {
        fprintf(stderr, "soak: writing %s: %s\n", d->conf, strerror(errno));
        exit(2);
    }
}

void daemon_write_broken_conf(struct daemon *d, uint64_t *rng, char *what, size_t len)
{
    static const char *const kinds[] = {
        "workers = many", "an unknown key", "listen = 127.0.0.1:99999",
        "a section header without its ]", "[http] root = a missing directory",
    };
    int k = (int)(rng_next(rng) % (d->http ? 5 : 4));
    char text[CONF_MAX];
    int n = snprintf(text, sizeof(text), "[daemon]\nworkers = %s\nworker_timeout = %d\n"
                     "graceful_timeout = %d\nmax_restarts = %d\n%s",
                     k == 0 ? "many" : "2", SOAK_WORKER_TIMEOUT_SEC, SOAK_GRACEFUL_TIMEOUT_SEC,
                     SOAK_MAX_RESTARTS, k == 3 ? "[server\n" : "[server]\n");

    n += snprintf(text + n, sizeof(text) - (size_t)n, "handler = %s\nlisten = 127.0.0.1:%u\n%s%s",
                  d->http ? "http" : "echo", d->port, k == 1 ? "no_such_key = 1\n" : "",
                  k == 2 ? "listen = 127.0.0.1:99999\n" : "");
    if (d->http)
        n += snprintf(text + n, sizeof(text) - (size_t)n, "[http]\nroot = %s%s\n", soak.www,
                      k == 4 ? "/no-such-dir" : "");
    snprintf(what, len, "%s", kinds[k]);
    if (!write_file(d->conf, text, (size_t)n)) {
        fprintf(stderr, "soak: writing %s: %s\n", d->conf, strerror(errno));
        exit(2);
    }
}

size_t daemon_log_size(const struct daemon *d)
{
    struct stat st;

    return stat(d->log, &st) == 0 ? (size_t)st.st_size : 0;
}

bool daemon_alive(struct daemon *d)
{
    int status;

    if (d->exited)
        return false;
    if (waitpid(d->pid, &status, WNOHANG) == d->pid) {
        d->exited = true;
        d->status = status;
        return false;
    }
    return true;
}

/* Starts `preforkd -f -c conf`, stdout and stderr to its log, in a process
 * group of its own; dies with us (PR_SET_PDEATHSIG, from the main thread). */
static pid_t daemon_launch(struct daemon *d)
{
    pid_t parent = getpid(), pid = fork();

    if (pid != 0)
        return pid;
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(126);
    int log = open(d->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
    sigset_t none;

    if (log < 0 || null < 0 || dup2(null, 0) < 0 || dup2(log, 1) < 0 || dup2(log, 2) < 0)
        _exit(126);
    /* exec keeps ignored signals and the mask: give the daemon defaults. */
    for (int s = 1; s < NSIG; s++)
        signal(s, SIG_DFL);
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    execl(soak.preforkd, soak.preforkd, "-f", "-c", d->conf, (char *)NULL);
    _exit(127);
}

bool daemon_start(struct daemon *d)
{
    double deadline = soak_now() + START_TIMEOUT_SEC;
    char why[512] = "";

    d->conf_workers = d->expected_workers = SOAK_WORKERS;
    d->conf_third = false;
    d->generation = 1;
    daemon_write_conf(d, SOAK_WORKERS, false);
    d->pid = daemon_launch(d);
    if (d->pid < 0) {
        fprintf(stderr, "soak: fork: %s\n", strerror(errno));
        return false;
    }
    setpgid(d->pid, d->pid);
    while (soak_now() < deadline) {
        if (!daemon_alive(d)) {
            snprintf(why, sizeof(why), "exited with status 0x%x", (unsigned)d->status);
            break;
        }
        if (daemon_settled(d, why, sizeof(why)) &&
            probe_listener(d, d->port, 1.0, why, sizeof(why))) {
            d->log_scanned = d->restarts_scanned = daemon_log_size(d);
            return true;
        }
        usleep(20000);
    }
    fprintf(stderr, "soak: the %s daemon did not start within %.0f s: %s (log: %s)\n", d->name,
            START_TIMEOUT_SEC, why, d->log);
    return false;
}

/* The first line of text that holds needle, copied to out. */
static bool find_line(const char *text, const char *needle, char *out, size_t len)
{
    const char *hit = strstr(text, needle), *start, *end;

    if (hit == NULL)
        return false;
    for (start = hit; start > text && start[-1] != '\n'; start--)
        ;
    end = strchr(hit, '\n');
    if (end == NULL)
        end = hit + strlen(hit);
    if (out != NULL)
        snprintf(out, len, "%.*s", (int)(end - start), start);
    return true;
}

int daemon_await_reload(struct daemon *d, size_t log_offset, double timeout_sec,
                        char *why, size_t len)
{
    double deadline = soak_now() + timeout_sec;
    struct proc_child ch[64];

    for (;;) {
        char *text = read_file_from(d->log, log_offset, NULL);
        const char *reloading = text ? strstr(text, "reloading ") : NULL;
        int n;

        if (reloading != NULL && find_line(reloading, "reload failed", why, len)) {
            free(text);
            return 0;
        }
        free(text);
        n = proc_children(d->pid, ch, 64);
        for (int i = 0; i < n && i < 64; i++)
            if (ch[i].task >= 0 && ch[i].generation == d->generation + 1) {
                /* A failure line would come before the fork: look once more. */
                text = read_file_from(d->log, log_offset, NULL);
                reloading = text ? strstr(text, "reloading ") : NULL;
                if (reloading != NULL && find_line(reloading, "reload failed", why, len)) {
                    free(text);
                    return 0;
                }
                free(text);
                return 1;
            }
        if (!daemon_alive(d) || soak_now() > deadline) {
            snprintf(why, len, "neither a worker of generation %u nor \"reload failed\" within "
                     "%.1f s%s", d->generation + 1, timeout_sec,
                     daemon_alive(d) ? "" : " (the master exited)");
            return -1;
        }
        usleep(POLL_US);
    }
}

int daemon_await_scale(struct daemon *d, size_t log_offset, const char *word,
                       double timeout_sec)
{
    double deadline = soak_now() + timeout_sec;

    for (;;) {
        char *text = read_file_from(d->log, log_offset, NULL);
        const char *hit = text ? strstr(text, word) : NULL;
        int n = hit != NULL ? atoi(hit + strlen(word)) : -1;

        free(text);
        if (hit != NULL)
            return n;
        if (!daemon_alive(d) || soak_now() > deadline)
            return -1;
        usleep(POLL_US);
    }
}

/* Slack on top of the announced restart delay: a fork and a title, on a
 * busy machine. */
#define RESTART_SLACK_SEC 2.5

static void add_pending_restart(struct daemon *d, const char *line)
{
    const char *w = strstr(line, "]: worker "), *in = strstr(line, "restarting in ");
    struct pending_restart *p;
    int task, pid;

    if (w == NULL || in == NULL || sscanf(w, "]: worker %d (pid %d)", &task, &pid) != 2)
        return;
    d->restarts_seen++;
    /* A newer death of the task proves the older restart happened. */
    for (int i = 0; i < d->npending; i++)
        if (d->pending[i].task == task)
            d->pending[i--] = d->pending[--d->npending];
    if (d->npending == 64)
        return;
    p = &d->pending[d->npending++];
    p->task = task;
    p->dead = pid;
    p->generation = d->generation;
    p->deadline = soak_now() + atoi(in + 14) / 1000.0 + RESTART_SLACK_SEC;
    snprintf(p->line, sizeof(p->line), "%s", strstr(line, "]: ") + 3);
}

void daemon_watch_restarts(struct daemon *d)
{
    size_t len = 0;
    char *text = read_file_from(d->log, d->restarts_scanned, &len), *end, *line;
    struct proc_child ch[64];
    int n;

    /* Whole lines only: the rest is read next time. */
    end = text ? strrchr(text, '\n') : NULL;
    if (end != NULL) {
        d->restarts_scanned += (size_t)(end - text) + 1;
        end[1] = '\0';
        for (line = text; line < end; line = strchr(line, '\n') + 1) {
            char *eol = strchr(line, '\n');

            *eol = '\0';
            if (strstr(line, "restarting in ") != NULL)
                add_pending_restart(d, line);
            *eol = '\n';
        }
    }
    free(text);
    if (d->npending == 0)
        return;
    n = proc_children(d->pid, ch, 64);
    for (int i = 0; i < d->npending; i++) {
        const struct pending_restart *p = &d->pending[i];
        bool back = false;

        for (int j = 0; j < n && j < 64 && !back; j++)
            back = ch[j].task == p->task && ch[j].generation == p->generation &&
                   ch[j].pid != p->dead && ch[j].state != 'Z';
        if (back || p->generation != d->generation || p->task >= d->expected_workers) {
            d->restarts_checked += back;
        } else if (soak_now() > p->deadline) {
            problem("%s daemon: worker #%d of generation %u was never restarted: \"%s\", and "
                    "%.1f s later no worker #%d runs (no reload since, %d workers expected)",
                    d->name, p->task, p->generation, p->line,
                    soak_now() - p->deadline + RESTART_SLACK_SEC, p->task, d->expected_workers);
        } else {
            continue;
        }
        d->pending[i--] = d->pending[--d->npending];
    }
}

static size_t describe_children(const struct proc_child *ch, int n, char *out, size_t len)
{
    size_t at = 0;

    out[0] = '\0';
    for (int i = 0; i < n && i < 64 && at + 1 < len; i++) {
        int w = snprintf(out + at, len - at, "%s%d %c \"%s\"", i ? ", " : "", (int)ch[i].pid,
                         ch[i].state, ch[i].title[0] ? ch[i].title : "(no title)");
        if (w < 0)
            break;
        at += (size_t)w < len - at ? (size_t)w : len - at - 1;
    }
    return at;
}

bool daemon_settled(struct daemon *d, char *why, size_t len)
{
    struct proc_child ch[64];
    int n = proc_children(d->pid, ch, 64), seen[64] = { 0 };
    char list[1024];
    bool ok = n == d->expected_workers;

    for (int i = 0; i < n && i < 64 && ok; i++) {
        const struct proc_child *c = &ch[i];

        ok = c->state != 'Z' && c->state != 'T' && c->state != 't' && c->task >= 0 &&
             c->task < d->expected_workers && !seen[c->task] && !c->shutting_down &&
             c->generation == d->generation;
        if (ok)
            seen[c->task] = 1;
    }
    if (!ok) {
        describe_children(ch, n, list, sizeof(list));
        snprintf(why, len, "expected %d workers #0..#%d of generation %u, the master %d has %d "
                 "children: %s", d->expected_workers, d->expected_workers - 1, d->generation,
                 (int)d->pid, n, list);
    }
    return ok;
}

bool daemon_wait_settled(struct daemon *d, double timeout_sec, char *why, size_t len)
{
    double deadline = soak_now() + timeout_sec;

    while (!daemon_settled(d, why, len)) {
        daemon_watch_restarts(d);
        if (!daemon_alive(d) || soak_now() > deadline)
            return false;
        usleep(20000);
    }
    return true;
}

bool daemon_quit(struct daemon *d, double timeout_sec, char *why, size_t len)
{
    double t = soak_now(), deadline = t + timeout_sec;
    int status;

    if (!daemon_alive(d)) {
        snprintf(why, len, "the master had already exited (status 0x%x)", (unsigned)d->status);
        return false;
    }
    kill(d->pid, SIGQUIT);
    while (waitpid(d->pid, &status, WNOHANG) != d->pid) {
        if (soak_now() > deadline) {
            snprintf(why, len, "the master still runs %.1f s after QUIT", timeout_sec);
            return false;
        }
        usleep(POLL_US);
    }
    d->exited = true;
    d->status = status;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        snprintf(why, len, "the master ended with wait status 0x%x after QUIT", (unsigned)status);
        return false;
    }
    /* Workers leave before the master; give stragglers a moment all the same. */
    deadline = soak_now() + 2.0;
    while (kill(-d->pid, 0) == 0 || errno != ESRCH) {
        if (soak_now() > deadline) {
            snprintf(why, len, "exit 0 after %.2f s, but processes of its group remain",
                     soak_now() - t);
            return false;
        }
        usleep(POLL_US);
    }
    snprintf(why, len, "exit 0 %.2f s after QUIT, no process of its group left", soak_now() - t);
    return true;
}

void daemon_kill_group(struct daemon *d)
{
    if (d->pid <= 0)
        return;
    kill(-d->pid, SIGKILL);
    kill(d->pid, SIGKILL);
    if (!d->exited && waitpid(d->pid, &d->status, 0) == d->pid)
        d->exited = true;
}

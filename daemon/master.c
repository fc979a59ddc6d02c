/*
 * master: binds every listener once, forks the workers and keeps them
 * alive: restarts the dead with backoff, kills the stuck, reloads the config
 * on HUP with a new generation that accepts before the old one stops, and
 * shuts down fast (TERM, INT) or gracefully (QUIT). It never touches a
 * client connection; serving is worker.c's, the shared table scoreboard.c's.
 */
#define _GNU_SOURCE     /* pipe2 */
#include "master.h"

#include <bsd/unistd.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "listeners.h"
#include "log.h"
#include "pidfile.h"
#include "prefork.h"
#include "scoreboard.h"
#include "systemd.h"
#include "tls_config.h"

#include <openssl/ssl.h>
#include "worker.h"

/* Backoff for a worker that dies soon after it started: from the first
 * value, doubling, up to the last (gunicorn and systemd do alike). */
#define RESTART_BACKOFF_MIN_MS 100
#define RESTART_BACKOFF_MAX_MS 5000
/* A worker that lived this long died of something else than its start. */
#define RESTART_FAST_DEATH_SEC 1.0
/* TERM promises an exit within a second: the stragglers get SIGKILL then. */
#define FAST_STOP_SEC 0.8
/* After graceful_timeout, workers get this much more before SIGKILL. */
#define GRACEFUL_SLACK_SEC 1.0
#define HEARTBEAT_CHECK_SEC 0.5
/* How often systemd hears STATUS= when it does not ask for a watchdog. */
#define SD_STATUS_SEC 5.0
/* The most workers TTIN may add up to. */
#define WORKERS_MAX 1024

enum master_state { RUNNING, STOPPING_FAST, STOPPING_GRACEFUL };

/* One forked worker, in the slot the scoreboard gave it. */
struct proc {
    pid_t pid;                  /* 0: slot unused */
    int task_id;
    unsigned generation;
    ev_tstamp started;
    bool ready;                 /* told us it accepts */
    bool retiring;              /* sent QUIT or TERM: its exit is expected */
    bool timed_out;             /* we killed it for its heartbeat */
};

/* A worker position of the current generation. */
struct task {
    struct master *m;
    int id;
    unsigned backoff_ms;        /* next restart delay if it dies young */
    ev_timer restart;           /* a pending restart */
};

struct master {
    struct ev_loop *loop;
    const struct master_options *opt;
    struct config *cfg;
    struct ssl_ctx_st *tls;     /* for `ssl` listeners; rebuilt on HUP */
    struct listeners ls;
    struct scoreboard *sb;
    struct proc procs[SCOREBOARD_SLOTS];
    struct task *tasks;         /* ntasks of them; TTIN/TTOU move ntasks */
    int ntasks;
    unsigned generation;
    bool reloading;             /* the newest generation is not all ready yet */
    bool announced;             /* logged (and told the launcher) that we serve */
    bool steered;               /* listeners_steer is on until the leaving workers are gone */
    ev_tstamp *deaths;          /* ring of unexpected deaths, max_restarts + 1 */
    size_t ndeaths, death_head;
    int pidfile_fd;
    char *pidfile;              /* the path locked at start; a reload does not move it */
    int ready_pipe[2];
    struct sd_notifier sd;
    enum master_state state;
    int exit_status;
    ev_io ready_w;
    ev_child child_w;
    ev_timer heartbeat_w, stop_w, sd_w;
    ev_signal sig_hup, sig_term, sig_int, sig_quit, sig_usr1, sig_ttin, sig_ttou;
};

static void master_spawn(struct master *m, int task_id);
static void master_stop(struct master *m, enum master_state how, int status);

int master_check_config(const struct config *c, char *errmsg, size_t len)
{
    struct stat st;

    errno = 0;
    if (c->user != NULL && getpwnam(c->user) == NULL) {
        snprintf(errmsg, len, "%s: [daemon] user = %s: %s", c->path, c->user,
                 errno ? strerror(errno) : "no such user");
        return -1;
    }
    errno = 0;
    if (c->group != NULL && getgrnam(c->group) == NULL) {
        snprintf(errmsg, len, "%s: [daemon] group = %s: %s", c->path, c->group,
                 errno ? strerror(errno) : "no such group");
        return -1;
    }
    if (c->handler == CONFIG_HANDLER_HTTP && (stat(c->http_root, &st) < 0 || !S_ISDIR(st.st_mode))) {
        snprintf(errmsg, len, "%s: [http] root = %s: %s", c->path, c->http_root,
                 errno ? strerror(errno) : "not a directory");
        return -1;
    }
    return 0;
}

static int live_workers(const struct master *m)
{
    int n = 0;

    for (int i = 0; i < SCOREBOARD_SLOTS; i++)
        n += m->procs[i].pid != 0;
    return n;
}

static void signal_procs(struct master *m, int sig, bool (*which)(const struct proc *, unsigned),
                         unsigned arg)
{
    for (int i = 0; i < SCOREBOARD_SLOTS; i++) {
        struct proc *p = &m->procs[i];

        if (p->pid == 0 || (which != NULL && !which(p, arg)))
            continue;
        if (sig == SIGQUIT || sig == SIGTERM || sig == SIGKILL)
            p->retiring = true;
        kill(p->pid, sig);
    }
}

static bool older_generation(const struct proc *p, unsigned generation)
{
    return p->generation < generation && !p->retiring;
}

static uint64_t active_connections(const struct master *m)
{
    uint64_t n = 0;

    for (int i = 0; i < SCOREBOARD_SLOTS; i++)
        if (m->procs[i].pid != 0)
            n += SB_LOAD(m->sb->slots[i].active);
    return n;
}

/* STATUS= for systemctl status: workers, generation, connections. */
static void master_notify(struct master *m, const char *state)
{
    sd_notify_printf(&m->sd, "%sSTATUS=%d workers, generation %u, %llu connections",
                     state, m->ntasks, m->generation,
                     (unsigned long long)active_connections(m));
}

/* The newest generation accepts in full: the older ones may now go. */
static void master_check_generation_ready(struct master *m)
{
    for (int i = 0; i < SCOREBOARD_SLOTS; i++) {
        const struct proc *p = &m->procs[i];
        if (p->pid != 0 && p->generation == m->generation && !p->ready && !p->retiring)
            return;
    }
    if (m->reloading) {
        m->reloading = false;
        signal_procs(m, SIGQUIT, older_generation, m->generation);
        log_msg(LOG_NOTICE, 0, "generation %u accepts with %d worker%s; the older ones drain",
                m->generation, m->ntasks, m->ntasks == 1 ? "" : "s");
        master_notify(m, "READY=1\n");
    }
    if (!m->announced) {
        m->announced = true;
        log_msg(LOG_NOTICE, 0, "%d worker%s accepting", m->ntasks, m->ntasks == 1 ? "" : "s");
        master_notify(m, "READY=1\n");
        if (m->opt->ready_fd >= 0) {
            /* The launcher exits 0 on this byte; our stdio leaves the terminal. */
            log_tee_stderr(false);
            int null = open("/dev/null", O_RDWR | O_CLOEXEC);
            if (null >= 0) {
                dup2(null, STDIN_FILENO);
                dup2(null, STDOUT_FILENO);
                dup2(null, STDERR_FILENO);
                close(null);
            }
            if (write(m->opt->ready_fd, "", 1) != 1)
                log_msg(LOG_WARNING, -errno, "telling the launcher we serve");
            close(m->opt->ready_fd);
        }
    }
}

static void master_ready_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct master *m = w->data;
    struct worker_ready_msg msg;

    (void)loop;
    (void)revents;
    /* Messages are smaller than PIPE_BUF: each arrives whole. */
    while (read(m->ready_pipe[0], &msg, sizeof(msg)) == sizeof(msg)) {
        if (msg.slot < 0 || msg.slot >= SCOREBOARD_SLOTS || m->procs[msg.slot].pid != msg.pid)
            continue;           /* a worker that died since */
        m->procs[msg.slot].ready = true;
    }
    if (m->state == RUNNING)
        master_check_generation_ready(m);
}

/* Counts an unexpected death; true when there were more than max_restarts
 * of them within restart_window. */
static bool master_too_many_deaths(struct master *m)
{
    size_t cap = (size_t)m->cfg->max_restarts + 1;
    ev_tstamp now = ev_now(m->loop);

    m->deaths[m->death_head] = now;
    m->death_head = (m->death_head + 1) % cap;
    if (m->ndeaths < cap)
        m->ndeaths++;
    /* The oldest of the last max_restarts + 1 deaths is inside the window. */
    return m->ndeaths == cap && now - m->deaths[m->death_head] <= m->cfg->restart_window_sec;
}

static void master_restart_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct task *t = w->data;

    (void)loop;
    (void)revents;
    if (t->m->state == RUNNING && t->id < t->m->ntasks)
        master_spawn(t->m, t->id);
}

static void master_worker_died(struct master *m, const struct proc *p, int status)
{
    struct task *t;
    char why[64];
    unsigned delay_ms = 0;

    if (WIFSIGNALED(status))
        snprintf(why, sizeof(why), "killed by signal %d", WTERMSIG(status));
    else
        snprintf(why, sizeof(why), "exited with status %d", WEXITSTATUS(status));
    if (p->retiring || m->state != RUNNING) {
        log_msg(LOG_INFO, 0, "worker %d (pid %d) of generation %u %s", p->task_id,
                (int)p->pid, p->generation, why);
        return;
    }
    /* An old generation's worker is replaced by the new generation. */
    if (p->generation != m->generation || p->task_id >= m->ntasks) {
        log_msg(LOG_WARNING, 0, "worker %d (pid %d) of generation %u %s", p->task_id,
                (int)p->pid, p->generation, why);
        return;
    }
    if (master_too_many_deaths(m)) {
        log_msg(LOG_ERR, 0, "worker %d (pid %d) %s: %u worker deaths within %u s "
                "(max_restarts = %u), giving up", p->task_id, (int)p->pid, why,
                m->cfg->max_restarts + 1, m->cfg->restart_window_sec, m->cfg->max_restarts);
        master_stop(m, STOPPING_FAST, 1);
        return;
    }
    t = &m->tasks[p->task_id];
    if (ev_now(m->loop) - p->started < RESTART_FAST_DEATH_SEC) {
        delay_ms = t->backoff_ms;
        t->backoff_ms = t->backoff_ms * 2 > RESTART_BACKOFF_MAX_MS
                            ? RESTART_BACKOFF_MAX_MS : t->backoff_ms * 2;
    } else {
        t->backoff_ms = RESTART_BACKOFF_MIN_MS;
    }
    log_msg(LOG_WARNING, 0, "worker %d (pid %d) %s%s, restarting in %u ms", p->task_id,
            (int)p->pid, why, p->timed_out ? " after missing its heartbeat" : "", delay_ms);
    SB_STORE(m->sb->restarts, SB_LOAD(m->sb->restarts) + 1);
    ev_timer_stop(m->loop, &t->restart);
    ev_timer_set(&t->restart, delay_ms / 1000.0, 0.);
    ev_timer_start(m->loop, &t->restart);
}

/* Once no worker of an older generation and no retiring one is left, the
 * reuse_port sockets they accepted on are closed: the kernel may choose
 * among the others by its hash again. */
static void master_check_steering(struct master *m)
{
    if (!m->steered)
        return;
    for (int i = 0; i < SCOREBOARD_SLOTS; i++) {
        const struct proc *p = &m->procs[i];
        if (p->pid != 0 && (p->retiring || p->generation < m->generation))
            return;
    }
    listeners_unsteer(&m->ls);
    m->steered = false;
}

/* The listeners changed: until the workers that hold the sockets they
 * dropped are gone, no new connection for those. */
static void master_steer(struct master *m)
{
    m->steered = listeners_steer(&m->ls) > 0;
}

static void master_child_cb(struct ev_loop *loop, ev_child *w, int revents)
{
    struct master *m = w->data;

    (void)revents;
    for (int i = 0; i < SCOREBOARD_SLOTS; i++) {
        struct proc p = m->procs[i];

        if (p.pid != w->rpid)
            continue;
        m->procs[i].pid = 0;
        scoreboard_release(m->sb, i);
        master_worker_died(m, &p, w->rstatus);
        break;
    }
    if (m->state == RUNNING) {
        if (m->reloading)
            master_check_generation_ready(m);
        master_check_steering(m);
    } else if (live_workers(m) == 0) {
        ev_break(loop, EVBREAK_ALL);
    }
}

/* In a new worker: forget everything that is the master's. */
static void master_forget(struct master *m)
{
    ev_io_stop(m->loop, &m->ready_w);
    ev_child_stop(m->loop, &m->child_w);
    ev_timer_stop(m->loop, &m->heartbeat_w);
    ev_timer_stop(m->loop, &m->stop_w);
    ev_timer_stop(m->loop, &m->sd_w);
    ev_signal_stop(m->loop, &m->sig_hup);
    ev_signal_stop(m->loop, &m->sig_term);
    ev_signal_stop(m->loop, &m->sig_int);
    ev_signal_stop(m->loop, &m->sig_quit);
    ev_signal_stop(m->loop, &m->sig_usr1);
    ev_signal_stop(m->loop, &m->sig_ttin);
    ev_signal_stop(m->loop, &m->sig_ttou);
    for (int i = 0; i < m->ntasks; i++)
        ev_timer_stop(m->loop, &m->tasks[i].restart);
    ev_loop_fork(m->loop);
    close(m->ready_pipe[0]);
    if (m->pidfile_fd >= 0)
        close(m->pidfile_fd);
    sd_notifier_close(&m->sd);
}

static void master_spawn(struct master *m, int task_id)
{
    int slot = scoreboard_alloc(m->sb, task_id, m->generation);
    sigset_t mask;
    pid_t pid;

    if (slot < 0) {
        log_msg(LOG_ERR, 0, "worker %d: all %d scoreboard slots in use", task_id, SCOREBOARD_SLOTS);
        return;
    }
    /* Until the worker has its own handlers, a signal meant for it (QUIT on
     * a quick reload, logrotate's USR1) would meet the default action and
     * kill it: block them across the fork; the worker unblocks them. */
    sigprocmask(SIG_BLOCK, worker_signals(), &mask);
    pid = fork();
    if (pid != 0)
        sigprocmask(SIG_SETMASK, &mask, NULL);
    if (pid < 0) {
        log_msg(LOG_ERR, -errno, "worker %d: fork", task_id);
        scoreboard_release(m->sb, slot);
        /* Try again later, as for a worker that died young. */
        ev_timer_set(&m->tasks[task_id].restart, RESTART_BACKOFF_MAX_MS / 1000.0, 0.);
        ev_timer_start(m->loop, &m->tasks[task_id].restart);
        return;
    }
    if (pid == 0) {
        size_t nfds;
        const int *fds;
        const bool *ssl;
        struct worker_args a;

        master_forget(m);
        /* Under reuse_port the sockets of the other task ids are not ours:
         * holding them would keep a socket the master dropped (TTOU, a
         * reload to fewer workers) in its port's group, queueing
         * connections nobody accepts, and would blur fd counts. */
        nfds = listeners_take_for_task(&m->ls, task_id, &fds, &ssl);
        a = (struct worker_args){ .config = m->cfg, .fds = fds, .fd_ssl = ssl, .nfds = nfds,
                                  .tls = m->tls, .sb = m->sb,
                                  .slot = slot, .task_id = task_id, .generation = m->generation,
                                  .ready_fd = m->ready_pipe[1], .master_pid = getppid() };
        exit(worker_main(&a));
    }
    SB_STORE(m->sb->slots[slot].pid, pid);
    m->procs[slot] = (struct proc){ .pid = pid, .task_id = task_id,
                                    .generation = m->generation, .started = ev_now(m->loop) };
    log_msg(LOG_DEBUG, 0, "worker %d (pid %d) of generation %u started", task_id, (int)pid,
            m->generation);
}

/* Resizes the task table to n, keeping the restart timers of the others. */
static int master_set_tasks(struct master *m, int n)
{
    int keep = n < m->ntasks ? n : m->ntasks;
    double pending[keep > 0 ? keep : 1];        /* seconds left of a restart, or -1 */
    struct task *t;

    for (int i = n; i < m->ntasks; i++)
        ev_timer_stop(m->loop, &m->tasks[i].restart);
    /* Restart timers are active watchers: they must not move. Stop them,
     * and start again after the move those that were waiting. */
    for (int i = 0; i < keep; i++) {
        struct ev_timer *w = &m->tasks[i].restart;
        pending[i] = ev_is_active(w) ? ev_timer_remaining(m->loop, w) : -1;
        ev_timer_stop(m->loop, w);
    }
    t = realloc(m->tasks, (size_t)(n > 0 ? n : 1) * sizeof(*t));
    if (t == NULL)
        return -ENOMEM;
    for (int i = 0; i < n; i++) {
        if (i >= m->ntasks)
            t[i].backoff_ms = RESTART_BACKOFF_MIN_MS;
        t[i].m = m;
        t[i].id = i;
        ev_timer_init(&t[i].restart, master_restart_cb, i < keep && pending[i] > 0 ? pending[i] : 0., 0.);
        t[i].restart.data = &t[i];
        if (i < keep && pending[i] >= 0)
            ev_timer_start(m->loop, &t[i].restart);
    }
    m->tasks = t;
    m->ntasks = n;
    return 0;
}

/* TTIN, TTOU: n workers on the running config. Under reuse_port that binds
 * the new worker's sockets first, or closes the master's copies of the
 * leaving one's (which closes its own as it stops accepting). Returns 0,
 * or -errno with the running service unchanged (logged, naming what). */
static int master_set_workers(struct master *m, int n, const char *what)
{
    struct listeners nls;
    int rc = listeners_rebind(&m->ls, m->cfg, n, NULL, &nls);

    if (rc < 0) {
        log_msg(LOG_ERR, 0, "%s refused, %d worker%s stay%s", what, m->ntasks,
                m->ntasks == 1 ? "" : "s", m->ntasks == 1 ? "s" : "");
        return rc;
    }
    rc = master_set_tasks(m, n);
    if (rc < 0) {
        listeners_discard_new(&nls, &m->ls);
        log_msg(LOG_ERR, rc, "%s", what);
        return rc;
    }
    listeners_replace(&m->ls, &nls);
    return 0;
}

static int master_set_death_ring(struct master *m)
{
    ev_tstamp *d = calloc((size_t)m->cfg->max_restarts + 1, sizeof(*d));

    if (d == NULL)
        return -ENOMEM;
    free(m->deaths);
    m->deaths = d;
    m->ndeaths = m->death_head = 0;
    return 0;
}

/* Starts a generation of workers on the current config and listeners. */
static void master_start_generation(struct master *m)
{
    m->generation++;
    SB_STORE(m->sb->generation, m->generation);
    for (int i = 0; i < m->ntasks; i++) {
        ev_timer_stop(m->loop, &m->tasks[i].restart);
        master_spawn(m, i);
    }
}

/* The old config serves on; systemd, told RELOADING=1, hears READY=1. */
static void master_reload_failed(struct master *m, struct config *next, const char *why)
{
    log_msg(LOG_ERR, 0, "reload failed, the running configuration stays: %s", why);
    sd_notify_printf(&m->sd, "READY=1\nSTATUS=reload failed, the running configuration "
                     "stays: %s", why);
    config_free(next);
    free(next);
}

static void master_reload(struct master *m)
{
    struct config *next = calloc(1, sizeof(*next));
    struct ssl_ctx_st *tls = NULL;
    struct listeners nls;
    char err[512];
    int rc;

    if (next == NULL) {
        log_msg(LOG_ERR, -ENOMEM, "reload");
        return;
    }
    log_msg(LOG_NOTICE, 0, "reloading %s", m->opt->config_path);
    sd_notify_printf(&m->sd, "RELOADING=1\nMONOTONIC_USEC=%llu",
                     (unsigned long long)sd_monotonic_usec());
    if (config_load(m->opt->config_path, next, err, sizeof(err)) < 0 ||
        master_check_config(next, err, sizeof(err)) < 0) {
        master_reload_failed(m, next, err);
        return;
    }
    if (tls_config_needed(next)) {
        char warning[512];

        /* New certificate, new ticket keys; the old generation keeps its own. */
        tls = tls_config_ctx_new(next, err, sizeof(err), warning, sizeof(warning));
        if (tls == NULL) {
            master_reload_failed(m, next, err);
            return;
        }
        if (warning[0] != '\0')
            log_msg(LOG_WARNING, 0, "%s", warning);
    }
    rc = listeners_rebind(&m->ls, next, config_workers(next), NULL, &nls);
    if (rc < 0) {
        SSL_CTX_free(tls);
        master_reload_failed(m, next, "a listen could not be bound");
        return;
    }
    if (!m->opt->foreground && log_open(next->log, next->log_level, err, sizeof(err)) < 0) {
        listeners_discard_new(&nls, &m->ls);
        SSL_CTX_free(tls);
        master_reload_failed(m, next, err);
        return;
    }
    SSL_CTX_free(m->tls);
    m->tls = tls;
    if (m->opt->foreground)
        log_open("stderr", next->log_level, err, sizeof(err));
    /* Committed: old listeners that the new config dropped close now (the
     * old workers hold their own copies until they exit). */
    listeners_replace(&m->ls, &nls);
    /* Before the forks: the old workers then have until they are told to
     * quit to accept what the sockets on their way out hold. */
    master_steer(m);
    config_free(m->cfg);
    free(m->cfg);
    m->cfg = next;
    if (master_set_death_ring(m) < 0 || master_set_tasks(m, config_workers(next)) < 0) {
        log_msg(LOG_ERR, -ENOMEM, "reload");
        master_stop(m, STOPPING_FAST, 1);
        return;
    }
    SB_STORE(m->sb->reloads, SB_LOAD(m->sb->reloads) + 1);
    m->reloading = true;
    master_start_generation(m);
}

static void master_stop_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct master *m = w->data;
    int n = live_workers(m);

    (void)loop;
    (void)revents;
    log_msg(LOG_WARNING, 0, "%d worker%s still running, killing %s", n, n == 1 ? "" : "s",
            n == 1 ? "it" : "them");
    signal_procs(m, SIGKILL, NULL, 0);
}

static void master_stop(struct master *m, enum master_state how, int status)
{
    double grace = how == STOPPING_FAST ? FAST_STOP_SEC
                                        : m->cfg->graceful_timeout_sec + GRACEFUL_SLACK_SEC;

    /* Asked twice: go faster, never slower. */
    if (m->state == STOPPING_FAST || (m->state == how && how == STOPPING_GRACEFUL))
        return;
    if (status > m->exit_status)
        m->exit_status = status;
    m->state = how;
    sd_notify_printf(&m->sd, "STOPPING=1\nSTATUS=%s shutdown",
                     how == STOPPING_FAST ? "fast" : "graceful");
    ev_timer_stop(m->loop, &m->sd_w);
    /* New connections are refused from now on, not queued. */
    listeners_close(&m->ls);
    for (int i = 0; i < m->ntasks; i++)
        ev_timer_stop(m->loop, &m->tasks[i].restart);
    ev_timer_stop(m->loop, &m->heartbeat_w);
    signal_procs(m, how == STOPPING_FAST ? SIGTERM : SIGQUIT, NULL, 0);
    ev_timer_stop(m->loop, &m->stop_w);
    ev_timer_set(&m->stop_w, grace, 0.);
    ev_timer_start(m->loop, &m->stop_w);
    if (live_workers(m) == 0)
        ev_break(m->loop, EVBREAK_ALL);
}

static void master_heartbeat_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct master *m = w->data;
    uint64_t now = scoreboard_now_ms(), limit = (uint64_t)m->cfg->worker_timeout_sec * 1000;

    (void)loop;
    (void)revents;
    if (limit == 0)
        return;
    for (int i = 0; i < SCOREBOARD_SLOTS; i++) {
        struct proc *p = &m->procs[i];
        uint64_t beat = SB_LOAD(m->sb->slots[i].heartbeat_ms);

        /* beat > now: the worker wrote after we read the clock. */
        if (p->pid == 0 || p->timed_out || beat >= now || now - beat <= limit)
            continue;
        log_msg(LOG_WARNING, 0, "worker %d (pid %d) sent no heartbeat for %.1f s "
                "(worker_timeout = %u), killing it", p->task_id, (int)p->pid,
                (double)(now - beat) / 1000, m->cfg->worker_timeout_sec);
        p->timed_out = true;
        kill(p->pid, SIGKILL);
    }
}

/* Workers that run as `user` reopen their logs after a rotation: the
 * master, still root, creates each file and gives it to that user first,
 * as nginx does. */
static void master_create_for_workers(struct master *m, const char *path)
{
    struct passwd *pw;
    struct group *gr;
    int fd;

    if (getuid() != 0 || m->cfg->user == NULL || (pw = getpwnam(m->cfg->user)) == NULL)
        return;
    fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) {
        log_msg(LOG_ERR, -errno, "creating %s", path);
        return;
    }
    gr = m->cfg->group ? getgrnam(m->cfg->group) : NULL;
    if (fchown(fd, pw->pw_uid, gr ? gr->gr_gid : pw->pw_gid) < 0)
        log_msg(LOG_ERR, -errno, "giving %s to %s", path, m->cfg->user);
    close(fd);
}

static void master_signal_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    struct master *m = w->data;
    int err;

    (void)loop;
    (void)revents;
    switch (w->signum) {
    case SIGHUP:
        if (m->state == RUNNING)
            master_reload(m);
        break;
    case SIGTERM:
    case SIGINT:
        log_msg(LOG_NOTICE, 0, "%s: fast shutdown", strsignal(w->signum));
        master_stop(m, STOPPING_FAST, m->exit_status);
        break;
    case SIGQUIT:
        log_msg(LOG_NOTICE, 0, "QUIT: graceful shutdown");
        if (m->state == RUNNING)
            master_stop(m, STOPPING_GRACEFUL, 0);
        break;
    case SIGUSR1:
        err = log_reopen();
        if (err < 0)
            log_msg(LOG_ERR, err, "reopening the log");
        /* In the foreground the log is stderr, whatever the file says. */
        if (!m->opt->foreground && strcmp(m->cfg->log, "stderr") != 0 &&
            strcmp(m->cfg->log, "syslog") != 0)
            master_create_for_workers(m, m->cfg->log);
        if (m->cfg->http_access_log != NULL)
            master_create_for_workers(m, m->cfg->http_access_log);
        signal_procs(m, SIGUSR1, NULL, 0);
        break;
    case SIGTTIN:
        if (m->state != RUNNING || m->ntasks >= WORKERS_MAX)
            break;
        if (master_set_workers(m, m->ntasks + 1, "TTIN") == 0) {
            log_msg(LOG_NOTICE, 0, "TTIN: %d workers", m->ntasks);
            master_spawn(m, m->ntasks - 1);
            /* A steering under way must count the new socket in. */
            if (m->steered)
                master_steer(m);
        }
        break;
    case SIGTTOU:
        if (m->state != RUNNING || m->ntasks <= 1 ||
            master_set_workers(m, m->ntasks - 1, "TTOU") < 0)
            break;
        master_steer(m);
        for (int i = 0; i < SCOREBOARD_SLOTS; i++) {
            struct proc *p = &m->procs[i];
            if (p->pid != 0 && p->task_id == m->ntasks && !p->retiring) {
                p->retiring = true;
                kill(p->pid, SIGQUIT);
            }
        }
        master_check_steering(m);
        log_msg(LOG_NOTICE, 0, "TTOU: %d worker%s", m->ntasks, m->ntasks == 1 ? "" : "s");
        break;
    }
}

/* Runs from the loop: a WATCHDOG=1 proves the loop turns, not just that
 * the process exists. */
static void master_sd_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct master *m = w->data;

    (void)loop;
    (void)revents;
    master_notify(m, m->sd.watchdog_usec ? "WATCHDOG=1\n" : "");
}

static void master_start_watchers(struct master *m)
{
    ev_signal *sigs[] = { &m->sig_hup, &m->sig_term, &m->sig_int, &m->sig_quit,
                          &m->sig_usr1, &m->sig_ttin, &m->sig_ttou };
    const int nums[] = { SIGHUP, SIGTERM, SIGINT, SIGQUIT, SIGUSR1, SIGTTIN, SIGTTOU };

    for (size_t i = 0; i < sizeof(nums) / sizeof(nums[0]); i++) {
        ev_signal_init(sigs[i], master_signal_cb, nums[i]);
        sigs[i]->data = m;
        ev_signal_start(m->loop, sigs[i]);
    }
    ev_child_init(&m->child_w, master_child_cb, 0, 0);
    m->child_w.data = m;
    ev_child_start(m->loop, &m->child_w);
    ev_io_init(&m->ready_w, master_ready_cb, m->ready_pipe[0], EV_READ);
    m->ready_w.data = m;
    ev_io_start(m->loop, &m->ready_w);
    ev_timer_init(&m->heartbeat_w, master_heartbeat_cb, HEARTBEAT_CHECK_SEC, HEARTBEAT_CHECK_SEC);
    m->heartbeat_w.data = m;
    ev_timer_start(m->loop, &m->heartbeat_w);
    ev_timer_init(&m->stop_w, master_stop_cb, 0., 0.);
    m->stop_w.data = m;
    if (m->sd.fd >= 0) {
        /* Half the watchdog interval, as sd_watchdog_enabled(3) advises. */
        double every = m->sd.watchdog_usec ? m->sd.watchdog_usec / 2e6 : SD_STATUS_SEC;
        ev_timer_init(&m->sd_w, master_sd_cb, every, every);
        m->sd_w.data = m;
        ev_timer_start(m->loop, &m->sd_w);
    }
}

static void master_free(struct master *m)
{
    listeners_close(&m->ls);
    if (m->pidfile_fd >= 0)
        pidfile_release(m->pidfile, m->pidfile_fd);
    free(m->pidfile);
    if (m->ready_pipe[0] >= 0) {
        close(m->ready_pipe[0]);
        close(m->ready_pipe[1]);
    }
    scoreboard_destroy(m->sb);
    sd_notifier_close(&m->sd);
    SSL_CTX_free(m->tls);
    free(m->tasks);
    free(m->deaths);
    config_free(m->cfg);
    free(m->cfg);
}

int master_run(struct config *c, const struct master_options *opt)
{
    static struct master m;     /* too large for the stack; one per process */
    char err[512], warning[512];
    size_t n;
    int rc = 1;

    m = (struct master){ .loop = ev_default_loop(0), .opt = opt, .cfg = c, .pidfile_fd = -1,
                         .ready_pipe = { -1, -1 }, .sd = { .fd = -1 } };
    log_set_role("master");
    if (c->pidfile != NULL) {
        m.pidfile = strdup(c->pidfile);
        m.pidfile_fd = m.pidfile ? pidfile_acquire(m.pidfile, err, sizeof(err)) : -1;
        if (m.pidfile_fd < 0) {
            log_msg(LOG_ERR, 0, "%s", err);
            goto out;
        }
    }
    if (tls_config_needed(c)) {
        m.tls = tls_config_ctx_new(c, err, sizeof(err), warning, sizeof(warning));
        if (m.tls == NULL) {
            log_msg(LOG_ERR, 0, "%s", err);
            goto out;
        }
        if (warning[0] != '\0')
            log_msg(LOG_WARNING, 0, "%s", warning);
    }
    sd_notifier_open(&m.sd);
    rc = listeners_bind(&m.ls, c, config_workers(c), opt->inherited);
    if (opt->inherited != NULL && (n = sd_listen_fds_close_unclaimed(opt->inherited)) > 0)
        log_msg(LOG_WARNING, 0, "%zu socket%s passed by systemd match%s no listen, closed",
                n, n == 1 ? "" : "s", n == 1 ? "es" : "");
    rc = rc < 0 ? 1 : 0;
    if (rc != 0)
        goto out;
    rc = 1;
    m.sb = scoreboard_create();
    if (m.sb == NULL) {
        log_msg(LOG_ERR, -errno, "creating the scoreboard");
        goto out;
    }
    if (pipe2(m.ready_pipe, O_CLOEXEC | O_NONBLOCK) < 0) {
        log_msg(LOG_ERR, -errno, "creating the ready pipe");
        goto out;
    }
    if (master_set_death_ring(&m) < 0 || master_set_tasks(&m, config_workers(c)) < 0) {
        log_msg(LOG_ERR, -ENOMEM, "starting");
        goto out;
    }
    setproctitle("master process %s", opt->title);
    /* A peer that vanishes must cost an EPIPE, not a worker. */
    signal(SIGPIPE, SIG_IGN);
    master_start_watchers(&m);
    master_start_generation(&m);
    ev_run(m.loop, 0);
    rc = m.exit_status;
    log_msg(LOG_NOTICE, 0, "exiting with status %d", rc);
out:
    master_free(&m);
    return rc;
}

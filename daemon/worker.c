/*
 * worker: one worker process. It drops privileges, accepts on the listeners
 * it inherited through a pf_tcp_server, hands each connection to the
 * configured handler, beats its heartbeat into the scoreboard, and stops
 * fast (TERM) or gracefully (QUIT). Supervision is the master's.
 */
#include "worker.h"

#include <bsd/unistd.h>
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include "echo.h"
#include "http.h"
#include "log.h"
#include "prefork.h"

/* Beats per worker_timeout: several, so that a late one is no false alarm. */
#define HEARTBEATS_PER_TIMEOUT 4
#define HEARTBEAT_MAX_SEC 1.0
/* While draining, how often we look whether the last connection closed. */
#define DRAIN_POLL_SEC 0.1
/* Accept pauses (EMFILE and the like) are logged at most this often. */
#define PAUSE_REPORT_SEC 10.0

struct worker {
    const struct worker_args *a;
    struct ev_loop *loop;
    struct pf_tcp_server *srv[2];   /* [0]: plain listeners, [1]: ssl ones; NULL if none */
    struct http_server *http;       /* handler = http */
    struct scoreboard_slot *slot;
    bool draining;
    ev_signal sig_term, sig_int, sig_quit, sig_usr1;
    ev_timer heartbeat;
    ev_timer drain_deadline;
    unsigned long long pauses_reported;     /* accept pauses logged so far */
    double next_pause_report;               /* ev_now: no pause report before */
};

/* Both servers' counts together. */
static void worker_stats(const struct worker *w, struct pf_tcp_server_stats *out)
{
    memset(out, 0, sizeof(*out));
    for (int k = 0; k < 2; k++) {
        struct pf_tcp_server_stats st;

        if (w->srv[k] == NULL)
            continue;
        pf_tcp_server_stats(w->srv[k], &st);
        out->accepted += st.accepted;
        out->active += st.active;
        out->accept_pauses += st.accept_pauses;
        if (st.last_accept_error != 0)
            out->last_accept_error = st.last_accept_error;
    }
}

/* Stop accepting, and with close_streams also drop every connection. */
static void worker_stop_servers(struct worker *w, bool close_streams)
{
    for (int k = 0; k < 2; k++) {
        if (w->srv[k] == NULL)
            continue;
        pf_tcp_server_stop(w->srv[k]);
        if (close_streams)
            pf_tcp_server_close_streams(w->srv[k]);
    }
}

/* Out of fds (or memory), accepting pauses and connections wait in the
 * listen queue: say so, at most every PAUSE_REPORT_SEC, with what to raise. */
static void report_accept_pauses(struct worker *w, const struct pf_tcp_server_stats *st)
{
    unsigned long long n = st->accept_pauses - w->pauses_reported;
    struct rlimit nofile = { 0, 0 };

    if (n == 0 || ev_now(w->loop) < w->next_pause_report)
        return;
    getrlimit(RLIMIT_NOFILE, &nofile);
    log_msg(LOG_WARNING, -st->last_accept_error,
            "accepting paused %llu time%s for %d ms, new connections wait in the listen "
            "queue (%u open, RLIMIT_NOFILE %llu, max_connections %u)",
            n, n == 1 ? "" : "s", PF_ACCEPT_RETRY_MS, st->active,
            (unsigned long long)nofile.rlim_cur, w->a->config->max_connections);
    w->pauses_reported = st->accept_pauses;
    w->next_pause_report = ev_now(w->loop) + PAUSE_REPORT_SEC;
}

static void worker_beat(struct worker *w)
{
    struct pf_tcp_server_stats st;

    worker_stats(w, &st);
    report_accept_pauses(w, &st);
    /* The http handler counts as it goes; echo's counts come from here. */
    if (w->http == NULL) {
        SB_STORE(w->slot->c.accepted, st.accepted);
        SB_STORE(w->slot->active, st.active);
    }
    SB_STORE(w->slot->heartbeat_ms, scoreboard_now_ms());
}

static void worker_heartbeat_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct worker *w = t->data;
    struct pf_tcp_server_stats st;

    (void)revents;
    worker_beat(w);
    if (w->draining) {
        worker_stats(w, &st);
        if (st.active == 0)
            ev_break(loop, EVBREAK_ALL);
    }
}

static void worker_stop_fast_cb(struct ev_loop *loop, ev_signal *s, int revents)
{
    struct worker *w = s->data;

    (void)revents;
    worker_stop_servers(w, true);
    ev_break(loop, EVBREAK_ALL);
}

static void worker_drain_deadline_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct worker *w = t->data;
    struct pf_tcp_server_stats st;

    (void)revents;
    worker_stats(w, &st);
    log_msg(LOG_NOTICE, 0, "graceful_timeout (%u s) reached, closing %u connection%s",
            w->a->config->graceful_timeout_sec, st.active, st.active == 1 ? "" : "s");
    worker_stop_servers(w, true);
    ev_break(loop, EVBREAK_ALL);
}

/* QUIT: stop accepting at once, finish open connections, then exit. */
static void worker_quit_cb(struct ev_loop *loop, ev_signal *s, int revents)
{
    struct worker *w = s->data;

    (void)revents;
    if (w->draining)
        return;
    w->draining = true;
    /* Under reuse_port our socket may be on its way out (TTOU, a reload to
     * fewer workers) and close with us: what it queued, the kernel has
     * accepted for us already, so serve that rather than have the close
     * reset it. The master steers new connections away from it first. A
     * shared socket stays open in the master; there it waits as before. */
    if (w->a->config->reuse_port)
        for (int k = 0; k < 2; k++)
            if (w->srv[k] != NULL)
                pf_tcp_server_accept_now(w->srv[k]);
    worker_stop_servers(w, false);
    if (w->http != NULL)
        http_server_drain(w->http);
    SB_STORE(w->slot->state, SLOT_DRAINING);
    setproctitle("worker process #%d (generation %u) is shutting down",
                 w->a->task_id, w->a->generation);
    /* The heartbeat keeps running: a stuck drain is still a stuck worker. */
    ev_timer_set(&w->heartbeat, 0., DRAIN_POLL_SEC);
    ev_timer_again(loop, &w->heartbeat);
    ev_timer_set(&w->drain_deadline, w->a->config->graceful_timeout_sec, 0.);
    ev_timer_start(loop, &w->drain_deadline);
}

static void worker_reopen_cb(struct ev_loop *loop, ev_signal *s, int revents)
{
    struct worker *w = s->data;
    int err = log_reopen();

    (void)loop;
    (void)revents;
    if (err < 0)
        log_msg(LOG_ERR, err, "reopening the log");
    if (w->http != NULL && (err = http_server_reopen_logs(w->http)) < 0)
        log_msg(LOG_ERR, err, "reopening the access log %s", w->a->config->http_access_log);
}

static void worker_close_cb(struct pf_iostream *s, int reason)
{
    (void)s;
    if (reason < 0 && reason != -ETIMEDOUT)
        log_msg(LOG_DEBUG, reason, "connection closed");
}

static void worker_handle_stream_cb(struct pf_tcp_server *srv, struct pf_iostream *s,
                                    const struct sockaddr *peer, socklen_t len)
{
    pf_iostream_set_close_cb(s, worker_close_cb);
    echo_handle_stream(srv, s, peer, len);
}

/* Root binds, the worker serves as `user`: a hole in a handler then gets
 * no more than that user may do. */
static int worker_drop_privileges(const struct config *c)
{
    struct passwd *pw;
    struct group *gr;
    gid_t gid;

    if (getuid() != 0 || c->user == NULL)
        return 0;
    errno = 0;
    pw = getpwnam(c->user);
    if (pw == NULL) {
        log_msg(LOG_ERR, errno ? -errno : 0, "[daemon] user = %s: no such user", c->user);
        return -1;
    }
    gid = pw->pw_gid;
    if (c->group != NULL) {
        errno = 0;
        gr = getgrnam(c->group);
        if (gr == NULL) {
            log_msg(LOG_ERR, errno ? -errno : 0, "[daemon] group = %s: no such group", c->group);
            return -1;
        }
        gid = gr->gr_gid;
    }
    if (setgroups(0, NULL) < 0 || setgid(gid) < 0 ||
        initgroups(pw->pw_name, gid) < 0 || setuid(pw->pw_uid) < 0) {
        log_msg(LOG_ERR, -errno, "switching to user %s", c->user);
        return -1;
    }
    return 0;
}

static void worker_start_watchers(struct worker *w)
{
    ev_signal_init(&w->sig_term, worker_stop_fast_cb, SIGTERM);
    ev_signal_init(&w->sig_int, worker_stop_fast_cb, SIGINT);
    ev_signal_init(&w->sig_quit, worker_quit_cb, SIGQUIT);
    ev_signal_init(&w->sig_usr1, worker_reopen_cb, SIGUSR1);
    w->sig_term.data = w->sig_int.data = w->sig_quit.data = w->sig_usr1.data = w;
    ev_signal_start(w->loop, &w->sig_term);
    ev_signal_start(w->loop, &w->sig_int);
    ev_signal_start(w->loop, &w->sig_quit);
    ev_signal_start(w->loop, &w->sig_usr1);

    double beat = w->a->config->worker_timeout_sec
        ? (double)w->a->config->worker_timeout_sec / HEARTBEATS_PER_TIMEOUT : HEARTBEAT_MAX_SEC;
    if (beat > HEARTBEAT_MAX_SEC)
        beat = HEARTBEAT_MAX_SEC;
    ev_timer_init(&w->heartbeat, worker_heartbeat_cb, beat, beat);
    w->heartbeat.data = w;
    ev_timer_start(w->loop, &w->heartbeat);
    ev_timer_init(&w->drain_deadline, worker_drain_deadline_cb, 0., 0.);
    w->drain_deadline.data = w;
}

static void worker_free_servers(struct worker *w)
{
    for (int k = 0; k < 2; k++) {
        pf_tcp_server_free(w->srv[k]);
        w->srv[k] = NULL;
    }
}

/* One pf_tcp_server for the plain listeners and one for the `ssl` ones,
 * the same handler behind both. Returns 0 or -1 (logged). */
static int worker_start_servers(struct worker *w, const struct pf_tcp_server_options *o)
{
    const struct worker_args *a = w->a;
    pf_handle_stream_cb cb = w->http ? http_handle_stream : worker_handle_stream_cb;
    int fds[a->nfds ? a->nfds : 1];

    for (int k = 0; k < 2; k++) {
        size_t n = 0;
        int err;

        for (size_t i = 0; i < a->nfds; i++)
            if ((a->fd_ssl != NULL && a->fd_ssl[i]) == (k == 1))
                fds[n++] = a->fds[i];
        if (n == 0)
            continue;
        w->srv[k] = pf_tcp_server_new(w->loop, cb, o);
        if (w->srv[k] == NULL) {
            log_msg(LOG_ERR, -ENOMEM, "creating the tcp server");
            return -1;
        }
        pf_tcp_server_set_data(w->srv[k], w->http);
        if (k == 1) {
            struct pf_tls_options tls = { .ctx = a->tls };
            char why[PF_ERRMSG_SIZE];

            if (pf_tcp_server_set_tls(w->srv[k], &tls, why) < 0) {
                log_msg(LOG_ERR, 0, "TLS: %s", why);
                return -1;
            }
        }
        err = pf_tcp_server_add_sockets(w->srv[k], fds, n);
        if (err < 0) {
            log_msg(LOG_ERR, err, "accepting on the inherited listeners");
            return -1;
        }
    }
    return 0;
}

const sigset_t *worker_signals(void)
{
    static sigset_t set;        /* the same every call; filled on the first */

    if (!sigismember(&set, SIGTERM)) {
        sigemptyset(&set);
        sigaddset(&set, SIGTERM);
        sigaddset(&set, SIGINT);
        sigaddset(&set, SIGQUIT);
        sigaddset(&set, SIGUSR1);
        sigaddset(&set, SIGHUP);
        sigaddset(&set, SIGTTIN);
        sigaddset(&set, SIGTTOU);
    }
    return &set;
}

int worker_main(const struct worker_args *a)
{
    const struct config *c = a->config;
    struct pf_tcp_server_options o = {
        .accept_batch = c->accept_batch,
        .backlog = (int)c->backlog,
        .max_connections = c->max_connections,
        .stream = { .max_buffer_size = c->max_buffer_size,
                    .idle_timeout_sec = c->idle_timeout_sec },
    };
    struct worker w = { .a = a, .loop = ev_default_loop(0), .slot = &a->sb->slots[a->slot] };
    struct worker_ready_msg msg = { .slot = a->slot, .pid = getpid() };

    /* No orphans: the master's death ends us, even if it raced the fork. */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != a->master_pid)
        return 1;
    log_set_role("worker %d", a->task_id);
    setproctitle("worker process #%d (generation %u)", a->task_id, a->generation);
    /* A terminal's HUP or job-control signals are for the master alone. */
    signal(SIGHUP, SIG_IGN);
    signal(SIGTTIN, SIG_IGN);
    signal(SIGTTOU, SIG_IGN);
    /* Files a handler opens once (root, access log) are opened as root. */
    if (c->handler == CONFIG_HANDLER_HTTP) {
        char why[512];
        w.http = http_server_new(w.loop, c, a->sb, a->slot, why, sizeof(why));
        if (w.http == NULL) {
            log_msg(LOG_ERR, 0, "%s", why);
            return 1;
        }
    }
    if (worker_drop_privileges(c) < 0) {
        http_server_free(w.http);
        return 1;
    }
    /* A change of credentials clears the parent-death signal: set it again. */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != a->master_pid) {
        http_server_free(w.http);
        return 1;
    }
    if (worker_start_servers(&w, &o) < 0) {
        worker_free_servers(&w);
        http_server_free(w.http);
        return 1;
    }
    worker_start_watchers(&w);
    /* Handlers in place: what arrived since the fork is delivered now. */
    sigprocmask(SIG_UNBLOCK, worker_signals(), NULL);
    worker_beat(&w);
    SB_STORE(w.slot->state, SLOT_ACCEPTING);
    if (write(a->ready_fd, &msg, sizeof(msg)) != sizeof(msg))
        log_msg(LOG_WARNING, -errno, "telling the master we accept");
    close(a->ready_fd);
    ev_run(w.loop, 0);

    /* Let the close callbacks of the streams closed above run and free. */
    ev_run(w.loop, EVRUN_NOWAIT);
    worker_free_servers(&w);
    http_server_free(w.http);
    ev_timer_stop(w.loop, &w.heartbeat);
    ev_timer_stop(w.loop, &w.drain_deadline);
    ev_signal_stop(w.loop, &w.sig_term);
    ev_signal_stop(w.loop, &w.sig_int);
    ev_signal_stop(w.loop, &w.sig_quit);
    ev_signal_stop(w.loop, &w.sig_usr1);
    return 0;
}

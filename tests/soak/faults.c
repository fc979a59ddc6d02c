/*
 * faults: one fault at a time into one of the daemons, and what it must
 * have done: a HUP is followed until the master took it (a worker of the
 * next generation) or refused it (its "reload failed" line), TTIN/TTOU
 * until the master logged the count, and a worker to kill or stop is first
 * frozen, so that the connections it holds are read before it loses them.
 * The report charges client failures to these records.
 */
#include "soak.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* How long a master may take to show that it acted on a signal. */
#define ACT_TIMEOUT_SEC 5.0
/* A listener added by HUP serves within this. */
#define ADDED_LISTENER_TIMEOUT_SEC 5.0
/* TTIN/TTOU stay within these counts, so that the machine is not swamped
 * and TTOU always has a worker to stop. */
#define SCALE_MIN 1
#define SCALE_MAX 4
#define HELD_MAX 4096
/* How often a stopped worker is looked at: its end is timed this closely. */
#define STOP_POLL_US 10000

static const char *const fault_names[F_NKINDS] = {
    [F_HUP] = "HUP, same config",
    [F_HUP_WORKERS] = "HUP, workers 2<->3",
    [F_HUP_LISTENER] = "HUP, 3rd listener +/-",
    [F_HUP_BROKEN] = "HUP, broken config",
    [F_TTIN] = "TTIN",
    [F_TTOU] = "TTOU",
    [F_USR1] = "USR1",
    [F_KILL] = "kill -9 of a worker",
    [F_STOP] = "SIGSTOP of a worker",
};

/* Relative frequencies. */
static const double fault_weights[F_NKINDS] = {
    [F_HUP] = 2, [F_HUP_WORKERS] = 1, [F_HUP_LISTENER] = 1, [F_HUP_BROKEN] = 1,
    [F_TTIN] = 1, [F_TTOU] = 1, [F_USR1] = 1.5, [F_KILL] = 1.5, [F_STOP] = 1,
};

/* SOAK_FAULTS names, in enum order. */
static const char *const fault_keys[F_NKINDS] = {
    "hup", "workers", "listener", "broken", "ttin", "ttou", "usr1", "kill", "stop",
};

int faults_select(const char *list)
{
    char buf[256], *save = NULL;
    bool any = false;

    for (int i = 0; i < F_NKINDS; i++)
        soak.fault_off[i] = true;
    snprintf(buf, sizeof(buf), "%s", list);
    for (char *w = strtok_r(buf, ", ", &save); w != NULL; w = strtok_r(NULL, ", ", &save)) {
        int k = 0;

        while (k < F_NKINDS && strcmp(w, fault_keys[k]) != 0)
            k++;
        if (k == F_NKINDS)
            return -1;
        soak.fault_off[k] = false;
        any = true;
    }
    return any ? 0 : -1;
}

const char *fault_name(enum fault_kind k)
{
    return fault_names[k];
}

int fault_record(const struct fault *f)
{
    int i = -1;

    pthread_mutex_lock(&soak.lock);
    if (soak.nfaults == soak.cap_faults) {
        int cap = soak.cap_faults ? 2 * soak.cap_faults : 256;
        struct fault *p = realloc(soak.faults, (size_t)cap * sizeof(*p));

        if (p == NULL) {
            pthread_mutex_unlock(&soak.lock);
            return -1;
        }
        soak.faults = p;
        soak.cap_faults = cap;
    }
    i = soak.nfaults++;
    soak.faults[i] = *f;
    pthread_mutex_unlock(&soak.lock);
    return i;
}

static void inject_hup(struct daemon *d, enum fault_kind kind, uint64_t *rng)
{
    struct fault f = { .kind = kind, .daemon = d->index, .gone_after = -1 };
    int workers = d->conf_workers, rc;
    bool third = d->conf_third, valid = true;
    char broken[64] = "", why[512] = "";
    size_t off;

    switch (kind) {
    case F_HUP_WORKERS:
        workers = workers == SOAK_WORKERS ? SOAK_WORKERS + 1 : SOAK_WORKERS;
        break;
    case F_HUP_LISTENER:
        /* The old generation may still hold a removed listener (it closes it
         * on QUIT): adding it back then is refused with EADDRINUSE, which is
         * the kernel's rule, not a fault of the reload. */
        if (!third && !port_bindable(d->third_port))
            snprintf(f.note, sizeof(f.note), "port %u still held: same config", d->third_port);
        else
            third = !third;
        break;
    case F_HUP_BROKEN:
        valid = false;
        break;
    default:
        break;
    }
    if (valid)
        daemon_write_conf(d, workers, third);
    else
        daemon_write_broken_conf(d, rng, broken, sizeof(broken));
    off = daemon_log_size(d);
    f.t = soak_now();
    kill(d->pid, SIGHUP);
    rc = daemon_await_reload(d, off, ACT_TIMEOUT_SEC, why, sizeof(why));
    if (rc == 1) {
        d->generation++;
        if (valid) {
            if (third != d->conf_third)
                snprintf(f.note, sizeof(f.note), "listener %u %s", d->third_port,
                         third ? "added" : "removed");
            else if (workers != d->conf_workers)
                snprintf(f.note, sizeof(f.note), "workers %d", workers);
            d->conf_workers = d->expected_workers = workers;
            d->conf_third = third;
        } else {
            problem("%s daemon: HUP with a broken config (%s) was accepted (a worker of "
                    "generation %u started)", d->name, broken, d->generation);
        }
    } else if (rc == 0) {
        if (valid)
            problem("%s daemon: HUP with a valid config (workers %d, %s) was refused: %s",
                    d->name, workers, third ? "3 listeners" : "2 listeners", why);
        else
            snprintf(f.note, sizeof(f.note), "%s: rejected", broken);
    } else {
        problem("%s daemon: HUP (%s): %s", d->name, fault_names[kind], why);
    }
    /* The file says what the master runs, for the next fault. */
    if (!valid || rc != 1)
        daemon_write_conf(d, d->conf_workers, d->conf_third);
    fault_record(&f);
    if (rc == 1 && valid && third && kind == F_HUP_LISTENER &&
        !probe_listener(d, d->third_port, ADDED_LISTENER_TIMEOUT_SEC, why, sizeof(why)))
        problem("%s daemon: the listener added by HUP does not serve: %s", d->name, why);
}

static void inject_scale(struct daemon *d, enum fault_kind kind)
{
    struct fault f = { .kind = kind, .daemon = d->index, .gone_after = -1 };
    bool up = kind == F_TTIN;
    int want = d->expected_workers + (up ? 1 : -1), n;
    size_t off = daemon_log_size(d);

    f.t = soak_now();
    kill(d->pid, up ? SIGTTIN : SIGTTOU);
    n = daemon_await_scale(d, off, up ? "TTIN: " : "TTOU: ", ACT_TIMEOUT_SEC);
    if (n < 0) {
        problem("%s daemon: no \"%s\" line within %.0f s of the signal", d->name,
                up ? "TTIN: N workers" : "TTOU: N workers", ACT_TIMEOUT_SEC);
    } else if (n != want) {
        problem("%s daemon: %s: the master runs %d workers, expected %d", d->name,
                fault_names[kind], n, want);
        want = n;
    }
    d->expected_workers = want;
    snprintf(f.note, sizeof(f.note), "%d workers", want);
    fault_record(&f);
}

static void inject_usr1(struct daemon *d)
{
    struct fault f = { .kind = F_USR1, .daemon = d->index, .gone_after = -1 };

    if (d->http) {
        char rotated[PATH_MAX + 4];

        /* As logrotate does: move the file, then tell the daemon. */
        snprintf(rotated, sizeof(rotated), "%s.1", d->access_log);
        if (rename(d->access_log, rotated) == 0)
            snprintf(f.note, sizeof(f.note), "access log rotated");
    }
    f.t = soak_now();
    kill(d->pid, SIGUSR1);
    fault_record(&f);
}

/* kill -9 or SIGSTOP of a random live worker of any generation. */
static void inject_kill(struct daemon *d, enum fault_kind kind, uint64_t *rng)
{
    static struct held_conn held[HELD_MAX];
    struct fault f = { .kind = kind, .daemon = d->index, .gone_after = -1 };
    struct proc_child ch[64];
    int n = proc_children(d->pid, ch, 64), m = 0, pick;
    pid_t live[64];

    for (int i = 0; i < n && i < 64; i++)
        if (ch[i].task >= 0 && ch[i].state != 'Z' && ch[i].state != 'T' && ch[i].state != 't')
            live[m++] = ch[i].pid;
    if (m == 0)
        return;                 /* all stopped or dead right now: another time */
    pick = (int)(rng_next(rng) % (unsigned)m);
    f.victim = live[pick];
    /* Frozen first: from here on it accepts nothing, so that what it holds
     * now is all that the fault may cost. */
    f.t = soak_now();
    if (kill(f.victim, SIGSTOP) < 0 || !proc_wait_stopped(f.victim, 1.0))
        return;                 /* it died on its own meanwhile */
    n = proc_held_connections(f.victim, held, HELD_MAX);
    if (n < 0) {
        problem("reading the connections of worker %d: %s", (int)f.victim, strerror(-n));
        n = 0;
    }
    f.nheld = n;
    f.held = n > 0 ? malloc((size_t)n * sizeof(*held)) : NULL;
    if (f.held != NULL)
        memcpy(f.held, held, (size_t)n * sizeof(*held));
    else
        f.nheld = 0;
    if (kind == F_KILL)
        kill(f.victim, SIGKILL);
    snprintf(f.note, sizeof(f.note), "pid %d, %d connection%s", (int)f.victim, n,
             n == 1 ? "" : "s");
    fault_record(&f);
}

void fault_inject_random(uint64_t *rng)
{
    struct daemon *d = &soak.d[rng_next(rng) % SOAK_MAX_DAEMONS];
    double total = 0, x, t;
    int before;
    enum fault_kind k = F_HUP;

    for (int i = 0; i < F_NKINDS; i++)
        total += soak.fault_off[i] ? 0 : fault_weights[i];
    x = rng_uniform(rng, 0, total);
    for (int i = 0; i < F_NKINDS; i++) {
        double w = soak.fault_off[i] ? 0 : fault_weights[i];

        if (x < w) {
            k = (enum fault_kind)i;
            break;
        }
        x -= w;
    }
    t = soak_now();
    before = soak.nfaults;
    if (k == F_TTIN && d->expected_workers >= SCALE_MAX)
        k = F_TTOU;
    else if (k == F_TTOU && d->expected_workers <= SCALE_MIN)
        k = F_TTIN;
    switch (k) {
    case F_HUP:
    case F_HUP_WORKERS:
    case F_HUP_LISTENER:
    case F_HUP_BROKEN:
        inject_hup(d, k, rng);
        break;
    case F_TTIN:
    case F_TTOU:
        inject_scale(d, k);
        break;
    case F_USR1:
        inject_usr1(d);
        break;
    case F_KILL:
    case F_STOP:
        inject_kill(d, k, rng);
        break;
    case F_NKINDS:
        break;
    }
    if (soak.trace && soak.nfaults > before) {
        const struct fault *f = &soak.faults[before];

        fprintf(stderr, "soak: t=%8.3f %s daemon: %s%s%s%s (%.0f ms)\n", f->t - soak.t0, d->name,
                fault_names[f->kind], f->note[0] ? " (" : "", f->note, f->note[0] ? ")" : "",
                (soak_now() - t) * 1000);
    }
}

void faults_check_stopped(bool at_end)
{
    for (;;) {
        bool pending = false;

        pthread_mutex_lock(&soak.lock);
        for (int i = 0; i < soak.nfaults; i++) {
            struct fault *f = &soak.faults[i];
            double now = soak_now();
            char s;

            if (f->kind != F_STOP || f->gone_after != -1)
                continue;
            s = proc_state(f->victim);
            if (s == 0 || s == 'Z') {
                f->gone_after = now - f->t;
            } else if (now - f->t > SOAK_STOP_REPLACE_SEC) {
                problem("%s daemon: worker %d, stopped %.1f s ago, still exists (state %c): "
                        "worker_timeout = %d did not replace it", soak.d[f->daemon].name,
                        (int)f->victim, now - f->t, s, SOAK_WORKER_TIMEOUT_SEC);
                f->gone_after = -2;
            } else {
                pending = true;
            }
        }
        pthread_mutex_unlock(&soak.lock);
        if (!at_end || !pending)
            return;
        usleep(STOP_POLL_US);
    }
}

/* Times the stopped workers' ends while the main thread injects. */
static void *stop_monitor_main(void *arg)
{
    (void)arg;
    while (!atomic_load(&soak.stop_monitor)) {
        faults_check_stopped(false);
        usleep(STOP_POLL_US);
    }
    return NULL;
}

void faults_monitor_start(void)
{
    atomic_store(&soak.stop_monitor, false);
    if (pthread_create(&soak.monitor, NULL, stop_monitor_main, NULL) != 0) {
        fprintf(stderr, "soak: pthread_create failed\n");
        exit(2);
    }
}

void faults_monitor_stop(void)
{
    atomic_store(&soak.stop_monitor, true);
    pthread_join(soak.monitor, NULL);
}

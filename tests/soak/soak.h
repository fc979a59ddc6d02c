/*
 * soak: the chaos soak's shared declarations. soak.c runs the whole (setup,
 * the fault loop, the end checks, the report); daemons.c starts and watches
 * the two preforkd masters; clients.c keeps the load running; faults.c
 * injects one fault at a time; procs.c reads /proc and the kernel's socket
 * table. Everything is loopback, and every process started is stopped by pid
 * or by its process group.
 */
#ifndef SOAK_H
#define SOAK_H

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* The config every daemon runs with (issue #9): a worker that misses its
 * heartbeat this long is killed; a drain lasts at most this long. */
#define SOAK_WORKERS 2
#define SOAK_WORKER_TIMEOUT_SEC 2
#define SOAK_GRACEFUL_TIMEOUT_SEC 5
/* A client waits this long for any progress before it calls a connection
 * dead: more than worker_timeout, so that a connection stalled by a stopped
 * worker is told apart from a hung one. */
#define SOAK_IO_TIMEOUT_SEC (2 * SOAK_WORKER_TIMEOUT_SEC + 2)
/* A stopped worker must be gone this long after SIGSTOP: worker_timeout,
 * the master's 0.5 s check period, one missed beat, and slack for a loaded
 * machine. */
#define SOAK_STOP_REPLACE_SEC (SOAK_WORKER_TIMEOUT_SEC + 3.0)
/* An echo session ends well within graceful_timeout, so that a drain never
 * has to cut one. */
#define SOAK_ECHO_SESSION_MAX_SEC 2.0
/* The files the http daemon serves. */
#define SOAK_SMALL_LEN 600
#define SOAK_BIG_LEN 65536
/* An operation slower than this is reported (not a failure). */
#define SOAK_SLOW_OP_SEC 1.0

enum client_kind {
    C_HTTP_KA,          /* keep-alive, requests back to back */
    C_HTTP_KA_PACED,    /* keep-alive, a pause of up to KA_PACE_MAX_SEC after each */
    C_HTTP_NEW,         /* Connection: close, one request per connection */
    C_ECHO_KA,          /* sessions of exchanges back to back */
    C_ECHO_NEW,         /* one exchange per connection */
    C_NKINDS
};

enum fault_kind {
    F_HUP,              /* same config */
    F_HUP_WORKERS,      /* workers 2 <-> 3 */
    F_HUP_LISTENER,     /* a third listener added, or removed */
    F_HUP_BROKEN,       /* an invalid file, which must be rejected */
    F_TTIN,
    F_TTOU,
    F_USR1,             /* with the access log renamed first, as logrotate does */
    F_KILL,             /* kill -9 of a random worker */
    F_STOP,             /* SIGSTOP of a random worker, never continued */
    F_NKINDS
};

/* One connection a worker held when it was killed or stopped. */
struct held_conn {
    unsigned short server_port;
    unsigned short client_port;
};

struct fault {
    enum fault_kind kind;
    int daemon;                 /* index in soak.d[] */
    double t;                   /* when it hit (monotonic) */
    pid_t victim;               /* F_KILL, F_STOP */
    int nheld;
    struct held_conn *held;     /* the victim's connections at t */
    double gone_after;          /* F_STOP: seconds until the victim was gone; <0: not seen */
    char note[160];
};

/* One client operation that failed. */
struct failure {
    enum client_kind client;
    int daemon;
    double t_open;              /* when its connection was started */
    double t_fail;
    unsigned short server_port;
    unsigned short client_port; /* 0: connect failed before one was bound */
    bool refused;               /* ECONNREFUSED */
    bool timeout;               /* no progress for SOAK_IO_TIMEOUT_SEC */
    char what[320];
    /* Filled in by the report. */
    int fault;                  /* the fault it is charged to; -1: none yet */
    bool expected;              /* on a connection the victim of that fault held */
};

struct daemon {
    const char *name;           /* "http", "echo" */
    bool http;
    int index;
    pid_t pid;                  /* master; its process group too */
    bool exited;
    int status;
    unsigned port;              /* its listener, always configured */
    unsigned third_port;        /* the listener added and removed */
    char conf[PATH_MAX], log[PATH_MAX], access_log[PATH_MAX];
    /* The config the master runs (not what the file says in between). */
    int conf_workers;
    bool conf_third;
    int expected_workers;       /* conf_workers moved by TTIN/TTOU */
    unsigned generation;
    size_t log_scanned;         /* log bytes already searched for confirmations */
    int base_fds, end_fds;
    long base_rss_kb, end_rss_kb;
    /* Restarts the master announced ("restarting in N ms") and we wait for. */
    size_t restarts_scanned;    /* log bytes already read for them */
    int npending;
    struct pending_restart {
        int task;
        pid_t dead;
        unsigned generation;    /* ours when we read the line */
        double deadline;
        char line[240];
    } pending[64];
    int restarts_seen, restarts_checked;
};

struct client_stats {
    unsigned long ops;          /* requests answered, echoes checked */
    unsigned long conns;        /* connections opened */
    unsigned long server_closes;/* Connection: close answers on keep-alive (reconnects) */
    unsigned long long bytes;
    unsigned long slow;         /* ops over SOAK_SLOW_OP_SEC */
    double max_latency;
};

struct client {
    enum client_kind kind;
    struct daemon *d;
    int index;
    uint64_t rng;
    pthread_t thread;
    struct client_stats st;     /* this thread's; read after join */
};

#define SOAK_MAX_DAEMONS 2
#define SOAK_MAX_CLIENTS 32

struct soak {
    const char *preforkd;
    double seconds;
    uint64_t seed;
    long rss_margin_kb;
    double gap_min, gap_max;    /* seconds between faults */
    bool fault_off[F_NKINDS];   /* left out by SOAK_FAULTS */
    bool trace;                 /* SOAK_TRACE=1: each fault on stderr as it happens */
    char dir[64];               /* /tmp/preforkd-soak-XXXXXX */
    char www[PATH_MAX];
    unsigned char small[SOAK_SMALL_LEN], big[SOAK_BIG_LEN];
    struct daemon d[SOAK_MAX_DAEMONS];
    int nclients;
    struct client clients[SOAK_MAX_CLIENTS];
    atomic_bool stop_clients;
    double t0;

    pthread_mutex_t lock;       /* faults and failures */
    pthread_mutex_t msg_lock;   /* problems and notes (never held while taking lock) */
    pthread_t monitor;          /* times the ends of stopped workers */
    atomic_bool stop_monitor;
    struct fault *faults;
    int nfaults, cap_faults;
    struct failure *failures;
    int nfailures, cap_failures;

    /* Problems that are not one client's failure (a check that did not hold). */
    char problems[64][400];
    int nproblems;
    /* Things worth a look that fail nothing. */
    char notes[64][400];
    int nnotes;
};

extern struct soak soak;

/* procs.c */
double soak_now(void);
uint64_t rng_next(uint64_t *s);
double rng_uniform(uint64_t *s, double lo, double hi);
void fill_pattern(unsigned char *buf, size_t len, uint64_t seed);
struct proc_child {
    pid_t pid;
    char state;                 /* R S D T Z ... */
    int task;                   /* -1: not titled as a worker */
    unsigned generation;
    bool shutting_down;
    char title[200];
};
/* The children of parent (zombies included), up to max; returns the count. */
int proc_children(pid_t parent, struct proc_child *out, int max);
/* A process's state letter; 0 if it does not exist. */
char proc_state(pid_t pid);
/* The TCP connections pid holds (not listening sockets); -errno on failure. */
int proc_held_connections(pid_t pid, struct held_conn *out, int max);
/* Waits until pid is stopped (state T); false after timeout_sec. */
bool proc_wait_stopped(pid_t pid, double timeout_sec);
bool write_file(const char *path, const void *data, size_t len);
/* The file from offset on, NUL-terminated, malloc'ed (NULL if unreadable). */
char *read_file_from(const char *path, size_t offset, size_t *len);
/* True if a listening socket could bind 127.0.0.1:port now. */
bool port_bindable(unsigned port);
unsigned free_port(void);
void rmtree(const char *path);

/* daemons.c */
void daemon_write_conf(struct daemon *d, int workers, bool third);
void daemon_write_broken_conf(struct daemon *d, uint64_t *rng, char *what, size_t len);
bool daemon_start(struct daemon *d);
/* Polls until the master has spawned a worker of generation d->generation + 1
 * (true: the reload took) or logged that the reload failed (false, reason
 * in why); -1 in *verdict if neither happened within timeout_sec. */
int daemon_await_reload(struct daemon *d, size_t log_offset, double timeout_sec,
                        char *why, size_t len);
/* Waits for the master's "TTIN: N workers" / "TTOU: N worker(s)" line after
 * log_offset; returns N, or -1. */
int daemon_await_scale(struct daemon *d, size_t log_offset, const char *word,
                       double timeout_sec);
size_t daemon_log_size(const struct daemon *d);
bool daemon_alive(struct daemon *d);
/* True once the master's children are exactly the expected workers of the
 * current generation; else describes them in why. */
bool daemon_settled(struct daemon *d, char *why, size_t len);
bool daemon_wait_settled(struct daemon *d, double timeout_sec, char *why, size_t len);
/* Reads the master's new "restarting in N ms" lines and checks that each
 * such task got its worker back by N ms + slack (unless a reload or a TTOU
 * made the question moot). */
void daemon_watch_restarts(struct daemon *d);
/* Sends QUIT and waits for a clean end; false with why if it was not. */
bool daemon_quit(struct daemon *d, double timeout_sec, char *why, size_t len);
void daemon_kill_group(struct daemon *d);

/* clients.c */
void clients_start(void);
void clients_stop(void);
void record_failure(const struct failure *f);
/* One probe of a listener: a GET (http) or an echo on a new connection. */
bool probe_listener(const struct daemon *d, unsigned port, double timeout_sec,
                    char *why, size_t len);

/* faults.c */
/* Injects one random fault into a random daemon; returns its kind. */
void fault_inject_random(uint64_t *rng);
/* Checks that every stopped worker is gone in time; at_end: waits for all. */
void faults_check_stopped(bool at_end);
/* A thread that runs faults_check_stopped() every 10 ms. */
void faults_monitor_start(void);
void faults_monitor_stop(void);
int fault_record(const struct fault *f);
/* SOAK_FAULTS: a comma-separated subset of hup, workers, listener, broken,
 * ttin, ttou, usr1, kill, stop; -1 if a name is unknown. */
int faults_select(const char *list);
const char *fault_name(enum fault_kind k);

/* soak.c */
void problem(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif

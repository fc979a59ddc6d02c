/*
 * config: reads preforkd's INI file (with inih) into a validated struct
 * config. Every key of DESIGN.md's config block, its default and its range
 * is known here and nowhere else; using the values (binding, forking,
 * logging, dropping privileges) is left to the master and the workers.
 */
#ifndef PREFORKD_CONFIG_H
#define PREFORKD_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

enum listen_kind { LISTEN_TCP, LISTEN_UNIX };

/* One `listen` value. Every string is malloc'd and owned by the struct. */
struct listen_spec {
    enum listen_kind kind;
    char *host;         /* TCP: NULL = every interface; else an address (IPv6 without
                         * brackets) or a host name, for getaddrinfo. UNIX: NULL */
    unsigned port;      /* TCP: 0..65535, 0 = the kernel picks one. UNIX: 0 */
    char *path;         /* UNIX: the socket path, never empty. TCP: NULL */
    bool ssl;           /* followed by ` ssl` */
    char *text;         /* the value as written, trimmed (with " ssl" if given): for
                         * messages and for matching listeners across reloads */
    int line;           /* line in the config file; 0 if not from a file */
};

/*
 * Parses one listen value: PORT | ADDR:PORT | [V6ADDR]:PORT | HOST:PORT |
 * unix:/path, optionally followed by whitespace and `ssl`. Returns 0, or -1
 * with why (size whylen) set to a short reason ("port out of range
 * 0..65535") and out zeroed. Free a parsed out with listen_spec_free().
 */
int  listen_spec_parse(const char *value, struct listen_spec *out, char *why, size_t whylen);
/* Frees the strings of ls and zeroes it; ls itself is the caller's. */
void listen_spec_free(struct listen_spec *ls);

enum config_handler { CONFIG_HANDLER_HTTP, CONFIG_HANDLER_ECHO };

/* Minimum TLS version. The values are the protocol's version numbers, equal
 * to OpenSSL's TLS1_2_VERSION and TLS1_3_VERSION, so they can be passed to
 * SSL_CTX_set_min_proto_version() as they are. */
enum config_tls_version { CONFIG_TLS_1_2 = 0x0303, CONFIG_TLS_1_3 = 0x0304 };

/*
 * A loaded config; every field is read-only for its users. Strings are
 * malloc'd and owned by the struct; a key documented as "empty: ..." is NULL
 * when empty. Ranges are in config.c's key table and conf/preforkd.conf.
 */
struct config {
    char *path;                     /* the file it was loaded from */

    /* [daemon] */
    bool workers_auto;              /* workers = auto: see config_workers() */
    int workers;                    /* 1..1024; 0 when workers_auto */
    char *pidfile;                  /* NULL: none */
    char *user;                     /* NULL: keep the user we started as */
    char *group;                    /* NULL: the user's primary group (or keep) */
    char *log;                      /* "stderr", "syslog" or a file path; never NULL */
    int log_level;                  /* LOG_ERR..LOG_DEBUG (see log.h) */
    unsigned graceful_timeout_sec;
    unsigned worker_timeout_sec;    /* 0: no heartbeat check */
    unsigned max_restarts;          /* unexpected deaths tolerated per restart_window */
    unsigned restart_window_sec;

    /* [server] */
    struct listen_spec *listens;    /* n_listens >= 1, in file order */
    size_t n_listens;
    unsigned backlog;
    bool reuse_port;
    unsigned accept_batch;          /* connections per wakeup; 0: backlog */
    unsigned max_connections;       /* per worker */
    unsigned idle_timeout_sec;      /* 0: none */
    size_t max_buffer_size;         /* bytes */
    enum config_handler handler;

    /* [http] */
    char *http_root;                /* never NULL */
    char *http_index;               /* never NULL */
    char *http_status_path;         /* NULL: disabled */
    unsigned http_header_timeout_sec;   /* 0: none */
    char *http_access_log;          /* NULL: off */

    /* [tls] */
    char *tls_certificate;          /* NULL: none (then no listener may be `ssl`) */
    char *tls_key;                  /* NULL: none; set if and only if tls_certificate is */
    enum config_tls_version tls_min_version;
    char *tls_ciphers;              /* NULL: OpenSSL's defaults */
    bool tls_session_tickets;
};

/*
 * Loads and validates path into *out. Returns 0, or -1 with errmsg (size
 * errlen) set to one line that names the file, and where it applies the
 * line, section, key and value:
 *   preforkd.conf:14: [server] backlog = "12x": not a number
 *   preforkd.conf:3: [server] bogus: unknown key
 *   preforkd.conf: No such file or directory
 * On failure *out is zeroed and owns nothing. The file is read once; out
 * does not refer to it afterwards. Free a loaded config with config_free().
 */
int  config_load(const char *path, struct config *out, char *errmsg, size_t errlen);
/* Frees everything c owns and zeroes it; safe on a zeroed config. */
void config_free(struct config *c);
/* The number of workers to run: c->workers, or for `auto` the number of
 * CPUs this process may run on (pf_cpu_count(), capped at 1024). */
int  config_workers(const struct config *c);

#endif

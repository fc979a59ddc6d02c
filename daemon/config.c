/*
 * config: INI in, validated struct config out, nothing else. inih splits
 * the file into section/key/value; one table below knows every key, its
 * parser, range and default; this file turns each value into a field or
 * into one error line naming file, line, section, key and value. Opening
 * logs, binding listeners and resolving host names are left to the caller.
 *
 * Our reader feeds inih line by line so that we know the line number (the
 * Debian build of inih has no INI_HANDLER_LINENO) and see section headers
 * (its handler never hears of an empty section). The reader also strips
 * leading whitespace: an indented line is then an ordinary line instead of
 * a configparser-style continuation that would silently append to the
 * previous key.
 */
#define _GNU_SOURCE     /* asprintf */
#include "config.h"

#include "log.h"
#include "process.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <ini.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/un.h>
#include <unistd.h>

/* inih's default of 200 bytes is shorter than a typical TLS cipher list. */
#define CONFIG_LINE_MAX 4096
#define CONFIG_DEFAULT_LISTEN "127.0.0.1:8080"
#define CONFIG_WORKERS_MAX 1024
#define CONFIG_TIMEOUT_MAX_SEC 86400            /* a day */
#define CONFIG_BACKLOG_MAX 65535                /* the kernel caps it at somaxconn anyway */
#define CONFIG_CONNECTIONS_MAX 1048576          /* Linux's default fs.nr_open */
#define CONFIG_RESTARTS_MAX 1000000
#define CONFIG_BUFFER_MAX (SIZE_MAX < (1ULL << 40) ? SIZE_MAX : (1ULL << 40))  /* 1 TiB */
#define CONFIG_PORT_MAX 65535
#define UNIX_PATH_SIZE sizeof(((struct sockaddr_un *)NULL)->sun_path)

struct config_key;
/* Stores value into c's field for k; 0, or -1 with why set. */
typedef int (*config_parse_fn)(struct config *c, const struct config_key *k, const char *value,
                               char *why, size_t whylen);

struct config_choice {
    const char *name;
    int value;
};

/* config_key.flags. KEY_FILE_PATH: a relative value is taken relative to
 * the config file's directory, so that neither the daemon's chdir("/") nor
 * the directory it was started from changes what a config means. */
enum { KEY_REQUIRED = 1, KEY_URL_PATH = 2, KEY_SIZE_T = 4, KEY_FILE_PATH = 8 };

struct config_key {
    const char *section, *name;
    config_parse_fn parse;
    size_t offset;                          /* of the field in struct config */
    unsigned long long min, max;            /* numbers */
    const struct config_choice *choices;    /* choice keys, NULL-terminated */
    unsigned flags;                         /* KEY_*: strings, and size_t numbers */
    const char *def;                        /* parsed like a file value; NULL: none */
};

static void *config_field(struct config *c, const struct config_key *k)
{
    return (char *)c + k->offset;
}

/* Numbers are plain decimal: no sign, no hex, no trailing unit or junk. */
static int config_parse_number(const struct config_key *k, const char *value,
                               unsigned long long *out, char *why, size_t whylen)
{
    const char *digits = value[0] == '-' ? value + 1 : value;
    unsigned long long n;
    char *end;

    if (!isdigit((unsigned char)digits[0]))
        return snprintf(why, whylen, "not a number"), -1;
    errno = 0;
    n = strtoull(digits, &end, 10);
    if (*end != '\0')
        return snprintf(why, whylen, "not a number"), -1;
    if ((digits != value && n != 0) || errno == ERANGE || n < k->min || n > k->max)
        return snprintf(why, whylen, "out of range %llu..%llu", k->min, k->max), -1;
    *out = n;
    return 0;
}

static int config_parse_uint(struct config *c, const struct config_key *k, const char *value,
                             char *why, size_t whylen)
{
    unsigned long long n;

    if (config_parse_number(k, value, &n, why, whylen) < 0)
        return -1;
    if (k->flags & KEY_SIZE_T)
        *(size_t *)config_field(c, k) = (size_t)n;
    else
        *(unsigned *)config_field(c, k) = (unsigned)n;
    return 0;
}

static int config_parse_bool(struct config *c, const struct config_key *k, const char *value,
                             char *why, size_t whylen)
{
    static const char *const yes[] = { "yes", "true", "on", "1" }, *const no[] = { "no", "false", "off", "0" };

    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        if (strcasecmp(value, yes[i]) == 0 || strcasecmp(value, no[i]) == 0) {
            *(bool *)config_field(c, k) = strcasecmp(value, yes[i]) == 0;
            return 0;
        }
    }
    return snprintf(why, whylen, "expected yes or no"), -1;
}

static int config_parse_string(struct config *c, const struct config_key *k, const char *value,
                               char *why, size_t whylen)
{
    char **field = config_field(c, k), *copy = NULL;

    if (value[0] == '\0' && (k->flags & KEY_REQUIRED))
        return snprintf(why, whylen, "must not be empty"), -1;
    if (value[0] != '\0' && (k->flags & KEY_URL_PATH) && value[0] != '/')
        return snprintf(why, whylen, "must start with '/'"), -1;
    if (value[0] != '\0' && (copy = strdup(value)) == NULL)
        return snprintf(why, whylen, "%s", strerror(ENOMEM)), -1;
    free(*field);
    *field = copy;
    return 0;
}

static int config_parse_choice(struct config *c, const struct config_key *k, const char *value,
                               char *why, size_t whylen)
{
    size_t len = 0;

    for (const struct config_choice *ch = k->choices; ch->name != NULL; ch++) {
        if (strcmp(value, ch->name) == 0) {
            *(int *)config_field(c, k) = ch->value;
            return 0;
        }
    }
    len = (size_t)snprintf(why, whylen, "expected");
    for (const struct config_choice *ch = k->choices; ch->name != NULL && len < whylen; ch++)
        len += (size_t)snprintf(why + len, whylen - len, "%s %s", ch == k->choices ? "" : " |",
                                ch->name);
    return -1;
}

static int config_parse_workers(struct config *c, const struct config_key *k, const char *value,
                                char *why, size_t whylen)
{
    unsigned long long n;

    if (strcmp(value, "auto") == 0) {
        c->workers_auto = true;
        c->workers = 0;
        return 0;
    }
    if (config_parse_number(k, value, &n, why, whylen) < 0) {
        if (strcmp(why, "not a number") == 0)
            snprintf(why, whylen, "expected a number or auto");
        return -1;
    }
    c->workers_auto = false;
    c->workers = (int)n;
    return 0;
}

static int config_parse_log_level(struct config *c, const struct config_key *k, const char *value,
                                  char *why, size_t whylen)
{
    int level = log_level_parse(value);

    (void)k;
    if (level < 0)
        return snprintf(why, whylen, "expected debug | info | notice | warning | error"), -1;
    c->log_level = level;
    return 0;
}

static int config_parse_listen(struct config *c, const struct config_key *k, const char *value,
                               char *why, size_t whylen)
{
    struct listen_spec ls, *grown;

    (void)k;
    if (listen_spec_parse(value, &ls, why, whylen) < 0)
        return -1;
    grown = realloc(c->listens, (c->n_listens + 1) * sizeof(*grown));
    if (grown == NULL) {
        listen_spec_free(&ls);
        return snprintf(why, whylen, "%s", strerror(ENOMEM)), -1;
    }
    grown[c->n_listens++] = ls;
    c->listens = grown;
    return 0;
}

static const struct config_choice config_handlers[] = {
    { "http", CONFIG_HANDLER_HTTP }, { "echo", CONFIG_HANDLER_ECHO }, { NULL, 0 },
};
static const struct config_choice config_tls_versions[] = {
    { "TLSv1.2", CONFIG_TLS_1_2 }, { "TLSv1.3", CONFIG_TLS_1_3 }, { NULL, 0 },
};
/* config_parse_choice stores an int. */
_Static_assert(sizeof(enum config_handler) == sizeof(int), "enum size");
_Static_assert(sizeof(enum config_tls_version) == sizeof(int), "enum size");

#define F(field) offsetof(struct config, field)
#define UINT(sec, name, field, lo, hi, def) \
    { sec, name, config_parse_uint, F(field), lo, hi, NULL, 0, def }
#define STRING(sec, name, field, flags, def) \
    { sec, name, config_parse_string, F(field), 0, 0, NULL, flags, def }
#define CHOICE(sec, name, field, choices, def) \
    { sec, name, config_parse_choice, F(field), 0, 0, choices, 0, def }
#define BOOL(sec, name, field, def) \
    { sec, name, config_parse_bool, F(field), 0, 0, NULL, 0, def }

/* DESIGN.md's config block; conf/preforkd.conf documents the same. */
static const struct config_key config_keys[] = {
    { "daemon", "workers", config_parse_workers, 0, 1, CONFIG_WORKERS_MAX, NULL, 0, "auto" },
    STRING("daemon", "pidfile", pidfile, KEY_FILE_PATH, ""),
    STRING("daemon", "user", user, 0, ""),
    STRING("daemon", "group", group, 0, ""),
    STRING("daemon", "log", log, KEY_REQUIRED | KEY_FILE_PATH, "stderr"),
    { "daemon", "log_level", config_parse_log_level, 0, 0, 0, NULL, 0, "info" },
    UINT("daemon", "graceful_timeout", graceful_timeout_sec, 0, CONFIG_TIMEOUT_MAX_SEC, "30"),
    UINT("daemon", "worker_timeout", worker_timeout_sec, 0, CONFIG_TIMEOUT_MAX_SEC, "30"),
    UINT("daemon", "max_restarts", max_restarts, 0, CONFIG_RESTARTS_MAX, "100"),
    UINT("daemon", "restart_window", restart_window_sec, 1, CONFIG_TIMEOUT_MAX_SEC, "60"),

    /* No default here: without any listen, config_load adds CONFIG_DEFAULT_LISTEN. */
    { "server", "listen", config_parse_listen, 0, 0, 0, NULL, 0, NULL },
    UINT("server", "backlog", backlog, 1, CONFIG_BACKLOG_MAX, "128"),
    BOOL("server", "reuse_port", reuse_port, "no"),
    UINT("server", "accept_batch", accept_batch, 0, CONFIG_BACKLOG_MAX, "0"),
    UINT("server", "max_connections", max_connections, 1, CONFIG_CONNECTIONS_MAX, "10000"),
    UINT("server", "idle_timeout", idle_timeout_sec, 0, CONFIG_TIMEOUT_MAX_SEC, "60"),
    { "server", "max_buffer_size", config_parse_uint, F(max_buffer_size), 1, CONFIG_BUFFER_MAX,
      NULL, KEY_SIZE_T, "104857600" },
    CHOICE("server", "handler", handler, config_handlers, "http"),

    STRING("http", "root", http_root, KEY_REQUIRED | KEY_FILE_PATH, "/var/www/preforkd"),
    STRING("http", "index", http_index, KEY_REQUIRED, "index.html"),
    STRING("http", "status_path", http_status_path, KEY_URL_PATH, "/status"),
    UINT("http", "header_timeout", http_header_timeout_sec, 0, CONFIG_TIMEOUT_MAX_SEC, "10"),
    STRING("http", "access_log", http_access_log, KEY_FILE_PATH, ""),

    STRING("tls", "certificate", tls_certificate, KEY_FILE_PATH, ""),
    STRING("tls", "key", tls_key, KEY_FILE_PATH, ""),
    CHOICE("tls", "protocols", tls_min_version, config_tls_versions, "TLSv1.2"),
    STRING("tls", "ciphers", tls_ciphers, 0, ""),
    BOOL("tls", "session_tickets", tls_session_tickets, "yes"),
};
#define CONFIG_N_KEYS (sizeof(config_keys) / sizeof(config_keys[0]))

/* One config_load call. */
struct config_parse {
    struct config c;            /* being filled; moved to *out on success */
    const char *path;
    FILE *file;
    char *line;                 /* getline's buffer */
    size_t line_size;
    int lineno;
    int read_errno;
    bool failed;                /* the first error is in errmsg; stop reading */
    int seen_line[CONFIG_N_KEYS];   /* where each key was first set; 0: not yet */
    char *errmsg;
    size_t errlen;
};

/* Parses "NNN" of a port: 0..65535. */
static int listen_parse_port(const char *s, unsigned *port, char *why, size_t whylen)
{
    unsigned long n;
    char *end;

    if (s[0] == '\0')
        return snprintf(why, whylen, "missing port"), -1;
    if (!isdigit((unsigned char)s[0]))
        return snprintf(why, whylen, "port is not a number"), -1;
    errno = 0;
    n = strtoul(s, &end, 10);
    if (*end != '\0')
        return snprintf(why, whylen, "port is not a number"), -1;
    if (errno == ERANGE || n > CONFIG_PORT_MAX)
        return snprintf(why, whylen, "port out of range 0..%d", CONFIG_PORT_MAX), -1;
    *port = (unsigned)n;
    return 0;
}

/* Splits addr (NUL-terminated, no whitespace) into host and port. */
static int listen_parse_tcp(char *addr, struct listen_spec *out, char *why, size_t whylen)
{
    char *host = addr, *colon, *scope;
    struct in6_addr in6;

    if (addr[0] == '[') {
        host = addr + 1;
        colon = strchr(host, ']');
        if (colon == NULL)
            return snprintf(why, whylen, "missing ']'"), -1;
        *colon++ = '\0';
        /* Allow a zone id (fe80::1%eth0), which inet_pton does not know. */
        scope = strchr(host, '%');
        if (scope != NULL)
            *scope = '\0';
        if (inet_pton(AF_INET6, host, &in6) != 1)
            return snprintf(why, whylen, "not an IPv6 address in []"), -1;
        if (scope != NULL)
            *scope = '%';
        if (*colon != ':')
            return snprintf(why, whylen, "missing ':PORT' after ']'"), -1;
    } else {
        colon = strrchr(addr, ':');
        if (colon == NULL && !isdigit((unsigned char)addr[0]))
            return snprintf(why, whylen, "missing port (expected HOST:PORT or PORT)"), -1;
        if (colon == NULL)          /* a lone port: every interface, host stays NULL */
            return listen_parse_port(addr, &out->port, why, whylen);
        if (memchr(addr, ':', (size_t)(colon - addr)) != NULL)
            return snprintf(why, whylen, "an IPv6 address needs brackets: [ADDR]:PORT"), -1;
        if (colon == addr)
            return snprintf(why, whylen, "missing host before ':'"), -1;
        *colon = '\0';
        for (const char *p = host; *p != '\0'; p++)
            if (!isalnum((unsigned char)*p) && *p != '.' && *p != '-' && *p != '_')
                return snprintf(why, whylen, "invalid host name"), -1;
    }
    if (listen_parse_port(colon + 1, &out->port, why, whylen) < 0)
        return -1;
    if ((out->host = strdup(host)) == NULL)
        return snprintf(why, whylen, "%s", strerror(ENOMEM)), -1;
    return 0;
}

int listen_spec_parse(const char *value, struct listen_spec *out, char *why, size_t whylen)
{
    const char *start = value, *end, *addr_end, *rest;
    char *addr;
    int ret = -1;

    memset(out, 0, sizeof(*out));
    while (isspace((unsigned char)*start))
        start++;
    end = start + strlen(start);
    while (end > start && isspace((unsigned char)end[-1]))
        end--;
    if (start == end)
        return snprintf(why, whylen, "empty value"), -1;
    /* The address is the first word; the only word allowed after it is ssl. */
    for (addr_end = start; addr_end < end && !isspace((unsigned char)*addr_end); addr_end++)
        ;
    for (rest = addr_end; rest < end && isspace((unsigned char)*rest); rest++)
        ;
    if (rest < end && !(end - rest == 3 && memcmp(rest, "ssl", 3) == 0))
        return snprintf(why, whylen, "unexpected \"%.*s\" after the address (only ssl may follow)",
                        (int)(end - rest), rest), -1;
    out->ssl = rest < end;

    addr = strndup(start, (size_t)(addr_end - start));
    out->text = strndup(start, (size_t)(end - start));
    if (addr == NULL || out->text == NULL) {
        snprintf(why, whylen, "%s", strerror(ENOMEM));
    } else if (strncmp(addr, "unix:", 5) == 0) {
        out->kind = LISTEN_UNIX;
        if (addr[5] == '\0')
            snprintf(why, whylen, "empty unix socket path");
        else if (strlen(addr + 5) >= UNIX_PATH_SIZE)
            snprintf(why, whylen, "unix socket path longer than %zu bytes", UNIX_PATH_SIZE - 1);
        else if ((out->path = strdup(addr + 5)) == NULL)
            snprintf(why, whylen, "%s", strerror(ENOMEM));
        else
            ret = 0;
    } else {
        out->kind = LISTEN_TCP;
        ret = listen_parse_tcp(addr, out, why, whylen);
    }
    free(addr);
    if (ret < 0)
        listen_spec_free(out);
    return ret;
}

void listen_spec_free(struct listen_spec *ls)
{
    free(ls->host);
    free(ls->path);
    free(ls->text);
    memset(ls, 0, sizeof(*ls));
}

/* Records the first error only: "FILE:LINE: <message>" (no LINE if 0). */
static void config_fail(struct config_parse *p, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void config_fail(struct config_parse *p, int line, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (p->failed)
        return;
    p->failed = true;
    n = line > 0 ? snprintf(p->errmsg, p->errlen, "%s:%d: ", p->path, line)
                 : snprintf(p->errmsg, p->errlen, "%s: ", p->path);
    if (n < 0 || (size_t)n >= p->errlen)
        return;
    va_start(ap, fmt);
    vsnprintf(p->errmsg + n, p->errlen - (size_t)n, fmt, ap);
    va_end(ap);
}

static const struct config_key *config_find_key(const char *section, const char *name)
{
    for (size_t i = 0; i < CONFIG_N_KEYS; i++)
        if (strcmp(config_keys[i].section, section) == 0 && strcmp(config_keys[i].name, name) == 0)
            return &config_keys[i];
    return NULL;
}

static bool config_section_known(const char *name, size_t len)
{
    for (size_t i = 0; i < CONFIG_N_KEYS; i++)
        if (strlen(config_keys[i].section) == len && memcmp(config_keys[i].section, name, len) == 0)
            return true;
    return false;
}

/* inih's fgets: one line per call, so that p->lineno is the line inih is on. */
static char *config_read_line_cb(char *str, int num, void *stream)
{
    struct config_parse *p = stream;
    char *start, *close, *after;
    ssize_t n;
    size_t len;

    if (p->failed)
        return NULL;
    errno = 0;
    n = getline(&p->line, &p->line_size, p->file);
    if (n < 0) {
        p->read_errno = errno;      /* 0 at end of file */
        return NULL;
    }
    p->lineno++;
    start = p->line;
    if (p->lineno == 1 && strncmp(start, "\xEF\xBB\xBF", 3) == 0)
        start += 3;                 /* UTF-8 byte order mark */
    while (*start == ' ' || *start == '\t')
        start++;
    len = (size_t)n - (size_t)(start - p->line);
    if (memchr(start, '\0', len) != NULL)
        return config_fail(p, p->lineno, "NUL byte in line"), NULL;
    if (len >= (size_t)num)
        return config_fail(p, p->lineno, "line longer than %d bytes", num - 2), NULL;
    /* A header without ']' is left to inih, which calls it a syntax error. */
    if (start[0] == '[' && (close = strchr(start, ']')) != NULL) {
        if (!config_section_known(start + 1, (size_t)(close - start - 1)))
            return config_fail(p, p->lineno, "%.*s: unknown section", (int)(close - start + 1),
                               start), NULL;
        after = close + 1 + strspn(close + 1, " \t\r\n");
        if (*after != '\0' && *after != ';' && *after != '#')
            return config_fail(p, p->lineno, "%.*s: text after ']'", (int)(close - start + 1),
                               start), NULL;
    }
    memcpy(str, start, len + 1);
    return str;
}

static int config_key_cb(void *user, const char *section, const char *name, const char *value)
{
    struct config_parse *p = user;
    const struct config_key *k;
    char why[256];
    size_t i;

    if (p->failed)
        return 1;
    if (section[0] == '\0')
        return config_fail(p, p->lineno, "%s: key before any [section]", name), 1;
    k = config_find_key(section, name);
    if (k == NULL)
        return config_fail(p, p->lineno, "[%s] %s: unknown key", section, name), 1;
    i = (size_t)(k - config_keys);
    if (p->seen_line[i] != 0 && k->parse != config_parse_listen)
        return config_fail(p, p->lineno, "[%s] %s = \"%s\": duplicate key (first set on line %d)",
                           section, name, value, p->seen_line[i]), 1;
    if (p->seen_line[i] == 0)
        p->seen_line[i] = p->lineno;
    if (k->parse(&p->c, k, value, why, sizeof(why)) < 0)
        config_fail(p, p->lineno, "[%s] %s = \"%s\": %s", section, name, value, why);
    else if (k->parse == config_parse_listen)
        p->c.listens[p->c.n_listens - 1].line = p->lineno;
    return 1;
}

static void config_fail_key(struct config_parse *p, const char *section, const char *name,
                            const char *value, const char *why)
{
    size_t i = (size_t)(config_find_key(section, name) - config_keys);

    config_fail(p, p->seen_line[i], "[%s] %s = \"%s\": %s", section, name, value, why);
}

/* Checks that span keys; the file has been read. */
static void config_check(struct config_parse *p)
{
    struct config *c = &p->c;
    char why[64];

    if (c->n_listens == 0 && config_parse_listen(c, NULL, CONFIG_DEFAULT_LISTEN, why, sizeof(why)) < 0)
        config_fail(p, 0, "%s", why);
    if (c->tls_certificate != NULL && c->tls_key == NULL)
        config_fail_key(p, "tls", "certificate", c->tls_certificate, "needs [tls] key as well");
    if (c->tls_key != NULL && c->tls_certificate == NULL)
        config_fail_key(p, "tls", "key", c->tls_key, "needs [tls] certificate as well");
    for (size_t i = 0; i < c->n_listens; i++) {
        const struct listen_spec *a = &c->listens[i];

        if (a->ssl && c->tls_certificate == NULL)
            config_fail(p, a->line, "[server] listen = \"%s\": ssl needs [tls] certificate and key",
                        a->text);
        /* Port 0 twice is two different kernel-chosen ports. */
        for (size_t j = 0; j < i; j++) {
            const struct listen_spec *b = &c->listens[j];
            bool same = a->kind == LISTEN_UNIX
                ? b->kind == LISTEN_UNIX && strcmp(a->path, b->path) == 0
                : b->kind == LISTEN_TCP && a->port != 0 && a->port == b->port &&
                  (a->host == NULL) == (b->host == NULL) &&
                  (a->host == NULL || strcmp(a->host, b->host) == 0);
            if (same)
                config_fail(p, a->line, "[server] listen = \"%s\": same address as line %d",
                            a->text, b->line);
        }
    }
}

/* Joins dir and a relative path into *path (freed). 0 or -ENOMEM. */
static int config_make_absolute(char **path, const char *dir)
{
    char *joined;

    if (*path == NULL || (*path)[0] == '/')
        return 0;
    if (asprintf(&joined, "%s/%s", dir, *path) < 0)
        return -ENOMEM;
    free(*path);
    *path = joined;
    return 0;
}

/* The absolute directory of the config file. NULL when out of memory. */
static char *config_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    char cwd[PATH_MAX], *dir = NULL;
    int len = slash ? (int)(slash - path) : 0;

    if (slash == path)
        return strdup("/");
    if (path[0] == '/')
        return strndup(path, (size_t)len);
    if (getcwd(cwd, sizeof(cwd)) == NULL)
        return NULL;
    if (slash == NULL)
        return strdup(cwd);
    return asprintf(&dir, "%s/%.*s", cwd, len, path) < 0 ? NULL : dir;
}

static int config_resolve_paths(struct config *c, const char *path)
{
    char *dir = config_dir(path);
    int rc = dir ? 0 : -ENOMEM;

    for (size_t i = 0; rc == 0 && i < CONFIG_N_KEYS; i++) {
        const struct config_key *k = &config_keys[i];
        char **field = config_field(c, k);

        if (!(k->flags & KEY_FILE_PATH) || *field == NULL)
            continue;
        if (field == &c->log && (strcmp(c->log, "stderr") == 0 || strcmp(c->log, "syslog") == 0))
            continue;
        rc = config_make_absolute(field, dir);
    }
    for (size_t i = 0; rc == 0 && i < c->n_listens; i++)
        if (c->listens[i].kind == LISTEN_UNIX)
            rc = config_make_absolute(&c->listens[i].path, dir);
    free(dir);
    return rc;
}

int config_load(const char *path, struct config *out, char *errmsg, size_t errlen)
{
    struct config_parse p = { .path = path, .errmsg = errmsg, .errlen = errlen };
    char why[256];
    int ret;

    memset(out, 0, sizeof(*out));
    for (size_t i = 0; i < CONFIG_N_KEYS; i++) {
        const struct config_key *k = &config_keys[i];

        /* Defaults are valid by construction: only ENOMEM can fail here. */
        if (k->def != NULL && k->parse(&p.c, k, k->def, why, sizeof(why)) < 0) {
            config_fail(&p, 0, "%s", why);
            goto fail;
        }
    }
    p.file = fopen(path, "re");
    if (p.file == NULL) {
        config_fail(&p, 0, "%s", strerror(errno));
        goto fail;
    }
    /* Debian's inih is built with INI_RUNTIME_OPTIONS, which makes this a variable. */
    ini_max_line = CONFIG_LINE_MAX;
    ret = ini_parse_stream(config_read_line_cb, &p, config_key_cb, &p);
    fclose(p.file);
    free(p.line);
    /* inih returns the first line it could not parse; ours may come earlier. */
    if (ret > 0 && (!p.failed || ret < p.lineno)) {
        p.failed = false;
        config_fail(&p, ret, "syntax error: expected [section] or key = value");
    }
    if (ret < 0)
        config_fail(&p, 0, "%s", strerror(ENOMEM));
    if (p.read_errno != 0)
        config_fail(&p, 0, "%s", strerror(p.read_errno));
    if (!p.failed)
        config_check(&p);
    if (!p.failed && config_resolve_paths(&p.c, path) < 0)
        config_fail(&p, 0, "%s", strerror(ENOMEM));
    /* A relative unix path fits when read and may not once made absolute. */
    for (size_t i = 0; !p.failed && i < p.c.n_listens; i++) {
        const struct listen_spec *ls = &p.c.listens[i];

        if (ls->kind == LISTEN_UNIX && strlen(ls->path) >= UNIX_PATH_SIZE)
            config_fail(&p, ls->line, "[server] listen = \"%s\": socket path %s is longer "
                        "than %zu bytes", ls->text, ls->path, UNIX_PATH_SIZE - 1);
    }
    if (!p.failed && (p.c.path = strdup(path)) == NULL)
        config_fail(&p, 0, "%s", strerror(ENOMEM));
    if (p.failed)
        goto fail;
    *out = p.c;
    return 0;
fail:
    config_free(&p.c);
    return -1;
}

void config_free(struct config *c)
{
    for (size_t i = 0; i < CONFIG_N_KEYS; i++)
        if (config_keys[i].parse == config_parse_string)
            free(*(char **)config_field(c, &config_keys[i]));
    for (size_t i = 0; i < c->n_listens; i++)
        listen_spec_free(&c->listens[i]);
    free(c->listens);
    free(c->path);
    memset(c, 0, sizeof(*c));
}

int config_workers(const struct config *c)
{
    int cpus;

    if (!c->workers_auto)
        return c->workers;
    cpus = pf_cpu_count();
    return cpus < CONFIG_WORKERS_MAX ? cpus : CONFIG_WORKERS_MAX;
}

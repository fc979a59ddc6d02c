/*
 * fuzz_config: the input is a whole config file, handed to config_load
 * through a memfd (named by its /proc/self/fd path, so no file is left
 * behind). A loaded config must keep every promise config.h makes about
 * its fields; a refused one must say why, naming the file, and own nothing.
 */
#define _GNU_SOURCE     /* memfd_create */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/un.h>
#include <unistd.h>

#include "../../daemon/config.h"
#include "../../daemon/log.h"
#include "fuzz_util.h"

/* config.c's ranges, as conf/preforkd.conf documents them. */
#define CONFIG_FUZZ_WORKERS_MAX 1024
#define CONFIG_FUZZ_TIMEOUT_MAX 86400
#define CONFIG_FUZZ_PORT_MAX 65535
#define CONFIG_FUZZ_BACKLOG_MAX 65535
#define CONFIG_FUZZ_CONNECTIONS_MAX 1048576
#define CONFIG_FUZZ_RESTARTS_MAX 1000000
#define CONFIG_FUZZ_BUFFER_MAX (1ULL << 40)
#define CONFIG_FUZZ_DEFAULT_LISTEN "127.0.0.1:8080"
#define CONFIG_FUZZ_UNIX_PATH_SIZE sizeof(((struct sockaddr_un *)NULL)->sun_path)
/* errmsg size: what main.c passes, and now and then a tiny one. */
#define CONFIG_FUZZ_ERRMSG 512
#define CONFIG_FUZZ_TINY_EVERY 7
#define CONFIG_FUZZ_TINY_MAX 40

struct config_fuzz {
    int fd;             /* the memfd the input goes to; -1: not made yet */
    char path[64];      /* its /proc/self/fd name */
};

/* libFuzzer gives a target no handle to keep state in: one per process. */
static struct config_fuzz config_fuzz = { .fd = -1 };

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    if (config_fuzz.fd >= 0)
        return 0;
    config_fuzz.fd = memfd_create("fuzz_config.conf", MFD_CLOEXEC);
    FUZZ_CHECK(config_fuzz.fd >= 0, "memfd_create: %s", strerror(errno));
    snprintf(config_fuzz.path, sizeof(config_fuzz.path), "/proc/self/fd/%d", config_fuzz.fd);
    return 0;
}

static bool absolute_or_null(const char *s)
{
    return s == NULL || s[0] == '/';
}

static bool nonempty_or_null(const char *s)
{
    return s == NULL || s[0] != '\0';
}

static bool same_listener(const struct listen_spec *a, const struct listen_spec *b)
{
    if (a->kind != b->kind)
        return false;
    if (a->kind == LISTEN_UNIX)
        return strcmp(a->path, b->path) == 0;
    /* Port 0 twice is two different kernel-chosen ports. */
    return a->port != 0 && a->port == b->port && (a->host == NULL) == (b->host == NULL) &&
           (a->host == NULL || strcmp(a->host, b->host) == 0);
}

static void config_check_listens(const struct config *c)
{
    FUZZ_CHECK(c->n_listens >= 1 && c->listens != NULL, "%zu listeners", c->n_listens);
    for (size_t i = 0; i < c->n_listens; i++) {
        const struct listen_spec *l = &c->listens[i];

        FUZZ_CHECK(l->text != NULL && l->text[0] != '\0', "listen %zu: no text", i);
        FUZZ_CHECK(l->line >= 1 || (c->n_listens == 1 &&
                                    strcmp(l->text, CONFIG_FUZZ_DEFAULT_LISTEN) == 0),
                   "listen %zu \"%s\": line %d", i, l->text, l->line);
        FUZZ_CHECK(!l->ssl || c->tls_certificate != NULL,
                   "listen \"%s\": ssl without a certificate", l->text);
        if (l->kind == LISTEN_TCP) {
            FUZZ_CHECK(l->port <= CONFIG_FUZZ_PORT_MAX, "listen \"%s\": port %u", l->text,
                       l->port);
            FUZZ_CHECK(l->path == NULL, "listen \"%s\": TCP with a path", l->text);
            FUZZ_CHECK(nonempty_or_null(l->host), "listen \"%s\": empty host", l->text);
        } else {
            FUZZ_CHECK(l->kind == LISTEN_UNIX, "listen \"%s\": kind %d", l->text, (int)l->kind);
            FUZZ_CHECK(l->host == NULL && l->port == 0, "listen \"%s\": unix with host or port",
                       l->text);
            FUZZ_CHECK(l->path != NULL && l->path[0] == '/',
                       "listen \"%s\": unix path \"%s\" not absolute", l->text, l->path);
            /* listen_spec_parse refuses a longer path: bind() could not take it. */
            FUZZ_CHECK(strlen(l->path) < CONFIG_FUZZ_UNIX_PATH_SIZE,
                       "line %d: listen \"%s\": unix path \"%s\" has %zu bytes, sun_path holds %zu",
                       l->line, l->text, l->path, strlen(l->path),
                       CONFIG_FUZZ_UNIX_PATH_SIZE - 1);
        }
        for (size_t j = 0; j < i; j++)
            FUZZ_CHECK(!same_listener(l, &c->listens[j]), "listen \"%s\" twice (lines %d, %d)",
                       l->text, c->listens[j].line, l->line);
    }
}

static void config_check(const struct config *c)
{
    int workers = config_workers(c);

    FUZZ_CHECK(c->path != NULL && strcmp(c->path, config_fuzz.path) == 0, "path \"%s\"",
               c->path ? c->path : "(null)");
    FUZZ_CHECK(c->workers_auto ? c->workers == 0
                               : c->workers >= 1 && c->workers <= CONFIG_FUZZ_WORKERS_MAX,
               "workers %d (auto %d)", c->workers, c->workers_auto);
    FUZZ_CHECK(workers >= 1 && workers <= CONFIG_FUZZ_WORKERS_MAX, "config_workers %d", workers);
    FUZZ_CHECK(absolute_or_null(c->pidfile), "pidfile \"%s\"", c->pidfile);
    FUZZ_CHECK(nonempty_or_null(c->user) && nonempty_or_null(c->group), "empty user or group");
    FUZZ_CHECK(c->log != NULL && (strcmp(c->log, "stderr") == 0 ||
                                  strcmp(c->log, "syslog") == 0 || c->log[0] == '/'),
               "log \"%s\"", c->log ? c->log : "(null)");
    FUZZ_CHECK(c->log_level >= LOG_ERR && c->log_level <= LOG_DEBUG, "log_level %d",
               c->log_level);
    FUZZ_CHECK(c->graceful_timeout_sec <= CONFIG_FUZZ_TIMEOUT_MAX &&
               c->worker_timeout_sec <= CONFIG_FUZZ_TIMEOUT_MAX &&
               c->idle_timeout_sec <= CONFIG_FUZZ_TIMEOUT_MAX &&
               c->http_header_timeout_sec <= CONFIG_FUZZ_TIMEOUT_MAX,
               "a timeout over a day");
    FUZZ_CHECK(c->restart_window_sec >= 1 && c->restart_window_sec <= CONFIG_FUZZ_TIMEOUT_MAX,
               "restart_window %u", c->restart_window_sec);
    FUZZ_CHECK(c->max_restarts <= CONFIG_FUZZ_RESTARTS_MAX, "max_restarts %u", c->max_restarts);
    config_check_listens(c);
    FUZZ_CHECK(c->backlog >= 1 && c->backlog <= CONFIG_FUZZ_BACKLOG_MAX, "backlog %u",
               c->backlog);
    FUZZ_CHECK(c->accept_batch <= CONFIG_FUZZ_BACKLOG_MAX, "accept_batch %u", c->accept_batch);
    FUZZ_CHECK(c->max_connections >= 1 && c->max_connections <= CONFIG_FUZZ_CONNECTIONS_MAX,
               "max_connections %u", c->max_connections);
    FUZZ_CHECK(c->max_buffer_size >= 1 && c->max_buffer_size <= CONFIG_FUZZ_BUFFER_MAX,
               "max_buffer_size %zu", c->max_buffer_size);
    FUZZ_CHECK(c->handler == CONFIG_HANDLER_HTTP || c->handler == CONFIG_HANDLER_ECHO,
               "handler %d", (int)c->handler);
    FUZZ_CHECK(c->http_root != NULL && c->http_root[0] == '/', "root \"%s\"",
               c->http_root ? c->http_root : "(null)");
    FUZZ_CHECK(c->http_index != NULL && c->http_index[0] != '\0', "empty index");
    FUZZ_CHECK(c->http_status_path == NULL || c->http_status_path[0] == '/', "status_path \"%s\"",
               c->http_status_path);
    FUZZ_CHECK(absolute_or_null(c->http_access_log), "access_log \"%s\"", c->http_access_log);
    FUZZ_CHECK((c->tls_certificate == NULL) == (c->tls_key == NULL), "certificate without key");
    FUZZ_CHECK(absolute_or_null(c->tls_certificate) && absolute_or_null(c->tls_key),
               "relative certificate or key");
    FUZZ_CHECK(c->tls_min_version == CONFIG_TLS_1_2 || c->tls_min_version == CONFIG_TLS_1_3,
               "protocols %d", (int)c->tls_min_version);
    FUZZ_CHECK(nonempty_or_null(c->tls_ciphers), "empty ciphers");
}

static bool config_is_zero(const struct config *c)
{
    static const struct config zero;

    return memcmp(c, &zero, sizeof(zero)) == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t errlen = size % CONFIG_FUZZ_TINY_EVERY == 0
        ? 1 + size % CONFIG_FUZZ_TINY_MAX : CONFIG_FUZZ_ERRMSG;
    char *errmsg = malloc(errlen);
    struct config c;
    int rc;

    /* For a driver that does not call LLVMFuzzerInitialize. */
    if (config_fuzz.fd < 0)
        LLVMFuzzerInitialize(NULL, NULL);
    FUZZ_CHECK(errmsg != NULL, "out of memory");
    FUZZ_CHECK(ftruncate(config_fuzz.fd, 0) == 0 &&
               pwrite(config_fuzz.fd, data, size, 0) == (ssize_t)size,
               "writing the memfd: %s", strerror(errno));
    errmsg[0] = '\0';
    rc = config_load(config_fuzz.path, &c, errmsg, errlen);
    FUZZ_CHECK(rc == 0 || rc == -1, "config_load returned %d", rc);
    if (rc == 0) {
        config_check(&c);
        config_free(&c);
        FUZZ_CHECK(config_is_zero(&c), "config_free left fields set");
    } else {
        FUZZ_CHECK(memchr(errmsg, '\0', errlen) != NULL, "errmsg not terminated");
        FUZZ_CHECK(strncmp(errmsg, config_fuzz.path, errlen - 1) == 0 ||
                   strncmp(errmsg, config_fuzz.path, strlen(config_fuzz.path)) == 0,
                   "refused without naming the file: \"%s\"", errmsg);
        FUZZ_CHECK(errlen <= strlen(config_fuzz.path) + 2 || errmsg[strlen(config_fuzz.path)] == ':',
                   "refused with \"%s\"", errmsg);
        FUZZ_CHECK(config_is_zero(&c), "refused, but out is not zeroed");
    }
    free(errmsg);
    return 0;
}

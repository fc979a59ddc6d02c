/* access_log: one line per HTTP request, in the combined log format. */
#ifndef PREFORKD_ACCESS_LOG_H
#define PREFORKD_ACCESS_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

struct access_log {
    char *path;
    int fd;
    bool failing;               /* the last write failed (and we said so) */
    time_t stamp_sec;           /* the second stamp[] was made for */
    char stamp[40];             /* "[23/Nov/2026:16:31:06 +0000]" */
};

/* Opens path for appending. Returns 0 or -errno. */
int access_log_open(struct access_log *l, const char *path);
/* Reopens by path (logrotate's USR1); keeps the old fd on failure. */
int access_log_reopen(struct access_log *l);
void access_log_close(struct access_log *l);

struct access_log_entry {
    const char *peer;                   /* "127.0.0.1" */
    const char *method, *target;        /* as received; target_len bytes */
    size_t method_len, target_len;
    int http_minor;                     /* HTTP/1.x */
    int status;
    unsigned long long bytes;           /* body bytes */
    const char *referer, *user_agent;   /* NULL: "-" */
    size_t referer_len, user_agent_len;
};

/* Appends one line, stamped with now (seconds of wall-clock time). */
void access_log_write(struct access_log *l, double now, const struct access_log_entry *e);

#endif

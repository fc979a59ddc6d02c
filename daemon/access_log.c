/*
 * access_log: the combined log format that Apache and nginx write and every
 * log tool reads. One write(2) per line to an O_APPEND file, so the lines of
 * all workers interleave whole. What goes in a line is http.c's to say.
 */
#include "access_log.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ACCESS_LOG_MODE 0644
#define ACCESS_LINE_MAX 8192
/* Longest field copied from a request (target, referer, user agent). */
#define ACCESS_FIELD_MAX 512

int access_log_open(struct access_log *l, const char *path)
{
    memset(l, 0, sizeof(*l));
    l->path = strdup(path);
    if (l->path == NULL)
        return -ENOMEM;
    l->fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, ACCESS_LOG_MODE);
    if (l->fd < 0) {
        int err = -errno;
        free(l->path);
        l->path = NULL;
        return err;
    }
    return 0;
}

int access_log_reopen(struct access_log *l)
{
    int fd;

    if (l->path == NULL)
        return 0;
    fd = open(l->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, ACCESS_LOG_MODE);
    if (fd < 0)
        return -errno;
    close(l->fd);
    l->fd = fd;
    return 0;
}

void access_log_close(struct access_log *l)
{
    if (l->path != NULL) {
        close(l->fd);
        free(l->path);
    }
    memset(l, 0, sizeof(*l));
    l->fd = -1;
}

/* Appends s[0..len) with '"' and '\\' escaped and control bytes as \xHH,
 * so that a request cannot forge a line or a field. */
static size_t append_escaped(char *out, size_t at, size_t cap, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";

    if (len > ACCESS_FIELD_MAX)
        len = ACCESS_FIELD_MAX;
    for (size_t i = 0; i < len && at + 4 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            out[at++] = '\\';
            out[at++] = (char)c;
        } else if (c < 0x20 || c >= 0x7f) {
            out[at++] = '\\';
            out[at++] = 'x';
            out[at++] = hex[c >> 4];
            out[at++] = hex[c & 15];
        } else {
            out[at++] = (char)c;
        }
    }
    return at;
}

static size_t append_field(char *out, size_t at, size_t cap, const char *s, size_t len)
{
    if (at + 3 >= cap)
        return at;
    out[at++] = '"';
    if (s == NULL)
        out[at++] = '-';
    else
        at = append_escaped(out, at, cap, s, len);
    if (at < cap)
        out[at++] = '"';
    return at;
}

void access_log_write(struct access_log *l, double now, const struct access_log_entry *e)
{
    char line[ACCESS_LINE_MAX];
    time_t sec = (time_t)now;
    size_t at;
    int n;

    if (l->path == NULL)
        return;
    if (sec != l->stamp_sec) {
        struct tm tm;
        localtime_r(&sec, &tm);
        strftime(l->stamp, sizeof(l->stamp), "[%d/%b/%Y:%H:%M:%S %z]", &tm);
        l->stamp_sec = sec;
    }
    n = snprintf(line, sizeof(line), "%s - - %s \"", e->peer, l->stamp);
    at = (size_t)n;
    at = append_escaped(line, at, sizeof(line), e->method, e->method_len);
    line[at++] = ' ';
    at = append_escaped(line, at, sizeof(line), e->target, e->target_len);
    n = snprintf(line + at, sizeof(line) - at, " HTTP/1.%d\" %d %llu ", e->http_minor,
                 e->status, e->bytes);
    /* Escaping keeps at + 4 < ACCESS_LINE_MAX; a cut line still ends well. */
    at = at + (size_t)n < sizeof(line) - 8 ? at + (size_t)n : sizeof(line) - 8;
    at = append_field(line, at, sizeof(line) - 2, e->referer, e->referer_len);
    line[at++] = ' ';
    at = append_field(line, at, sizeof(line) - 1, e->user_agent, e->user_agent_len);
    line[at++] = '\n';
    /* A full disk loses log lines, never requests; it is said once, not
     * once per request, and again when lines go through once more. */
    if (write(l->fd, line, at) < 0) {
        if (!l->failing)
            log_msg(LOG_ERR, -errno, "access log %s: lines are lost until it can be written",
                    l->path);
        l->failing = true;
    } else if (l->failing) {
        log_msg(LOG_NOTICE, 0, "access log %s: written again", l->path);
        l->failing = false;
    }
}

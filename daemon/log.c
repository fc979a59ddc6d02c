/*
 * log: formats one line per message and hands it to stderr, a file or
 * syslog, dropping messages below the configured level before any
 * formatting. It owns the target (and reopening it for logrotate); what to
 * log and when to reopen is the caller's business.
 *
 * The state is one static struct rather than a handle passed around: a
 * process has exactly one log target, and every module must reach it.
 */
#include "log.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* One line is one write(2) of at most PIPE_BUF bytes: POSIX makes such a
 * write to a pipe atomic, and O_APPEND makes it atomic on a file, so lines
 * from the master and the workers never interleave. */
#define LOG_LINE_MAX PIPE_BUF
#define LOG_FILE_MODE 0644

enum log_target { LOG_TARGET_STDERR, LOG_TARGET_FILE, LOG_TARGET_SYSLOG };

static struct {
    enum log_target target;
    int fd;                     /* stderr or the file; unused for syslog */
    int level;                  /* highest LOG_* value written */
    char role[64];
    char path[PATH_MAX];        /* absolute path of a file target */
    bool tee_stderr;            /* warnings also to stderr (see log_tee_stderr) */
} log_state = {
    .target = LOG_TARGET_STDERR,
    .fd = STDERR_FILENO,
    .level = LOG_INFO,
    .role = "preforkd",
};

static const char *const log_level_names[] = {
    [LOG_EMERG] = "emerg", [LOG_ALERT] = "alert", [LOG_CRIT] = "crit",
    [LOG_ERR] = "error", [LOG_WARNING] = "warning", [LOG_NOTICE] = "notice",
    [LOG_INFO] = "info", [LOG_DEBUG] = "debug",
};

int log_level_parse(const char *name)
{
    /* Only the names the config documents: "crit" and above are for the
     * daemon's own messages, never a useful threshold. */
    for (int level = LOG_ERR; level <= LOG_DEBUG; level++)
        if (strcmp(name, log_level_names[level]) == 0)
            return level;
    return -1;
}

const char *log_level_name(int level)
{
    if (level < LOG_EMERG || level > LOG_DEBUG)
        return "?";
    return log_level_names[level];
}

/* Makes a relative path absolute, so that a reopen after chdir("/") still
 * finds the file the operator meant. */
static int log_absolute_path(const char *target, char *out, size_t size)
{
    char cwd[PATH_MAX];
    int n;

    if (target[0] == '/') {
        n = snprintf(out, size, "%s", target);
    } else {
        if (getcwd(cwd, sizeof(cwd)) == NULL)
            return -errno;
        n = snprintf(out, size, "%s/%s", cwd, target);
    }
    return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

static int log_open_file(const char *path)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, LOG_FILE_MODE);

    return fd < 0 ? -errno : fd;
}

int log_open(const char *target, int level, char *errmsg, size_t errlen)
{
    enum log_target kind;
    char path[PATH_MAX];
    int fd = STDERR_FILENO;

    assert(target != NULL && level >= LOG_EMERG && level <= LOG_DEBUG);
    if (strcmp(target, "stderr") == 0) {
        kind = LOG_TARGET_STDERR;
    } else if (strcmp(target, "syslog") == 0) {
        kind = LOG_TARGET_SYSLOG;
    } else {
        kind = LOG_TARGET_FILE;
        fd = log_absolute_path(target, path, sizeof(path));
        if (fd == 0)
            fd = log_open_file(path);
        if (fd < 0) {
            snprintf(errmsg, errlen, "log file %s: %s", target, strerror(-fd));
            return fd;
        }
    }

    /* The new target is usable: only now let go of the old one. */
    if (log_state.target == LOG_TARGET_FILE)
        close(log_state.fd);
    if (log_state.target == LOG_TARGET_SYSLOG && kind != LOG_TARGET_SYSLOG)
        closelog();
    if (kind == LOG_TARGET_SYSLOG)
        openlog("preforkd", LOG_PID | LOG_NDELAY, LOG_DAEMON);
    if (kind == LOG_TARGET_FILE)
        memcpy(log_state.path, path, sizeof(path));
    log_state.target = kind;
    log_state.fd = fd;
    log_state.level = level;
    return 0;
}

int log_reopen(void)
{
    int fd;

    if (log_state.target != LOG_TARGET_FILE)
        return 0;
    fd = log_open_file(log_state.path);
    if (fd < 0)
        return fd;
    close(log_state.fd);
    log_state.fd = fd;
    return 0;
}

void log_set_role(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(log_state.role, sizeof(log_state.role), fmt, ap);
    va_end(ap);
}

void log_close(void)
{
    if (log_state.target == LOG_TARGET_FILE)
        close(log_state.fd);
    if (log_state.target == LOG_TARGET_SYSLOG)
        closelog();
    log_state.target = LOG_TARGET_STDERR;
    log_state.fd = STDERR_FILENO;
}

/* Appends to buf (len bytes used of size) and returns the new length,
 * clamped so that the result always fits with its NUL. */
static size_t log_vappend(char *buf, size_t size, size_t len, const char *fmt, va_list ap)
    __attribute__((format(printf, 4, 0)));
static size_t log_vappend(char *buf, size_t size, size_t len, const char *fmt, va_list ap)
{
    int n = vsnprintf(buf + len, size - len, fmt, ap);

    if (n < 0)
        return len;
    return len + (size_t)n >= size ? size - 1 : len + (size_t)n;
}

static size_t log_append(char *buf, size_t size, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static size_t log_append(char *buf, size_t size, size_t len, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    len = log_vappend(buf, size, len, fmt, ap);
    va_end(ap);
    return len;
}

/* "2024-05-01T12:00:00.123 [info] worker 3[4121]: " */
static size_t log_format_head(char *buf, size_t size, int level)
{
    struct timespec now;
    struct tm tm;
    size_t len;

    clock_gettime(CLOCK_REALTIME, &now);
    localtime_r(&now.tv_sec, &tm);
    len = strftime(buf, size, "%Y-%m-%dT%H:%M:%S", &tm);
    return log_append(buf, size, len, ".%03ld [%s] %s[%ld]: ", now.tv_nsec / 1000000L,
                      log_level_name(level), log_state.role, (long)getpid());
}

static void log_write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;             /* nowhere left to report it */
        buf += n;
        len -= (size_t)n;
    }
}

bool log_level_enabled(int level)
{
    return level <= log_state.level;
}

void log_tee_stderr(bool on)
{
    log_state.tee_stderr = on;
}

void log_msg(int level, int err, const char *fmt, ...)
{
    char line[LOG_LINE_MAX];
    size_t head = 0, len;
    int saved_errno = errno;
    va_list ap;

    if (level > log_state.level)
        return;
    if (log_state.target != LOG_TARGET_SYSLOG)
        head = log_format_head(line, sizeof(line) - 1, level);
    /* sizeof(line) - 1 keeps room for the '\n'. */
    va_start(ap, fmt);
    len = log_vappend(line, sizeof(line) - 1, head, fmt, ap);
    va_end(ap);
    /* A positive errno is a caller's bug, but a log call is the wrong place
     * to abort over it: print it all the same. */
    if (err != 0)
        len = log_append(line, sizeof(line) - 1, len, ": %s", strerror(err < 0 ? -err : err));
    for (size_t i = head; i < len; i++)
        if ((unsigned char)line[i] < 0x20 || line[i] == 0x7f)
            line[i] = '?';

    if (log_state.tee_stderr && level <= LOG_WARNING && log_state.target != LOG_TARGET_STDERR) {
        char tee[LOG_LINE_MAX];
        int n = snprintf(tee, sizeof(tee), "preforkd: [%s] %.*s\n", log_level_name(level),
                         (int)(len - head), line + head);
        log_write_all(STDERR_FILENO, tee, n < (int)sizeof(tee) ? (size_t)n : sizeof(tee) - 1);
    }
    if (log_state.target == LOG_TARGET_SYSLOG) {
        syslog(level, "%s: %s", log_state.role, line);
    } else {
        line[len++] = '\n';
        log_write_all(log_state.fd, line, len);
    }
    errno = saved_errno;
}

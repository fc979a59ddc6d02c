/*
 * log: the daemon's one logger. Every line names the level and the process
 * role ("master", "worker 3") and goes to stderr, a file or syslog. It owns
 * the log target and its reopening; the access log is http.c's business.
 *
 * State is process-wide (one static struct in log.c): the process has one
 * log target. After fork() the child keeps the parent's target and should
 * call log_set_role(). Not thread-safe; the daemon has no threads.
 */
#ifndef PREFORKD_LOG_H
#define PREFORKD_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <syslog.h>   /* LOG_ERR, LOG_WARNING, LOG_NOTICE, LOG_INFO, LOG_DEBUG */

/* "debug" | "info" | "notice" | "warning" | "error" -> LOG_*; -1 if unknown. */
int log_level_parse(const char *name);
/* The config name of a LOG_* level ("error" for LOG_ERR); levels above
 * error are "crit", "alert", "emerg"; "?" if not a level. Static string. */
const char *log_level_name(int level);

/*
 * Sends later messages of this level and above to target: "stderr",
 * "syslog", or a file path (opened O_WRONLY|O_APPEND|O_CREAT|O_CLOEXEC, mode
 * 0644; a relative path is made absolute against the current directory, so
 * log_reopen() still finds it after a chdir). Returns 0, or -errno with
 * errmsg (size errlen) naming the target and the cause; on failure the
 * previous target and level stay in use. level is a LOG_* value.
 */
int log_open(const char *target, int level, char *errmsg, size_t errlen);
/*
 * Reopens a file target by its path (logrotate's USR1). Returns 0 (also for
 * stderr and syslog, where there is nothing to reopen) or -errno, in which
 * case the old fd stays in use.
 */
int log_reopen(void);
/* Names this process in every later line: "master", "worker 3". Longer
 * roles are truncated to 63 bytes. Default: "preforkd". */
void log_set_role(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/*
 * Logs one line if level is at or above the configured one (LOG_DEBUG is
 * the lowest); otherwise returns before formatting anything. err is 0 or
 * -errno; when non-zero ": <strerror(-err)>" is appended. stderr and file
 * lines look like
 *   2024-05-01T12:00:00.123 [warning] worker 3[4121]: message: cause
 * (local time) and are written with one write(2) of at most 4096 bytes
 * (longer messages are cut), so lines of several processes never mix.
 * Control characters in the message are replaced by '?', so a message
 * cannot forge a line.
 */
void log_msg(int level, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* While on, warnings and errors also go to stderr as "preforkd: [level]
 * message" when the target is a file or syslog: a daemon starting from a
 * terminal shows why it failed there, until it leaves the terminal. */
void log_tee_stderr(bool on);
/* Whether log_msg(level, ...) would write: to skip work that only a
 * message at that level needs. */
bool log_level_enabled(int level);
/* Closes a file or syslog target; later messages go to stderr again (level
 * and role are kept). */
void log_close(void);

#endif

/*
 * pidfile: one master per pidfile. The file is locked with fcntl for the
 * master's whole life, so a stale file (its master died without removing
 * it) is told apart from a live one by the lock, not by guessing from pids.
 */
#include "pidfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static pid_t pidfile_parse(int fd)
{
    char buf[32];
    ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
    long pid;
    char *end;

    if (n <= 0)
        return 0;
    buf[n] = '\0';
    pid = strtol(buf, &end, 10);
    return pid > 0 && (*end == '\n' || *end == '\0') ? (pid_t)pid : 0;
}

/* The pid holding a write lock on fd, or 0. */
static pid_t pidfile_holder(int fd)
{
    struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };

    if (fcntl(fd, F_GETLK, &fl) < 0 || fl.l_type == F_UNLCK)
        return 0;
    return fl.l_pid;
}

int pidfile_acquire(const char *path, char *errmsg, size_t len)
{
    struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
    char buf[32];
    int fd, n;

    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        snprintf(errmsg, len, "pidfile %s: %s", path, strerror(errno));
        return -1;
    }
    if (fcntl(fd, F_SETLK, &fl) < 0) {
        pid_t holder = pidfile_holder(fd);
        if (holder == 0)
            holder = pidfile_parse(fd);
        snprintf(errmsg, len, "pidfile %s: held by a running master (pid %d)", path, (int)holder);
        close(fd);
        return -1;
    }
    n = snprintf(buf, sizeof(buf), "%d\n", (int)getpid());
    /* One write after truncating: a reader sees no pid or the whole pid. */
    if (ftruncate(fd, 0) < 0 || pwrite(fd, buf, (size_t)n, 0) != n) {
        snprintf(errmsg, len, "pidfile %s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

void pidfile_release(const char *path, int fd)
{
    unlink(path);
    close(fd);
}

pid_t pidfile_read(const char *path, char *errmsg, size_t len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC), err;
    pid_t pid;

    if (fd < 0) {
        err = errno;
        snprintf(errmsg, len, "pidfile %s: %s%s", path, strerror(err),
                 err == ENOENT ? " (is preforkd running?)" : "");
        return -err;
    }
    pid = pidfile_holder(fd);
    close(fd);
    if (pid == 0) {
        snprintf(errmsg, len, "pidfile %s: no running master holds it (stale)", path);
        return -ESRCH;
    }
    return pid;
}

/* /proc and small files for the suites and the soak driver; see procutil.h. */
#define _GNU_SOURCE
#include "procutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void tu_read_file(const char *path, char *buf, size_t size)
{
    tu_read_file_from(path, 0, buf, size);
}

size_t tu_read_file_from(const char *path, off_t offset, char *buf, size_t size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    size_t got = 0;
    ssize_t n;

    buf[0] = '\0';
    if (fd < 0)
        return 0;
    if (offset == 0 || lseek(fd, offset, SEEK_SET) == offset)
        while (got + 1 < size && (n = read(fd, buf + got, size - 1 - got)) > 0)
            got += (size_t)n;
    buf[got] = '\0';
    close(fd);
    return got;
}

off_t tu_file_size(const char *path)
{
    struct stat st;

    return stat(path, &st) == 0 ? st.st_size : 0;
}

bool tu_proc_stat(pid_t pid, struct tu_proc_stat *st)
{
    char path[64], stat[1024];
    const char *p;
    int ppid, pgrp;

    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    tu_read_file(path, stat, sizeof(stat));
    /* "pid (comm) S ppid pgrp ...": comm may hold spaces and ')'. */
    p = strrchr(stat, ')');
    if (p == NULL || sscanf(p + 1, " %c %d %d", &st->state, &ppid, &pgrp) != 3)
        return false;
    st->ppid = (pid_t)ppid;
    st->pgrp = (pid_t)pgrp;
    return true;
}

size_t tu_proc_cmdline(pid_t pid, char *buf, size_t size)
{
    char path[64];
    int fd;
    ssize_t len;

    buf[0] = '\0';
    snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    len = read(fd, buf, size - 1);
    close(fd);
    if (len <= 0)
        return 0;
    for (ssize_t i = 0; i < len; i++)
        if (buf[i] == '\0')
            buf[i] = ' ';
    while (len > 0 && buf[len - 1] == ' ')
        len--;
    buf[len] = '\0';
    return (size_t)len;
}

bool tu_each_process(void (*fn)(pid_t pid, void *arg), void *arg)
{
    DIR *dir = opendir("/proc");
    struct dirent *e;

    if (dir == NULL)
        return false;
    while ((e = readdir(dir)) != NULL)
        if (e->d_name[0] >= '1' && e->d_name[0] <= '9')
            fn((pid_t)atoi(e->d_name), arg);
    closedir(dir);
    return true;
}

/* Calls fn for each fd of pid (its /proc/<pid>/fd entry); -1 if pid is gone. */
static int each_fd(pid_t pid, void (*fn)(const char *entry, void *arg), void *arg)
{
    char path[64];
    DIR *dir;
    struct dirent *e;
    int n = 0;

    snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
    dir = opendir(path);
    if (dir == NULL)
        return -1;
    while ((e = readdir(dir)) != NULL) {
        char entry[sizeof(path) + sizeof(e->d_name) + 1];

        if (e->d_name[0] == '.')
            continue;
        n++;
        if (fn != NULL) {
            snprintf(entry, sizeof(entry), "%s/%s", path, e->d_name);
            fn(entry, arg);
        }
    }
    closedir(dir);
    return n;
}

int tu_proc_fd_count(pid_t pid)
{
    return each_fd(pid, NULL, NULL);
}

long tu_proc_rss_kib(pid_t pid)
{
    char path[64], text[4096];
    const char *p;

    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    tu_read_file(path, text, sizeof(text));
    p = strstr(text, "\nVmRSS:");
    return p != NULL ? strtol(p + 7, NULL, 10) : -1;
}

struct inode_list {
    unsigned long *inodes;
    int n, max;
};

static void note_socket(const char *entry, void *arg)
{
    struct inode_list *l = arg;
    char target[64];
    ssize_t len = readlink(entry, target, sizeof(target) - 1);

    if (len <= 0 || l->n >= l->max)
        return;
    target[len] = '\0';
    if (strncmp(target, "socket:[", 8) == 0)
        l->inodes[l->n++] = strtoul(target + 8, NULL, 10);
}

int tu_proc_socket_inodes(pid_t pid, unsigned long *inodes, int max)
{
    struct inode_list l = { inodes, 0, max };

    if (each_fd(pid, note_socket, &l) < 0)
        return -ENOENT;
    return l.n;
}

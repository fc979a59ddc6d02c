/* The part of the test helpers that reads /proc and small files and needs
 * nothing from Check or libev, so that the soak driver (tests/soak/, a plain
 * program) links it as well as the suites. The names are testutil's
 * (testutil.h includes this header). None of these fails a test: absent
 * files and processes come back as empty or -1. */
#ifndef PF_PROCUTIL_H
#define PF_PROCUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* Reads up to size-1 bytes of path into buf, NUL-terminated ("" if absent). */
void tu_read_file(const char *path, char *buf, size_t size);
/* The same from byte offset on; returns the bytes read. */
size_t tu_read_file_from(const char *path, off_t offset, char *buf, size_t size);
/* 0 if path does not exist. */
off_t tu_file_size(const char *path);

/* What /proc/<pid>/stat says about a process. */
struct tu_proc_stat {
    char state;         /* R, S, D, T, Z, ... */
    pid_t ppid;
    pid_t pgrp;
};
/* False if pid does not exist (any more). */
bool tu_proc_stat(pid_t pid, struct tu_proc_stat *st);
/* pid's /proc/<pid>/cmdline (the ps title) with NULs as spaces, trailing
 * spaces trimmed, NUL-terminated; returns its length, 0 if there is none
 * (no such process, or a zombie). */
size_t tu_proc_cmdline(pid_t pid, char *buf, size_t size);
/* Calls fn(pid, arg) for every process in /proc, zombies too; false if
 * /proc cannot be read. */
bool tu_each_process(void (*fn)(pid_t pid, void *arg), void *arg);
/* Open fds of pid; -1 if it is gone. */
int tu_proc_fd_count(pid_t pid);
/* VmRSS in KiB; -1 if pid is gone. */
long tu_proc_rss_kib(pid_t pid);
/* The inodes of the sockets among pid's fds, up to max; returns how many,
 * or -errno if its fd table cannot be read. */
int tu_proc_socket_inodes(pid_t pid, unsigned long *inodes, int max);

#endif

/*
 * http_path: decodes and normalizes a request target in one pass straight
 * into the caller's buffer, then opens the result beneath the root fd. The
 * string work only keeps ".." from climbing above the root in the name; the
 * open is what keeps symlinks from leading out of the tree, so both are
 * needed. Mapping errors to status codes is http.c's job.
 */
#define _GNU_SOURCE     /* O_PATH, syscall */
#include "http_path.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

/* openat2 with RESOLVE_BENEATH says EAGAIN when a rename raced with a ".."
 * (from a symlink's target) and it could not prove the walk stayed inside;
 * the man page suggests retrying. A few tries, so that a tree renamed in a
 * loop cannot make us spin. */
#define OPENAT2_TRIES 3

/* Value of an ASCII hex digit, or -1. */
static int hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;          /* ASCII lower case; no other byte lands on a-f */
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

int http_path_normalize(const char *target, size_t len, char *out, size_t outlen,
                        bool *trailing_slash)
{
    size_t limit, o = 0, seg = 0, i = 1;
    unsigned dots = 0;

    assert(target != NULL && out != NULL && outlen > 0 && trailing_slash != NULL);
    limit = outlen - 1 < HTTP_PATH_MAX ? outlen - 1 : HTTP_PATH_MAX;
    if (len == 0 || target[0] != '/')
        return -EINVAL;

    /* out[0..seg) is the normalized path so far. A segment's bytes follow
     * it, after a '/' unless seg is 0, but only once the segment is known
     * not to be "", "." or "..": until then dots counts its bytes. So a
     * dropped segment never has to fit, and leaves no separator behind. */
    for (;;) {
        bool end = i == len || target[i] == '?' || target[i] == '#';
        bool dir_name;

        if (!end) {
            unsigned char c = (unsigned char)target[i++];

            if (c == '%') {
                int hi, lo;

                if (len - i < 2 || (hi = hex_value((unsigned char)target[i])) < 0 ||
                    (lo = hex_value((unsigned char)target[i + 1])) < 0)
                    return -EINVAL;
                i += 2;
                c = (unsigned char)(hi << 4 | lo);
                /* A NUL would cut the name short in every later syscall. */
                if (c == '\0')
                    return -EINVAL;
            } else if (c < 0x20 || c == 0x7f) {
                return -EINVAL;
            }
            if (c != '/') {
                if (o == seg) {
                    if (c == '.' && dots < 2) {
                        dots++;
                        continue;
                    }
                    if (limit - o < (seg > 0) + dots + 1)
                        return -ENAMETOOLONG;
                    if (seg > 0)
                        out[o++] = '/';
                    for (; dots > 0; dots--)
                        out[o++] = '.';
                } else if (o == limit) {
                    return -ENAMETOOLONG;
                }
                out[o++] = (char)c;
                continue;
            }
        }

        /* A segment ended, at a separator or at the end of the path. */
        dir_name = o == seg;
        if (dir_name && dots == 2) {
            if (seg == 0)
                return -EINVAL;
            /* Drop the previous segment and its separator. Each byte is
             * dropped at most once, so the whole call stays linear. */
            while (o > 0 && out[o - 1] != '/')
                o--;
            if (o > 0)
                o--;
        }
        if (end) {
            out[o] = '\0';
            *trailing_slash = dir_name;
            return 0;
        }
        seg = o;
        dots = 0;
    }
}

/* The errno of a failed open in the walk, as -errno. With O_NOFOLLOW and
 * O_DIRECTORY the kernel reports a symlink as ENOTDIR; the walk promises
 * ELOOP for every symlink, so look. The fstatat races with the open, but it
 * only picks between two refusals. */
static int walk_error(int dir_fd, const char *name, int err)
{
    struct stat st;

    if (err == ENOTDIR && fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
        S_ISLNK(st.st_mode))
        return -ELOOP;
    return -err;
}

/* The fallback for kernels without openat2: one component at a time, never
 * following a symlink, never going up. Directories on the way are opened
 * with O_PATH, which needs search permission only, as a path walk does. */
static int open_walk(int root_fd, const char *rel, int flags)
{
    char name[NAME_MAX + 1];
    const char *p = rel;
    int dir_fd = root_fd, fd;

    if (*p == '/')
        return -EXDEV;
    for (;;) {
        const char *slash = strchr(p, '/');
        size_t n = slash != NULL ? (size_t)(slash - p) : strlen(p);

        if (n > NAME_MAX) {
            fd = -ENAMETOOLONG;
            break;
        }
        memcpy(name, p, n);
        name[n] = '\0';
        if (n == 0)
            memcpy(name, ".", 2);
        if (strcmp(name, "..") == 0) {
            fd = -EXDEV;
            break;
        }
        if (slash == NULL) {
            fd = openat(dir_fd, name, flags | O_NOFOLLOW);
            if (fd < 0)
                fd = walk_error(dir_fd, name, errno);
            break;
        }
        p = slash + 1;
        if (strcmp(name, ".") == 0)
            continue;
        fd = openat(dir_fd, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0) {
            fd = walk_error(dir_fd, name, errno);
            break;
        }
        if (dir_fd != root_fd)
            close(dir_fd);
        dir_fd = fd;
    }
    if (dir_fd != root_fd)
        close(dir_fd);
    return fd;
}

int http_open_beneath(int root_fd, const char *rel, int flags)
{
    struct open_how how = {
        .flags = (uint64_t)(unsigned)flags,
        .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS,
    };
    const char *path;
    int tries;

    assert(rel != NULL);
    path = rel[0] != '\0' ? rel : ".";
    for (tries = 0; tries < OPENAT2_TRIES; tries++) {
        long fd = syscall(SYS_openat2, root_fd, path, &how, sizeof(how));

        if (fd >= 0)
            return (int)fd;
        /* Not cached: a worker asks again for every request, and a failed
         * syscall costs less than the global state to remember it. */
        if (errno == ENOSYS)
            return open_walk(root_fd, rel, flags);
        if (errno != EAGAIN)
            return -errno;
    }
    return -EAGAIN;
}

/*
 * http_cache: maps a request path to an open, stat'ed file with its headers
 * made, and the bytes of small files, so that a repeated request costs no
 * open, no stat and no read. Entries are checked against the disk once a
 * HTTP_CACHE_VALID_SEC; a changed file is replaced, and its old fd lives
 * until the last send that uses it is done. Safe resolution under root is
 * http_path.c's; what to answer is http.c's.
 */
#include "http_cache.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "http_path.h"

#define HTTP_CACHE_BUCKETS 1024     /* a power of two */

struct http_cache {
    int root_fd;
    const char *index;
    const struct mime_types *mime;
    struct http_file *buckets[HTTP_CACHE_BUCKETS];
    size_t entries, bytes;
};

static uint32_t key_hash(const char *key)
{
    uint32_t h = 2166136261u;       /* FNV-1a */

    for (; *key; key++)
        h = (h ^ (unsigned char)*key) * 16777619u;
    return h;
}

struct http_cache *http_cache_new(int root_fd, const char *index, const struct mime_types *mime)
{
    struct http_cache *c = calloc(1, sizeof(*c));

    if (c != NULL) {
        c->root_fd = root_fd;
        c->index = index;
        c->mime = mime;
    }
    return c;
}

static void file_free(struct http_file *f)
{
    close(f->fd);
    free((void *)f->body);
    free(f);
}

void http_file_release(struct http_cache *c, struct http_file *f)
{
    (void)c;
    if (--f->refs == 0)
        file_free(f);
}

static void cache_remove(struct http_cache *c, struct http_file *f)
{
    struct http_file **p = &c->buckets[key_hash(f->key) & (HTTP_CACHE_BUCKETS - 1)];

    while (*p != f)
        p = &(*p)->next;
    *p = f->next;
    c->entries--;
    c->bytes -= f->bytes;
    f->cached = false;
    http_file_release(c, f);
}

void http_cache_free(struct http_cache *c)
{
    if (c == NULL)
        return;
    for (int i = 0; i < HTTP_CACHE_BUCKETS; i++)
        while (c->buckets[i] != NULL)
            cache_remove(c, c->buckets[i]);
    free(c);
}

static int open_stat(struct http_cache *c, const char *rel, int *fd, struct stat *st)
{
    int err;

    *fd = http_open_beneath(c->root_fd, rel, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (*fd < 0)
        return *fd;
    if (fstat(*fd, st) == 0)
        return 0;
    err = -errno;
    close(*fd);
    return err;
}

/* Opens rel under root, or for a directory with a slash its index, into
 * *fd and *st. Returns 0, HTTP_CACHE_IS_DIR, or -errno. */
static int open_file(struct http_cache *c, const char *rel, bool slash, int *fd,
                     struct stat *st, const char **name)
{
    char path[HTTP_PATH_MAX + 256];
    int rc = open_stat(c, rel, fd, st);

    *name = rel;
    if (rc == 0 && S_ISDIR(st->st_mode)) {
        close(*fd);
        if (!slash)
            return HTTP_CACHE_IS_DIR;
        if ((size_t)snprintf(path, sizeof(path), "%s%s%s", rel, *rel ? "/" : "", c->index) >=
            sizeof(path))
            return -ENAMETOOLONG;
        *name = c->index;
        rc = open_stat(c, path, fd, st);
    }
    /* Devices, fifos, sockets and directories are not served; nor is a
     * file named with a trailing slash (as nginx: "a.html/" is 404). */
    if (rc == 0 && (!S_ISREG(st->st_mode) || (slash && *name == rel))) {
        close(*fd);
        rc = -ENOENT;
    }
    return rc;
}

static int read_body(int fd, size_t size, char **out)
{
    char *buf = malloc(size ? size : 1);
    size_t got = 0;

    if (buf == NULL)
        return -ENOMEM;
    while (got < size) {
        ssize_t n = pread(fd, buf + got, size - got, (off_t)got);
        if (n <= 0) {
            free(buf);
            return n < 0 ? -errno : -EIO;   /* shrank while we read: try again later */
        }
        got += (size_t)n;
    }
    *out = buf;
    return 0;
}

/* A response to the file is then memcpy, not printf (which was a third of
 * a worker's own CPU time per small request). */
static void make_fields(struct http_file *f)
{
    int v = snprintf(f->fields, sizeof(f->fields), "Last-Modified: %s\r\nETag: %s\r\n",
                     f->last_modified, f->etag);
    int n = v < 0 || (size_t)v >= sizeof(f->fields) ? -1
        : snprintf(f->fields + v, sizeof(f->fields) - (size_t)v, "Content-Type: %s\r\n"
                   "Content-Length: %lld\r\nAccept-Ranges: bytes\r\n", f->type,
                   (long long)f->st.st_size);

    if (n < 0 || (size_t)n >= sizeof(f->fields) - (size_t)v)
        return;                 /* fields_len 0: built per response instead */
    f->validators_len = (unsigned short)v;
    f->fields_len = (unsigned short)(v + n);
}

static struct http_file *file_new(struct http_cache *c, const char *key, int fd,
                                  const struct stat *st, const char *name, double now)
{
    struct http_file *f = calloc(1, sizeof(*f) + strlen(key) + 1);
    struct tm tm;
    char *body = NULL;

    if (f == NULL)
        return NULL;
    if (st->st_size <= HTTP_CACHE_SMALL_MAX && read_body(fd, (size_t)st->st_size, &body) < 0) {
        free(f);
        return NULL;
    }
    strcpy(f->key, key);
    f->fd = fd;
    f->st = *st;
    f->body = body;
    f->type = mime_type(c->mime, name);
    snprintf(f->etag, sizeof(f->etag), "\"%llx-%llx\"", (unsigned long long)st->st_mtime,
             (unsigned long long)st->st_size);
    gmtime_r(&st->st_mtime, &tm);
    strftime(f->last_modified, sizeof(f->last_modified), "%a, %d %b %Y %H:%M:%S GMT", &tm);
    make_fields(f);
    f->refs = 1;
    f->checked = now;
    f->bytes = sizeof(*f) + strlen(key) + (body ? (size_t)st->st_size : 0);
    return f;
}

static bool same_file(const struct stat *a, const struct stat *b)
{
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
           a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

int http_cache_get(struct http_cache *c, double now, const char *rel, bool slash,
                   struct http_file **out)
{
    char key[HTTP_PATH_MAX + 2];
    struct http_file **bucket, *f;
    const char *name;
    struct stat st;
    size_t len = strnlen(rel, HTTP_PATH_MAX);
    int fd, rc;

    /* rel, and a slash if it was named with one (no printf: every request). */
    memcpy(key, rel, len);
    if (slash)
        key[len++] = '/';
    key[len] = '\0';
    bucket = &c->buckets[key_hash(key) & (HTTP_CACHE_BUCKETS - 1)];
    for (f = *bucket; f != NULL && strcmp(f->key, key) != 0; f = f->next)
        ;
    if (f != NULL && now - f->checked < HTTP_CACHE_VALID_SEC) {
        f->refs++;
        *out = f;
        return 0;
    }
    rc = open_file(c, rel, slash, &fd, &st, &name);
    if (f != NULL) {
        if (rc == 0 && same_file(&st, &f->st)) {
            close(fd);
            f->checked = now;
            f->refs++;
            *out = f;
            return 0;
        }
        cache_remove(c, f);         /* changed or gone */
    }
    if (rc != 0)
        return rc;
    f = file_new(c, key, fd, &st, name, now);
    if (f == NULL) {
        close(fd);
        return -ENOMEM;
    }
    if (c->entries < HTTP_CACHE_ENTRIES_MAX && c->bytes + f->bytes <= HTTP_CACHE_BYTES_MAX) {
        f->next = *bucket;
        *bucket = f;
        f->cached = true;
        f->refs++;                  /* the table's reference */
        c->entries++;
        c->bytes += f->bytes;
    }
    *out = f;
    return 0;
}

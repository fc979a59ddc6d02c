/* http_cache: a worker's cache of the files it serves. */
#ifndef PREFORKD_HTTP_CACHE_H
#define PREFORKD_HTTP_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/stat.h>

#include "mime.h"

/* A cached file is checked against the disk again after this long, as
 * nginx's open_file_cache_valid (there 60 s; a change shows sooner here). */
#define HTTP_CACHE_VALID_SEC 1.0
/* Files up to this size are kept in memory and sent with one writev. */
#define HTTP_CACHE_SMALL_MAX (32 * 1024)
#define HTTP_CACHE_ENTRIES_MAX 1024
#define HTTP_CACHE_BYTES_MAX (8 * 1024 * 1024)
/* http_cache_get's answer for a directory named without its slash. */
#define HTTP_CACHE_IS_DIR 1

/* One regular file, ready to serve. Read-only for users. */
/* Room for a file's prebuilt header fields (a long MIME type fits). */
#define HTTP_FILE_FIELDS_MAX 320

struct http_file {
    int fd;                     /* open for sendfile; shared by sends in flight */
    struct stat st;
    const char *body;           /* the whole file if small, else NULL */
    const char *type;           /* Content-Type */
    char etag[48];              /* "mtime-size" in hex, quoted (nginx's) */
    char last_modified[40];     /* IMF-fixdate */
    /* A 200's headers about the file, made once: Last-Modified and ETag
     * (the first validators_len bytes: a 304's), then Content-Type,
     * Content-Length and Accept-Ranges. fields_len 0: did not fit. */
    char fields[HTTP_FILE_FIELDS_MAX];
    unsigned short fields_len, validators_len;
    unsigned refs;              /* private */
    bool cached;                /* private: in the table */
    double checked;             /* private */
    struct http_file *next;     /* private: bucket chain */
    size_t bytes;               /* private: memory it holds */
    char key[];                 /* private */
};

struct http_cache;

/* root_fd and mime are borrowed for the cache's life. NULL: no memory. */
struct http_cache *http_cache_new(int root_fd, const char *index, const struct mime_types *mime);
void http_cache_free(struct http_cache *c);
/*
 * The file for rel (from http_path_normalize; trailing_slash as it said),
 * the directory's index file when rel is a directory named with its slash.
 * now: the loop's time. Returns 0 with *out referenced (release it once the
 * send is done), HTTP_CACHE_IS_DIR, or -errno: -ENOENT (also for anything
 * not a regular file), -EACCES, -EXDEV or -ELOOP (leads outside root), ...
 */
int http_cache_get(struct http_cache *c, double now, const char *rel, bool trailing_slash,
                   struct http_file **out);
void http_file_release(struct http_cache *c, struct http_file *f);

#endif

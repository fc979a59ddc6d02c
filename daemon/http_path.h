/*
 * http_path: from an HTTP request target to an open file under the served
 * root. Decoding and normalizing the path is pure string work; opening it is
 * left to the kernel (openat2 RESOLVE_BENEATH), so that symlinks inside the
 * tree cannot lead out of it either. Status codes and logging belong to the
 * caller (http.c).
 */
#ifndef PREFORKD_HTTP_PATH_H
#define PREFORKD_HTTP_PATH_H

#include <stdbool.h>
#include <stddef.h>

/* Longest normalized path we serve (bytes, NUL excluded). */
#define HTTP_PATH_MAX 4096

/*
 * Decodes the path of an origin-form request target (target[0..len), up to but
 * excluding any '?' query or '#' fragment) exactly once, and normalizes it:
 * empty and "." segments dropped, ".." removes the previous segment.
 * A decoded "%2F" is a separator like '/', and a decoded "%2e%2e" is "..",
 * because normalizing happens after decoding.
 * Writes the result as a relative path (no leading '/', no trailing '/', ""
 * for the root) to out (outlen bytes, NUL included; at most HTTP_PATH_MAX
 * are used whatever outlen is). *trailing_slash tells whether the decoded
 * path ended with '/' (or was "/"), or with a "." or ".." segment, which
 * name a directory just as well (RFC 3986 turns "/a/." into "/a/").
 * Returns 0, or -EINVAL when the target does not start with '/', has a bad
 * %-escape (non-hex, truncated), decodes to a NUL byte or contains a raw
 * control character (0x00-0x1f, 0x7f), or ".." would climb above the root;
 * -ENAMETOOLONG when it does not fit, which includes a long segment that a
 * later ".." would have removed. out is unspecified after an error.
 */
int http_path_normalize(const char *target, size_t len, char *out, size_t outlen,
                        bool *trailing_slash);

/*
 * Opens rel (from http_path_normalize; "" means the root itself) beneath the
 * directory root_fd with openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS),
 * so that no symlink or ".." can lead outside root (the kernel refuses with
 * -EXDEV). flags: e.g. O_RDONLY|O_CLOEXEC|O_NONBLOCK; no O_CREAT (openat2
 * would need a mode), and O_NOFOLLOW is not needed.
 * Returns the fd, which the caller closes, or -errno.
 * If openat2 is not available (ENOSYS: kernels before 5.6, some seccomp
 * sandboxes), falls back to a walk that opens one component at a time with
 * O_NOFOLLOW and refuses every symlink, inside or outside, with -ELOOP, and
 * every ".." component or absolute rel with -EXDEV.
 */
int http_open_beneath(int root_fd, const char *rel, int flags);

#endif

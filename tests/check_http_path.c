/*
 * check_http_path: request target -> normalized path (http_path_normalize),
 * normalized path -> fd beneath the root (http_open_beneath, with openat2 and
 * with its fallback walk), and extension -> Content-Type (mime). The open
 * tests share one temp tree, built in main, with symlinks pointing inside
 * and outside the root. The fallback tests make openat2 fail with ENOSYS
 * through a seccomp filter in the forked test process, so they run the walk
 * on this kernel too and leave the other tests alone.
 */
#define _GNU_SOURCE     /* O_PATH, syscall */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/filter.h>
#include <linux/openat2.h>
#include <linux/seccomp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "../daemon/http_path.h"
#include "../daemon/mime.h"
#include "testutil.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
/* Every test here is fast; the random-target test is the slowest. */
#define TCASE_TIMEOUT_SEC 30
/* Targets the random test compares against the reference. */
#define RANDOM_TARGETS 200000
/* Longest random target: far below HTTP_PATH_MAX, so no -ENAMETOOLONG. */
#define RANDOM_TARGET_MAX 24
/* Extensions in the file that makes the mime table grow several times. */
#define MANY_EXTENSIONS 5000

static char suite_dir[] = "/tmp/check_http_path.XXXXXX";
static char root_dir[sizeof(suite_dir) + sizeof("/root")];

/* ---------------------------------------------------------------- normalize */

struct norm_case {
    const char *target;
    int rc;
    const char *out;        /* when rc == 0 */
    bool trailing_slash;    /* when rc == 0 */
};

static int normalize(const char *target, char *out, bool *trailing_slash)
{
    return http_path_normalize(target, strlen(target), out, HTTP_PATH_MAX + 1,
                               trailing_slash);
}

/* A path that http_open_beneath may see: relative, and no ".." segment. */
static void assert_inside_root(const char *target, const char *path)
{
    const char *p = path;

    ck_assert_msg(path[0] != '/', "%s: normalized to absolute \"%s\"", target, path);
    while (*p != '\0') {
        size_t n = strcspn(p, "/");

        ck_assert_msg(!(n == 2 && p[0] == '.' && p[1] == '.'),
                      "%s: normalized to \"%s\", which climbs", target, path);
        p += n + (p[n] == '/');
    }
}

static void check_norm_case(const struct norm_case *c)
{
    char out[HTTP_PATH_MAX + 1];
    bool ts = false;
    int rc = normalize(c->target, out, &ts);

    ck_assert_msg(rc == c->rc, "%s: returned %d, expected %d", c->target, rc, c->rc);
    if (rc != 0)
        return;
    ck_assert_msg(strcmp(out, c->out) == 0, "%s: gave \"%s\", expected \"%s\"",
                  c->target, out, c->out);
    ck_assert_msg(ts == c->trailing_slash, "%s: trailing_slash %d, expected %d",
                  c->target, ts, c->trailing_slash);
    assert_inside_root(c->target, out);
}

static void check_norm_cases(const struct norm_case *cases, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        check_norm_case(&cases[i]);
}

START_TEST(test_plain_path_becomes_relative)
{
    static const struct norm_case cases[] = {
        { "/index.html", 0, "index.html", false },
        { "/a/b/c.txt", 0, "a/b/c.txt", false },
        { "/a", 0, "a", false },
        { "/..\\x", 0, "..\\x", false },    /* backslash: an ordinary byte */
        { "/a/...", 0, "a/...", false },
        { "/a/..b/c..", 0, "a/..b/c..", false },
        { "/caf\xc3\xa9", 0, "caf\xc3\xa9", false },
    };
    check_norm_cases(cases, ARRAY_LEN(cases));
}
END_TEST

START_TEST(test_query_and_fragment_are_stripped)
{
    static const struct norm_case cases[] = {
        { "/a/b.html?x=1", 0, "a/b.html", false },
        { "/a/b.html?x=/../../..", 0, "a/b.html", false },
        { "/a#frag", 0, "a", false },
        { "/a#f?q", 0, "a", false },
        { "/a/?q", 0, "a", true },
        { "/?q", 0, "", true },
        { "/a?%zz", 0, "a", false },        /* the query is not decoded */
        { "/a%3Fb%23c", 0, "a?b#c", false },/* escaped, they are file name bytes */
    };
    check_norm_cases(cases, ARRAY_LEN(cases));
}
END_TEST

START_TEST(test_root_is_empty_with_trailing_slash)
{
    static const struct norm_case cases[] = {
        { "/", 0, "", true },
        { "//", 0, "", true },
        { "/.", 0, "", true },
        { "/a/..", 0, "", true },
    };
    check_norm_cases(cases, ARRAY_LEN(cases));
}
END_TEST

START_TEST(test_trailing_slash_is_reported)
{
    static const struct norm_case cases[] = {
        { "/a/b/", 0, "a/b", true },
        { "/a/b", 0, "a/b", false },
        { "/a/b//", 0, "a/b", true },
        { "/a/b%2F", 0, "a/b", true },
        { "/a/.", 0, "a", true },
        { "/a/b/..", 0, "a", true },
        { "/a/b/.?q", 0, "a/b", true },
    };
    check_norm_cases(cases, ARRAY_LEN(cases));
}
END_TEST

START_TEST(test_repeated_slashes_collapse)
{
    static const struct norm_case cases[] = {
        { "//a///b", 0, "a/b", false },
        { "/a%2F%2fb", 0, "a/b", false },
        { "///a//b//", 0, "a/b", true },
    };
    check_norm_cases(cases, ARRAY_LEN(cases));
}
END_TEST

START_TEST(test_dot_segments_are_dropped)
{
    static const struct norm_case cases[] = {
        { "/./a/.", 0, "a", true },
        { "/a/./b/./c", 0, "a/b/c", false },
        { "/%2e/a/%2E/b", 0, "a/b", false },
        { "/./././x", 0, "x", false },
    };
    check_norm_cases(cases, ARRAY_LEN(cases));
}
END_TEST

START_TEST(test_dotdot_removes_previous_segment)
{
    static const struct norm_case cases[] = {
        { "/a/../b", 0, "b", false },
        { "/a/b/../../c", 0, "c", false },
        { "/a/b/../c/./../d", 0, "a/d", false },
        { "/aaa/bb/c/../../d", 0, "aaa/d", false },
        { "/a/%2e%2e/b", 0, "b", false },
        { "/a/b%2F..%2Fc", 0, "a/c", false },
        { "/a//..//b", 0, "b", false },
    };
    check_norm_cases(cases, ARRAY_LEN(cases));
}
END_TEST

/* Each of these either is refused or names a file inside the root. */
static const struct norm_case traversal_cases[] = {
    { "/..", -EINVAL, NULL, false },
    { "/../etc/passwd", -EINVAL, NULL, false },
    { "/%2e%2e/etc/passwd", -EINVAL, NULL, false },
    { "/%2E%2E/", -EINVAL, NULL, false },
    { "/.%2e/x", -EINVAL, NULL, false },
    { "/%2e./x", -EINVAL, NULL, false },
    { "/a/../../x", -EINVAL, NULL, false },
    { "/a/%2e%2e/%2e%2e/x", -EINVAL, NULL, false },
    { "/..%2fetc%2fpasswd", -EINVAL, NULL, false },
    { "/%2e%2e%2fetc", -EINVAL, NULL, false },
    { "/a/b/../../../x", -EINVAL, NULL, false },
    { "/a/..%2F..%2Fx", -EINVAL, NULL, false },
    { "/a%2f..%2f..%2fx", -EINVAL, NULL, false },
    { "/./../x", -EINVAL, NULL, false },
    { "/..?x", -EINVAL, NULL, false },
    { "/%2e%2e#/x", -EINVAL, NULL, false },
    { "/a/b/%2E%2E%2F%2E%2E%2F%2E%2E%2Fx", -EINVAL, NULL, false },
    { "/..\\x", 0, "..\\x", false },
    { "/..\\..\\etc\\passwd", 0, "..\\..\\etc\\passwd", false },
    { "/..;/x", 0, "..;/x", false },
    { "/%252e%252e/x", 0, "%2e%2e/x", false },
    { "/%2e%2e%2e/x", 0, ".../x", false },
    { "/a/..?/../..", 0, "", true },
    { "/.%00./x", -EINVAL, NULL, false },
    { "/%c0%ae%c0%ae/x", 0, "\xc0\xae\xc0\xae/x", false },   /* overlong UTF-8 '.' */
};

START_TEST(test_traversal_is_refused_or_stays_inside)
{
    check_norm_case(&traversal_cases[_i]);
}
END_TEST

/* Each of these is refused with -EINVAL. */
static const char *const malformed_targets[] = {
    "/%00", "/a%00.html", "/%", "/%2", "/a%2", "/%zz", "/%g0", "/%0g", "/%%41",
    "/% 41", "/%-1", "/\x01", "/a\x1f", "/a\x7f", "/a\tb", "/a\r\nb", "/a/b\n",
};

START_TEST(test_bad_escape_or_control_byte_is_refused)
{
    char out[HTTP_PATH_MAX + 1];
    bool ts;
    const char *target = malformed_targets[_i];
    int rc = normalize(target, out, &ts);

    ck_assert_msg(rc == -EINVAL, "\"%s\": returned %d, expected -EINVAL", target, rc);
}
END_TEST

START_TEST(test_raw_nul_byte_is_refused)
{
    static const char target[] = "/a\0b";
    char out[HTTP_PATH_MAX + 1];
    bool ts;

    ck_assert_int_eq(http_path_normalize(target, sizeof(target) - 1, out, sizeof(out), &ts),
                     -EINVAL);
}
END_TEST

START_TEST(test_escapes_are_decoded_exactly_once)
{
    static const struct norm_case cases[] = {
        { "/a%20b", 0, "a b", false },
        { "/100%25", 0, "100%", false },
        { "/%252e%252e", 0, "%2e%2e", false },
        { "/%2541", 0, "%41", false },
        { "/%41%62%7E", 0, "Ab~", false },
        { "/%e2%82%AC", 0, "\xe2\x82\xac", false },
        { "/%5c..%5c", 0, "\\..\\", false },
    };
    check_norm_cases(cases, ARRAY_LEN(cases));
}
END_TEST

START_TEST(test_target_without_leading_slash_is_refused)
{
    static const char *const targets[] = {
        "*", "http://x/", "a/b", "%2Fa", "?/a", "",
    };
    char out[HTTP_PATH_MAX + 1];
    bool ts;
    size_t i;

    for (i = 0; i < ARRAY_LEN(targets); i++)
        ck_assert_msg(normalize(targets[i], out, &ts) == -EINVAL, "\"%s\" accepted",
                      targets[i]);
}
END_TEST

START_TEST(test_only_len_bytes_are_read)
{
    char out[HTTP_PATH_MAX + 1];
    bool ts;

    /* The rest of the request line must not leak into the path. */
    ck_assert_int_eq(http_path_normalize("/ab HTTP/1.1", 3, out, sizeof(out), &ts), 0);
    ck_assert_str_eq(out, "ab");
    ck_assert_int_eq(http_path_normalize("/a%41", 4, out, sizeof(out), &ts), -EINVAL);
}
END_TEST

START_TEST(test_too_long_path_is_refused)
{
    static char target[HTTP_PATH_MAX + 3];
    static char out[HTTP_PATH_MAX + 8];
    char small[4];
    bool ts;

    /* Exactly HTTP_PATH_MAX bytes fit, one more does not, however big out is. */
    target[0] = '/';
    memset(target + 1, 'a', HTTP_PATH_MAX);
    ck_assert_int_eq(http_path_normalize(target, HTTP_PATH_MAX + 1, out, sizeof(out), &ts), 0);
    ck_assert_uint_eq(strlen(out), HTTP_PATH_MAX);
    target[HTTP_PATH_MAX + 1] = 'a';
    ck_assert_int_eq(http_path_normalize(target, HTTP_PATH_MAX + 2, out, sizeof(out), &ts),
                     -ENAMETOOLONG);
    /* Also with room for the segments but not for a separator. */
    memset(target + 1, 'a', HTTP_PATH_MAX);
    target[HTTP_PATH_MAX / 2] = '/';
    ck_assert_int_eq(http_path_normalize(target, HTTP_PATH_MAX + 1, out, sizeof(out), &ts), 0);
    target[HTTP_PATH_MAX + 1] = 'a';
    ck_assert_int_eq(http_path_normalize(target, HTTP_PATH_MAX + 2, out, sizeof(out), &ts),
                     -ENAMETOOLONG);

    /* A small out: the NUL needs its byte. */
    ck_assert_int_eq(http_path_normalize("/a/b", 4, small, sizeof(small), &ts), 0);
    ck_assert_str_eq(small, "a/b");
    ck_assert_int_eq(http_path_normalize("/abcd", 5, small, sizeof(small), &ts), -ENAMETOOLONG);
    ck_assert_int_eq(http_path_normalize("/ab/cd", 6, small, sizeof(small), &ts), -ENAMETOOLONG);
    ck_assert_int_eq(http_path_normalize("/abc/../d", 9, small, sizeof(small), &ts), 0);
    ck_assert_str_eq(small, "d");
}
END_TEST

/* The obvious two-pass version, to compare against: decode all of the path
 * into a buffer, then split it and keep a stack of segments. */
static int reference_normalize(const char *t, size_t len, char *out, bool *ts)
{
    char dec[RANDOM_TARGET_MAX + 1];
    size_t dn = 0, i, start[RANDOM_TARGET_MAX], slen[RANDOM_TARGET_MAX], depth = 0, o = 0;

    if (len == 0 || t[0] != '/')
        return -EINVAL;
    for (i = 0; i < len && t[i] != '?' && t[i] != '#'; i++) {
        unsigned char c = (unsigned char)t[i];
        unsigned v;

        if (c == '%') {
            if (len - i < 3 || sscanf(t + i + 1, "%2x", &v) != 1 ||
                strspn(t + i + 1, "0123456789abcdefABCDEF") < 2)
                return -EINVAL;
            c = (unsigned char)v;
            i += 2;
            if (c == 0)
                return -EINVAL;
        } else if (c < 0x20 || c == 0x7f) {
            return -EINVAL;
        }
        dec[dn++] = (char)c;
    }
    for (i = 1;;) {
        size_t n = 0;

        while (i + n < dn && dec[i + n] != '/')
            n++;
        *ts = true;
        if (n == 2 && dec[i] == '.' && dec[i + 1] == '.') {
            if (depth == 0)
                return -EINVAL;
            depth--;
        } else if (n > 0 && !(n == 1 && dec[i] == '.')) {
            start[depth] = i;
            slen[depth++] = n;
            *ts = false;
        }
        if (i + n >= dn)
            break;
        i += n + 1;
    }
    for (i = 0; i < depth; i++) {
        if (i > 0)
            out[o++] = '/';
        memcpy(out + o, dec + start[i], slen[i]);
        o += slen[i];
    }
    out[o] = '\0';
    return 0;
}

/* Fails the test with a message when cond is false. Unlike ck_assert_msg,
 * which writes a mark to Check's pipe on every success, it costs nothing
 * in a loop of a few hundred thousand rounds. */
#define CHECK_QUIETLY(cond, ...) do { if (!(cond)) ck_abort_msg(__VA_ARGS__); } while (0)

START_TEST(test_normalize_matches_reference_on_random_targets)
{
    /* Bytes that make dot segments, escapes and separators likely. */
    static const char alphabet[] = "/./.%2eE5fF0a?\\#";
    char target[RANDOM_TARGET_MAX + 1], got[HTTP_PATH_MAX + 1], want[RANDOM_TARGET_MAX + 1];
    uint32_t seed = 12345;
    int n, refused = 0;

    for (n = 0; n < RANDOM_TARGETS; n++) {
        size_t len = 1, i;
        bool got_ts = false, want_ts = false;
        int got_rc, want_rc;

        target[0] = '/';
        seed = seed * 1103515245u + 12345u;
        len += (seed >> 16) % RANDOM_TARGET_MAX;
        for (i = 1; i < len; i++) {
            seed = seed * 1103515245u + 12345u;
            target[i] = alphabet[(seed >> 16) % (sizeof(alphabet) - 1)];
        }
        target[len] = '\0';
        got_rc = http_path_normalize(target, len, got, sizeof(got), &got_ts);
        want_rc = reference_normalize(target, len, want, &want_ts);
        CHECK_QUIETLY(got_rc == want_rc, "\"%s\": returned %d, reference %d", target, got_rc,
                      want_rc);
        if (got_rc != 0) {
            refused++;
            continue;
        }
        CHECK_QUIETLY(strcmp(got, want) == 0, "\"%s\": gave \"%s\", reference \"%s\"", target,
                      got, want);
        CHECK_QUIETLY(got_ts == want_ts, "\"%s\": trailing_slash %d, reference %d", target,
                      got_ts, want_ts);
        CHECK_QUIETLY(got[0] != '/' && strcmp(got, "..") != 0 && strncmp(got, "../", 3) != 0 &&
                      strstr(got, "/../") == NULL &&
                      !(strlen(got) >= 3 && strcmp(got + strlen(got) - 3, "/..") == 0),
                      "\"%s\": gave \"%s\", which climbs", target, got);
    }
    /* Both outcomes must be common, or the alphabet tests little. */
    ck_assert_int_gt(refused, RANDOM_TARGETS / 10);
    ck_assert_int_lt(refused, RANDOM_TARGETS * 9 / 10);
}
END_TEST

/* ---------------------------------------------------------------- open */

static int open_root(void)
{
    int fd = open(root_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);

    ck_assert_msg(fd >= 0, "open %s: %s", root_dir, strerror(errno));
    return fd;
}

/* http_open_beneath(root, rel) with the flags a worker uses: the fd, which
 * the caller closes, or -errno. */
static int open_rel(const char *rel)
{
    int root = open_root();
    int fd = http_open_beneath(root, rel, O_RDONLY | O_CLOEXEC | O_NONBLOCK);

    close(root);
    return fd;
}

/* 0 if rel opens (the fd is closed again), else -errno. */
static int open_error(const char *rel)
{
    int fd = open_rel(rel);

    if (fd < 0)
        return fd;
    close(fd);
    return 0;
}

static void assert_opens_file(const char *rel, const char *content)
{
    int fd = open_rel(rel);
    char buf[64];
    ssize_t n;

    ck_assert_msg(fd >= 0, "open \"%s\": %s", rel, strerror(-fd));
    n = read(fd, buf, sizeof(buf) - 1);
    ck_assert_msg(n >= 0, "read \"%s\": %s", rel, strerror(errno));
    buf[n] = '\0';
    ck_assert_str_eq(buf, content);
    close(fd);
}

static void assert_opens_root(const char *rel)
{
    int fd = open_rel(rel);
    struct stat st, root_st;

    ck_assert_msg(fd >= 0, "open \"%s\": %s", rel, strerror(-fd));
    ck_assert_int_eq(fstat(fd, &st), 0);
    ck_assert_int_eq(stat(root_dir, &root_st), 0);
    ck_assert(S_ISDIR(st.st_mode));
    ck_assert(st.st_dev == root_st.st_dev && st.st_ino == root_st.st_ino);
    close(fd);
}

START_TEST(test_open_empty_path_gives_root_dir)
{
    assert_opens_root("");
}
END_TEST

START_TEST(test_open_reads_files_beneath_root)
{
    assert_opens_file("a.txt", "alpha\n");
    assert_opens_file("sub/b.txt", "bravo\n");
    assert_opens_file("sub/deep/c.txt", "charlie\n");
}
END_TEST

START_TEST(test_open_follows_symlink_that_stays_inside)
{
    assert_opens_file("in/b.txt", "bravo\n");
    assert_opens_file("sub/back", "alpha\n");
}
END_TEST

START_TEST(test_open_refuses_symlink_out_of_root)
{
    ck_assert_int_eq(open_error("out/passwd"), -EXDEV);
    ck_assert_int_eq(open_error("out"), -EXDEV);
    ck_assert_int_eq(open_error("esc"), -EXDEV);
    ck_assert_int_eq(open_error("up/outside.txt"), -EXDEV);
    /* Absolute even though the target is inside: the kernel cannot tell. */
    ck_assert_int_eq(open_error("abs"), -EXDEV);
}
END_TEST

START_TEST(test_open_refuses_dotdot_and_absolute_path)
{
    ck_assert_int_eq(open_error("../outside.txt"), -EXDEV);
    ck_assert_int_eq(open_error("/etc/passwd"), -EXDEV);
}
END_TEST

START_TEST(test_open_missing_file_is_enoent)
{
    ck_assert_int_eq(open_error("nonexistent"), -ENOENT);
    ck_assert_int_eq(open_error("sub/nonexistent"), -ENOENT);
    ck_assert_int_eq(open_error("a.txt/x"), -ENOTDIR);
}
END_TEST

/* Checked fixture of the fallback tests: from here on, in this forked test
 * process only, openat2 fails as on a kernel without it. */
static void disable_openat2(void)
{
    struct sock_filter filter[] = {
        /* openat2 has the same number on every architecture (the syscall
         * table was unified before it was added), so no arch check. */
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_openat2, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = { .len = ARRAY_LEN(filter), .filter = filter };
    struct open_how how = { .flags = O_RDONLY };

    ck_assert_int_eq(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
    ck_assert_int_eq(prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog), 0);
    ck_assert_int_eq(syscall(SYS_openat2, AT_FDCWD, "/", &how, sizeof(how)), -1);
    ck_assert_int_eq(errno, ENOSYS);
}

START_TEST(test_fallback_opens_root_and_files)
{
    assert_opens_root("");
    assert_opens_file("a.txt", "alpha\n");
    assert_opens_file("sub/b.txt", "bravo\n");
    assert_opens_file("sub/./b.txt", "bravo\n");
    assert_opens_file("sub/deep/c.txt", "charlie\n");
}
END_TEST

START_TEST(test_fallback_refuses_every_symlink)
{
    ck_assert_int_eq(open_error("out/passwd"), -ELOOP);
    ck_assert_int_eq(open_error("out"), -ELOOP);
    ck_assert_int_eq(open_error("esc"), -ELOOP);
    ck_assert_int_eq(open_error("up/outside.txt"), -ELOOP);
    ck_assert_int_eq(open_error("abs"), -ELOOP);
    ck_assert_int_eq(open_error("in/b.txt"), -ELOOP);
    ck_assert_int_eq(open_error("sub/back"), -ELOOP);
}
END_TEST

START_TEST(test_fallback_refuses_dotdot_and_absolute_path)
{
    ck_assert_int_eq(open_error("../outside.txt"), -EXDEV);
    ck_assert_int_eq(open_error("sub/../a.txt"), -EXDEV);
    ck_assert_int_eq(open_error("/etc/passwd"), -EXDEV);
}
END_TEST

START_TEST(test_fallback_missing_file_is_enoent)
{
    ck_assert_int_eq(open_error("nonexistent"), -ENOENT);
    ck_assert_int_eq(open_error("nodir/x"), -ENOENT);
    ck_assert_int_eq(open_error("a.txt/x"), -ENOTDIR);
}
END_TEST

START_TEST(test_fallback_closes_directories_it_walked)
{
    int before = tu_fd_count();

    assert_opens_file("sub/b.txt", "bravo\n");
    assert_opens_file("sub/deep/c.txt", "charlie\n");
    ck_assert_int_eq(open_error("sub/deep/nonexistent/x"), -ENOENT);
    ck_assert_int_eq(open_error("sub/deep/../back"), -EXDEV);
    ck_assert_int_eq(open_error("sub/back"), -ELOOP);
    ck_assert_int_eq(tu_fd_count(), before);
}
END_TEST

/* ---------------------------------------------------------------- mime */

static struct mime_types *load_mime(const char *path)
{
    struct mime_types *m = NULL;
    int rc = mime_load(path, &m);

    ck_assert_msg(rc == 0, "mime_load %s: %s", path != NULL ? path : "(builtin)",
                  strerror(-rc));
    ck_assert_ptr_nonnull(m);
    return m;
}

/* Writes text to a file in the suite dir; returns its path (static). */
static const char *write_mime_file(const char *name, const char *text)
{
    static char path[PATH_MAX];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", suite_dir, name);
    f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(fputs(text, f) >= 0, 1);
    ck_assert_int_eq(fclose(f), 0);
    return path;
}

START_TEST(test_mime_builtin_types_by_extension)
{
    struct mime_types *m = load_mime(NULL);

    ck_assert_str_eq(mime_type(m, "index.html"), "text/html");
    ck_assert_str_eq(mime_type(m, "a/b/page.htm"), "text/html");
    ck_assert_str_eq(mime_type(m, "style.css"), "text/css");
    ck_assert_str_eq(mime_type(m, "app.js"), "text/javascript");
    ck_assert_str_eq(mime_type(m, "data.json"), "application/json");
    ck_assert_str_eq(mime_type(m, "logo.svg"), "image/svg+xml");
    ck_assert_str_eq(mime_type(m, "photo.jpeg"), "image/jpeg");
    ck_assert_str_eq(mime_type(m, "font.woff2"), "font/woff2");
    ck_assert_str_eq(mime_type(m, "x.tar"), "application/x-tar");
    mime_free(m);
}
END_TEST

START_TEST(test_mime_extension_is_case_insensitive)
{
    struct mime_types *m = load_mime(NULL);

    ck_assert_str_eq(mime_type(m, "INDEX.HTML"), "text/html");
    ck_assert_str_eq(mime_type(m, "a.Css"), "text/css");
    ck_assert_str_eq(mime_type(m, "PIC.JpG"), "image/jpeg");
    mime_free(m);
}
END_TEST

START_TEST(test_mime_unknown_or_no_extension_is_octet_stream)
{
    struct mime_types *m = load_mime(NULL);

    ck_assert_str_eq(mime_type(m, "x.unknownext"), "application/octet-stream");
    ck_assert_str_eq(mime_type(m, "README"), "application/octet-stream");
    ck_assert_str_eq(mime_type(m, ""), "application/octet-stream");
    ck_assert_str_eq(mime_type(m, "trailing."), "application/octet-stream");
    ck_assert_str_eq(mime_type(m, "dir.html/file"), "application/octet-stream");
    ck_assert_str_eq(mime_type(m, ".html"), "application/octet-stream");
    ck_assert_str_eq(mime_type(m, "a/.css"), "application/octet-stream");
    ck_assert_str_eq(mime_type(m, "x.htmlx"), "application/octet-stream");
    ck_assert_str_eq(mime_type(m, "x.htm\xc3\xa9"), "application/octet-stream");
    mime_free(m);
}
END_TEST

START_TEST(test_mime_uses_last_extension)
{
    struct mime_types *m = load_mime(NULL);

    ck_assert_str_eq(mime_type(m, "archive.tar.gz"), "application/gzip");
    ck_assert_str_eq(mime_type(m, "page.html.bak"), "application/octet-stream");
    ck_assert_str_eq(mime_type(m, ".config/x.json"), "application/json");
    mime_free(m);
}
END_TEST

START_TEST(test_mime_file_adds_and_overrides_types)
{
    const char *path = write_mime_file("custom.types",
                                       "# comment line html\n"
                                       "foo/bar  zzz\n"
                                       "text/x-custom\thtml   # a comment htm\n"
                                       "application/only-type\n"
                                       "\n"
                                       "   \t\n"
                                       "foo/baz ZZY yyy\r\n"
                                       "first/type dup\n"
                                       "second/type dup\n"
                                       "no/newline last");
    struct mime_types *m = load_mime(path);

    ck_assert_str_eq(mime_type(m, "x.zzz"), "foo/bar");
    ck_assert_str_eq(mime_type(m, "index.html"), "text/x-custom");
    ck_assert_str_eq(mime_type(m, "index.htm"), "text/html");
    ck_assert_str_eq(mime_type(m, "x.css"), "text/css");
    ck_assert_str_eq(mime_type(m, "x.zzy"), "foo/baz");
    ck_assert_str_eq(mime_type(m, "x.YYY"), "foo/baz");
    ck_assert_str_eq(mime_type(m, "x.dup"), "second/type");
    ck_assert_str_eq(mime_type(m, "x.last"), "no/newline");
    ck_assert_str_eq(mime_type(m, "x.only-type"), "application/octet-stream");
    mime_free(m);
}
END_TEST

START_TEST(test_mime_missing_file_falls_back_to_builtin)
{
    char path[PATH_MAX];
    struct mime_types *m;

    snprintf(path, sizeof(path), "%s/no-such.types", suite_dir);
    m = load_mime(path);
    ck_assert_str_eq(mime_type(m, "index.html"), "text/html");
    ck_assert_str_eq(mime_type(m, "x.zzz"), "application/octet-stream");
    mime_free(m);
}
END_TEST

START_TEST(test_mime_unreadable_file_is_an_error)
{
    struct mime_types *m = NULL;

    /* A directory opens but does not read. */
    ck_assert_int_eq(mime_load(suite_dir, &m), -EISDIR);
    ck_assert_ptr_null(m);
}
END_TEST

START_TEST(test_mime_many_extensions_all_resolve)
{
    size_t size = MANY_EXTENSIONS * 32, len = 0;
    char *text = malloc(size), name[32], type[32];
    struct mime_types *m;
    int i;

    ck_assert_ptr_nonnull(text);
    for (i = 0; i < MANY_EXTENSIONS; i++)
        len += (size_t)snprintf(text + len, size - len, "t/n%d e%d x%d\n", i, i, i);
    m = load_mime(write_mime_file("many.types", text));
    for (i = 0; i < MANY_EXTENSIONS; i++) {
        snprintf(name, sizeof(name), "f.E%d", i);
        snprintf(type, sizeof(type), "t/n%d", i);
        ck_assert_str_eq(mime_type(m, name), type);
        snprintf(name, sizeof(name), "f.x%d", i);
        ck_assert_str_eq(mime_type(m, name), type);
    }
    ck_assert_str_eq(mime_type(m, "f.css"), "text/css");
    ck_assert_str_eq(mime_type(m, "f.e-1"), "application/octet-stream");
    mime_free(m);
    free(text);
}
END_TEST

START_TEST(test_mime_loads_system_mime_types)
{
    struct mime_types *m;

    if (access("/etc/mime.types", R_OK) != 0)
        return;     /* no media-types package: nothing to check */
    m = load_mime("/etc/mime.types");
    ck_assert_str_eq(mime_type(m, "index.html"), "text/html");
    ck_assert_str_eq(mime_type(m, "x.png"), "image/png");
    ck_assert_str_eq(mime_type(m, "x.docx"),
                     "application/vnd.openxmlformats-officedocument.wordprocessingml.document");
    mime_free(m);
}
END_TEST

/* ---------------------------------------------------------------- suite */

static Suite *http_path_suite(void)
{
    Suite *s = suite_create("http_path");
    TCase *tn = tcase_create("normalize");
    TCase *to = tcase_create("open");
    TCase *tf = tcase_create("open_fallback");
    TCase *tm = tcase_create("mime");

    tcase_set_timeout(tn, TCASE_TIMEOUT_SEC);
    tcase_add_test(tn, test_plain_path_becomes_relative);
    tcase_add_test(tn, test_query_and_fragment_are_stripped);
    tcase_add_test(tn, test_root_is_empty_with_trailing_slash);
    tcase_add_test(tn, test_trailing_slash_is_reported);
    tcase_add_test(tn, test_repeated_slashes_collapse);
    tcase_add_test(tn, test_dot_segments_are_dropped);
    tcase_add_test(tn, test_dotdot_removes_previous_segment);
    tcase_add_loop_test(tn, test_traversal_is_refused_or_stays_inside, 0,
                        (int)ARRAY_LEN(traversal_cases));
    tcase_add_loop_test(tn, test_bad_escape_or_control_byte_is_refused, 0,
                        (int)ARRAY_LEN(malformed_targets));
    tcase_add_test(tn, test_raw_nul_byte_is_refused);
    tcase_add_test(tn, test_escapes_are_decoded_exactly_once);
    tcase_add_test(tn, test_target_without_leading_slash_is_refused);
    tcase_add_test(tn, test_only_len_bytes_are_read);
    tcase_add_test(tn, test_too_long_path_is_refused);
    tcase_add_test(tn, test_normalize_matches_reference_on_random_targets);
    suite_add_tcase(s, tn);

    tcase_set_timeout(to, TCASE_TIMEOUT_SEC);
    tcase_add_test(to, test_open_empty_path_gives_root_dir);
    tcase_add_test(to, test_open_reads_files_beneath_root);
    tcase_add_test(to, test_open_follows_symlink_that_stays_inside);
    tcase_add_test(to, test_open_refuses_symlink_out_of_root);
    tcase_add_test(to, test_open_refuses_dotdot_and_absolute_path);
    tcase_add_test(to, test_open_missing_file_is_enoent);
    suite_add_tcase(s, to);

    tcase_set_timeout(tf, TCASE_TIMEOUT_SEC);
    tcase_add_checked_fixture(tf, disable_openat2, NULL);
    tcase_add_test(tf, test_fallback_opens_root_and_files);
    tcase_add_test(tf, test_fallback_refuses_every_symlink);
    tcase_add_test(tf, test_fallback_refuses_dotdot_and_absolute_path);
    tcase_add_test(tf, test_fallback_missing_file_is_enoent);
    tcase_add_test(tf, test_fallback_closes_directories_it_walked);
    suite_add_tcase(s, tf);

    tcase_set_timeout(tm, TCASE_TIMEOUT_SEC);
    tcase_add_test(tm, test_mime_builtin_types_by_extension);
    tcase_add_test(tm, test_mime_extension_is_case_insensitive);
    tcase_add_test(tm, test_mime_unknown_or_no_extension_is_octet_stream);
    tcase_add_test(tm, test_mime_uses_last_extension);
    tcase_add_test(tm, test_mime_file_adds_and_overrides_types);
    tcase_add_test(tm, test_mime_missing_file_falls_back_to_builtin);
    tcase_add_test(tm, test_mime_unreadable_file_is_an_error);
    tcase_add_test(tm, test_mime_many_extensions_all_resolve);
    tcase_add_test(tm, test_mime_loads_system_mime_types);
    suite_add_tcase(s, tm);
    return s;
}

/* suite_dir/outside.txt and suite_dir/root/ with files, a subdirectory and
 * symlinks that stay inside (in, sub/back) or lead out (out, esc, up, and
 * abs, which is absolute). Returns 0 or -1 after printing why. */
static int make_tree(void)
{
    char path[PATH_MAX], target[PATH_MAX];
    static const struct { const char *name, *content; } files[] = {
        { "outside.txt", "secret\n" },
        { "root/a.txt", "alpha\n" },
        { "root/sub/b.txt", "bravo\n" },
        { "root/sub/deep/c.txt", "charlie\n" },
    };
    static const struct { const char *name, *target; } links[] = {
        { "root/in", "sub" },
        { "root/out", "/etc" },
        { "root/esc", "../outside.txt" },
        { "root/up", ".." },
        { "root/sub/back", "../a.txt" },
    };
    size_t i;

    snprintf(root_dir, sizeof(root_dir), "%s/root", suite_dir);
    snprintf(path, sizeof(path), "%s/sub", root_dir);
    snprintf(target, sizeof(target), "%s/sub/deep", root_dir);
    if (mkdir(root_dir, 0755) < 0 || mkdir(path, 0755) < 0 || mkdir(target, 0755) < 0) {
        perror("mkdir");
        return -1;
    }
    for (i = 0; i < ARRAY_LEN(files); i++) {
        FILE *f;

        snprintf(path, sizeof(path), "%s/%s", suite_dir, files[i].name);
        f = fopen(path, "w");
        if (f == NULL || fputs(files[i].content, f) < 0 || fclose(f) != 0) {
            perror(path);
            return -1;
        }
    }
    for (i = 0; i < ARRAY_LEN(links); i++) {
        snprintf(path, sizeof(path), "%s/%s", suite_dir, links[i].name);
        if (symlink(links[i].target, path) < 0) {
            perror(path);
            return -1;
        }
    }
    snprintf(path, sizeof(path), "%s/abs", root_dir);
    snprintf(target, sizeof(target), "%s/a.txt", root_dir);
    if (symlink(target, path) < 0) {
        perror(path);
        return -1;
    }
    return 0;
}

int main(void)
{
    int failed;

    if (mkdtemp(suite_dir) == NULL) {
        perror("mkdtemp");
        return EXIT_FAILURE;
    }
    if (make_tree() < 0) {
        tu_rmtree(suite_dir);
        return EXIT_FAILURE;
    }
    failed = tu_run_suite(http_path_suite());
    tu_rmtree(suite_dir);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

/*
 * fuzz_path: arbitrary bytes as a request target through
 * http_path_normalize (checked by fuzz_check_normalize, at full size and at
 * a small output size), then every accepted path through http_open_beneath
 * on a small tree whose symlinks point inside and outside it: any fd it
 * returns must be a file or directory of the tree. With
 * FUZZ_PATH_NO_OPENAT2=1 in the environment, a seccomp filter makes openat2
 * fail with ENOSYS, so that the fallback walk is fuzzed instead.
 */
#define _GNU_SOURCE     /* O_PATH */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

#include "../../daemon/http_path.h"
#include "fuzz_normalize.h"
#include "fuzz_util.h"

/* Inodes in the tree: a dozen entries, with room to spare. */
#define PATH_TREE_MAX 64
/* http.c's flags for the files it serves. */
#define PATH_OPEN_FLAGS (O_RDONLY | O_CLOEXEC | O_NONBLOCK)
/* serve_path's second try for a directory named with its slash. */
#define PATH_INDEX "index.html"
/* Small output sizes come from the last input byte, modulo this. */
#define PATH_SMALL_OUT 64
/* An fd, or -errno: Linux's errnos end at 4095 (MAX_ERRNO). */
#define PATH_ERRNO_MAX 4095

struct path_tree {
    char base[sizeof("/tmp/fuzz_path.XXXXXX")];
    char root[sizeof("/tmp/fuzz_path.XXXXXX/root")];
    int root_fd;
    pid_t owner;                    /* only the process that built it removes it */
    bool no_openat2;                /* the seccomp filter is on */
    size_t n;
    struct { dev_t dev; ino_t ino; } in[PATH_TREE_MAX];
};

/* libFuzzer gives a target no handle to keep state in: one per process. */
static struct path_tree path_tree = { .root_fd = -1 };

static void path_must(int rc, const char *what)
{
    FUZZ_CHECK(rc >= 0, "setting up the tree: %s: %s", what, strerror(errno));
}

/* dir/name into p (PATH_MAX bytes); the tree's names are short. */
static void path_join(char *p, const char *dir, const char *name)
{
    int n = snprintf(p, PATH_MAX, "%s/%s", dir, name);

    FUZZ_CHECK(n > 0 && n < PATH_MAX, "%s/%s: too long", dir, name);
}

static void path_write_file(const char *dir, const char *name, const char *text)
{
    char p[PATH_MAX];
    int fd;

    path_join(p, dir, name);
    fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    path_must(fd, p);
    path_must((int)write(fd, text, strlen(text)), p);
    close(fd);
}

static void path_symlink(const char *target, const char *dir, const char *name)
{
    char p[PATH_MAX];

    path_join(p, dir, name);
    path_must(symlink(target, p), p);
}

/* Records every inode under dir that is not a symlink (what an fd can be). */
static void path_walk(const char *dir)
{
    struct stat st;
    struct dirent *e;
    DIR *d;

    path_must(lstat(dir, &st), dir);
    FUZZ_CHECK(path_tree.n < PATH_TREE_MAX, "tree too big");
    path_tree.in[path_tree.n].dev = st.st_dev;
    path_tree.in[path_tree.n++].ino = st.st_ino;
    d = opendir(dir);
    FUZZ_CHECK(d != NULL, "opendir %s: %s", dir, strerror(errno));
    while ((e = readdir(d)) != NULL) {
        char p[PATH_MAX];

        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        path_join(p, dir, e->d_name);
        path_must(lstat(p, &st), p);
        if (S_ISDIR(st.st_mode)) {
            path_walk(p);
        } else if (!S_ISLNK(st.st_mode)) {
            FUZZ_CHECK(path_tree.n < PATH_TREE_MAX, "tree too big");
            path_tree.in[path_tree.n].dev = st.st_dev;
            path_tree.in[path_tree.n++].ino = st.st_ino;
        }
    }
    closedir(d);
}

static int path_remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void path_tree_remove(void)
{
    if (path_tree.owner != getpid())
        return;
    if (path_tree.root_fd >= 0)
        close(path_tree.root_fd);
    if (nftw(path_tree.base, path_remove_entry, 16, FTW_DEPTH | FTW_PHYS) != 0)
        fprintf(stderr, "fuzz_path: could not remove %s\n", path_tree.base);
}

/*
 * base/root            the served root: index.html, f, d/{g, index.html}
 * base/outside/secret  what no fd may ever refer to
 * and symlinks in root: in -> f, d/up -> ../f (inside), out ->
 * ../outside/secret, outdir -> ../outside, abs -> base/outside/secret,
 * d/updir -> .., d/escape -> ../.. (outside), loop -> loop.
 */
static void path_tree_build(void)
{
    char p[PATH_MAX];

    strcpy(path_tree.base, "/tmp/fuzz_path.XXXXXX");
    FUZZ_CHECK(mkdtemp(path_tree.base) != NULL, "mkdtemp: %s", strerror(errno));
    path_tree.owner = getpid();
    atexit(path_tree_remove);
    snprintf(path_tree.root, sizeof(path_tree.root), "%s/root", path_tree.base);
    path_must(mkdir(path_tree.root, 0755), path_tree.root);
    path_join(p, path_tree.base, "outside");
    path_must(mkdir(p, 0755), p);
    path_write_file(p, "secret", "outside the root\n");
    path_write_file(path_tree.root, PATH_INDEX, "index\n");
    path_write_file(path_tree.root, "f", "f\n");
    path_join(p, path_tree.root, "d");
    path_must(mkdir(p, 0755), p);
    path_write_file(p, "g", "g\n");
    path_write_file(p, PATH_INDEX, "d index\n");
    path_symlink("../f", p, "up");
    path_symlink("..", p, "updir");
    path_symlink("../..", p, "escape");
    path_symlink("f", path_tree.root, "in");
    path_symlink("../outside/secret", path_tree.root, "out");
    path_symlink("../outside", path_tree.root, "outdir");
    path_join(p, path_tree.base, "outside/secret");
    path_symlink(p, path_tree.root, "abs");
    path_symlink("loop", path_tree.root, "loop");
    path_walk(path_tree.root);
    path_tree.root_fd = open(path_tree.root, O_PATH | O_DIRECTORY | O_CLOEXEC);
    path_must(path_tree.root_fd, path_tree.root);
}

/* openat2 -> ENOSYS for this process from now on, as on kernels before 5.6. */
static void path_disable_openat2(void)
{
    struct sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_openat2, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = { .len = sizeof(filter) / sizeof(filter[0]), .filter = filter };

    path_must(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "PR_SET_NO_NEW_PRIVS");
    /* TSYNC: the sanitizers' threads, and whichever one libFuzzer runs us on. */
    path_must((int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &prog),
              "seccomp");
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *no_openat2 = getenv("FUZZ_PATH_NO_OPENAT2");

    (void)argc;
    (void)argv;
    if (path_tree.root_fd < 0)
        path_tree_build();
    if (no_openat2 != NULL && strcmp(no_openat2, "1") == 0 && !path_tree.no_openat2) {
        path_disable_openat2();
        path_tree.no_openat2 = true;
    }
    return 0;
}

/* Opens rel as serve_path does and checks that the fd is in the tree.
 * Returns 1 for a directory, 0 for another file, or -errno. */
static int path_open_checked(const char *target, size_t len, const char *rel)
{
    int fd = http_open_beneath(path_tree.root_fd, rel, PATH_OPEN_FLAGS);
    struct stat st;
    size_t i;

    FUZZ_CHECK(fd >= -PATH_ERRNO_MAX, "\"%.*s\" -> \"%s\": returned %d", (int)len, target, rel,
               fd);
    if (fd < 0)
        return fd;
    FUZZ_CHECK(fstat(fd, &st) == 0, "fstat: %s", strerror(errno));
    for (i = 0; i < path_tree.n; i++)
        if (path_tree.in[i].dev == st.st_dev && path_tree.in[i].ino == st.st_ino)
            break;
    FUZZ_CHECK(i < path_tree.n, "\"%.*s\" -> \"%s\": opened inode %llu, which is not under %s",
               (int)len, target, rel, (unsigned long long)st.st_ino, path_tree.root);
    close(fd);
    return S_ISDIR(st.st_mode) ? 1 : 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *target = (const char *)data;
    char rel[HTTP_PATH_MAX + 1];
    bool slash = false;
    int rc;

    /* For a driver that does not call LLVMFuzzerInitialize. */
    if (path_tree.root_fd < 0)
        LLVMFuzzerInitialize(NULL, NULL);
    rc = fuzz_check_normalize(target, size, sizeof(rel), rel, sizeof(rel), &slash);
    if (size > 0)
        fuzz_check_normalize(target, size, 1 + data[size - 1] % PATH_SMALL_OUT, NULL, 0, NULL);
    if (rc != 0)
        return 0;
    /* A directory: serve_path then opens its index file. */
    if (path_open_checked(target, size, rel) == 1 && slash &&
        strlen(rel) + sizeof("/" PATH_INDEX) <= sizeof(rel)) {
        strcat(rel, rel[0] != '\0' ? "/" PATH_INDEX : PATH_INDEX);
        path_open_checked(target, size, rel);
    }
    return 0;
}

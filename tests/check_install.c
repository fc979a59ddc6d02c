/*
 * check_install: `make install` as a packager or an operator runs it, from
 * the repo root. main() installs twice under a temp dir, with DESTDIR and
 * PREFIX=/usr (what a package gets) and with PREFIX inside the temp dir (a
 * tree whose paths are real, for the tools that follow them); each test
 * then looks at what landed: files and modes, the paths the unit, the
 * config and the logrotate snippet share, the installed daemon's default
 * config, a program built against the installed libprefork through
 * pkg-config, the units (systemd-analyze verify), the man pages (groff,
 * mandoc) and what they document, and an edited config kept by a third
 * install. Nothing here starts the daemon.
 *
 * Under `make check SANITIZE=1` the Makefile passes MAKE_SANITIZE=1: the
 * installs then use build/sanitize/ as the rest of the run does, and the
 * program built against that libprefork.a needs the sanitizers too.
 */
#define _GNU_SOURCE     /* mkdtemp */
#include <check.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"

/* make install compiles main.c once and links; the rest is copying. */
#define INSTALL_TIMEOUT_SEC 40.0
/* cc, pkg-config, groff, systemd-analyze, the installed binary. */
#define COMMAND_TIMEOUT_SEC 20.0
/* Per test case: a test runs at most one install. */
#define TCASE_TIMEOUT_SEC 60
/* Enough for any output and any file a test reads (a rendered man page is
 * about 15 KiB). */
#define OUTPUT_MAX 131072
#define MAX_LINES 2048
#define MAX_KEYS 64

/* The flags the Makefile's SANITIZE=1 compiles with. */
static const char *const sanitize_flags[] = {
    "-fsanitize=address,undefined", "-fno-omit-frame-pointer", NULL,
};

/* Signals DESIGN.md's contract table names, each a row of preforkd(8)'s. */
static const char *const contract_signals[] = {
    "HUP", "TERM", "INT", "QUIT", "USR1", "TTIN", "TTOU", "CHLD", NULL,
};

/* Made by main(), removed by main() after the run. */
static char suite_dir[] = "/tmp/check_install-XXXXXX";
/* DESTDIR of the PREFIX=/usr install, and PREFIX of the other one. */
static char dest[PATH_MAX], prefix[PATH_MAX];
static bool sanitize;

/* Output of one finished command. */
struct command {
    int status;         /* wait status; -1 if it had to be killed */
    char out[OUTPUT_MAX];
    char err[OUTPUT_MAX];
};

/* The two installs main() made. */
static struct command dest_install, prefix_install;

/* ---- files ---- */

/* buf = printf(fmt, ...); fails the test if it does not fit. */
static void format_path(char *buf, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void format_path(char *buf, size_t size, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(buf, size, fmt, ap);
    va_end(ap);
    ck_assert(n > 0 && (size_t)n < size);
}

static bool file_exists(const char *path)
{
    return access(path, F_OK) == 0;
}

/* path's content into buf (OUTPUT_MAX); fails the test if it is missing. */
static void read_existing(const char *path, char *buf)
{
    ck_assert_msg(file_exists(path), "%s is not installed", path);
    tu_read_file(path, buf, OUTPUT_MAX);
}

static void write_file(const char *path, const char *text, const char *mode)
{
    FILE *f = fopen(path, mode);

    ck_assert_msg(f != NULL, "%s: %s", path, strerror(errno));
    ck_assert_int_ge(fputs(text, f), 0);
    ck_assert_int_eq(fclose(f), 0);
}

/* ---- text ---- */

/* Splits text into lines in place (newlines become NULs); returns the count. */
static int split_lines(char *text, char **lines, int max)
{
    int n = 0;

    for (char *p = text; *p != '\0' && n < max;) {
        char *nl = strchr(p, '\n');

        lines[n++] = p;
        if (nl == NULL)
            break;
        *nl = '\0';
        p = nl + 1;
    }
    return n;
}

static const char *skip_space(const char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    return s;
}

static bool is_word_char(char c)
{
    return isalnum((unsigned char)c) || c == '_';
}

/* True if line, past its indent, starts with word followed by a space or
 * its end: how man(1) shows a tag (".TP") line. */
static bool starts_with_word(const char *line, const char *word)
{
    const char *s = skip_space(line);
    size_t len = strlen(word);

    return strncmp(s, word, len) == 0 && (s[len] == '\0' || s[len] == ' ');
}

/* True if word occurs in text not glued to other letters, digits or '_'. */
static bool has_word(const char *text, const char *word)
{
    size_t len = strlen(word);

    for (const char *p = strstr(text, word); p != NULL; p = strstr(p + 1, word))
        if ((p == text || !is_word_char(p[-1])) && !is_word_char(p[len]))
            return true;
    return false;
}

/* The value of the first "key = value" line of an INI text (comment after
 * " ;" cut, spaces trimmed) into buf; false if there is none. */
static bool ini_value(const char *text, const char *key, char *buf, size_t size)
{
    size_t len = strlen(key);

    for (const char *line = text; line != NULL; line = strchr(line, '\n')) {
        const char *v, *end;

        line += *line == '\n';
        if (strncmp(line, key, len) != 0)
            continue;
        v = skip_space(line + len);
        if (*v != '=')
            continue;
        v = skip_space(v + 1);
        end = v + strcspn(v, "\n");
        for (const char *c = v; c < end; c++)
            if (*c == ';' && c > v && (c[-1] == ' ' || c[-1] == '\t')) {
                end = c;
                break;
            }
        while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
            end--;
        snprintf(buf, size, "%.*s", (int)(end - v), v);
        return true;
    }
    return false;
}

/* The value of the first "Key=value" line of a unit file into buf. */
static bool unit_value(const char *text, const char *key, char *buf, size_t size)
{
    size_t len = strlen(key);

    for (const char *line = text; line != NULL; line = strchr(line, '\n')) {
        line += *line == '\n';
        if (strncmp(line, key, len) == 0 && line[len] == '=') {
            snprintf(buf, size, "%.*s", (int)strcspn(line + len + 1, "\n"), line + len + 1);
            return true;
        }
    }
    return false;
}

/* True if text holds an @NAME@ that make install should have replaced. */
static bool has_placeholder(const char *text)
{
    for (const char *p = strchr(text, '@'); p != NULL; p = strchr(p + 1, '@')) {
        size_t len = strspn(p + 1, "ABCDEFGHIJKLMNOPQRSTUVWXYZ_");

        if (len > 0 && p[1 + len] == '@')
            return true;
    }
    return false;
}

/* True if one of lines[from..to) contains s. */
static bool lines_have(char *const *lines, int from, int to, const char *s)
{
    for (int i = from; i < to; i++)
        if (strstr(lines[i], s) != NULL)
            return true;
    return false;
}

/* ---- commands ---- */

/* The absolute path of a program named in PATH into buf; false if none. */
static bool find_program(const char *name, char *buf, size_t size)
{
    const char *path = getenv("PATH");

    if (path == NULL)
        path = "/usr/local/bin:/usr/bin:/bin";
    while (*path != '\0') {
        size_t len = strcspn(path, ":");

        if (len > 0 && (size_t)snprintf(buf, size, "%.*s/%s", (int)len, path, name) < size &&
            access(buf, X_OK) == 0)
            return true;
        path += len + (path[len] == ':');
    }
    return false;
}

/*
 * Runs argv (argv[0] found in PATH unless it holds a '/') in a process group
 * of its own, with env applied first ("NAME=value" sets, "NAME" unsets; NULL
 * for none), stdin from /dev/null, stdout and stderr captured apart. After
 * timeout_sec the whole group gets SIGKILL and status is -1, as when it
 * cannot start (c->err says why). No ck_ call: main() runs it too.
 */
static void run(struct command *c, const char *const *env, const char *const *argv,
                double timeout_sec)
{
    char exe[PATH_MAX], out[PATH_MAX + 16], err[PATH_MAX + 16];
    pid_t test = getpid(), pid;

    c->status = -1;
    c->out[0] = '\0';
    snprintf(exe, sizeof(exe), "%s", argv[0]);
    if (strchr(argv[0], '/') == NULL && !find_program(argv[0], exe, sizeof(exe))) {
        snprintf(c->err, sizeof(c->err), "%s: not found in PATH\n", argv[0]);
        return;
    }
    snprintf(out, sizeof(out), "%s/cmd.out", suite_dir);
    snprintf(err, sizeof(err), "%s/cmd.err", suite_dir);
    pid = fork();
    if (pid < 0) {
        snprintf(c->err, sizeof(c->err), "fork: %s\n", strerror(errno));
        return;
    }
    if (pid == 0) {
        setpgid(0, 0);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != test)
            _exit(126);
        for (int i = 0; env != NULL && env[i] != NULL; i++) {
            const char *eq = strchr(env[i], '=');
            char name[128];

            if (eq == NULL) {
                unsetenv(env[i]);
                continue;
            }
            snprintf(name, sizeof(name), "%.*s", (int)(eq - env[i]), env[i]);
            setenv(name, eq + 1, 1);
        }
        tu_exec_child(exe, (char *const *)argv, out, err);
    }
    setpgid(pid, pid);
    if (!tu_wait_pid(pid, &c->status, timeout_sec)) {
        kill(-pid, SIGKILL);
        waitpid(pid, NULL, 0);
        c->status = -1;
    }
    tu_read_file(out, c->out, sizeof(c->out));
    tu_read_file(err, c->err, sizeof(c->err));
}

/* The end of a command's output, short enough for a Check message (which
 * is cut off at a few KiB, and the end is where the error is). */
static const char *tail(const char *text)
{
    size_t len = strlen(text);

    return len > 1500 ? text + len - 1500 : text;
}

static bool exited_with(int status, int code)
{
    return status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == code;
}

/*
 * `make -s install` with the given DESTDIR and PREFIX. The environment
 * make gets is cleaned of what an outer `make check` or the user's shell
 * would slip in: MAKEFLAGS (an outer -j's jobserver, its command-line
 * variables) and the directory variables, which the Makefile takes from the
 * environment when set.
 */
static void make_install(struct command *c, const char *destdir, const char *install_prefix)
{
    static const char *const env[] = {
        "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "SBINDIR", "LIBDIR", "INCLUDEDIR",
        "SYSCONFDIR", "DATADIR", "MANDIR", "SYSTEMDUNITDIR", "CFLAGS", "LDFLAGS", NULL,
    };
    char destdir_arg[PATH_MAX + 16], prefix_arg[PATH_MAX + 16];
    const char *argv[] = { "make", "-s", "install", destdir_arg, prefix_arg,
                           sanitize ? "SANITIZE=1" : NULL, NULL };

    snprintf(destdir_arg, sizeof(destdir_arg), "DESTDIR=%s", destdir);
    snprintf(prefix_arg, sizeof(prefix_arg), "PREFIX=%s", install_prefix);
    run(c, env, argv, INSTALL_TIMEOUT_SEC);
}

static void assert_install_ok(const struct command *c, const char *what)
{
    ck_assert_msg(exited_with(c->status, 0), "make install %s: status 0x%x\n%s%s", what,
                  (unsigned)c->status, tail(c->out), tail(c->err));
}

/* dest/<rel> into buf. */
static void dest_path(char *buf, size_t size, const char *rel)
{
    format_path(buf, size, "%s/%s", dest, rel);
}

/* ---- what a package gets: DESTDIR, PREFIX=/usr ---- */

START_TEST(test_install_puts_every_file_in_place_with_its_mode)
{
    static const struct {
        const char *path;
        mode_t mode;
    } files[] = {
        { "usr/sbin/preforkd", 0755 },
        { "usr/lib/libprefork.a", 0644 },
        { "usr/include/prefork/prefork.h", 0644 },
        { "usr/lib/pkgconfig/libprefork.pc", 0644 },
        { "etc/preforkd/preforkd.conf", 0644 },
        { "lib/systemd/system/preforkd.service", 0644 },
        { "lib/systemd/system/preforkd.socket", 0644 },
        { "usr/share/man/man8/preforkd.8", 0644 },
        { "usr/share/man/man5/preforkd.conf.5", 0644 },
        { "etc/logrotate.d/preforkd", 0644 },
        { "usr/share/preforkd/www/index.html", 0644 },
    };
    char path[PATH_MAX];
    struct stat st;

    assert_install_ok(&dest_install, "DESTDIR=... PREFIX=/usr");
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        dest_path(path, sizeof(path), files[i].path);
        ck_assert_msg(stat(path, &st) == 0, "%s: %s", path, strerror(errno));
        ck_assert_msg(S_ISREG(st.st_mode), "%s is not a regular file", path);
        ck_assert_msg((st.st_mode & 07777) == files[i].mode, "%s has mode %04o, not %04o", path,
                      (unsigned)(st.st_mode & 07777), (unsigned)files[i].mode);
    }
}
END_TEST

/* <prefork/prefork.h> works only if every header it pulls in with quotes,
 * and every header those pull in, sits next to it, installed too. */
START_TEST(test_installed_headers_include_only_installed_headers)
{
    static char text[OUTPUT_MAX];
    char names[32][256] = { "prefork.h" }, dir[PATH_MAX], path[PATH_MAX * 2];
    char *lines[MAX_LINES];
    int nnames = 1;

    assert_install_ok(&dest_install, "DESTDIR=... PREFIX=/usr");
    dest_path(dir, sizeof(dir), "usr/include/prefork");
    for (int h = 0; h < nnames; h++) {
        int n;

        format_path(path, sizeof(path), "%s/%s", dir, names[h]);
        ck_assert_msg(file_exists(path), "%s is included%s but not installed", names[h],
                      h == 0 ? " by users" : "");
        tu_read_file(path, text, sizeof(text));
        n = split_lines(text, lines, MAX_LINES);
        for (int i = 0; i < n && nnames < 32; i++) {
            const char *inc = skip_space(lines[i]), *q;
            bool seen = false;

            if (strncmp(inc, "#include \"", 10) != 0 || (q = strchr(inc + 10, '"')) == NULL)
                continue;
            snprintf(names[nnames], sizeof(names[nnames]), "%.*s", (int)(q - inc - 10), inc + 10);
            for (int j = 0; j < nnames; j++)
                seen |= strcmp(names[j], names[nnames]) == 0;
            nnames += !seen;
        }
    }
    ck_assert_int_ge(nnames, 5);
}
END_TEST

/* Every Exec*= program of a PREFIX=/usr unit exists: /usr/sbin/ ones in
 * dest, the others (/bin/kill) on this system. systemd-analyze verify only
 * looks at ExecStart=. */
static void assert_unit_programs_exist(const char *unit)
{
    for (const char *line = unit; line != NULL; line = strchr(line, '\n')) {
        char program[PATH_MAX], path[PATH_MAX * 2];
        const char *v;

        line += *line == '\n';
        if (strncmp(line, "Exec", 4) != 0 || (v = strchr(line, '=')) == NULL)
            continue;
        v += 1 + strspn(v + 1, "-@:+!");     /* systemd's command prefixes */
        snprintf(program, sizeof(program), "%.*s", (int)strcspn(v, " \n"), v);
        if (strncmp(program, "/usr/sbin/", 10) == 0)
            format_path(path, sizeof(path), "%s%s", dest, program);
        else
            format_path(path, sizeof(path), "%s", program);
        ck_assert_msg(access(path, X_OK) == 0, "unit: %.*s: %s: %s", (int)strcspn(line, "\n"),
                      line, path, strerror(errno));
    }
}

START_TEST(test_installed_unit_runs_installed_daemon_on_installed_config)
{
    static char unit[OUTPUT_MAX], conf[OUTPUT_MAX];
    char path[PATH_MAX], value[512], graceful[64] = "30";
    long stop_sec;

    assert_install_ok(&dest_install, "DESTDIR=... PREFIX=/usr");
    dest_path(path, sizeof(path), "lib/systemd/system/preforkd.service");
    read_existing(path, unit);
    ck_assert_msg(!has_placeholder(unit), "a placeholder is left in %s:\n%s", path, tail(unit));
    ck_assert(unit_value(unit, "ExecStart", value, sizeof(value)));
    ck_assert_str_eq(value, "/usr/sbin/preforkd -f -c /etc/preforkd/preforkd.conf");
    ck_assert(unit_value(unit, "ExecStartPre", value, sizeof(value)));
    ck_assert_str_eq(value, "/usr/sbin/preforkd -t -c /etc/preforkd/preforkd.conf");
    assert_unit_programs_exist(unit);
    ck_assert(unit_value(unit, "Type", value, sizeof(value)));
    ck_assert_str_eq(value, "notify");
    ck_assert(unit_value(unit, "KillSignal", value, sizeof(value)));
    ck_assert_str_eq(value, "SIGQUIT");
    /* A stop that SIGKILLs before the graceful drain ends cuts connections. */
    dest_path(path, sizeof(path), "etc/preforkd/preforkd.conf");
    read_existing(path, conf);
    ini_value(conf, "graceful_timeout", graceful, sizeof(graceful));
    ck_assert(unit_value(unit, "TimeoutStopSec", value, sizeof(value)));
    stop_sec = strtol(value, NULL, 10);
    ck_assert_msg(stop_sec > atol(graceful) + 1, "TimeoutStopSec=%s, graceful_timeout = %s: "
                  "systemd kills the drain", value, graceful);
}
END_TEST

/* The installed config, the unit's RuntimeDirectory and LogsDirectory and
 * the logrotate snippet must name the same pidfile and log directory, or
 * a rotation signals nobody. */
START_TEST(test_installed_config_unit_and_logrotate_agree_on_paths)
{
    static char conf[OUTPUT_MAX], unit[OUTPUT_MAX], rotate[OUTPUT_MAX];
    char path[PATH_MAX], pidfile[256], runtime[256], logs[256], root[256], want[640];
    const char *first;

    assert_install_ok(&dest_install, "DESTDIR=... PREFIX=/usr");
    dest_path(path, sizeof(path), "etc/preforkd/preforkd.conf");
    read_existing(path, conf);
    dest_path(path, sizeof(path), "lib/systemd/system/preforkd.service");
    read_existing(path, unit);
    dest_path(path, sizeof(path), "etc/logrotate.d/preforkd");
    read_existing(path, rotate);

    ck_assert(ini_value(conf, "pidfile", pidfile, sizeof(pidfile)));
    ck_assert(unit_value(unit, "RuntimeDirectory", runtime, sizeof(runtime)));
    format_path(want, sizeof(want), "/run/%s/", runtime);
    ck_assert_msg(strncmp(pidfile, want, strlen(want)) == 0 && strchr(pidfile + strlen(want), '/')
                  == NULL, "pidfile = %s is not in the unit's RuntimeDirectory %s", pidfile, want);
    format_path(want, sizeof(want), "[ -s %s ]", pidfile);
    ck_assert_msg(strstr(rotate, want) != NULL, "logrotate snippet does not test %s:\n%s", pidfile,
                  rotate);
    format_path(want, sizeof(want), "kill -USR1 $(cat %s)", pidfile);
    ck_assert_msg(strstr(rotate, want) != NULL, "logrotate snippet does not signal the master of "
                  "%s:\n%s", pidfile, tail(rotate));

    ck_assert(unit_value(unit, "LogsDirectory", logs, sizeof(logs)));
    first = rotate;
    while (*first == '#' || *first == '\n')
        first = strchr(first, '\n') + 1;
    format_path(want, sizeof(want), "/var/log/%s/", logs);
    ck_assert_msg(strncmp(first, want, strlen(want)) == 0, "logrotate rotates \"%.*s\", not files "
                  "in the unit's LogsDirectory %s", (int)strcspn(first, "\n"), first, want);

    /* The sample page the installed config serves is installed. */
    ck_assert(ini_value(conf, "root", root, sizeof(root)));
    format_path(path, sizeof(path), "%s%s/index.html", dest, root);
    ck_assert_msg(file_exists(path), "root = %s, but %s is missing", root, path);
}
END_TEST

/* A user's program: `cc prog.c $(pkg-config --cflags --libs libprefork)`
 * against the DESTDIR tree (PKG_CONFIG_SYSROOT_DIR). It calls into netutil
 * and process, links tcpserver and iostream (and what they need), and
 * prints "OK <PF_VERSION>", which must be the .pc file's version. */
START_TEST(test_program_builds_with_pkg_config_against_installed_library)
{
    static const char prog_c[] =
        "#include <prefork/prefork.h>\n"
        "#include <stdio.h>\n"
        "#include <unistd.h>\n"
        "\n"
        "/* Links the stream modules too: their libraries must be in Libs. */\n"
        "void *volatile modules[] = { (void *)pf_tcp_server_new, (void *)pf_iostream_new };\n"
        "\n"
        "int main(void)\n"
        "{\n"
        "    char err[PF_ERRMSG_SIZE];\n"
        "    int fds[PF_BIND_MAX];\n"
        "    int n = pf_bind_sockets(\"127.0.0.1\", 0, NULL, fds, PF_BIND_MAX, err);\n"
        "\n"
        "    if (n != 1 || pf_cpu_count() < 1) {\n"
        "        fprintf(stderr, \"pf_bind_sockets: %d %s\\n\", n, n < 0 ? err : \"\");\n"
        "        return 1;\n"
        "    }\n"
        "    close(fds[0]);\n"
        "    printf(\"OK %s\\n\", PF_VERSION);\n"
        "    return 0;\n"
        "}\n";
    static struct command c;
    char pc_path[PATH_MAX + 32], sysroot[PATH_MAX + 32], src[PATH_MAX], exe[PATH_MAX];
    static char flags[OUTPUT_MAX];
    char version[64], want[128];
    const char *env[] = { pc_path, sysroot, NULL };
    const char *argv[64];
    int n = 0;

    assert_install_ok(&dest_install, "DESTDIR=... PREFIX=/usr");
    format_path(pc_path, sizeof(pc_path), "PKG_CONFIG_PATH=%s/usr/lib/pkgconfig", dest);
    format_path(sysroot, sizeof(sysroot), "PKG_CONFIG_SYSROOT_DIR=%s", dest);
    run(&c, env, (const char *[]){ "pkg-config", "--modversion", "libprefork", NULL },
        COMMAND_TIMEOUT_SEC);
    ck_assert_msg(exited_with(c.status, 0), "pkg-config --modversion libprefork: %s", tail(c.err));
    snprintf(version, sizeof(version), "%.*s", (int)strcspn(c.out, "\n"), c.out);
    run(&c, env, (const char *[]){ "pkg-config", "--cflags", "--libs", "libprefork", NULL },
        COMMAND_TIMEOUT_SEC);
    ck_assert_msg(exited_with(c.status, 0), "pkg-config --cflags --libs libprefork: %s", tail(c.err));
    snprintf(flags, sizeof(flags), "%s", c.out);

    format_path(src, sizeof(src), "%s/prog.c", suite_dir);
    format_path(exe, sizeof(exe), "%s/prog", suite_dir);
    write_file(src, prog_c, "w");
    argv[n++] = "cc";
    argv[n++] = "-o";
    argv[n++] = exe;
    argv[n++] = src;
    for (int i = 0; sanitize && sanitize_flags[i] != NULL; i++)
        argv[n++] = sanitize_flags[i];
    for (char *save, *w = strtok_r(flags, " \t\n", &save); w != NULL && n < 62;
         w = strtok_r(NULL, " \t\n", &save))
        argv[n++] = w;
    argv[n] = NULL;
    run(&c, NULL, argv, COMMAND_TIMEOUT_SEC);
    ck_assert_msg(exited_with(c.status, 0), "cc prog.c $(pkg-config --cflags --libs libprefork) "
                  "failed (status 0x%x):\n%s%s", (unsigned)c.status, tail(c.out), tail(c.err));

    run(&c, NULL, (const char *[]){ exe, NULL }, COMMAND_TIMEOUT_SEC);
    tu_assert_no_sanitizer_report(c.err);
    ck_assert_msg(exited_with(c.status, 0), "the program built against libprefork: status 0x%x, "
                  "stderr: %s", (unsigned)c.status, tail(c.err));
    format_path(want, sizeof(want), "OK %s\n", version);
    ck_assert_str_eq(c.out, want);
}
END_TEST

/* ---- a tree with real paths: PREFIX inside the temp dir ---- */

/* `preforkd -h` and `-t` with no -c: the installed daemon's default config
 * is the installed config, and that config is valid as installed. */
START_TEST(test_installed_daemon_defaults_to_installed_config_which_is_valid)
{
    static struct command c;
    char exe[PATH_MAX], want[PATH_MAX + 32];

    assert_install_ok(&dest_install, "DESTDIR=... PREFIX=/usr");
    assert_install_ok(&prefix_install, "PREFIX=<tmp>");
    dest_path(exe, sizeof(exe), "usr/sbin/preforkd");
    run(&c, NULL, (const char *[]){ exe, "-h", NULL }, COMMAND_TIMEOUT_SEC);
    ck_assert_msg(strstr(c.out, "(default: /etc/preforkd/preforkd.conf)") != NULL,
                  "PREFIX=/usr, but preforkd -h says:\n%s", tail(c.out));

    format_path(exe, sizeof(exe), "%s/sbin/preforkd", prefix);
    run(&c, NULL, (const char *[]){ exe, "-h", NULL }, COMMAND_TIMEOUT_SEC);
    format_path(want, sizeof(want), "(default: %s/etc/preforkd/preforkd.conf)", prefix);
    ck_assert_msg(strstr(c.out, want) != NULL, "PREFIX=%s, but preforkd -h says:\n%s", prefix,
                  tail(c.out));
    run(&c, NULL, (const char *[]){ exe, "-t", NULL }, COMMAND_TIMEOUT_SEC);
    tu_assert_no_sanitizer_report(c.err);
    ck_assert_msg(exited_with(c.status, 0) && strstr(c.out, "test is successful") != NULL,
                  "preforkd -t on the installed config: status 0x%x\n%s%s", (unsigned)c.status,
                  tail(c.out), tail(c.err));
}
END_TEST

/* systemd-analyze verify follows the unit's paths (ExecStart= binaries
 * must exist, Documentation= man pages must be found), hence the tree with
 * real paths, and MANPATH on its man pages. */
START_TEST(test_systemd_analyze_verifies_installed_units_without_a_warning)
{
    static struct command c;
    char service[PATH_MAX], socket[PATH_MAX], manpath[PATH_MAX + 16], tool[PATH_MAX];
    const char *env[] = { manpath, NULL };

    if (!find_program("systemd-analyze", tool, sizeof(tool))) {
        fprintf(stderr, "check_install: no systemd-analyze (Debian package systemd): "
                "the units are not verified\n");
        return;
    }
    assert_install_ok(&prefix_install, "PREFIX=<tmp>");
    format_path(service, sizeof(service), "%s/lib/systemd/system/preforkd.service", prefix);
    format_path(socket, sizeof(socket), "%s/lib/systemd/system/preforkd.socket", prefix);
    format_path(manpath, sizeof(manpath), "MANPATH=%s/share/man", prefix);
    run(&c, env, (const char *[]){ tool, "verify", service, socket, NULL }, COMMAND_TIMEOUT_SEC);
    ck_assert_msg(exited_with(c.status, 0) && c.err[0] == '\0' && c.out[0] == '\0',
                  "systemd-analyze verify: status 0x%x\n%s%s", (unsigned)c.status, tail(c.out),
                  tail(c.err));
}
END_TEST

/* Installs into the PREFIX tree again, after an operator's edit (a comment,
 * so the tests that run its config still can). */
START_TEST(test_second_install_keeps_edited_config)
{
    static struct command c;
    static char conf[OUTPUT_MAX];
    char path[PATH_MAX], marker[96];

    assert_install_ok(&prefix_install, "PREFIX=<tmp>");
    format_path(path, sizeof(path), "%s/etc/preforkd/preforkd.conf", prefix);
    format_path(marker, sizeof(marker), "; edited by check_install %d\n", (int)getpid());
    write_file(path, marker, "a");
    make_install(&c, "", prefix);
    assert_install_ok(&c, "(second)");
    read_existing(path, conf);
    ck_assert_msg(strstr(conf, marker) != NULL, "the second install overwrote the edited %s",
                  path);
    ck_assert_msg(strstr(c.out, "keeping existing") != NULL, "the second install did not say it "
                  "kept the config: %s", tail(c.out));
}
END_TEST

/* ---- man pages ---- */

/* The installed man page, page = "man8/preforkd.8" or "man5/...". */
static void man_path(char *buf, size_t size, const char *page)
{
    format_path(buf, size, "%s/usr/share/man/%s", dest, page);
}

/* Renders an installed man page as man(1) shows it, in plain text. */
static void render_man(struct command *c, const char *page)
{
    char path[PATH_MAX];

    man_path(path, sizeof(path), page);
    ck_assert_msg(file_exists(path), "%s is not installed", path);
    run(c, NULL, (const char *[]){ "groff", "-t", "-man", "-Tutf8", "-P-cbou", path, NULL },
        COMMAND_TIMEOUT_SEC);
    ck_assert_msg(exited_with(c->status, 0), "groff %s: %s", path, tail(c->err));
}

/* Lines [*from, *to) of section name: from a heading line equal to name
 * (at indent, "" for .SH and "   " for .SS) to the next heading of that
 * level or above. Fails the test if there is no such heading. */
static void find_section(char **lines, int n, const char *indent, const char *name, int *from,
                         int *to)
{
    size_t ind = strlen(indent);

    for (*from = 0; *from < n; (*from)++)
        if (strncmp(lines[*from], indent, ind) == 0 && strcmp(lines[*from] + ind, name) == 0)
            break;
    ck_assert_msg(*from < n, "no section %s", name);
    for (*to = *from + 1; *to < n; (*to)++) {
        const char *l = lines[*to];
        size_t lead = (size_t)(skip_space(l) - l);

        if (l[lead] != '\0' && lead <= ind)
            break;
    }
}

START_TEST(test_man_pages_render_without_warnings)
{
    static const char *const pages[] = { "man8/preforkd.8", "man5/preforkd.conf.5", NULL };
    static struct command c;
    char path[PATH_MAX], tool[PATH_MAX];

    assert_install_ok(&dest_install, "DESTDIR=... PREFIX=/usr");
    for (int i = 0; pages[i] != NULL; i++) {
        man_path(path, sizeof(path), pages[i]);
        run(&c, NULL, (const char *[]){ "groff", "-t", "-ww", "-z", "-man", "-Tutf8", path, NULL },
            COMMAND_TIMEOUT_SEC);
        ck_assert_msg(exited_with(c.status, 0) && c.err[0] == '\0', "groff -ww %s:\n%s", path,
                      tail(c.err));
        if (!find_program("mandoc", tool, sizeof(tool)))
            continue;
        run(&c, NULL, (const char *[]){ tool, "-T", "lint", "-W", "warning", path, NULL },
            COMMAND_TIMEOUT_SEC);
        ck_assert_msg(exited_with(c.status, 0), "mandoc -T lint %s:\n%s%s", path, tail(c.out),
                      tail(c.err));
    }
}
END_TEST

/* Every key of the shipped, fully commented conf/preforkd.conf (DESIGN.md's
 * key list) is a tag line in its section of preforkd.conf(5), and its
 * paragraph gives the default. */
/* A .TP tag as man(1) lays it out: after a blank line or a heading, at the
 * 7-column indent, with its paragraph more indented below it (a paragraph
 * line that happens to start with a key is none). */
static bool is_tag_line(char *const *lines, int i, int end)
{
    const char *l = lines[i], *prev = i > 0 ? lines[i - 1] : "x";

    return (prev[0] == '\0' || skip_space(prev) - prev <= 3) && strncmp(l, "       ", 7) == 0 &&
           l[7] != ' ' && i + 1 < end && skip_space(lines[i + 1]) - lines[i + 1] > 7;
}

START_TEST(test_conf_man_page_documents_every_key_with_its_default)
{
    static struct command c;
    static char conf[OUTPUT_MAX];
    static struct { char section[32], key[64]; } keys[MAX_KEYS];
    char *lines[MAX_LINES], *conf_lines[MAX_LINES], section[32] = "";
    int n, nconf, nkeys = 0;

    assert_install_ok(&dest_install, "DESTDIR=... PREFIX=/usr");
    tu_read_file("conf/preforkd.conf", conf, sizeof(conf));
    ck_assert_msg(conf[0] != '\0', "conf/preforkd.conf: run from the repo root");
    nconf = split_lines(conf, conf_lines, MAX_LINES);
    for (int i = 0; i < nconf; i++) {
        const char *l = skip_space(conf_lines[i]);
        size_t len = strcspn(l, " =");
        bool seen = false;

        if (*l == '[') {
            snprintf(section, sizeof(section), "%.*s", (int)strcspn(l, "\n"), l);
            continue;
        }
        if (*l == ';' || *l == '#' || *l == '\0' || l[len] == '\0')
            continue;
        for (int k = 0; k < nkeys; k++)
            seen |= strcmp(keys[k].section, section) == 0 &&
                    strncmp(keys[k].key, l, len) == 0 && keys[k].key[len] == '\0';
        if (seen || nkeys == MAX_KEYS)
            continue;
        snprintf(keys[nkeys].section, sizeof(keys[nkeys].section), "%s", section);
        snprintf(keys[nkeys].key, sizeof(keys[nkeys].key), "%.*s", (int)len, l);
        nkeys++;
    }
    ck_assert_int_ge(nkeys, 20);

    render_man(&c, "man5/preforkd.conf.5");
    n = split_lines(c.out, lines, MAX_LINES);
    for (int k = 0; k < nkeys; k++) {
        int from, to, tag;
        bool has_default = false;

        find_section(lines, n, "   ", keys[k].section, &from, &to);
        for (tag = from + 1; tag < to; tag++)
            if (is_tag_line(lines, tag, to) && starts_with_word(lines[tag], keys[k].key))
                break;
        ck_assert_msg(tag < to, "preforkd.conf(5) has no entry for %s %s", keys[k].section,
                      keys[k].key);
        /* The paragraph: until the next line as little indented as the tag. */
        for (int i = tag + 1; i < to && !(lines[i][0] != '\0' &&
                                            skip_space(lines[i]) - lines[i] <= 7); i++)
            has_default |= strstr(lines[i], "Default") != NULL;
        ck_assert_msg(has_default, "preforkd.conf(5): %s %s gives no default", keys[k].section,
                      keys[k].key);
    }
}
END_TEST

/* Every option `preforkd -h` lists is a tag in OPTIONS; every contract
 * signal and every -s name is in SIGNALS; EXAMPLES uses the installed
 * pidfile. */
START_TEST(test_daemon_man_page_documents_every_option_and_signal)
{
    static struct command help, c;
    static char conf[OUTPUT_MAX], section[OUTPUT_MAX];
    char exe[PATH_MAX], path[PATH_MAX], pidfile[256], want[512];
    char *lines[MAX_LINES], *help_lines[MAX_LINES];
    const char *names;
    size_t len = 0;
    int n, nhelp, from, to, nopts = 0;

    assert_install_ok(&dest_install, "DESTDIR=... PREFIX=/usr");
    dest_path(exe, sizeof(exe), "usr/sbin/preforkd");
    run(&help, NULL, (const char *[]){ exe, "-h", NULL }, COMMAND_TIMEOUT_SEC);
    ck_assert_msg(exited_with(help.status, 0), "preforkd -h: status 0x%x", (unsigned)help.status);
    render_man(&c, "man8/preforkd.8");
    n = split_lines(c.out, lines, MAX_LINES);

    find_section(lines, n, "", "SIGNALS", &from, &to);
    for (int i = from; i < to && len < sizeof(section); i++)
        len += (size_t)snprintf(section + len, sizeof(section) - len, "%s\n", lines[i]);
    for (int i = 0; contract_signals[i] != NULL; i++)
        ck_assert_msg(has_word(section, contract_signals[i]), "preforkd(8) SIGNALS lacks %s",
                      contract_signals[i]);
    /* "  -s SIGNAL  send reload | stop | quit | reopen to the running master" */
    names = strstr(help.out, "send ");
    ck_assert_msg(names != NULL, "preforkd -h names no -s signals:\n%s", tail(help.out));
    for (const char *p = names + 5; *p != '\0' && *p != '\n' && strncmp(p, "to ", 3) != 0;) {
        size_t word = strcspn(p, " |\n");
        char name[32];

        snprintf(name, sizeof(name), "%.*s", (int)word, p);
        if (word > 0)
            ck_assert_msg(has_word(section, name), "preforkd(8) SIGNALS lacks -s %s", name);
        p += word;
        p += strspn(p, " |");
    }

    nhelp = split_lines(help.out, help_lines, MAX_LINES);
    find_section(lines, n, "", "OPTIONS", &from, &to);
    for (int h = 0; h < nhelp; h++) {
        char opt[3] = "-?";
        bool found = false;

        if (strncmp(help_lines[h], "  -", 3) != 0 || !isalnum((unsigned char)help_lines[h][3]))
            continue;
        opt[1] = help_lines[h][3];
        nopts++;
        for (int i = from + 1; i < to && !found; i++)
            found = starts_with_word(lines[i], opt);
        ck_assert_msg(found, "preforkd(8) OPTIONS lacks %s, which preforkd -h lists", opt);
    }
    ck_assert_int_ge(nopts, 6);

    dest_path(path, sizeof(path), "etc/preforkd/preforkd.conf");
    read_existing(path, conf);
    ck_assert(ini_value(conf, "pidfile", pidfile, sizeof(pidfile)));
    format_path(want, sizeof(want), "kill -HUP $(cat %s)", pidfile);
    ck_assert_msg(lines_have(lines, 0, n, want), "preforkd(8) has no example \"%s\"", want);
    ck_assert_msg(lines_have(lines, 0, n, "systemctl reload preforkd"),
                  "preforkd(8) has no example of systemctl reload");
    ck_assert_msg(lines_have(lines, 0, n, "preforkd -s reload"),
                  "preforkd(8) has no example of preforkd -s reload");
}
END_TEST

static Suite *install_suite(void)
{
    Suite *s = suite_create("install");
    TCase *tc = tu_add_tcase(s, "package", TCASE_TIMEOUT_SEC);

    tcase_add_test(tc, test_install_puts_every_file_in_place_with_its_mode);
    tcase_add_test(tc, test_installed_headers_include_only_installed_headers);
    tcase_add_test(tc, test_installed_unit_runs_installed_daemon_on_installed_config);
    tcase_add_test(tc, test_installed_config_unit_and_logrotate_agree_on_paths);
    tcase_add_test(tc, test_program_builds_with_pkg_config_against_installed_library);

    tc = tu_add_tcase(s, "real_paths", TCASE_TIMEOUT_SEC);
    tcase_add_test(tc, test_installed_daemon_defaults_to_installed_config_which_is_valid);
    tcase_add_test(tc, test_systemd_analyze_verifies_installed_units_without_a_warning);
    tcase_add_test(tc, test_second_install_keeps_edited_config);

    tc = tu_add_tcase(s, "man_pages", TCASE_TIMEOUT_SEC);
    tcase_add_test(tc, test_man_pages_render_without_warnings);
    tcase_add_test(tc, test_conf_man_page_documents_every_key_with_its_default);
    tcase_add_test(tc, test_daemon_man_page_documents_every_option_and_signal);
    return s;
}

int main(void)
{
    const char *san = getenv("MAKE_SANITIZE");
    int failed;

    if (access("Makefile", R_OK) != 0 || access("conf/preforkd.conf", R_OK) != 0) {
        fprintf(stderr, "check_install: run from the repo root (make check does)\n");
        return 1;
    }
    sanitize = san != NULL && strcmp(san, "1") == 0;
    if (mkdtemp(suite_dir) == NULL) {
        perror("check_install: mkdtemp");
        return 1;
    }
    snprintf(dest, sizeof(dest), "%s/dest", suite_dir);
    snprintf(prefix, sizeof(prefix), "%s/prefix", suite_dir);
    /* Before the tests fork: they share these two trees and only read them.
     * A failed install fails every test that needs it, with make's output. */
    make_install(&dest_install, dest, "/usr");
    make_install(&prefix_install, "", prefix);
    failed = tu_run_suite(install_suite());
    tu_rmtree(suite_dir);
    return failed == 0 ? 0 : 1;
}

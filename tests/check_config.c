/* Check suite for daemon/config.c and daemon/log.c: what an operator sees
 * from a config file (values, defaults, error lines) and from the log
 * (lines, levels, reopening). Runs with the repository root as cwd. */
#define _GNU_SOURCE             /* CPU_COUNT */
#include "../daemon/config.h"
#include "../daemon/log.h"
#include "testutil.h"

#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <regex.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define SHIPPED_CONF "conf/preforkd.conf"

/* rootdir lives in the runner process, so that it is removed even when a
 * forked test fails before its own teardown; each test gets a fresh tmpdir
 * inside it. */
static char rootdir[64];
static char tmpdir[128];
static char errmsg[1024];

static void rootdir_setup(void)
{
    strcpy(rootdir, "/tmp/check_config.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(rootdir));
}

static void tmpdir_setup(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "%s/test.XXXXXX", rootdir);
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
    errmsg[0] = '\0';
}

static void tmpdir_teardown(void)
{
    log_close();
    log_set_role("preforkd");   /* for CK_FORK=no */
    tu_rmtree(tmpdir);
}

static void rootdir_teardown(void)
{
    tu_rmtree(rootdir);
}

/* tmpdir/name; valid until the next call. */
static const char *tmp_path(const char *name)
{
    static char path[2][PATH_MAX];
    static int which;

    which = !which;
    snprintf(path[which], sizeof(path[which]), "%s/%s", tmpdir, name);
    return path[which];
}

static const char *write_file(const char *name, const char *text)
{
    const char *path = tmp_path(name);
    FILE *f = fopen(path, "w");

    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    ck_assert_int_eq(fclose(f), 0);
    return path;
}

/* The whole file in a static buffer ("" if missing). */
static const char *read_file(const char *path)
{
    static char buf[1 << 20];
    FILE *f = fopen(path, "r");
    size_t n = 0;

    if (f != NULL) {
        n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
    }
    buf[n] = '\0';
    return buf;
}

static void load_ok(const char *text, struct config *c)
{
    const char *path = write_file("x.conf", text);

    ck_assert_msg(config_load(path, c, errmsg, sizeof(errmsg)) == 0, "%s", errmsg);
}

/* Loads text as tmpdir/name and asserts the error is "<path><suffix>". */
static void assert_load_error(const char *name, const char *text, const char *suffix)
{
    static const struct config zero;
    const char *path = write_file(name, text);
    struct config c;
    char expected[1024];

    memset(&c, 0xa5, sizeof(c));
    ck_assert_int_eq(config_load(path, &c, errmsg, sizeof(errmsg)), -1);
    snprintf(expected, sizeof(expected), "%s%s", path, suffix);
    ck_assert_str_eq(errmsg, expected);
    ck_assert_msg(memcmp(&c, &zero, sizeof(c)) == 0, "config not zeroed after an error");
}

/* ---- the shipped file and defaults ---- */

START_TEST(test_shipped_config_parses_for_make_run)
{
    struct config c;

    ck_assert_msg(config_load(SHIPPED_CONF, &c, errmsg, sizeof(errmsg)) == 0, "%s", errmsg);
    ck_assert_uint_eq(c.n_listens, 1);
    ck_assert_str_eq(c.listens[0].text, "127.0.0.1:8080");
    ck_assert(c.workers_auto);
    ck_assert_str_eq(c.log, "stderr");
    ck_assert_int_eq(c.handler, CONFIG_HANDLER_HTTP);
    ck_assert_ptr_nonnull(strstr(c.http_root, "/conf/www"));
    ck_assert_int_eq(c.http_root[0], '/');
    ck_assert_int_eq(access("conf/www/index.html", R_OK), 0);
    config_free(&c);
}
END_TEST

START_TEST(test_minimal_file_gets_every_default)
{
    struct config c;

    load_ok("[server]\nlisten = 8080\n", &c);
    ck_assert_str_eq(c.path, tmp_path("x.conf"));
    ck_assert(c.workers_auto);
    ck_assert_int_eq(c.workers, 0);
    ck_assert_ptr_null(c.pidfile);
    ck_assert_ptr_null(c.user);
    ck_assert_ptr_null(c.group);
    ck_assert_str_eq(c.log, "stderr");
    ck_assert_int_eq(c.log_level, LOG_INFO);
    ck_assert_uint_eq(c.graceful_timeout_sec, 30);
    ck_assert_uint_eq(c.worker_timeout_sec, 30);
    ck_assert_uint_eq(c.max_restarts, 100);
    ck_assert_uint_eq(c.restart_window_sec, 60);

    ck_assert_uint_eq(c.n_listens, 1);
    ck_assert_int_eq(c.listens[0].kind, LISTEN_TCP);
    ck_assert_ptr_null(c.listens[0].host);
    ck_assert_uint_eq(c.listens[0].port, 8080);
    ck_assert_int_eq(c.listens[0].line, 2);
    ck_assert_uint_eq(c.backlog, 128);
    ck_assert(!c.reuse_port);
    ck_assert_uint_eq(c.accept_batch, 0);
    ck_assert_uint_eq(c.max_connections, 10000);
    ck_assert_uint_eq(c.idle_timeout_sec, 60);
    ck_assert_uint_eq(c.max_buffer_size, 104857600);
    ck_assert_int_eq(c.handler, CONFIG_HANDLER_HTTP);

    ck_assert_str_eq(c.http_root, "/var/www/preforkd");
    ck_assert_str_eq(c.http_index, "index.html");
    ck_assert_str_eq(c.http_status_path, "/status");
    ck_assert_uint_eq(c.http_header_timeout_sec, 10);
    ck_assert_ptr_null(c.http_access_log);

    ck_assert_ptr_null(c.tls_certificate);
    ck_assert_ptr_null(c.tls_key);
    ck_assert_int_eq(c.tls_min_version, CONFIG_TLS_1_2);
    ck_assert_ptr_null(c.tls_ciphers);
    ck_assert(c.tls_session_tickets);
    config_free(&c);
}
END_TEST

START_TEST(test_no_listen_defaults_to_localhost_8080)
{
    struct config c;

    load_ok("[daemon]\nworkers = 2\n", &c);
    ck_assert_uint_eq(c.n_listens, 1);
    ck_assert_str_eq(c.listens[0].host, "127.0.0.1");
    ck_assert_uint_eq(c.listens[0].port, 8080);
    config_free(&c);
}
END_TEST

START_TEST(test_every_key_set_is_read)
{
    struct config c;

    load_ok("[daemon]\nworkers = 3\npidfile = /run/p.pid\nuser = www\ngroup = web\n"
            "log = /var/log/p.log\nlog_level = debug\ngraceful_timeout = 0\n"
            "worker_timeout = 0\nmax_restarts = 5\nrestart_window = 10\n"
            "[server]\nlisten = 1\nbacklog = 65535\nreuse_port = yes\naccept_batch = 16\n"
            "max_connections = 7\nidle_timeout = 86400\nmax_buffer_size = 1099511627776\n"
            "handler = echo\n"
            "[http]\nroot = /srv\nindex = home.htm\nstatus_path =\nheader_timeout = 0\n"
            "access_log = /var/log/a.log\n"
            "[tls]\ncertificate = c.pem\nkey = k.pem\nprotocols = TLSv1.3\n"
            "ciphers = HIGH\nsession_tickets = off\n", &c);
    ck_assert(!c.workers_auto);
    ck_assert_int_eq(c.workers, 3);
    ck_assert_int_eq(config_workers(&c), 3);
    ck_assert_str_eq(c.pidfile, "/run/p.pid");
    ck_assert_str_eq(c.user, "www");
    ck_assert_str_eq(c.group, "web");
    ck_assert_str_eq(c.log, "/var/log/p.log");
    ck_assert_int_eq(c.log_level, LOG_DEBUG);
    ck_assert_uint_eq(c.graceful_timeout_sec, 0);
    ck_assert_uint_eq(c.worker_timeout_sec, 0);
    ck_assert_uint_eq(c.max_restarts, 5);
    ck_assert_uint_eq(c.restart_window_sec, 10);
    ck_assert_uint_eq(c.backlog, 65535);
    ck_assert(c.reuse_port);
    ck_assert_uint_eq(c.accept_batch, 16);
    ck_assert_uint_eq(c.max_connections, 7);
    ck_assert_uint_eq(c.idle_timeout_sec, 86400);
    ck_assert_uint_eq(c.max_buffer_size, 1ULL << 40);
    ck_assert_int_eq(c.handler, CONFIG_HANDLER_ECHO);
    ck_assert_str_eq(c.http_root, "/srv");
    ck_assert_str_eq(c.http_index, "home.htm");
    ck_assert_ptr_null(c.http_status_path);
    ck_assert_uint_eq(c.http_header_timeout_sec, 0);
    ck_assert_str_eq(c.http_access_log, "/var/log/a.log");
    ck_assert_str_eq(c.tls_certificate, tmp_path("c.pem"));
    ck_assert_str_eq(c.tls_key, tmp_path("k.pem"));
    ck_assert_int_eq(c.tls_min_version, CONFIG_TLS_1_3);
    ck_assert_str_eq(c.tls_ciphers, "HIGH");
    ck_assert(!c.tls_session_tickets);
    config_free(&c);
}
END_TEST

START_TEST(test_relative_paths_are_relative_to_the_config_file)
{
    struct config c;
    const char *conf = write_file("p.conf",
        "[daemon]\npidfile = run/p.pid\nlog = logs/p.log\n"
        "[server]\nlisten = unix:s.sock\nlisten = 8080\n"
        "[http]\nroot = www\naccess_log = /abs/a.log\n");
    char cwd[PATH_MAX];

    /* Whatever the working directory (the daemon's is "/"). */
    ck_assert_ptr_nonnull(getcwd(cwd, sizeof(cwd)));
    ck_assert_int_eq(chdir("/"), 0);
    ck_assert_msg(config_load(conf, &c, errmsg, sizeof(errmsg)) == 0, "%s", errmsg);
    ck_assert_str_eq(c.pidfile, tmp_path("run/p.pid"));
    ck_assert_str_eq(c.log, tmp_path("logs/p.log"));
    ck_assert_str_eq(c.listens[0].path, tmp_path("s.sock"));
    ck_assert_str_eq(c.http_root, tmp_path("www"));
    ck_assert_str_eq(c.http_access_log, "/abs/a.log");
    config_free(&c);
    ck_assert_int_eq(chdir(cwd), 0);
}
END_TEST

START_TEST(test_unix_path_too_long_once_made_absolute_is_an_error)
{
    char value[120], text[200];
    struct config c;
    const char *conf;

    /* Fits in sun_path as written (100 bytes), not after tmpdir/ is added. */
    memset(value, 's', 100);
    value[100] = '\0';
    snprintf(text, sizeof(text), "[server]\nlisten = unix:%s\n", value);
    conf = write_file("long.conf", text);
    ck_assert_int_eq(config_load(conf, &c, errmsg, sizeof(errmsg)), -1);
    ck_assert_msg(strstr(errmsg, "long.conf:2: [server] listen") != NULL &&
                  strstr(errmsg, "longer than 107 bytes") != NULL, "%s", errmsg);
}
END_TEST

START_TEST(test_log_stderr_and_syslog_are_not_paths)
{
    struct config c;

    load_ok("[daemon]\nlog = syslog\n", &c);
    ck_assert_str_eq(c.log, "syslog");
    config_free(&c);
    load_ok("[daemon]\nlog = stderr\n", &c);
    ck_assert_str_eq(c.log, "stderr");
    config_free(&c);
}
END_TEST

START_TEST(test_workers_auto_resolves_to_cpu_count)
{
    struct config c;
    cpu_set_t set;

    ck_assert_int_eq(sched_getaffinity(0, sizeof(set), &set), 0);
    load_ok("[daemon]\nworkers = auto\n", &c);
    ck_assert(c.workers_auto);
    ck_assert_int_eq(config_workers(&c), CPU_COUNT(&set));
    config_free(&c);
}
END_TEST

START_TEST(test_bool_accepts_yes_no_true_false_on_off_1_0)
{
    static const char *const yes[] = { "yes", "true", "on", "1", "YES" };
    static const char *const no[] = { "no", "false", "off", "0", "Off" };
    char text[128];
    struct config c;

    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        snprintf(text, sizeof(text), "[server]\nreuse_port = %s\n[tls]\nsession_tickets = %s\n",
                 yes[i], no[i]);
        load_ok(text, &c);
        ck_assert_msg(c.reuse_port, "%s", yes[i]);
        ck_assert_msg(!c.tls_session_tickets, "%s", no[i]);
        config_free(&c);
    }
    assert_load_error("x.conf", "[server]\nreuse_port = maybe\n",
                      ":2: [server] reuse_port = \"maybe\": expected yes or no");
}
END_TEST

START_TEST(test_inline_semicolon_comment_is_stripped)
{
    struct config c;

    load_ok("# hash comment\n[server] ; the server\nbacklog = 64 ; queue\n"
            "[daemon]\npidfile = /run/a;b\n", &c);
    ck_assert_uint_eq(c.backlog, 64);
    ck_assert_str_eq(c.pidfile, "/run/a;b");
    config_free(&c);
}
END_TEST

START_TEST(test_crlf_line_endings_are_accepted)
{
    struct config c;

    load_ok("[server]\r\nlisten = 8080\r\nhandler = echo\r\n", &c);
    ck_assert_str_eq(c.listens[0].text, "8080");
    ck_assert_int_eq(c.handler, CONFIG_HANDLER_ECHO);
    config_free(&c);
}
END_TEST

START_TEST(test_indented_line_is_a_key_not_a_continuation)
{
    struct config c;

    load_ok("[server]\n  listen = 8080\n    backlog = 9\n", &c);
    ck_assert_str_eq(c.listens[0].text, "8080");
    ck_assert_uint_eq(c.backlog, 9);
    config_free(&c);
}
END_TEST

START_TEST(test_line_longer_than_inih_default_is_read_whole)
{
    char text[1024], ciphers[400];
    struct config c;

    memset(ciphers, 'A', sizeof(ciphers) - 1);
    ciphers[sizeof(ciphers) - 1] = '\0';
    snprintf(text, sizeof(text), "[tls]\nciphers = %s\n", ciphers);
    load_ok(text, &c);
    ck_assert_str_eq(c.tls_ciphers, ciphers);
    config_free(&c);
}
END_TEST

START_TEST(test_line_over_limit_is_an_error)
{
    static char text[8192];
    int n = snprintf(text, sizeof(text), "[tls]\nciphers = ");

    memset(text + n, 'A', 5000);
    strcpy(text + n + 5000, "\n");
    assert_load_error("x.conf", text, ":2: line longer than 4094 bytes");
}
END_TEST

START_TEST(test_log_level_names_parse_and_print)
{
    static const struct { const char *name; int level; } levels[] = {
        { "debug", LOG_DEBUG }, { "info", LOG_INFO }, { "notice", LOG_NOTICE },
        { "warning", LOG_WARNING }, { "error", LOG_ERR },
    };
    struct config c;

    for (size_t i = 0; i < sizeof(levels) / sizeof(levels[0]); i++) {
        ck_assert_int_eq(log_level_parse(levels[i].name), levels[i].level);
        ck_assert_str_eq(log_level_name(levels[i].level), levels[i].name);
    }
    ck_assert_int_eq(log_level_parse("warn"), -1);
    ck_assert_int_eq(log_level_parse("crit"), -1);
    ck_assert_int_eq(log_level_parse(""), -1);
    load_ok("[daemon]\nlog_level = warning\n", &c);
    ck_assert_int_eq(c.log_level, LOG_WARNING);
    config_free(&c);
    assert_load_error("x.conf", "[daemon]\nlog_level = loud\n",
                      ":2: [daemon] log_level = \"loud\": "
                      "expected debug | info | notice | warning | error");
}
END_TEST

START_TEST(test_handler_and_protocols_reject_unknown_names)
{
    assert_load_error("x.conf", "[server]\nhandler = ftp\n",
                      ":2: [server] handler = \"ftp\": expected http | echo");
    assert_load_error("x.conf", "[tls]\nprotocols = SSLv3\n",
                      ":2: [tls] protocols = \"SSLv3\": expected TLSv1.2 | TLSv1.3");
}
END_TEST

/* ---- listen ---- */

START_TEST(test_listen_port_only_means_every_interface)
{
    struct listen_spec ls;
    char why[128];

    ck_assert_int_eq(listen_spec_parse("8080", &ls, why, sizeof(why)), 0);
    ck_assert_int_eq(ls.kind, LISTEN_TCP);
    ck_assert_ptr_null(ls.host);
    ck_assert_uint_eq(ls.port, 8080);
    ck_assert(!ls.ssl);
    ck_assert_str_eq(ls.text, "8080");
    listen_spec_free(&ls);
}
END_TEST

START_TEST(test_listen_ipv4_and_port)
{
    struct listen_spec ls;
    char why[128];

    ck_assert_int_eq(listen_spec_parse("  127.0.0.1:80  ", &ls, why, sizeof(why)), 0);
    ck_assert_str_eq(ls.host, "127.0.0.1");
    ck_assert_uint_eq(ls.port, 80);
    ck_assert_str_eq(ls.text, "127.0.0.1:80");
    listen_spec_free(&ls);
}
END_TEST

START_TEST(test_listen_bracketed_ipv6_and_port)
{
    struct listen_spec ls;
    char why[128];

    ck_assert_int_eq(listen_spec_parse("[::1]:8443", &ls, why, sizeof(why)), 0);
    ck_assert_int_eq(ls.kind, LISTEN_TCP);
    ck_assert_str_eq(ls.host, "::1");
    ck_assert_uint_eq(ls.port, 8443);
    listen_spec_free(&ls);
    ck_assert_int_eq(listen_spec_parse("[fe80::1%lo]:80", &ls, why, sizeof(why)), 0);
    ck_assert_str_eq(ls.host, "fe80::1%lo");
    listen_spec_free(&ls);
}
END_TEST

START_TEST(test_listen_hostname_and_port)
{
    struct listen_spec ls;
    char why[128];

    ck_assert_int_eq(listen_spec_parse("localhost:9000", &ls, why, sizeof(why)), 0);
    ck_assert_str_eq(ls.host, "localhost");
    ck_assert_uint_eq(ls.port, 9000);
    listen_spec_free(&ls);
}
END_TEST

START_TEST(test_listen_unix_path)
{
    struct listen_spec ls;
    char why[128];

    ck_assert_int_eq(listen_spec_parse("unix:/run/preforkd.sock", &ls, why, sizeof(why)), 0);
    ck_assert_int_eq(ls.kind, LISTEN_UNIX);
    ck_assert_str_eq(ls.path, "/run/preforkd.sock");
    ck_assert_ptr_null(ls.host);
    listen_spec_free(&ls);
}
END_TEST

START_TEST(test_listen_ssl_suffix_sets_ssl)
{
    struct listen_spec ls;
    char why[128];

    ck_assert_int_eq(listen_spec_parse("[::]:443 \t ssl", &ls, why, sizeof(why)), 0);
    ck_assert(ls.ssl);
    ck_assert_str_eq(ls.host, "::");
    ck_assert_uint_eq(ls.port, 443);
    ck_assert_str_eq(ls.text, "[::]:443 \t ssl");
    listen_spec_free(&ls);
    ck_assert_int_eq(listen_spec_parse("unix:/tmp/s ssl", &ls, why, sizeof(why)), 0);
    ck_assert(ls.ssl);
    ck_assert_str_eq(ls.path, "/tmp/s");
    listen_spec_free(&ls);
}
END_TEST

START_TEST(test_listen_port_zero_is_accepted)
{
    struct listen_spec ls;
    char why[128];

    ck_assert_int_eq(listen_spec_parse("127.0.0.1:0", &ls, why, sizeof(why)), 0);
    ck_assert_uint_eq(ls.port, 0);
    listen_spec_free(&ls);
}
END_TEST

static const struct { const char *value, *why; } bad_listens[] = {
    { "", "empty value" },
    { "  \t ", "empty value" },
    { ":", "missing host before ':'" },
    { ":80", "missing host before ':'" },
    { "[::1", "missing ']'" },
    { "[::1]", "missing ':PORT' after ']'" },
    { "[::1]80", "missing ':PORT' after ']'" },
    { "[nothex]:80", "not an IPv6 address in []" },
    { "70000", "port out of range 0..65535" },
    { "127.0.0.1:70000", "port out of range 0..65535" },
    { "host:99999999999999999999999", "port out of range 0..65535" },
    { "host:", "missing port" },
    { "host:http", "port is not a number" },
    { "host:-1", "port is not a number" },
    { "80x", "port is not a number" },
    { "localhost", "missing port (expected HOST:PORT or PORT)" },
    { "::1:80", "an IPv6 address needs brackets: [ADDR]:PORT" },
    { "ho$t:80", "invalid host name" },
    { "unix:", "empty unix socket path" },
    { "unix:/a/very/long/path/that/does/not/fit/into/sockaddr_un/sun_path/because/"
      "that/is/only/one/hundred/and/eight/bytes.sock", "unix socket path longer than 107 bytes" },
    { "8080 tls", "unexpected \"tls\" after the address (only ssl may follow)" },
    { "8080 ssl on", "unexpected \"ssl on\" after the address (only ssl may follow)" },
};

START_TEST(test_listen_rejects_bad_value_with_reason)
{
    static const struct listen_spec zero;
    struct listen_spec ls;
    char why[128];

    memset(&ls, 0xa5, sizeof(ls));
    ck_assert_msg(listen_spec_parse(bad_listens[_i].value, &ls, why, sizeof(why)) == -1,
                  "\"%s\" accepted", bad_listens[_i].value);
    ck_assert_str_eq(why, bad_listens[_i].why);
    ck_assert_msg(memcmp(&ls, &zero, sizeof(ls)) == 0, "listen_spec not zeroed");
}
END_TEST

START_TEST(test_listen_repeated_keeps_every_value_in_order_with_lines)
{
    struct config c;

    load_ok("[server]\nlisten = 8080\n\nlisten = [::1]:8080\nlisten = unix:/tmp/x.sock\n", &c);
    ck_assert_uint_eq(c.n_listens, 3);
    ck_assert_str_eq(c.listens[0].text, "8080");
    ck_assert_int_eq(c.listens[0].line, 2);
    ck_assert_str_eq(c.listens[1].host, "::1");
    ck_assert_int_eq(c.listens[1].line, 4);
    ck_assert_str_eq(c.listens[2].path, "/tmp/x.sock");
    ck_assert_int_eq(c.listens[2].line, 5);
    config_free(&c);
}
END_TEST

START_TEST(test_bad_listen_names_file_line_and_reason)
{
    assert_load_error("x.conf", "[server]\nlisten = 8080\nlisten = 70000\n",
                      ":3: [server] listen = \"70000\": port out of range 0..65535");
}
END_TEST

START_TEST(test_listen_ssl_without_tls_certificate_is_an_error)
{
    assert_load_error("x.conf", "[server]\nlisten = 8080\nlisten = 8443 ssl\n",
                      ":3: [server] listen = \"8443 ssl\": ssl needs [tls] certificate and key");
}
END_TEST

START_TEST(test_listen_ssl_with_certificate_and_key_loads)
{
    struct config c;

    load_ok("[server]\nlisten = 8443 ssl\n[tls]\ncertificate = c.pem\nkey = k.pem\n", &c);
    ck_assert(c.listens[0].ssl);
    config_free(&c);
}
END_TEST

START_TEST(test_tls_certificate_without_key_is_an_error)
{
    assert_load_error("x.conf", "[tls]\n\ncertificate = c.pem\n",
                      ":3: [tls] certificate = \"c.pem\": needs [tls] key as well");
}
END_TEST

START_TEST(test_same_listen_address_twice_is_an_error)
{
    assert_load_error("x.conf", "[server]\nlisten = 127.0.0.1:80\nlisten = 127.0.0.1:080\n",
                      ":3: [server] listen = \"127.0.0.1:080\": same address as line 2");
}
END_TEST

START_TEST(test_port_zero_twice_is_not_a_duplicate)
{
    struct config c;

    load_ok("[server]\nlisten = 127.0.0.1:0\nlisten = 127.0.0.1:0\n", &c);
    ck_assert_uint_eq(c.n_listens, 2);
    config_free(&c);
}
END_TEST

/* ---- errors ---- */

START_TEST(test_backlog_not_a_number_names_file_line_key)
{
    /* backlog on line 14, as in STYLE.md's example. */
    assert_load_error("preforkd.conf",
                      "; 1\n; 2\n; 3\n; 4\n; 5\n; 6\n; 7\n; 8\n; 9\n; 10\n; 11\n"
                      "[server]\nlisten = 8080\nbacklog = 12x\n",
                      ":14: [server] backlog = \"12x\": not a number");
}
END_TEST

START_TEST(test_backlog_out_of_range_names_range)
{
    assert_load_error("x.conf", "[server]\nbacklog = 0\n",
                      ":2: [server] backlog = \"0\": out of range 1..65535");
    assert_load_error("x.conf", "[server]\nbacklog = 65536\n",
                      ":2: [server] backlog = \"65536\": out of range 1..65535");
}
END_TEST

START_TEST(test_negative_timeout_is_rejected)
{
    assert_load_error("x.conf", "[server]\nidle_timeout = -5\n",
                      ":2: [server] idle_timeout = \"-5\": out of range 0..86400");
}
END_TEST

START_TEST(test_number_overflow_is_rejected)
{
    assert_load_error("x.conf", "[server]\nmax_buffer_size = 99999999999999999999999\n",
                      ":2: [server] max_buffer_size = \"99999999999999999999999\": "
                      "out of range 1..1099511627776");
}
END_TEST

START_TEST(test_empty_number_and_hex_are_not_numbers)
{
    assert_load_error("x.conf", "[daemon]\nmax_restarts =\n",
                      ":2: [daemon] max_restarts = \"\": not a number");
    assert_load_error("x.conf", "[daemon]\nmax_restarts = 0x10\n",
                      ":2: [daemon] max_restarts = \"0x10\": not a number");
}
END_TEST

START_TEST(test_workers_zero_or_word_is_rejected)
{
    assert_load_error("x.conf", "[daemon]\nworkers = 0\n",
                      ":2: [daemon] workers = \"0\": out of range 1..1024");
    assert_load_error("x.conf", "[daemon]\nworkers = many\n",
                      ":2: [daemon] workers = \"many\": expected a number or auto");
}
END_TEST

START_TEST(test_required_string_empty_is_rejected)
{
    assert_load_error("x.conf", "[http]\nroot =\n", ":2: [http] root = \"\": must not be empty");
    assert_load_error("x.conf", "[daemon]\nlog = ; none\n",
                      ":2: [daemon] log = \"\": must not be empty");
}
END_TEST

START_TEST(test_status_path_must_start_with_slash)
{
    assert_load_error("x.conf", "[http]\nstatus_path = status\n",
                      ":2: [http] status_path = \"status\": must start with '/'");
}
END_TEST

START_TEST(test_unknown_key_names_file_line_section_key)
{
    assert_load_error("x.conf", "[server]\nlisten = 8080\nbogus = 1\n",
                      ":3: [server] bogus: unknown key");
    /* A key of another section is unknown here. */
    assert_load_error("x.conf", "[http]\nbacklog = 5\n", ":2: [http] backlog: unknown key");
}
END_TEST

START_TEST(test_unknown_section_is_an_error_even_when_empty)
{
    assert_load_error("x.conf", "[server]\nlisten = 8080\n\n; c\n[http]\nindex = i.html\n[nosuch]\n",
                      ":7: [nosuch]: unknown section");
}
END_TEST

START_TEST(test_text_after_section_header_is_an_error)
{
    assert_load_error("x.conf", "[server] listen = 1\n", ":1: [server]: text after ']'");
}
END_TEST

START_TEST(test_duplicate_key_is_an_error)
{
    assert_load_error("x.conf", "[server]\nbacklog = 5\nlisten = 1\nbacklog = 6\n",
                      ":4: [server] backlog = \"6\": duplicate key (first set on line 2)");
}
END_TEST

START_TEST(test_key_before_any_section_is_an_error)
{
    assert_load_error("x.conf", "workers = 2\n", ":1: workers: key before any [section]");
}
END_TEST

START_TEST(test_syntax_error_names_line)
{
    assert_load_error("x.conf", "[server]\nlisten = 8080\nbacklog\n",
                      ":3: syntax error: expected [section] or key = value");
    assert_load_error("x.conf", "[server\n", ":1: syntax error: expected [section] or key = value");
}
END_TEST

START_TEST(test_first_error_is_reported)
{
    /* inih keeps going after a syntax error; the earlier line must win. */
    assert_load_error("x.conf", "[server]\nnonsense\nbacklog = x\n",
                      ":2: syntax error: expected [section] or key = value");
}
END_TEST

START_TEST(test_missing_file_names_path_and_cause)
{
    struct config c;

    memset(&c, 0xa5, sizeof(c));
    ck_assert_int_eq(config_load("x.conf", &c, errmsg, sizeof(errmsg)), -1);
    ck_assert_str_eq(errmsg, "x.conf: No such file or directory");
    ck_assert_ptr_null(c.path);
    ck_assert_ptr_null(c.listens);
}
END_TEST

/* ---- log ---- */

static void assert_matches(const char *text, const char *pattern)
{
    regex_t re;
    int r;

    ck_assert_int_eq(regcomp(&re, pattern, REG_EXTENDED | REG_NEWLINE), 0);
    r = regexec(&re, text, 0, NULL, 0);
    regfree(&re);
    ck_assert_msg(r == 0, "\"%s\" does not match /%s/", text, pattern);
}

static void open_log(const char *path, int level)
{
    ck_assert_msg(log_open(path, level, errmsg, sizeof(errmsg)) == 0, "%s", errmsg);
}

START_TEST(test_log_file_line_has_time_level_role_pid_and_message)
{
    const char *path = tmp_path("p.log");
    char pattern[256];

    open_log(path, LOG_INFO);
    log_set_role("worker %d", 3);
    log_msg(LOG_WARNING, 0, "hello %s", "there");
    snprintf(pattern, sizeof(pattern),
             "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3} "
             "\\[warning\\] worker 3\\[%ld\\]: hello there\n$", (long)getpid());
    assert_matches(read_file(path), pattern);
}
END_TEST

START_TEST(test_log_default_role_is_preforkd)
{
    const char *path = tmp_path("p.log");

    open_log(path, LOG_INFO);
    log_msg(LOG_INFO, 0, "up");
    assert_matches(read_file(path), " \\[info\\] preforkd\\[[0-9]+\\]: up\n$");
}
END_TEST

START_TEST(test_log_err_appends_strerror)
{
    const char *path = tmp_path("p.log");

    open_log(path, LOG_INFO);
    log_msg(LOG_ERR, -ENOENT, "open %s", "/x");
    assert_matches(read_file(path), "\\[error\\] .*: open /x: No such file or directory\n$");
}
END_TEST

START_TEST(test_log_below_level_is_not_written)
{
    const char *path = tmp_path("p.log");
    const char *text;

    open_log(path, LOG_WARNING);
    log_msg(LOG_INFO, 0, "info line");
    log_msg(LOG_DEBUG, 0, "debug line");
    log_msg(LOG_ERR, 0, "error line");
    text = read_file(path);
    ck_assert_ptr_null(strstr(text, "info line"));
    ck_assert_ptr_null(strstr(text, "debug line"));
    ck_assert_ptr_nonnull(strstr(text, "error line"));
}
END_TEST

START_TEST(test_log_newline_in_message_cannot_forge_a_line)
{
    const char *path = tmp_path("p.log");

    open_log(path, LOG_INFO);
    log_msg(LOG_INFO, 0, "GET /\n2024-01-01T00:00:00.000 [error] master[1]: fake");
    assert_matches(read_file(path), "^[^\n]*GET /\\?2024[^\n]*fake\n$");
}
END_TEST

START_TEST(test_log_long_message_is_cut_to_one_line)
{
    const char *path = tmp_path("p.log");
    static char big[10000];
    const char *text;

    memset(big, 'x', sizeof(big) - 1);
    open_log(path, LOG_INFO);
    log_msg(LOG_INFO, 0, "%s", big);
    text = read_file(path);
    ck_assert_uint_le(strlen(text), PIPE_BUF);
    ck_assert_ptr_eq(strchr(text, '\n'), text + strlen(text) - 1);
}
END_TEST

START_TEST(test_log_reopen_after_rename_writes_to_new_file)
{
    const char *path = tmp_path("p.log");
    char rotated[PATH_MAX];

    snprintf(rotated, sizeof(rotated), "%s.1", path);
    open_log(path, LOG_INFO);
    log_msg(LOG_INFO, 0, "before rotation");
    ck_assert_int_eq(rename(path, rotated), 0);
    log_msg(LOG_INFO, 0, "after rename");
    ck_assert_int_eq(log_reopen(), 0);
    log_msg(LOG_INFO, 0, "after reopen");

    ck_assert_ptr_nonnull(strstr(read_file(rotated), "before rotation"));
    ck_assert_ptr_nonnull(strstr(read_file(rotated), "after rename"));
    ck_assert_ptr_null(strstr(read_file(rotated), "after reopen"));
    ck_assert_ptr_nonnull(strstr(read_file(path), "after reopen"));
    ck_assert_ptr_null(strstr(read_file(path), "before rotation"));
}
END_TEST

START_TEST(test_log_reopen_relative_path_after_chdir)
{
    char cwd[PATH_MAX], rotated[PATH_MAX];
    const char *path = tmp_path("rel.log");

    ck_assert_ptr_nonnull(getcwd(cwd, sizeof(cwd)));
    ck_assert_int_eq(chdir(tmpdir), 0);
    open_log("rel.log", LOG_INFO);
    ck_assert_int_eq(chdir("/"), 0);
    snprintf(rotated, sizeof(rotated), "%s.1", path);
    ck_assert_int_eq(rename(path, rotated), 0);
    ck_assert_int_eq(log_reopen(), 0);
    log_msg(LOG_INFO, 0, "in the new file");
    ck_assert_int_eq(chdir(cwd), 0);
    ck_assert_ptr_nonnull(strstr(read_file(path), "in the new file"));
}
END_TEST

START_TEST(test_log_reopen_failure_keeps_old_file)
{
    char dir[PATH_MAX], moved[PATH_MAX], path[PATH_MAX + 8];

    snprintf(dir, sizeof(dir), "%s", tmp_path("sub"));
    snprintf(moved, sizeof(moved), "%s", tmp_path("moved"));
    snprintf(path, sizeof(path), "%s/p.log", dir);
    ck_assert_int_eq(mkdir(dir, 0755), 0);
    open_log(path, LOG_INFO);
    ck_assert_int_eq(rename(dir, moved), 0);       /* now the path cannot be created */
    ck_assert_int_eq(log_reopen(), -ENOENT);
    log_msg(LOG_INFO, 0, "still logged");
    snprintf(path, sizeof(path), "%s/p.log", moved);
    ck_assert_ptr_nonnull(strstr(read_file(path), "still logged"));
}
END_TEST

START_TEST(test_log_open_failure_names_target_and_keeps_previous)
{
    const char *path = tmp_path("p.log");

    open_log(path, LOG_INFO);
    ck_assert_int_eq(log_open("/nonexistent-dir/x.log", LOG_DEBUG, errmsg, sizeof(errmsg)),
                     -ENOENT);
    ck_assert_str_eq(errmsg, "log file /nonexistent-dir/x.log: No such file or directory");
    log_msg(LOG_INFO, 0, "kept");
    log_msg(LOG_DEBUG, 0, "level kept too");
    ck_assert_ptr_nonnull(strstr(read_file(path), "kept"));
    ck_assert_ptr_null(strstr(read_file(path), "level kept too"));
}
END_TEST

START_TEST(test_log_lines_of_forked_processes_do_not_interleave)
{
    enum { CHILDREN = 4, LINES = 100, MSG_LEN = 1500 };
    const char *path = tmp_path("p.log");
    static char msg[MSG_LEN + 1];
    const char *p;
    int status, n = 0, bad = 0;
    regex_t re;

    open_log(path, LOG_INFO);
    for (int i = 0; i < CHILDREN; i++) {
        pid_t pid = fork();

        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
            memset(msg, 'a' + i, MSG_LEN);
            log_set_role("worker %d", i);
            for (int j = 0; j < LINES; j++)
                log_msg(LOG_INFO, 0, "%s", msg);
            _exit(0);
        }
    }
    for (int i = 0; i < CHILDREN; i++) {
        ck_assert_int_gt(wait(&status), 0);
        ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    ck_assert_int_eq(regcomp(&re, "^[^ ]+ \\[info\\] worker ([0-3])\\[[0-9]+\\]: "
                             "(a{1500}|b{1500}|c{1500}|d{1500})$", REG_EXTENDED | REG_NOSUB), 0);
    for (p = read_file(path); *p != '\0'; n++) {
        const char *eol = strchrnul(p, '\n');
        char line[2048];

        if (*eol == '\0' || (size_t)(eol - p) >= sizeof(line)) {
            bad++;
            break;
        }
        memcpy(line, p, (size_t)(eol - p));
        line[eol - p] = '\0';
        bad += regexec(&re, line, 0, NULL, 0) != 0;
        p = eol + 1;
    }
    regfree(&re);
    ck_assert_int_eq(bad, 0);
    ck_assert_int_eq(n, CHILDREN * LINES);
}
END_TEST

static Suite *config_suite(void)
{
    Suite *s = suite_create("config");
    TCase *tc = tcase_create("config");
    TCase *tl = tcase_create("listen");
    TCase *te = tcase_create("errors");
    TCase *tg = tcase_create("log");

    tcase_add_unchecked_fixture(tc, rootdir_setup, rootdir_teardown);
    tcase_add_checked_fixture(tc, tmpdir_setup, tmpdir_teardown);
    tcase_add_test(tc, test_shipped_config_parses_for_make_run);
    tcase_add_test(tc, test_minimal_file_gets_every_default);
    tcase_add_test(tc, test_no_listen_defaults_to_localhost_8080);
    tcase_add_test(tc, test_every_key_set_is_read);
    tcase_add_test(tc, test_workers_auto_resolves_to_cpu_count);
    tcase_add_test(tc, test_relative_paths_are_relative_to_the_config_file);
    tcase_add_test(tc, test_log_stderr_and_syslog_are_not_paths);
    tcase_add_test(tc, test_unix_path_too_long_once_made_absolute_is_an_error);
    tcase_add_test(tc, test_bool_accepts_yes_no_true_false_on_off_1_0);
    tcase_add_test(tc, test_inline_semicolon_comment_is_stripped);
    tcase_add_test(tc, test_crlf_line_endings_are_accepted);
    tcase_add_test(tc, test_indented_line_is_a_key_not_a_continuation);
    tcase_add_test(tc, test_line_longer_than_inih_default_is_read_whole);
    tcase_add_test(tc, test_line_over_limit_is_an_error);
    tcase_add_test(tc, test_log_level_names_parse_and_print);
    tcase_add_test(tc, test_handler_and_protocols_reject_unknown_names);
    suite_add_tcase(s, tc);

    tcase_add_unchecked_fixture(tl, rootdir_setup, rootdir_teardown);
    tcase_add_checked_fixture(tl, tmpdir_setup, tmpdir_teardown);
    tcase_add_test(tl, test_listen_port_only_means_every_interface);
    tcase_add_test(tl, test_listen_ipv4_and_port);
    tcase_add_test(tl, test_listen_bracketed_ipv6_and_port);
    tcase_add_test(tl, test_listen_hostname_and_port);
    tcase_add_test(tl, test_listen_unix_path);
    tcase_add_test(tl, test_listen_ssl_suffix_sets_ssl);
    tcase_add_test(tl, test_listen_port_zero_is_accepted);
    tcase_add_loop_test(tl, test_listen_rejects_bad_value_with_reason, 0,
                        (int)(sizeof(bad_listens) / sizeof(bad_listens[0])));
    tcase_add_test(tl, test_listen_repeated_keeps_every_value_in_order_with_lines);
    tcase_add_test(tl, test_bad_listen_names_file_line_and_reason);
    tcase_add_test(tl, test_listen_ssl_without_tls_certificate_is_an_error);
    tcase_add_test(tl, test_listen_ssl_with_certificate_and_key_loads);
    tcase_add_test(tl, test_tls_certificate_without_key_is_an_error);
    tcase_add_test(tl, test_same_listen_address_twice_is_an_error);
    tcase_add_test(tl, test_port_zero_twice_is_not_a_duplicate);
    suite_add_tcase(s, tl);

    tcase_add_unchecked_fixture(te, rootdir_setup, rootdir_teardown);
    tcase_add_checked_fixture(te, tmpdir_setup, tmpdir_teardown);
    tcase_add_test(te, test_backlog_not_a_number_names_file_line_key);
    tcase_add_test(te, test_backlog_out_of_range_names_range);
    tcase_add_test(te, test_negative_timeout_is_rejected);
    tcase_add_test(te, test_number_overflow_is_rejected);
    tcase_add_test(te, test_empty_number_and_hex_are_not_numbers);
    tcase_add_test(te, test_workers_zero_or_word_is_rejected);
    tcase_add_test(te, test_required_string_empty_is_rejected);
    tcase_add_test(te, test_status_path_must_start_with_slash);
    tcase_add_test(te, test_unknown_key_names_file_line_section_key);
    tcase_add_test(te, test_unknown_section_is_an_error_even_when_empty);
    tcase_add_test(te, test_text_after_section_header_is_an_error);
    tcase_add_test(te, test_duplicate_key_is_an_error);
    tcase_add_test(te, test_key_before_any_section_is_an_error);
    tcase_add_test(te, test_syntax_error_names_line);
    tcase_add_test(te, test_first_error_is_reported);
    tcase_add_test(te, test_missing_file_names_path_and_cause);
    suite_add_tcase(s, te);

    tcase_add_unchecked_fixture(tg, rootdir_setup, rootdir_teardown);
    tcase_add_checked_fixture(tg, tmpdir_setup, tmpdir_teardown);
    tcase_add_test(tg, test_log_file_line_has_time_level_role_pid_and_message);
    tcase_add_test(tg, test_log_default_role_is_preforkd);
    tcase_add_test(tg, test_log_err_appends_strerror);
    tcase_add_test(tg, test_log_below_level_is_not_written);
    tcase_add_test(tg, test_log_newline_in_message_cannot_forge_a_line);
    tcase_add_test(tg, test_log_long_message_is_cut_to_one_line);
    tcase_add_test(tg, test_log_reopen_after_rename_writes_to_new_file);
    tcase_add_test(tg, test_log_reopen_relative_path_after_chdir);
    tcase_add_test(tg, test_log_reopen_failure_keeps_old_file);
    tcase_add_test(tg, test_log_open_failure_names_target_and_keeps_previous);
    tcase_add_test(tg, test_log_lines_of_forked_processes_do_not_interleave);
    suite_add_tcase(s, tg);
    return s;
}

int main(void)
{
    return tu_run_suite(config_suite()) == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

/*
 * check_soak: the short form of the chaos soak (tests/soak, `make soak`).
 * Runs the soak driver for SOAK_CHECK_SECONDS (default 10) against the built
 * daemon ($PREFORKD, default build/preforkd, from the repo root) and fails
 * unless it exits 0: no fault cost what it must not, and both masters ended
 * clean. The driver is build/tests/soak/soak, next to this binary; its
 * report goes to stderr when it fails (and with CK_VERBOSITY=verbose).
 */
#define _GNU_SOURCE
#include <check.h>
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemonutil.h"
#include "testutil.h"

/* The soak (10 s), the settling after it (up to graceful_timeout + 7 s)
 * and the QUITs (up to graceful_timeout + 3 s each), with room to spare. */
#define SOAK_WAIT_SEC 75.0
#define TCASE_TIMEOUT_SEC 90
#define REPORT_MAX 65536
/* The part of the report a failure message shows (Check cuts at 4 KiB). */
#define REPORT_TAIL_MAX 3000
/* An ASan build's RSS moves with its quarantine, not with leaks: LSan
 * reports those. */
#define SANITIZE_RSS_MARGIN_KB "131072"

/* Set up by main(): the daemon under test and the suite's temp dir. */
static struct du_suite suite;
static char soak_path[PATH_MAX + 16];

static const char *tail_of(const char *text, size_t max)
{
    size_t len = strlen(text);
    const char *p;

    if (len <= max)
        return text;
    p = strchr(text + len - max, '\n');
    return p != NULL ? p + 1 : text + len - max;
}

START_TEST(test_10s_of_chaos_costs_no_unexpected_failure_and_quit_exits_0)
{
    static char report[REPORT_MAX];
    const char *seconds = getenv("SOAK_CHECK_SECONDS"), *result;
    char out[PATH_MAX];
    char *argv[] = { soak_path, NULL };
    pid_t pid;
    int status = 0;

    snprintf(out, sizeof(out), "%s/report", suite.dir);
    /* It stops its daemons on TERM: a test killed for its timeout leaves none. */
    pid = tu_fork_tied(SIGTERM);
    if (pid == 0) {
        setenv("SOAK_SECONDS", seconds != NULL && *seconds ? seconds : "10", 1);
        setenv("PREFORKD", suite.preforkd, 1);
        if (getenv("MAKE_SANITIZE") != NULL && strcmp(getenv("MAKE_SANITIZE"), "1") == 0)
            setenv("SOAK_RSS_MARGIN_KB", SANITIZE_RSS_MARGIN_KB, 1);
        tu_exec_child(soak_path, argv, out, out);
    }
    if (!tu_wait_pid(pid, &status, SOAK_WAIT_SEC)) {
        kill(pid, SIGTERM);
        if (!tu_wait_pid(pid, &status, 2.0)) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
        }
        tu_read_file(out, report, sizeof(report));
        fprintf(stderr, "%s\n", report);
        ck_abort_msg("the soak still ran after %.0f s:\n%s", SOAK_WAIT_SEC,
                     tail_of(report, REPORT_TAIL_MAX));
    }
    tu_read_file(out, report, sizeof(report));
    result = strstr(report, "RESULT: ");
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 ||
        (getenv("CK_VERBOSITY") && strcmp(getenv("CK_VERBOSITY"), "verbose") == 0))
        fprintf(stderr, "%s\n", report);
    else if (result != NULL)
        fprintf(stderr, "check_soak: %.*s\n", (int)strcspn(result, "\n"), result);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "soak: wait status 0x%x (exit 1: a check failed, 2: it could not run)\n%s",
                  (unsigned)status, tail_of(report, REPORT_TAIL_MAX));
    tu_assert_no_sanitizer_report(report);
}
END_TEST

static Suite *soak_suite(void)
{
    Suite *s = suite_create("soak");
    TCase *tc = tu_add_tcase(s, "chaos", TCASE_TIMEOUT_SEC);

    tcase_add_test(tc, test_10s_of_chaos_costs_no_unexpected_failure_and_quit_exits_0);
    return s;
}

int main(int argc, char **argv)
{
    char self[PATH_MAX];
    ssize_t len;

    (void)argc;
    if (!du_suite_begin(&suite, "check_soak", false))
        return EXIT_FAILURE;
    /* The driver sits next to us: build/tests/soak/soak (build/sanitize/... too). */
    len = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (len <= 0) {
        fprintf(stderr, "%s: /proc/self/exe: %s\n", argv[0], strerror(errno));
        tu_rmtree(suite.dir);
        return EXIT_FAILURE;
    }
    self[len] = '\0';
    snprintf(soak_path, sizeof(soak_path), "%s/soak/soak", dirname(self));
    if (access(soak_path, X_OK) != 0) {
        fprintf(stderr, "check_soak: %s: %s (build it: make tests; run from the repo root)\n",
                soak_path, strerror(errno));
        tu_rmtree(suite.dir);
        return EXIT_FAILURE;
    }
    return du_suite_end(&suite, tu_run_suite(soak_suite()));
}

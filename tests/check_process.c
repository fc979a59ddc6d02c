/*
 * check_process: pf_cpu_count, pf_task_id and pf_fork_processes. The
 * supervising side of pf_fork_processes blocks, so every fork test runs it in
 * a "supervisor" process of its own; the supervisor's children report to the
 * test through a pipe of fixed-size records (atomic below PIPE_BUF), and the
 * supervisor reports what pf_fork_processes returned the same way.
 *
 * The test process makes itself a child subreaper, so that children orphaned
 * by a killed supervisor become its own and can be reaped by pid; every wait
 * is bounded.
 */
#define _GNU_SOURCE     /* sched_getaffinity, CPU_COUNT, pipe2 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "process.h"
#include "testutil.h"

/* Check kills a test after this; every wait below is shorter. */
#define TCASE_TIMEOUT_SEC 15
/* How long a test waits for all the records of one supervision run. */
#define COLLECT_TIMEOUT_SEC 8.0
/* Children that wait for a signal die by themselves after this, so that
 * a broken supervisor cannot leave them behind for good. */
#define CHILD_ALARM_SEC 12
/* Bound on the records one test expects (children, restarts, the result). */
#define MAX_RECS 64

enum rec_kind {
    REC_CHILD = 1,      /* a child started and is about to exit 0 or wait */
    REC_DYING,          /* a child is about to die (signal or non-zero exit) */
    REC_RESULT,         /* the supervisor's pf_fork_processes returned */
};

/* One record on the pipe; small enough for an atomic write. */
struct rec {
    int kind;           /* enum rec_kind */
    int id;             /* REC_CHILD, REC_DYING: what pf_fork_processes returned */
    int task_id;        /* REC_CHILD, REC_DYING: pf_task_id() afterwards */
    pid_t pid;          /* the writer */
    long value;         /* REC_RESULT: the return value; else child-specific */
};

/* What a child does with its task id; returns its exit status. */
typedef int (*child_fn)(int id, int fd);

struct sup {
    pid_t pid;          /* the supervisor */
    int fd;             /* read end of the record pipe */
};

/* What one supervision run reported. */
struct run {
    struct rec recs[MAX_RECS];  /* child records, in arrival order */
    int n;
    bool have_result;
    long result;                /* pf_fork_processes' return in the supervisor */
    int result_task_id;         /* pf_task_id() in the supervisor afterwards */
    bool eof;                   /* every writer closed the pipe in time */
};

/* Made by main(), removed by main() after the run (a failed test in fork mode
 * exits without teardown). */
static char suite_dir[] = "/tmp/check_process-XXXXXX";
/* This test's directory, for marker files; inherited by the supervisor. */
static char test_dir[PATH_MAX];

static void make_test_dir(void)
{
    snprintf(test_dir, sizeof(test_dir), "%s/t-XXXXXX", suite_dir);
    ck_assert_ptr_nonnull(mkdtemp(test_dir));
}

static void child_send(int fd, int kind, int id, long value)
{
    struct rec r = { .kind = kind, .id = id, .task_id = pf_task_id(),
                     .pid = getpid(), .value = value };

    if (write(fd, &r, sizeof(r)) != (ssize_t)sizeof(r))
        _exit(100);
}

/* True the first time it is called for name within the test (across processes). */
static bool first_time(const char *name, int id)
{
    char path[PATH_MAX + 32];
    int fd;

    snprintf(path, sizeof(path), "%s/%s-%d", test_dir, name, id);
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return false;
    close(fd);
    return true;
}

/* True once first_time(name, id) was called (by any process of the test). */
static bool marked(const char *name, int id)
{
    char path[PATH_MAX + 32];

    snprintf(path, sizeof(path), "%s/%s-%d", test_dir, name, id);
    return access(path, F_OK) == 0;
}

/* Check's fork mode leaves its own SIGTERM, SIGINT and SIGALRM handlers in
 * the test process (they signal the test's process group). A supervisor and
 * its children must die of a signal like any program, so they start over
 * from the defaults. */
static void default_signals(void)
{
    sigset_t none;

    for (int sig = 1; sig < NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            signal(sig, SIG_DFL);
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
}

static void sup_start(struct sup *s, int n, int max_restarts, child_fn fn)
{
    int p[2];

    ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
    /* Dies with the test, whatever way the test ends. */
    s->pid = tu_fork_tied(SIGKILL);
    if (s->pid == 0) {
        struct rec r = { .kind = REC_RESULT, .id = -1 };
        int rc;

        close(p[0]);
        default_signals();
        rc = pf_fork_processes(n, max_restarts);
        if (rc >= 0) {
            alarm(CHILD_ALARM_SEC);
            _exit(fn(rc, p[1]));
        }
        r.pid = getpid();
        r.task_id = pf_task_id();
        r.value = rc;
        _exit(write(p[1], &r, sizeof(r)) == (ssize_t)sizeof(r) ? 0 : 100);
    }
    close(p[1]);
    s->fd = p[0];
}

/* Reads one record: 1, 0 at EOF, -1 on timeout or error. */
static int rec_read(int fd, struct rec *r, double deadline)
{
    size_t got = 0;

    while (got < sizeof(*r)) {
        int left_ms = (int)((deadline - tu_now()) * 1000);
        struct pollfd p = { .fd = fd, .events = POLLIN };
        ssize_t k;

        if (left_ms <= 0)
            return -1;
        if (poll(&p, 1, left_ms) <= 0)
            continue;
        k = read(fd, (char *)r + got, sizeof(*r) - got);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return -1;
        if (k == 0)
            return got == 0 ? 0 : -1;
        got += (size_t)k;
    }
    return 1;
}

/* Reads records until stop child records arrived (stop <= 0: until EOF) or
 * timeout_sec passed. */
static void run_collect(struct sup *s, struct run *run, int stop, double timeout_sec)
{
    double deadline = tu_now() + timeout_sec;
    struct rec r;
    int rc = -1;

    while ((stop <= 0 || run->n < stop) && (rc = rec_read(s->fd, &r, deadline)) > 0) {
        if (r.kind == REC_RESULT) {
            run->have_result = true;
            run->result = r.value;
            run->result_task_id = r.task_id;
        } else if (run->n < MAX_RECS) {
            run->recs[run->n++] = r;
        }
    }
    if (stop <= 0)
        run->eof = rc == 0;
}

/* Waits up to timeout_sec for the supervisor, then kills it; returns its
 * wait status. Also closes the pipe. */
static int sup_reap(struct sup *s, double timeout_sec)
{
    double deadline = tu_now() + timeout_sec;
    int status = -1;
    pid_t r;

    while ((r = waitpid(s->pid, &status, WNOHANG)) == 0 && tu_now() < deadline)
        usleep(10000);
    if (r == 0) {
        kill(s->pid, SIGKILL);
        while (waitpid(s->pid, &status, 0) < 0 && errno == EINTR)
            ;
        status = -1;
    }
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
    return status;
}

/* A process is gone once no signal can reach it. Zombies the test can reap
 * (orphans reparented to it) are reaped here and count as gone. */
static bool pid_gone(pid_t pid, int *status)
{
    int st;

    if (waitpid(pid, &st, WNOHANG) == pid) {
        if (status != NULL)
            *status = st;
        return true;
    }
    return kill(pid, 0) < 0 && errno == ESRCH;
}

/* Kills and reaps every reported child still around (only after a failure). */
static void run_cleanup(const struct run *run)
{
    for (int i = 0; i < run->n; i++) {
        pid_t pid = run->recs[i].pid;

        if (pid > 0 && !pid_gone(pid, NULL)) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
        }
    }
}

/* Number of records of kind for id (id < 0: any id). */
static int run_count(const struct run *run, int kind, int id)
{
    int k = 0;

    for (int i = 0; i < run->n; i++)
        if (run->recs[i].kind == kind && (id < 0 || run->recs[i].id == id))
            k++;
    return k;
}

static const struct rec *run_find(const struct run *run, int kind, int id)
{
    for (int i = 0; i < run->n; i++)
        if (run->recs[i].kind == kind && run->recs[i].id == id)
            return &run->recs[i];
    return NULL;
}

/* Every id 0..n-1 reported REC_CHILD exactly once, with pf_task_id() == id. */
static void assert_each_id_once(const struct run *run, int n)
{
    ck_assert_int_eq(run_count(run, REC_CHILD, -1), n);
    for (int id = 0; id < n; id++) {
        const struct rec *r = run_find(run, REC_CHILD, id);

        ck_assert_msg(r != NULL, "no child reported task id %d", id);
        ck_assert_int_eq(run_count(run, REC_CHILD, id), 1);
        ck_assert_int_eq(r->task_id, id);
    }
}

static void setup(void)
{
    /* Orphans of a killed supervisor become ours, so we can see them die. */
    ck_assert_int_eq(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
    make_test_dir();
}

/* ---- children ---- */

static int child_report_exit0(int id, int fd)
{
    child_send(fd, REC_CHILD, id, 0);
    return 0;
}

static int child_report_random(int id, int fd)
{
    child_send(fd, REC_CHILD, id, random());
    return 0;
}

/* Child 1 kills itself the first time. */
static int child_1_sigkill_once(int id, int fd)
{
    if (id == 1 && first_time("killed", id)) {
        child_send(fd, REC_DYING, id, 0);
        raise(SIGKILL);
        return 98;      /* not reached */
    }
    child_send(fd, REC_CHILD, id, 0);
    return 0;
}

/* Child 1 exits with status 3 the first time. */
static int child_1_exit3_once(int id, int fd)
{
    if (id == 1 && first_time("exited", id)) {
        child_send(fd, REC_DYING, id, 3);
        return 3;
    }
    child_send(fd, REC_CHILD, id, 0);
    return 0;
}

/* Child 1 failing with status 1 once child 0 (and child 2 if also_2) has
 * started; up to 5 s, so that a supervisor cannot give up before they ran. */
static int fail_once_started(int id, int fd, bool also_2)
{
    double deadline = tu_now() + 5.0;

    while ((!marked("started", 0) || (also_2 && !marked("started", 2))) && tu_now() < deadline)
        usleep(5000);
    child_send(fd, REC_DYING, id, 1);
    return 1;
}

/* Reports, marks itself started, and waits to be killed. */
static int start_and_wait(int id, int fd)
{
    child_send(fd, REC_CHILD, id, 0);
    first_time("started", id);
    for (;;)
        pause();
    return 97;          /* not reached */
}

/* Child 1 always fails, but only once 0 and 2 reported (else the supervisor
 * could give up before they ran); the others wait to be killed. */
static int child_1_always_fails(int id, int fd)
{
    if (id == 1)
        return fail_once_started(id, fd, true);
    return start_and_wait(id, fd);
}

/* Child 0 ignores SIGTERM and waits; child 1 fails once 0 is ready. */
static int child_0_ignores_term_1_fails(int id, int fd)
{
    if (id == 1)
        return fail_once_started(id, fd, false);
    signal(SIGTERM, SIG_IGN);
    return start_and_wait(id, fd);
}

static int child_report_and_wait(int id, int fd)
{
    child_send(fd, REC_CHILD, id, 0);
    for (;;)
        pause();
    return 97;          /* not reached */
}

/* ---- pf_cpu_count, pf_task_id ---- */

START_TEST(test_cpu_count_equals_affinity_cpu_count)
{
    cpu_set_t set;

    ck_assert_int_eq(sched_getaffinity(0, sizeof(set), &set), 0);
    ck_assert_int_ge(pf_cpu_count(), 1);
    ck_assert_int_eq(pf_cpu_count(), CPU_COUNT(&set));
}
END_TEST

/* Under taskset, the count is the CPUs we may use, not the CPUs online. */
START_TEST(test_cpu_count_follows_restricted_affinity)
{
    cpu_set_t set, one;
    int cpu = 0;

    ck_assert_int_eq(sched_getaffinity(0, sizeof(set), &set), 0);
    while (!CPU_ISSET(cpu, &set))
        cpu++;
    CPU_ZERO(&one);
    CPU_SET(cpu, &one);
    ck_assert_int_eq(sched_setaffinity(0, sizeof(one), &one), 0);
    ck_assert_int_eq(pf_cpu_count(), 1);
}
END_TEST

START_TEST(test_task_id_is_minus_one_before_fork)
{
    ck_assert_int_eq(pf_task_id(), -1);
}
END_TEST

/* ---- pf_fork_processes ---- */

START_TEST(test_fork_three_gives_distinct_ids_and_returns_all_exited)
{
    struct sup s;
    static struct run run;
    int status;

    sup_start(&s, 3, -1, child_report_exit0);
    run_collect(&s, &run, 0, COLLECT_TIMEOUT_SEC);
    status = sup_reap(&s, 2.0);
    run_cleanup(&run);

    ck_assert_msg(run.eof, "the pipe stayed open: a child or the supervisor is still running");
    assert_each_id_once(&run, 3);
    for (int i = 0; i < run.n; i++)
        for (int j = i + 1; j < run.n; j++)
            ck_assert_int_ne(run.recs[i].pid, run.recs[j].pid);
    ck_assert_msg(run.have_result, "the supervisor did not return");
    ck_assert_int_eq(run.result, PF_FORK_ALL_EXITED);
    /* The supervisor's own task id stays unset. */
    ck_assert_int_eq(run.result_task_id, -1);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}
END_TEST

START_TEST(test_fork_zero_forks_cpu_count_children)
{
    struct sup s;
    static struct run run;
    int n = pf_cpu_count();

    sup_start(&s, 0, -1, child_report_exit0);
    run_collect(&s, &run, 0, COLLECT_TIMEOUT_SEC);
    sup_reap(&s, 2.0);
    run_cleanup(&run);

    ck_assert(run.eof);
    assert_each_id_once(&run, n);
    ck_assert(run.have_result);
    ck_assert_int_eq(run.result, PF_FORK_ALL_EXITED);
}
END_TEST

/* Three children, of which #1 fails once as fn makes it: #1 is started
 * again with the same id and a new pid, and the run ends with all exited. */
static void assert_child_1_restarted_once(child_fn fn)
{
    struct sup s;
    static struct run run;
    const struct rec *dying, *again;

    sup_start(&s, 3, -1, fn);
    run_collect(&s, &run, 0, COLLECT_TIMEOUT_SEC);
    sup_reap(&s, 2.0);
    run_cleanup(&run);

    ck_assert(run.eof);
    ck_assert_int_eq(run_count(&run, REC_DYING, -1), 1);
    dying = run_find(&run, REC_DYING, 1);
    ck_assert_ptr_nonnull(dying);
    assert_each_id_once(&run, 3);
    again = run_find(&run, REC_CHILD, 1);
    ck_assert_int_ne(again->pid, dying->pid);
    ck_assert(run.have_result);
    ck_assert_int_eq(run.result, PF_FORK_ALL_EXITED);
}

START_TEST(test_child_killed_by_signal_is_restarted_with_same_id)
{
    assert_child_1_restarted_once(child_1_sigkill_once);
}
END_TEST

START_TEST(test_child_exiting_non_zero_is_restarted_with_same_id)
{
    assert_child_1_restarted_once(child_1_exit3_once);
}
END_TEST

START_TEST(test_gives_up_after_max_restarts_and_leaves_no_child)
{
    struct sup s;
    static struct run run;
    bool alive[MAX_RECS] = { false };
    int n_before;

    sup_start(&s, 3, 2, child_1_always_fails);
    /* Read up to the result, then look at once: pf_fork_processes must have
     * killed and reaped the others before returning. */
    {
        double deadline = tu_now() + COLLECT_TIMEOUT_SEC;
        struct rec r;

        while (!run.have_result && run.n < MAX_RECS && rec_read(s.fd, &r, deadline) > 0) {
            if (r.kind == REC_RESULT) {
                run.have_result = true;
                run.result = r.value;
            } else {
                run.recs[run.n++] = r;
            }
        }
    }
    n_before = run.n;
    for (int i = 0; i < n_before; i++)
        alive[i] = !(kill(run.recs[i].pid, 0) < 0 && errno == ESRCH);
    /* Whatever is still written (nothing is expected) up to EOF; a
     * supervisor that never returned already failed the test. */
    run_collect(&s, &run, 0, run.have_result ? 2.0 : 0.1);
    sup_reap(&s, 2.0);
    run_cleanup(&run);

    ck_assert_msg(run.have_result, "the supervisor did not return");
    ck_assert_int_eq(run.result, PF_FORK_GAVE_UP);
    /* Three deaths: two restarts allowed, the third death gives up. */
    ck_assert_int_eq(run_count(&run, REC_DYING, 1), 3);
    ck_assert_int_eq(run_count(&run, REC_CHILD, 0), 1);
    ck_assert_int_eq(run_count(&run, REC_CHILD, 2), 1);
    for (int i = 0; i < n_before; i++)
        ck_assert_msg(!alive[i], "child %d (pid %d) still exists after PF_FORK_GAVE_UP",
                      run.recs[i].id, (int)run.recs[i].pid);
    ck_assert(run.eof);
}
END_TEST

START_TEST(test_gives_up_even_when_a_child_ignores_sigterm)
{
    struct sup s;
    static struct run run;
    double start = tu_now();
    const struct rec *r0;
    int status;

    sup_start(&s, 2, 0, child_0_ignores_term_1_fails);
    run_collect(&s, &run, 0, COLLECT_TIMEOUT_SEC);
    sup_reap(&s, 2.0);
    run_cleanup(&run);

    ck_assert_msg(run.have_result, "the supervisor did not return");
    ck_assert_int_eq(run.result, PF_FORK_GAVE_UP);
    /* SIGTERM is ignored: SIGKILL after the grace second ends it. */
    ck_assert_double_lt(tu_now() - start, 5.0);
    r0 = run_find(&run, REC_CHILD, 0);
    ck_assert_ptr_nonnull(r0);
    ck_assert(pid_gone(r0->pid, &status));
}
END_TEST

START_TEST(test_children_get_different_random_numbers)
{
    struct sup s;
    static struct run run;
    int distinct = 0;

    /* The same seed everywhere: only a reseed in the child can tell them apart. */
    srandom(42);
    sup_start(&s, 3, -1, child_report_random);
    run_collect(&s, &run, 0, COLLECT_TIMEOUT_SEC);
    sup_reap(&s, 2.0);
    run_cleanup(&run);

    assert_each_id_once(&run, 3);
    for (int i = 0; i < run.n; i++) {
        bool seen = false;

        for (int j = 0; j < i; j++)
            seen |= run.recs[j].value == run.recs[i].value;
        distinct += !seen;
    }
    ck_assert_msg(distinct >= 2, "3 children drew %ld, %ld, %ld", run.recs[0].value,
                  run.recs[1].value, run.recs[2].value);
}
END_TEST

START_TEST(test_children_exit_with_sigterm_when_supervisor_is_killed)
{
    struct sup s;
    static struct run run;
    int status[3] = { 0 };
    bool gone[3] = { false };
    double deadline;
    bool all_gone = false;

    sup_start(&s, 3, -1, child_report_and_wait);
    run_collect(&s, &run, 3, COLLECT_TIMEOUT_SEC);
    ck_assert_int_eq(run.n, 3);
    kill(s.pid, SIGKILL);
    sup_reap(&s, 2.0);
    /* The children are not ours until the supervisor is gone; then they are
     * (subreaper): poll until each one is reaped or unknown. */
    deadline = tu_now() + 2.0;
    while (!all_gone && tu_now() < deadline) {
        all_gone = true;
        for (int i = 0; i < 3; i++) {
            if (!gone[i])
                gone[i] = pid_gone(run.recs[i].pid, &status[i]);
            all_gone &= gone[i];
        }
        if (!all_gone)
            usleep(10000);
    }
    run_cleanup(&run);

    for (int i = 0; i < 3; i++) {
        ck_assert_msg(gone[i], "child %d (pid %d) outlived its supervisor by 2 s",
                      run.recs[i].id, (int)run.recs[i].pid);
        ck_assert_msg(WIFSIGNALED(status[i]) && WTERMSIG(status[i]) == SIGTERM,
                      "child %d: wait status 0x%x, expected killed by SIGTERM",
                      run.recs[i].id, (unsigned)status[i]);
    }
}
END_TEST

static Suite *process_suite(void)
{
    Suite *s = suite_create("process");
    TCase *tc = tu_add_tcase(s, "cpu_count_task_id", TCASE_TIMEOUT_SEC);

    tcase_add_test(tc, test_cpu_count_equals_affinity_cpu_count);
    tcase_add_test(tc, test_cpu_count_follows_restricted_affinity);
    tcase_add_test(tc, test_task_id_is_minus_one_before_fork);

    tc = tu_add_tcase(s, "fork_processes", TCASE_TIMEOUT_SEC);
    tcase_add_checked_fixture(tc, setup, NULL);
    tcase_add_test(tc, test_fork_three_gives_distinct_ids_and_returns_all_exited);
    tcase_add_test(tc, test_fork_zero_forks_cpu_count_children);
    tcase_add_test(tc, test_child_killed_by_signal_is_restarted_with_same_id);
    tcase_add_test(tc, test_child_exiting_non_zero_is_restarted_with_same_id);
    tcase_add_test(tc, test_gives_up_after_max_restarts_and_leaves_no_child);
    tcase_add_test(tc, test_gives_up_even_when_a_child_ignores_sigterm);
    tcase_add_test(tc, test_children_get_different_random_numbers);
    tcase_add_test(tc, test_children_exit_with_sigterm_when_supervisor_is_killed);
    return s;
}

int main(void)
{
    int failed;

    if (mkdtemp(suite_dir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    failed = tu_run_suite(process_suite());
    tu_rmtree(suite_dir);
    return failed == 0 ? 0 : 1;
}

/*
 * check_fuzz_regress: replays every file under tests/fuzz/corpus/<target>/
 * (the seeds) and tests/fuzz/regress/<target>/ (inputs that once crashed)
 * through that libFuzzer target's LLVMFuzzerTestOneInput, built without
 * libFuzzer and renamed <target>_test_one_input by the Makefile. A target
 * aborts on a broken promise; under SANITIZE=1 ASan and UBSan abort too.
 * Each file is one test in fork mode, so a crash fails that file's test
 * alone, and Check names the file ("<path>:0: (after this point) Received
 * signal 6"). fuzz_path runs twice: once with openat2, once with the
 * fallback walk (FUZZ_PATH_NO_OPENAT2=1 puts a seccomp filter on openat2).
 * FUZZ_DIR overrides where tests/fuzz is (default: relative to the current
 * directory, the top of the tree under `make check`).
 */
#define _GNU_SOURCE     /* scandir, alphasort */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "testutil.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define FUZZ_DIR_DEFAULT "tests/fuzz"
/* Inputs are small (the fuzzers' seeds and crashers), but the iostream
 * target runs a loop per input, slower under the sanitizers. */
#define TCASE_TIMEOUT_SEC 30
/* Corpus and regress files replayed in all; more fail the suite. */
#define REPLAY_FILES_MAX 4096

/* The targets' LLVMFuzzerTestOneInput and LLVMFuzzerInitialize, renamed. */
int fuzz_config_test_one_input(const uint8_t *data, size_t size);
int fuzz_config_initialize(int *argc, char ***argv);
int fuzz_listen_test_one_input(const uint8_t *data, size_t size);
int fuzz_http_request_test_one_input(const uint8_t *data, size_t size);
int fuzz_path_test_one_input(const uint8_t *data, size_t size);
int fuzz_path_initialize(int *argc, char ***argv);
int fuzz_iostream_until_test_one_input(const uint8_t *data, size_t size);

struct fuzz_target {
    const char *name;               /* directory names under corpus/ and regress/ */
    const char *tcase;
    int (*test_one_input)(const uint8_t *data, size_t size);
    int (*initialize)(int *argc, char ***argv);    /* NULL: none */
    const char *env;                /* set to "1" before initialize; NULL: none */
};

static const struct fuzz_target targets[] = {
    { "fuzz_config", "fuzz_config", fuzz_config_test_one_input, fuzz_config_initialize, NULL },
    { "fuzz_listen", "fuzz_listen", fuzz_listen_test_one_input, NULL, NULL },
    { "fuzz_http_request", "fuzz_http_request", fuzz_http_request_test_one_input, NULL, NULL },
    { "fuzz_path", "fuzz_path", fuzz_path_test_one_input, fuzz_path_initialize, NULL },
    { "fuzz_path", "fuzz_path_fallback_walk", fuzz_path_test_one_input, fuzz_path_initialize,
      "FUZZ_PATH_NO_OPENAT2" },
    { "fuzz_iostream_until", "fuzz_iostream_until", fuzz_iostream_until_test_one_input, NULL,
      NULL },
};

/* The files to replay, grouped by target, found once in main. */
static struct replay {
    const struct fuzz_target *target;
    char path[PATH_MAX];
} replays[REPLAY_FILES_MAX];
static int n_replays;

static uint8_t *read_input(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    uint8_t *data = NULL;
    long len;

    if (f == NULL)
        return NULL;
    if (fseek(f, 0, SEEK_END) == 0 && (len = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
        (data = malloc((size_t)len + 1)) != NULL) {
        *size = fread(data, 1, (size_t)len, f);
        if (*size != (size_t)len) {
            free(data);
            data = NULL;
        }
    }
    fclose(f);
    return data;
}

START_TEST(test_replayed_input_does_not_crash_its_target)
{
    const struct replay *r = &replays[_i];
    size_t size = 0;
    uint8_t *data = read_input(r->path, &size);

    ck_assert_msg(data != NULL, "%s: %s", r->path, strerror(errno));
    if (r->target->env != NULL)
        setenv(r->target->env, "1", 1);
    /* A crash in the target is reported at this file, not at a line of ours. */
    _mark_point(r->path, 0);
    if (r->target->initialize != NULL)
        r->target->initialize(NULL, NULL);
    ck_assert_int_eq(r->target->test_one_input(data, size), 0);
    mark_point();
    free(data);
}
END_TEST

/* Adds the regular files of dir (sorted by name) for target; a missing
 * directory adds none. Returns -1 when there are too many. */
static int add_replays(const struct fuzz_target *target, const char *dir)
{
    struct dirent **names;
    int n = scandir(dir, &names, NULL, alphasort), rc = 0;

    for (int i = 0; i < n; i++) {
        struct replay *r = &replays[n_replays];
        struct stat st;

        if (rc == 0 && n_replays == REPLAY_FILES_MAX) {
            fprintf(stderr, "check_fuzz_regress: more than %d inputs\n", REPLAY_FILES_MAX);
            rc = -1;
        }
        if (rc == 0 && names[i]->d_name[0] != '.') {
            int len = snprintf(r->path, sizeof(r->path), "%s/%s", dir, names[i]->d_name);

            if (len > 0 && (size_t)len < sizeof(r->path) && stat(r->path, &st) == 0 &&
                S_ISREG(st.st_mode)) {
                r->target = target;
                n_replays++;
            }
        }
        free(names[i]);
    }
    if (n >= 0)
        free(names);
    return rc;
}

static Suite *fuzz_regress_suite(const char *fuzz_dir)
{
    Suite *s = suite_create("fuzz_regress");

    for (size_t t = 0; t < ARRAY_LEN(targets); t++) {
        static const char *const kinds[] = { "corpus", "regress" };
        int first = n_replays;
        TCase *tc;

        for (size_t k = 0; k < ARRAY_LEN(kinds); k++) {
            char dir[PATH_MAX];

            int len = snprintf(dir, sizeof(dir), "%s/%s/%s", fuzz_dir, kinds[k],
                               targets[t].name);

            if (len < 0 || (size_t)len >= sizeof(dir) || add_replays(&targets[t], dir) < 0)
                return NULL;
        }
        if (n_replays == first)
            continue;
        tc = tcase_create(targets[t].tcase);
        tcase_set_timeout(tc, TCASE_TIMEOUT_SEC);
        tcase_add_loop_test(tc, test_replayed_input_does_not_crash_its_target, first,
                            n_replays);
        suite_add_tcase(s, tc);
    }
    return s;
}

int main(void)
{
    const char *fuzz_dir = getenv("FUZZ_DIR") ? getenv("FUZZ_DIR") : FUZZ_DIR_DEFAULT;
    Suite *s = fuzz_regress_suite(fuzz_dir);

    if (s == NULL)
        return EXIT_FAILURE;
    /* No seed at all means the suite looked in the wrong place. */
    if (n_replays == 0) {
        fprintf(stderr, "check_fuzz_regress: no inputs under %s/corpus\n", fuzz_dir);
        return EXIT_FAILURE;
    }
    return tu_run_suite(s) == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

/*
 * fuzz_util: what every libFuzzer target in tests/fuzz/ shares: the entry
 * points and the check that aborts with a message, so that libFuzzer (and
 * check_fuzz_regress, in fork mode) sees a crash. The inputs and the code
 * under test are each target's own.
 */
#ifndef PF_FUZZ_UTIL_H
#define PF_FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>

/*
 * libFuzzer's entry points. check_fuzz_regress links every target into one
 * binary, so its rule compiles each target with these two names defined to
 * <target>_test_one_input and <target>_initialize.
 */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* Not assert(): stays on whatever NDEBUG says, and names the broken promise. */
#define FUZZ_CHECK(cond, ...) \
    do { \
        if (!(cond)) \
            fuzz_fail(__FILE__, __LINE__, #cond, __VA_ARGS__); \
    } while (0)

/* Prints "file:line: check failed: cond: message" and aborts. */
void fuzz_fail(const char *file, int line, const char *cond, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 4, 5)));

#endif

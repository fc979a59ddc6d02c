/*
 * fuzz_listen: one `listen` value through listen_spec_parse. A value
 * comes from an INI line, so an input with a NUL byte is skipped. On
 * success the struct must keep config.h's promises, and parsing its text
 * again must give the same listener (the text is what a reload matches
 * listeners by); on failure there must be a reason and out must be zeroed.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "../../daemon/config.h"
#include "fuzz_util.h"

#define LISTEN_WHY_SIZE 256
#define LISTEN_PORT_MAX 65535
#define LISTEN_UNIX_PATH_SIZE sizeof(((struct sockaddr_un *)NULL)->sun_path)

static bool listen_is_zero(const struct listen_spec *ls)
{
    static const struct listen_spec zero;

    return memcmp(ls, &zero, sizeof(zero)) == 0;
}

static bool listen_has_space(const char *s)
{
    for (; *s != '\0'; s++)
        if (isspace((unsigned char)*s))
            return true;
    return false;
}

static bool str_eq(const char *a, const char *b)
{
    return (a == NULL) == (b == NULL) && (a == NULL || strcmp(a, b) == 0);
}

static void listen_check(const char *value, const struct listen_spec *ls)
{
    size_t tlen;

    FUZZ_CHECK(ls->text != NULL && ls->text[0] != '\0', "\"%s\": no text", value);
    tlen = strlen(ls->text);
    FUZZ_CHECK(!isspace((unsigned char)ls->text[0]) && !isspace((unsigned char)ls->text[tlen - 1]),
               "\"%s\": text \"%s\" not trimmed", value, ls->text);
    FUZZ_CHECK(strstr(value, ls->text) != NULL, "\"%s\": text \"%s\" not from the value",
               value, ls->text);
    FUZZ_CHECK(!ls->ssl || (tlen > 4 && strcmp(ls->text + tlen - 3, "ssl") == 0 &&
                            isspace((unsigned char)ls->text[tlen - 4])),
               "\"%s\": ssl, but the text is \"%s\"", value, ls->text);
    FUZZ_CHECK(ls->line == 0, "\"%s\": line %d", value, ls->line);
    if (ls->kind == LISTEN_TCP) {
        FUZZ_CHECK(ls->port <= LISTEN_PORT_MAX, "\"%s\": port %u", value, ls->port);
        FUZZ_CHECK(ls->path == NULL, "\"%s\": TCP with path \"%s\"", value, ls->path);
        FUZZ_CHECK(ls->host == NULL || (ls->host[0] != '\0' && !listen_has_space(ls->host)),
                   "\"%s\": host \"%s\"", value, ls->host);
    } else {
        FUZZ_CHECK(ls->kind == LISTEN_UNIX, "\"%s\": kind %d", value, (int)ls->kind);
        FUZZ_CHECK(ls->path != NULL && ls->path[0] != '\0', "\"%s\": empty unix path", value);
        FUZZ_CHECK(strlen(ls->path) < LISTEN_UNIX_PATH_SIZE, "\"%s\": unix path of %zu bytes",
                   value, strlen(ls->path));
        FUZZ_CHECK(!listen_has_space(ls->path), "\"%s\": unix path \"%s\"", value, ls->path);
        FUZZ_CHECK(ls->host == NULL && ls->port == 0, "\"%s\": unix with host or port", value);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *value, why[LISTEN_WHY_SIZE];
    struct listen_spec ls, again;
    int rc;

    if (memchr(data, '\0', size) != NULL)
        return 0;
    value = malloc(size + 1);
    FUZZ_CHECK(value != NULL, "out of memory");
    memcpy(value, data, size);
    value[size] = '\0';
    why[0] = '\0';
    rc = listen_spec_parse(value, &ls, why, sizeof(why));
    FUZZ_CHECK(rc == 0 || rc == -1, "\"%s\": returned %d", value, rc);
    if (rc < 0) {
        FUZZ_CHECK(why[0] != '\0', "\"%s\": refused without a reason", value);
        FUZZ_CHECK(listen_is_zero(&ls), "\"%s\": refused, but out is not zeroed", value);
        free(value);
        return 0;
    }
    listen_check(value, &ls);
    /* The text names the same listener. */
    FUZZ_CHECK(listen_spec_parse(ls.text, &again, why, sizeof(why)) == 0,
               "\"%s\": its text \"%s\" is refused: %s", value, ls.text, why);
    FUZZ_CHECK(again.kind == ls.kind && again.port == ls.port && again.ssl == ls.ssl &&
               str_eq(again.host, ls.host) && str_eq(again.path, ls.path) &&
               strcmp(again.text, ls.text) == 0,
               "\"%s\": its text \"%s\" parses to another listener", value, ls.text);
    listen_spec_free(&again);
    listen_spec_free(&ls);
    FUZZ_CHECK(listen_is_zero(&ls), "listen_spec_free left fields set");
    free(value);
    return 0;
}

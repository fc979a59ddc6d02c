/*
 * mime: extension -> Content-Type. Loading parses the built-in table and the
 * file with the same line parser into one string arena and an
 * open-addressing hash table keyed by the lower-cased extension, so that a
 * lookup is a hash and a probe or two, with no allocation. Which file to
 * load and what to log about it is the caller's business.
 */
#define _GNU_SOURCE     /* getline, the "e" fopen mode */
#include "mime.h"

#include <assert.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Used when no file is given or found, and under the file otherwise.
 * The types are Debian's /etc/mime.types ones (media-types 10). */
static const char *const builtin_lines[] = {
    "text/html html htm",
    "text/css css",
    "text/javascript js mjs",
    "application/json json",
    "text/plain txt",
    "application/xml xml",
    "image/svg+xml svg",
    "image/png png",
    "image/jpeg jpg jpeg",
    "image/gif gif",
    "image/webp webp",
    "image/vnd.microsoft.icon ico",
    "application/wasm wasm",
    "application/pdf pdf",
    "font/woff woff",
    "font/woff2 woff2",
    "font/ttf ttf",
    "video/mp4 mp4",
    "video/webm webm",
    "audio/mpeg mp3",
    "application/zip zip",
    "application/gzip gz",
    "application/x-tar tar",
};

/* Slots for the built-in table alone; the table doubles as it fills. */
#define MIME_INITIAL_SLOTS 64
/* Arena bytes to start with: the built-in table fits. */
#define MIME_INITIAL_ARENA 1024

/* ext == 0 marks a free slot: arena offset 0 holds "" and no extension. */
struct mime_slot {
    uint32_t hash;
    size_t ext;         /* arena offset of the lower-cased extension */
    size_t type;        /* arena offset of the type */
};

struct mime_types {
    char *arena;        /* NUL-terminated strings, found by offset */
    size_t arena_len, arena_cap;
    struct mime_slot *slots;
    size_t nslots;      /* a power of two */
    size_t count;       /* used slots, kept at most half of nslots */
};

static unsigned char ascii_lower(unsigned char c)
{
    return c >= 'A' && c <= 'Z' ? (unsigned char)(c + ('a' - 'A')) : c;
}

/* FNV-1a of the lower-cased bytes: short keys, no need for more. */
static uint32_t ext_hash(const char *s, size_t len)
{
    uint32_t h = 2166136261u;
    size_t i;

    for (i = 0; i < len; i++) {
        h ^= ascii_lower((unsigned char)s[i]);
        h *= 16777619u;
    }
    return h;
}

/* Whether the stored (lower-case) ext equals s[0..len) in any case. */
static bool ext_equal(const char *stored, const char *s, size_t len)
{
    size_t i;

    for (i = 0; i < len; i++)
        if (stored[i] != (char)ascii_lower((unsigned char)s[i]))
            return false;
    return stored[len] == '\0';
}

/* The slot holding s[0..len), or the free slot where it would go. */
static struct mime_slot *find_slot(const struct mime_types *m, const char *s, size_t len,
                                   uint32_t hash)
{
    size_t mask = m->nslots - 1, i;

    for (i = hash & mask;; i = (i + 1) & mask) {
        struct mime_slot *slot = &m->slots[i];

        if (slot->ext == 0 ||
            (slot->hash == hash && ext_equal(m->arena + slot->ext, s, len)))
            return slot;
    }
}

/* Copies s[0..len) to the arena, lower-cased if asked; returns its offset,
 * or 0 when out of memory. */
static size_t arena_add(struct mime_types *m, const char *s, size_t len, bool lower)
{
    size_t off = m->arena_len, i;

    if (m->arena_cap - m->arena_len < len + 1) {
        size_t cap = m->arena_cap * 2 > m->arena_len + len + 1 ? m->arena_cap * 2
                                                               : m->arena_len + len + 1;
        char *arena = realloc(m->arena, cap);

        if (arena == NULL)
            return 0;
        m->arena = arena;
        m->arena_cap = cap;
    }
    for (i = 0; i < len; i++)
        m->arena[off + i] = lower ? (char)ascii_lower((unsigned char)s[i]) : s[i];
    m->arena[off + len] = '\0';
    m->arena_len += len + 1;
    return off;
}

static int grow_slots(struct mime_types *m)
{
    size_t nslots = m->nslots * 2, i;
    struct mime_slot *old = m->slots;

    m->slots = calloc(nslots, sizeof(*m->slots));
    if (m->slots == NULL) {
        m->slots = old;
        return -ENOMEM;
    }
    m->nslots = nslots;
    for (i = 0; i < nslots / 2; i++) {
        if (old[i].ext != 0) {
            const char *ext = m->arena + old[i].ext;
            *find_slot(m, ext, strlen(ext), old[i].hash) = old[i];
        }
    }
    free(old);
    return 0;
}

/* Maps ext[0..len) to the type at arena offset type; a later mapping of the
 * same extension replaces an earlier one. */
static int add_mapping(struct mime_types *m, const char *ext, size_t len, size_t type)
{
    uint32_t hash = ext_hash(ext, len);
    struct mime_slot *slot = find_slot(m, ext, len, hash);
    size_t off;

    if (slot->ext != 0) {
        slot->type = type;
        return 0;
    }
    if ((m->count + 1) * 2 > m->nslots) {
        if (grow_slots(m) < 0)
            return -ENOMEM;
        slot = find_slot(m, ext, len, hash);
    }
    off = arena_add(m, ext, len, true);
    if (off == 0)
        return -ENOMEM;
    *slot = (struct mime_slot){ .hash = hash, .ext = off, .type = type };
    m->count++;
    return 0;
}

/* Word characters: anything but blanks and controls, so that no type taken
 * from the file can put a CR or LF into a response header. */
static bool is_word_byte(unsigned char c)
{
    return c > ' ' && c != 0x7f;
}

/* The next word of s[*pos..len), as its start and length; false at the end
 * of the line or at a word starting with '#' (a comment). */
static bool next_word(const char *s, size_t len, size_t *pos, const char **word, size_t *wlen)
{
    size_t i = *pos, start;

    while (i < len && !is_word_byte((unsigned char)s[i]))
        i++;
    if (i == len || s[i] == '#')
        return false;
    start = i;
    while (i < len && is_word_byte((unsigned char)s[i]))
        i++;
    *word = s + start;
    *wlen = i - start;
    *pos = i;
    return true;
}

/* One "type ext1 ext2 ..." line; a type without extensions is skipped. */
static int parse_line(struct mime_types *m, const char *line, size_t len)
{
    const char *type, *ext;
    size_t pos = 0, type_len, ext_len, type_off = 0;
    int err;

    if (!next_word(line, len, &pos, &type, &type_len))
        return 0;
    while (next_word(line, len, &pos, &ext, &ext_len)) {
        /* Stored with its first extension only: most lines in mime.types
         * have none, and the arena need not hold those. */
        if (type_off == 0) {
            type_off = arena_add(m, type, type_len, false);
            if (type_off == 0)
                return -ENOMEM;
        }
        err = add_mapping(m, ext, ext_len, type_off);
        if (err < 0)
            return err;
    }
    return 0;
}

static int parse_file(struct mime_types *m, FILE *f)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int err = 0;

    while ((n = getline(&line, &cap, f)) >= 0) {
        err = parse_line(m, line, (size_t)n);
        if (err < 0)
            break;
    }
    if (err == 0 && ferror(f))
        err = errno != 0 ? -errno : -EIO;
    free(line);
    return err;
}

int mime_load(const char *path, struct mime_types **out)
{
    struct mime_types *m;
    size_t i;
    int err = 0;

    assert(out != NULL);
    m = calloc(1, sizeof(*m));
    if (m == NULL)
        return -ENOMEM;
    m->arena = malloc(MIME_INITIAL_ARENA);
    m->slots = calloc(MIME_INITIAL_SLOTS, sizeof(*m->slots));
    if (m->arena == NULL || m->slots == NULL) {
        err = -ENOMEM;
        goto fail;
    }
    m->arena[0] = '\0';
    m->arena_len = 1;
    m->arena_cap = MIME_INITIAL_ARENA;
    m->nslots = MIME_INITIAL_SLOTS;

    for (i = 0; i < sizeof(builtin_lines) / sizeof(builtin_lines[0]); i++) {
        err = parse_line(m, builtin_lines[i], strlen(builtin_lines[i]));
        if (err < 0)
            goto fail;
    }
    if (path != NULL) {
        FILE *f = fopen(path, "re");

        if (f == NULL) {
            if (errno != ENOENT) {
                err = -errno;
                goto fail;
            }
        } else {
            errno = 0;
            err = parse_file(m, f);
            fclose(f);
            if (err < 0)
                goto fail;
        }
    }
    *out = m;
    return 0;

fail:
    mime_free(m);
    return err;
}

const char *mime_type(const struct mime_types *m, const char *name)
{
    const char *base, *dot;
    size_t len;
    struct mime_slot *slot;

    assert(m != NULL && name != NULL);
    base = strrchr(name, '/');
    base = base != NULL ? base + 1 : name;
    dot = strrchr(base, '.');
    if (dot == NULL || dot == base || dot[1] == '\0')
        return MIME_DEFAULT_TYPE;
    len = strlen(dot + 1);
    slot = find_slot(m, dot + 1, len, ext_hash(dot + 1, len));
    return slot->ext != 0 ? m->arena + slot->type : MIME_DEFAULT_TYPE;
}

void mime_free(struct mime_types *m)
{
    if (m == NULL)
        return;
    free(m->arena);
    free(m->slots);
    free(m);
}

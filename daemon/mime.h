/* mime: Content-Type by file extension, from an /etc/mime.types-format file
 * over a built-in table. Loaded once per worker, looked up per request. */
#ifndef PREFORKD_MIME_H
#define PREFORKD_MIME_H

/* What mime_type gives for a name it has no type for. */
#define MIME_DEFAULT_TYPE "application/octet-stream"

struct mime_types;

/*
 * Loads the /etc/mime.types-format file at path (lines "type ext1 ext2 ...",
 * '#' starts a comment) over a built-in fallback table (html, htm, css, js,
 * mjs, json, txt, xml, svg, png, jpg, jpeg, gif, webp, ico, wasm, pdf, woff,
 * woff2, ttf, mp4, webm, mp3, zip, gz, tar, typed as Debian's mime.types
 * types them). The file wins over the table, and a later line over an
 * earlier one for the same extension (as Python's mimetypes and Go's mime
 * read it). Extensions match case-insensitively. Words are split at blanks
 * and control characters, so a type can never carry a CR or LF into a header.
 * path NULL or a missing file (ENOENT): the table alone. Returns 0 with *out,
 * which the caller frees with mime_free, or -errno (-ENOMEM, or another
 * error opening or reading the file).
 */
int mime_load(const char *path, struct mime_types **out);
/*
 * The Content-Type for name's extension (what follows its last '.', in its
 * last '/'-separated part; a leading '.' as in ".profile" does not start
 * one), exactly as the file or table says it, with no charset added (as
 * nginx does); MIME_DEFAULT_TYPE if there is none. Allocation-free. The
 * string lives as long as m.
 */
const char *mime_type(const struct mime_types *m, const char *name);
/* Frees m; NULL is fine. */
void mime_free(struct mime_types *m);

#endif

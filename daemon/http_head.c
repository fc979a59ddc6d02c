/* http_head: the framing of a request head (see http_head.h). */
#include "http_head.h"

#include <string.h>

size_t http_head_end(const char *data, size_t len, size_t from, void *arg)
{
    /* "\n\r\n" is the longest end: one that ends past `from` starts at
     * from - 2 or later. */
    const char *p = data + (from >= 2 ? from - 2 : 0), *end = data + len;

    (void)arg;
    while ((p = memchr(p, '\n', (size_t)(end - p))) != NULL) {
        if (p + 1 < end && p[1] == '\n')
            return (size_t)(p + 2 - data);
        if (p + 2 < end && p[1] == '\r' && p[2] == '\n')
            return (size_t)(p + 3 - data);
        p++;
    }
    return 0;
}

/* http_status: the Prometheus text page of the scoreboard. */
#ifndef PREFORKD_HTTP_STATUS_H
#define PREFORKD_HTTP_STATUS_H

#include <stddef.h>

#include "scoreboard.h"

/* Writes the page for sb into a malloc'd buffer; returns it with *len, or
 * NULL when out of memory. Totals include workers already gone. */
char *http_status_page(const struct scoreboard *sb, size_t *len);

#endif

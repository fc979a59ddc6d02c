/*
 * http_status: renders the scoreboard as Prometheus text exposition format
 * 0.0.4 (https://prometheus.io/docs/instrumenting/exposition_formats/):
 * service totals first, then one line per live worker. Serving the page is
 * http.c's; the numbers are the master's and the workers'.
 */
#define _GNU_SOURCE     /* open_memstream */
#include "http_status.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

static const char *const slot_state_names[] = {
    [SLOT_STARTING] = "starting", [SLOT_ACCEPTING] = "accepting", [SLOT_DRAINING] = "draining",
};

static void metric_head(FILE *f, const char *name, const char *type, const char *help)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void status_totals(FILE *f, const struct scoreboard *sb)
{
    struct scoreboard_counters t;
    unsigned by_state[4] = { 0 };
    uint64_t active = 0;

    scoreboard_totals(sb, &t);
    for (int i = 0; i < SCOREBOARD_SLOTS; i++) {
        uint32_t st = SB_LOAD(sb->slots[i].state);
        if (st == SLOT_FREE || st > SLOT_DRAINING)
            continue;
        by_state[st]++;
        active += SB_LOAD(sb->slots[i].active);
    }
    metric_head(f, "preforkd_workers", "gauge", "Worker processes alive, by state.");
    for (int st = SLOT_STARTING; st <= SLOT_DRAINING; st++)
        fprintf(f, "preforkd_workers{state=\"%s\"} %u\n", slot_state_names[st], by_state[st]);
    metric_head(f, "preforkd_generation", "gauge", "Generation of the newest workers (1 + reloads).");
    fprintf(f, "preforkd_generation %" PRIu32 "\n", SB_LOAD(sb->generation));
    metric_head(f, "preforkd_restarts_total", "counter", "Workers restarted after an unexpected death.");
    fprintf(f, "preforkd_restarts_total %" PRIu64 "\n", SB_LOAD(sb->restarts));
    metric_head(f, "preforkd_reloads_total", "counter", "Successful configuration reloads.");
    fprintf(f, "preforkd_reloads_total %" PRIu64 "\n", SB_LOAD(sb->reloads));
    metric_head(f, "preforkd_connections_accepted_total", "counter", "Connections accepted.");
    fprintf(f, "preforkd_connections_accepted_total %" PRIu64 "\n", t.accepted);
    metric_head(f, "preforkd_connections_active", "gauge", "Connections open now.");
    fprintf(f, "preforkd_connections_active %" PRIu64 "\n", active);
    metric_head(f, "preforkd_http_requests_total", "counter", "HTTP requests answered, by status class.");
    for (int c = 1; c <= 5; c++)
        fprintf(f, "preforkd_http_requests_total{class=\"%dxx\"} %" PRIu64 "\n", c, t.status[c]);
    metric_head(f, "preforkd_http_bytes_sent_total", "counter", "HTTP response bytes, heads and bodies.");
    fprintf(f, "preforkd_http_bytes_sent_total %" PRIu64 "\n", t.bytes_sent);
}

static void status_workers(FILE *f, const struct scoreboard *sb)
{
    static const struct {
        const char *name, *type, *help;
    } m[] = {
        { "preforkd_worker_connections_accepted_total", "counter", "Connections this worker accepted." },
        { "preforkd_worker_connections_active", "gauge", "Connections this worker has open." },
        { "preforkd_worker_http_requests_total", "counter", "HTTP requests this worker answered." },
    };

    for (size_t k = 0; k < sizeof(m) / sizeof(m[0]); k++) {
        metric_head(f, m[k].name, m[k].type, m[k].help);
        for (int i = 0; i < SCOREBOARD_SLOTS; i++) {
            const struct scoreboard_slot *s = &sb->slots[i];
            uint64_t v;

            if (SB_LOAD(s->state) == SLOT_FREE)
                continue;
            v = k == 0 ? SB_LOAD(s->c.accepted) : k == 1 ? SB_LOAD(s->active) : SB_LOAD(s->c.requests);
            fprintf(f, "%s{worker=\"%" PRId32 "\",pid=\"%" PRId32 "\",generation=\"%" PRIu32 "\"} %"
                    PRIu64 "\n", m[k].name, SB_LOAD(s->task_id), SB_LOAD(s->pid),
                    SB_LOAD(s->generation), v);
        }
    }
}

char *http_status_page(const struct scoreboard *sb, size_t *len)
{
    char *buf = NULL;
    FILE *f = open_memstream(&buf, len);

    if (f == NULL)
        return NULL;
    status_totals(f, sb);
    status_workers(f, sb);
    if (fclose(f) != 0) {
        free(buf);
        return NULL;
    }
    return buf;
}

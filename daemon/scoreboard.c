/*
 * scoreboard: allocation of the shared worker table. What the numbers mean
 * is up to master.c (supervision) and worker.c (counters, heartbeat).
 */
#include "scoreboard.h"

#include <string.h>
#include <sys/mman.h>
#include <time.h>

struct scoreboard *scoreboard_create(void)
{
    void *p = mmap(NULL, sizeof(struct scoreboard), PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);

    return p == MAP_FAILED ? NULL : p;      /* anonymous pages start zeroed */
}

void scoreboard_destroy(struct scoreboard *sb)
{
    if (sb != NULL)
        munmap(sb, sizeof(*sb));
}

uint64_t scoreboard_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int scoreboard_alloc(struct scoreboard *sb, int task_id, uint32_t generation)
{
    for (int i = 0; i < SCOREBOARD_SLOTS; i++) {
        struct scoreboard_slot *s = &sb->slots[i];

        if (SB_LOAD(s->state) != SLOT_FREE)
            continue;
        memset(s, 0, sizeof(*s));
        s->task_id = task_id;
        s->generation = generation;
        SB_STORE(s->heartbeat_ms, scoreboard_now_ms());
        SB_STORE(s->state, SLOT_STARTING);
        return i;
    }
    return -1;
}

static void counters_add(struct scoreboard_counters *to, const struct scoreboard_counters *from)
{
    to->accepted += SB_LOAD(from->accepted);
    to->requests += SB_LOAD(from->requests);
    for (int i = 0; i < 6; i++)
        to->status[i] += SB_LOAD(from->status[i]);
    to->bytes_sent += SB_LOAD(from->bytes_sent);
}

void scoreboard_totals(const struct scoreboard *sb, struct scoreboard_counters *out)
{
    memset(out, 0, sizeof(*out));
    counters_add(out, &sb->retired);
    for (int i = 0; i < SCOREBOARD_SLOTS; i++)
        if (SB_LOAD(sb->slots[i].state) != SLOT_FREE)
            counters_add(out, &sb->slots[i].c);
}

void scoreboard_release(struct scoreboard *sb, int i)
{
    struct scoreboard_counters sum = sb->retired;      /* only the master writes it */

    counters_add(&sum, &sb->slots[i].c);
    sb->retired = sum;
    SB_STORE(sb->slots[i].pid, 0);
    SB_STORE(sb->slots[i].state, SLOT_FREE);
}

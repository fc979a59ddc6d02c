/*
 * scoreboard: the table master and workers share, in one anonymous shared
 * mapping made before the first fork. A worker writes only its own slot; the
 * master allocates and frees slots and reads them all. Values are read and
 * written with relaxed atomics: each is a counter or a timestamp on its own.
 */
#ifndef PREFORKD_SCOREBOARD_H
#define PREFORKD_SCOREBOARD_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

/* Room for two full generations of the largest `workers` (1024) at once,
 * as during a reload, with draining ones of earlier reloads besides. */
#define SCOREBOARD_SLOTS 4096

enum slot_state {
    SLOT_FREE = 0,
    SLOT_STARTING,          /* forked, not yet accepting */
    SLOT_ACCEPTING,
    SLOT_DRAINING,          /* listeners closed, finishing connections */
};

/* What a worker counts; the master adds a reaped worker's to `retired`, so
 * that totals never go down when workers come and go. */
struct scoreboard_counters {
    uint64_t accepted;      /* connections accepted */
    uint64_t requests;      /* requests answered, when the handler has them */
    uint64_t status[6];     /* requests by status class: [1] 1xx .. [5] 5xx */
    uint64_t bytes_sent;    /* response bytes queued, heads and bodies */
};

struct scoreboard_slot {
    int32_t pid;            /* master */
    int32_t task_id;        /* master */
    uint32_t generation;    /* master */
    uint32_t state;         /* enum slot_state; master sets STARTING, the worker the rest */
    uint64_t heartbeat_ms;  /* worker: scoreboard_now_ms() at its last beat */
    uint64_t active;        /* worker: connections open now */
    struct scoreboard_counters c;   /* worker */
};

struct scoreboard {
    uint32_t generation;    /* master: the newest generation */
    uint64_t restarts;      /* master: unexpected worker deaths replaced */
    uint64_t reloads;       /* master: successful reloads */
    struct scoreboard_counters retired;    /* master: of reaped workers */
    struct scoreboard_slot slots[SCOREBOARD_SLOTS];
};

/* Maps a zeroed scoreboard shared with every process forked afterwards.
 * Returns NULL with errno set. */
struct scoreboard *scoreboard_create(void);
void scoreboard_destroy(struct scoreboard *sb);

/* Takes a free slot for a worker about to be forked; returns its index or
 * -1 when every slot is in use. The slot is STARTING with a fresh heartbeat. */
int scoreboard_alloc(struct scoreboard *sb, int task_id, uint32_t generation);
/* The worker in slot i was reaped: its counters go to sb->retired. */
void scoreboard_release(struct scoreboard *sb, int i);
/* retired plus every live slot's counters. */
void scoreboard_totals(const struct scoreboard *sb, struct scoreboard_counters *out);
/* Adds n to a counter only its one writer changes. */
#define SB_ADD(field, n) SB_STORE(field, SB_LOAD(field) + (n))

/* Milliseconds on CLOCK_MONOTONIC: comparable across processes. */
uint64_t scoreboard_now_ms(void);

/* Relaxed atomic access, for fields another process writes. */
#define SB_LOAD(field) __atomic_load_n(&(field), __ATOMIC_RELAXED)
#define SB_STORE(field, v) __atomic_store_n(&(field), (v), __ATOMIC_RELAXED)

#endif

/*
 * secmem.c - locked memory for key bytes.
 *
 * Keys live in 64-byte cells carved from 64 KiB chunks. Each chunk is mlock'ed (so key
 * bytes are never written to swap) and marked MADV_DONTDUMP (so they never land in a
 * core file). A cell is cleansed when freed and the whole chunk again when released.
 * If the OS refuses mlock (RLIMIT_MEMLOCK), keys still work: the failure is recorded
 * once for kp_memory_locked() to report, because refusing to run would only push users
 * to a weaker setup.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "kp_internal.h"

#define KP_CHUNK_BYTES (64 * 1024)

struct kp_chunk {
    kp_chunk *next;
    uint8_t *base;
};

static atomic_int lock_failed;

int kp_memory_locked(void)
{
    return atomic_load(&lock_failed) ? 0 : 1;
}

void *kp_locked_map(size_t len, int wipe_on_fork)
{
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
#ifdef MADV_DONTDUMP
    (void)madvise(p, len, MADV_DONTDUMP);
#endif
#ifdef MADV_WIPEONFORK
    /* Best effort: rand.c also detects forks itself, so an older kernel stays safe. */
    if (wipe_on_fork)
        (void)madvise(p, len, MADV_WIPEONFORK);
#else
    (void)wipe_on_fork;
#endif
    if (mlock(p, len) != 0)
        atomic_store(&lock_failed, 1);
    return p;
}

void kp_locked_unmap(void *p, size_t len)
{
    if (p == NULL)
        return;
    OPENSSL_cleanse(p, len);
    (void)munlock(p, len);
    (void)munmap(p, len);
}

static int arena_grow(kp_arena *arena)
{
    kp_chunk *chunk = malloc(sizeof(*chunk));
    if (chunk == NULL)
        return 0;
    chunk->base = kp_locked_map(KP_CHUNK_BYTES, 0);
    if (chunk->base == NULL) {
        free(chunk);
        return 0;
    }
    chunk->next = arena->chunks;
    arena->chunks = chunk;
    /* Thread the new cells onto the free list, lowest address first. */
    for (size_t off = KP_CHUNK_BYTES; off >= KP_CELL_BYTES; off -= KP_CELL_BYTES) {
        void **cell = (void **)(chunk->base + off - KP_CELL_BYTES);
        *cell = arena->free_cells;
        arena->free_cells = cell;
    }
    return 1;
}

void *kp_cell_alloc(kp_arena *arena)
{
    if (arena->free_cells == NULL && !arena_grow(arena))
        return NULL;
    void **cell = arena->free_cells;
    arena->free_cells = *cell;
    memset(cell, 0, KP_CELL_BYTES);
    return cell;
}

void kp_cell_free(kp_arena *arena, void *cell)
{
    if (cell == NULL)
        return;
    OPENSSL_cleanse(cell, KP_CELL_BYTES);
    *(void **)cell = arena->free_cells;
    arena->free_cells = cell;
}

void kp_arena_release(kp_arena *arena)
{
    kp_chunk *chunk = arena->chunks;
    while (chunk != NULL) {
        kp_chunk *next = chunk->next;
        kp_locked_unmap(chunk->base, KP_CHUNK_BYTES);
        free(chunk);
        chunk = next;
    }
    arena->chunks = NULL;
    arena->free_cells = NULL;
}

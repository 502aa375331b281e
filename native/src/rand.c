/*
 * rand.c - random bytes for IVs and data keys, drawn from the DRBG in bulk.
 *
 * One call into OpenSSL's DRBG costs about as much as sealing a 32-byte item, so a
 * batch draws everything it needs at once, and small batches share a per-thread pool
 * that one DRBG call refills with a page of output. Safety rests on three rules (see
 * docs/native.md):
 *   - every byte is handed out once: the pool's fill level drops before the bytes are
 *     used, and handed-out bytes are cleansed when the caller is done with them;
 *   - the pool is thread-local, so no two threads ever share bytes;
 *   - a forked child never reuses its parent's pool: the page is MADV_WIPEONFORK (the
 *     child sees zeros, and a zero generation never matches), and independently a
 *     pthread_atfork child handler bumps the generation every pool is checked against.
 * The pool page is locked and excluded from core dumps like key memory.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "kp_internal.h"

#define KP_POOL_PAGE 4096
#define KP_POOL_HEADER 64
#define KP_POOL_BYTES (KP_POOL_PAGE - KP_POOL_HEADER)

typedef struct kp_pool {
    uint64_t generation; /* fork generation at fill time; 0 in a wiped page */
    size_t available;    /* bytes[0 .. available) are unused; bytes are taken from the top */
    uint8_t pad[KP_POOL_HEADER - sizeof(uint64_t) - sizeof(size_t)];
    uint8_t bytes[KP_POOL_BYTES];
} kp_pool;

_Static_assert(sizeof(kp_pool) == KP_POOL_PAGE, "a pool is one page");

static pthread_once_t pool_once = PTHREAD_ONCE_INIT;
static pthread_key_t pool_key;
static int pool_key_ok;
static atomic_uint_fast64_t fork_generation = 1;

static void pool_release(void *pool)
{
    kp_locked_unmap(pool, KP_POOL_PAGE);
}

static void after_fork_in_child(void)
{
    atomic_fetch_add(&fork_generation, 1);
}

static void pool_setup(void)
{
    pool_key_ok = pthread_key_create(&pool_key, pool_release) == 0;
    (void)pthread_atfork(NULL, NULL, after_fork_in_child);
}

static kp_pool *thread_pool(void)
{
    (void)pthread_once(&pool_once, pool_setup);
    if (!pool_key_ok)
        return NULL;
    kp_pool *pool = pthread_getspecific(pool_key);
    if (pool == NULL) {
        pool = kp_locked_map(KP_POOL_PAGE, 1);
        if (pool == NULL)
            return NULL;
        if (pthread_setspecific(pool_key, pool) != 0) {
            kp_locked_unmap(pool, KP_POOL_PAGE);
            return NULL;
        }
    }
    uint64_t generation = atomic_load_explicit(&fork_generation, memory_order_relaxed);
    if (pool->generation != generation) {
        OPENSSL_cleanse(pool->bytes, KP_POOL_BYTES);
        pool->available = 0;
        pool->generation = generation;
    }
    return pool;
}

kp_status kp_draw_begin(kp_draw *draw, size_t len)
{
    draw->bytes = NULL;
    draw->len = 0;
    draw->heap = NULL;
    if (len == 0)
        return KP_OK;
    kp_pool *pool = len <= KP_POOL_BYTES ? thread_pool() : NULL;
    if (pool != NULL) {
        if (pool->available < len) {
            /* Discarding the remainder is cheaper than stitching two fills together. */
            pool->available = 0;
            if (RAND_priv_bytes(pool->bytes, KP_POOL_BYTES) != 1)
                return kp_fail(KP_E_RANDOM);
            pool->available = KP_POOL_BYTES;
        }
        pool->available -= len;
        draw->bytes = pool->bytes + pool->available;
        draw->len = len;
        return KP_OK;
    }
    /* Too large for the pool (or no pool): still one DRBG call for the whole batch. */
    if (len > INT32_MAX)
        return KP_E_LENGTH;
    draw->heap = malloc(len);
    if (draw->heap == NULL)
        return KP_E_NOMEM;
    if (RAND_priv_bytes(draw->heap, (int)len) != 1) {
        OPENSSL_cleanse(draw->heap, len);
        free(draw->heap);
        draw->heap = NULL;
        return kp_fail(KP_E_RANDOM);
    }
    draw->bytes = draw->heap;
    draw->len = len;
    return KP_OK;
}

void kp_draw_end(kp_draw *draw)
{
    if (draw->bytes != NULL)
        OPENSSL_cleanse(draw->bytes, draw->len);
    free(draw->heap);
    draw->bytes = NULL;
    draw->heap = NULL;
    draw->len = 0;
}

kp_status kp_random_bytes(uint8_t *out, size_t n)
{
    if (n == 0)
        return KP_OK;
    if (out == NULL || n > INT32_MAX)
        return KP_E_ARGUMENT;
    kp_draw draw;
    kp_status st = kp_draw_begin(&draw, n);
    if (st != KP_OK)
        return st;
    memcpy(out, draw.bytes, n);
    kp_draw_end(&draw);
    return KP_OK;
}

/*
 * kp_internal.h - what the C files of the HSM share and nothing outside them sees.
 */
#ifndef KP_INTERNAL_H
#define KP_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "kp.h"

/* Drain libcrypto's per-thread error queue and return st: every failure path ends here
 * so a later, unrelated call never finds our stale errors. */
kp_status kp_fail(kp_status st);

/* --- locked memory (secmem.c) ---------------------------------------------------------
 * Fixed-size cells carved from pages that are locked against swapping and excluded
 * from core dumps. The arena is not internally synchronised: its owner serialises
 * kp_cell_alloc and kp_cell_free (the HSM does so under its write lock). */
#define KP_CELL_BYTES 64

typedef struct kp_chunk kp_chunk;
typedef struct kp_arena {
    kp_chunk *chunks;
    void *free_cells;
} kp_arena;

void *kp_cell_alloc(kp_arena *arena);
void kp_cell_free(kp_arena *arena, void *cell);
void kp_arena_release(kp_arena *arena);

/* Map len bytes (a multiple of the page size) locked and excluded from dumps; wipe_on_fork
 * also makes the pages read as zeros in a forked child. NULL on failure. */
void *kp_locked_map(size_t len, int wipe_on_fork);
void kp_locked_unmap(void *p, size_t len);

/* --- random bytes (rand.c) ------------------------------------------------------------
 * A draw hands out n random bytes, usually from a per-thread pool refilled with one DRBG
 * call, so small batches do not pay one DRBG call each. See docs/native.md for why this
 * is safe, fork included. The bytes are consumed at kp_draw_begin whatever happens next,
 * and cleansed at kp_draw_end. */
typedef struct kp_draw {
    uint8_t *bytes;
    size_t len;
    uint8_t *heap; /* set when the draw was too large for the pool */
} kp_draw;

kp_status kp_draw_begin(kp_draw *draw, size_t len);
void kp_draw_end(kp_draw *draw);

/* --- the HSM's tables (hsm.c) ---------------------------------------------------------- */
typedef struct kp_map_entry {
    uint64_t key; /* 0 marks an empty entry */
    void *value;
} kp_map_entry;

typedef struct kp_map {
    kp_map_entry *entries;
    size_t capacity; /* a power of two */
    size_t len;
} kp_map;

/* Working contexts ready for use, so a batch neither copies a key schedule nor
 * allocates in the steady state. Each place holds one idle context or NULL; taking and
 * giving back are single atomic exchanges, so a context has one user at a time. */
#define KP_IDLE_CONTEXTS 4
typedef struct kp_ctx_pool {
    _Atomic(EVP_CIPHER_CTX *) idle[KP_IDLE_CONTEXTS];
} kp_ctx_pool;

typedef struct kp_rsa_key kp_rsa_key; /* an RSA wrapping key (wrap.c) */

typedef struct kp_slot {
    kp_handle handle;
    kp_partition partition;
    uint8_t *key;          /* KP_KEY_BYTES in a locked cell */
    EVP_CIPHER_CTX *keyed; /* the key schedule, prepared once; only ever copied from */
    kp_ctx_pool pool;
    kp_rsa_key *rsa;       /* set for a wrapping key slot, whose key and keyed are NULL */
} kp_slot;

typedef struct kp_part {
    kp_partition id;
    uint8_t *key; /* the partition's wrapping key, in a locked cell */
    EVP_CIPHER_CTX *keyed;
} kp_part;

struct kp_hsm {
    pthread_rwlock_t lock; /* batches read; creating and destroying write */
    uint64_t serial;       /* in the top bits of every handle this HSM issues */
    uint64_t next_slot;
    kp_partition next_partition;
    EVP_CIPHER *cipher; /* fetched once: an implicit fetch per init is slow */
    kp_arena arena;
    uint8_t *root_key;          /* read under the lock: kp_hsm_set_root_key replaces */
    EVP_CIPHER_CTX *root_keyed; /* both of these under the write lock */
    kp_map slots;      /* handle -> kp_slot* */
    kp_map partitions; /* partition -> kp_part* */
};

#define KP_HANDLE_SERIAL_SHIFT 48

/* Find an AES slot for item use, under the read lock: KP_OK, or why the handle is refused
 * (KP_E_KEY_TYPE for a wrapping key). */
kp_status kp_slot_lookup(const kp_hsm *hsm, kp_partition scope, kp_handle handle,
                         const kp_slot **out);

/* For wrap.c, each under the lock as noted. A slot of either kind (either lock): */
kp_status kp_slot_find(const kp_hsm *hsm, kp_partition scope, kp_handle handle,
                       const kp_slot **out);
/* The live partition, or NULL (either lock). */
const kp_part *kp_part_find(const kp_hsm *hsm, kp_partition partition);
/* Give a filled, calloc'ed slot its never-reused handle in partition and enter it in the
 * table (write lock). The table owns the slot from then on; on failure it is freed. */
kp_status kp_slot_enter(kp_hsm *hsm, kp_partition partition, kp_slot *slot, kp_handle *out);
/* Add an AES slot holding a copy of key (KP_KEY_BYTES) (write lock). */
kp_status kp_slot_add_key(kp_hsm *hsm, kp_partition partition, const uint8_t *key,
                          kp_handle *out);

/* --- RSA wrapping keys (wrap.c) -------------------------------------------------------- */

/* Free a wrapping key (NULL is fine); OpenSSL cleanses the private key's numbers. */
void kp_rsa_key_free(kp_rsa_key *key);

/* --- AES-GCM items (gcm.c) ------------------------------------------------------------- */

/* The working contexts one batch holds, each checked out of its owner's pool (or, with
 * no pool, copied from the owner's prepared schedule) and given back at the end. */
#define KP_CTX_CACHE 4
typedef struct kp_ctx_cache {
    const void *owner[KP_CTX_CACHE];
    kp_ctx_pool *pool[KP_CTX_CACHE];
    EVP_CIPHER_CTX *ctx[KP_CTX_CACHE];
    unsigned next;
    unsigned used; /* entries ever filled, so release touches only those */
} kp_ctx_cache;

void kp_ctx_pool_init(kp_ctx_pool *pool);
void kp_ctx_pool_release(kp_ctx_pool *pool);
void kp_ctx_cache_init(kp_ctx_cache *cache);
void kp_ctx_cache_release(kp_ctx_cache *cache);
kp_status kp_ctx_for(kp_ctx_cache *cache, const EVP_CIPHER_CTX *keyed, kp_ctx_pool *pool,
                     const void *owner, EVP_CIPHER_CTX **out);

kp_status kp_seal_item(EVP_CIPHER_CTX *ctx, const uint8_t *iv, size_t iv_len,
                       const uint8_t *aad, size_t aad_len, const uint8_t *in,
                       size_t in_len, uint8_t *ct, uint8_t *tag, size_t tag_len);
kp_status kp_open_item(EVP_CIPHER_CTX *ctx, const uint8_t *iv, size_t iv_len,
                       const uint8_t *aad, size_t aad_len, const uint8_t *ct,
                       size_t ct_len, const uint8_t *tag, size_t tag_len, uint8_t *out);

/* Is [off, off + len) inside a buffer of size bytes, without overflow? */
static inline int kp_in_range(size_t off, size_t len, size_t size)
{
    return off <= size && len <= size - off;
}

#endif /* KP_INTERNAL_H */

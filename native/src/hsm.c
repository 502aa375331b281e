/*
 * hsm.c - the HSM, its partitions and key slots, and wrapping keys for storage.
 *
 * Names are never reused: a slot handle is the HSM's serial in the top 16 bits and a
 * per-HSM counter below, a partition id a per-HSM counter. So a destroyed slot's handle
 * stays dead forever and a handle from another HSM is recognised as foreign.
 *
 * One reader-writer lock per HSM guards its tables and its root key: batches hold it
 * shared for their whole run; creating, destroying and replacing the root key take it
 * exclusively, and are preferred over new readers so a stream of batches cannot starve
 * them.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/rand.h>

#include "kp_internal.h"

#define KP_WRAP_VERSION 0x01
#define KP_LABEL_BYTES 8
static const uint8_t SLOT_LABEL[KP_LABEL_BYTES] = {'k', 'p', '-', 's', 'l', 'o', 't', '1'};
static const uint8_t PART_LABEL[KP_LABEL_BYTES] = {'k', 'p', '-', 'p', 'a', 'r', 't', '1'};

static atomic_uint_fast64_t hsm_serials;

kp_status kp_fail(kp_status st)
{
    ERR_clear_error();
    return st;
}

/* --- an open-addressing map from nonzero uint64 keys to pointers ---------------------- */

static size_t map_hash(uint64_t key)
{
    key ^= key >> 33;
    key *= 0xff51afd7ed558ccdULL;
    key ^= key >> 33;
    return (size_t)key;
}

static void *map_get(const kp_map *map, uint64_t key)
{
    if (map->capacity == 0)
        return NULL;
    size_t mask = map->capacity - 1;
    for (size_t i = map_hash(key) & mask;; i = (i + 1) & mask) {
        if (map->entries[i].key == key)
            return map->entries[i].value;
        if (map->entries[i].key == 0)
            return NULL;
    }
}

static void map_place(kp_map_entry *entries, size_t capacity, uint64_t key, void *value)
{
    size_t mask = capacity - 1;
    size_t i = map_hash(key) & mask;
    while (entries[i].key != 0)
        i = (i + 1) & mask;
    entries[i].key = key;
    entries[i].value = value;
}

static int map_put(kp_map *map, uint64_t key, void *value)
{
    if ((map->len + 1) * 2 > map->capacity) {
        size_t capacity = map->capacity ? map->capacity * 2 : 64;
        kp_map_entry *entries = calloc(capacity, sizeof(*entries));
        if (entries == NULL)
            return 0;
        for (size_t i = 0; i < map->capacity; i++)
            if (map->entries[i].key != 0)
                map_place(entries, capacity, map->entries[i].key, map->entries[i].value);
        free(map->entries);
        map->entries = entries;
        map->capacity = capacity;
    }
    map_place(map->entries, map->capacity, key, value);
    map->len++;
    return 1;
}

/* Remove key, shifting later entries of its probe run back so lookups need no
 * tombstones. */
static void map_del(kp_map *map, uint64_t key)
{
    if (map->capacity == 0)
        return;
    size_t mask = map->capacity - 1;
    size_t hole = map_hash(key) & mask;
    while (map->entries[hole].key != key) {
        if (map->entries[hole].key == 0)
            return;
        hole = (hole + 1) & mask;
    }
    for (size_t j = (hole + 1) & mask; map->entries[j].key != 0; j = (j + 1) & mask) {
        size_t home = map_hash(map->entries[j].key) & mask;
        /* Entry j may move into the hole unless its home lies cyclically in (hole, j]. */
        int home_between = hole <= j ? (hole < home && home <= j) : (hole < home || home <= j);
        if (!home_between) {
            map->entries[hole] = map->entries[j];
            hole = j;
        }
    }
    map->entries[hole].key = 0;
    map->entries[hole].value = NULL;
    map->len--;
}

/* --- keyed contexts -------------------------------------------------------------------- */

static EVP_CIPHER_CTX *keyed_context(const kp_hsm *hsm, const uint8_t *key)
{
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    if (ctx == NULL)
        return NULL;
    if (EVP_EncryptInit_ex2(ctx, hsm->cipher, key, NULL, NULL) != 1) {
        EVP_CIPHER_CTX_free(ctx);
        ERR_clear_error();
        return NULL;
    }
    return ctx;
}

/* --- wrapping: version || IV || AES-256-GCM(key) || tag, AAD = label || context -------- */

static kp_status wrap_key(const EVP_CIPHER_CTX *keyed, const uint8_t *label,
                          const uint8_t *context, size_t context_len, const uint8_t *key,
                          uint8_t *out)
{
    kp_ctx_cache cache;
    kp_ctx_cache_init(&cache);
    EVP_CIPHER_CTX *ctx;
    kp_status st = kp_ctx_for(&cache, keyed, NULL, keyed, &ctx);
    kp_draw iv;
    if (st == KP_OK)
        st = kp_draw_begin(&iv, KP_IV_BYTES);
    if (st == KP_OK) {
        uint8_t aad[KP_LABEL_BYTES + KP_MAX_CONTEXT_BYTES];
        memcpy(aad, label, KP_LABEL_BYTES);
        if (context_len)
            memcpy(aad + KP_LABEL_BYTES, context, context_len);
        out[0] = KP_WRAP_VERSION;
        memcpy(out + 1, iv.bytes, KP_IV_BYTES);
        st = kp_seal_item(ctx, out + 1, KP_IV_BYTES, aad, KP_LABEL_BYTES + context_len, key,
                          KP_KEY_BYTES, out + 1 + KP_IV_BYTES,
                          out + 1 + KP_IV_BYTES + KP_KEY_BYTES, KP_TAG_BYTES);
        kp_draw_end(&iv);
    }
    kp_ctx_cache_release(&cache);
    return st;
}

static kp_status unwrap_key(const EVP_CIPHER_CTX *keyed, const uint8_t *label,
                            const uint8_t *context, size_t context_len,
                            const uint8_t *wrapped, size_t wrapped_len, uint8_t *key)
{
    if (wrapped_len != KP_WRAPPED_KEY_BYTES || wrapped[0] != KP_WRAP_VERSION)
        return KP_E_ARGUMENT;
    kp_ctx_cache cache;
    kp_ctx_cache_init(&cache);
    EVP_CIPHER_CTX *ctx;
    kp_status st = kp_ctx_for(&cache, keyed, NULL, keyed, &ctx);
    if (st == KP_OK) {
        uint8_t aad[KP_LABEL_BYTES + KP_MAX_CONTEXT_BYTES];
        memcpy(aad, label, KP_LABEL_BYTES);
        if (context_len)
            memcpy(aad + KP_LABEL_BYTES, context, context_len);
        st = kp_open_item(ctx, wrapped + 1, KP_IV_BYTES, aad, KP_LABEL_BYTES + context_len,
                          wrapped + 1 + KP_IV_BYTES, KP_KEY_BYTES,
                          wrapped + 1 + KP_IV_BYTES + KP_KEY_BYTES, KP_TAG_BYTES, key);
    }
    kp_ctx_cache_release(&cache);
    return st;
}

/* --- the HSM ----------------------------------------------------------------------------- */

kp_status kp_hsm_new(const uint8_t *root_key, size_t root_key_len, kp_hsm **out)
{
    if (out == NULL || root_key == NULL)
        return KP_E_ARGUMENT;
    *out = NULL;
    if (root_key_len != KP_KEY_BYTES)
        return KP_E_LENGTH;
    uint64_t serial = atomic_fetch_add(&hsm_serials, 1) + 1;
    if (serial >= (1u << 16))
        return KP_E_CAPACITY;

    kp_hsm *hsm = calloc(1, sizeof(*hsm));
    if (hsm == NULL)
        return KP_E_NOMEM;
    hsm->serial = serial;
    hsm->next_slot = 1;
    hsm->next_partition = 1;

    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    int lock_ok = pthread_rwlock_init(&hsm->lock, &attr) == 0;
    pthread_rwlockattr_destroy(&attr);
    if (!lock_ok) {
        free(hsm);
        return KP_E_NOMEM;
    }

    hsm->cipher = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
    hsm->root_key = kp_cell_alloc(&hsm->arena);
    if (hsm->cipher == NULL || hsm->root_key == NULL) {
        kp_status st = hsm->cipher == NULL ? KP_E_CRYPTO : KP_E_NOMEM;
        kp_hsm_free(hsm);
        return kp_fail(st);
    }
    memcpy(hsm->root_key, root_key, KP_KEY_BYTES);
    hsm->root_keyed = keyed_context(hsm, hsm->root_key);
    if (hsm->root_keyed == NULL) {
        kp_hsm_free(hsm);
        return kp_fail(KP_E_CRYPTO);
    }
    *out = hsm;
    return KP_OK;
}

kp_status kp_hsm_new_sibling(const kp_hsm *hsm, kp_hsm **out)
{
    if (hsm == NULL || out == NULL)
        return KP_E_ARGUMENT;
    /* Shared, so that kp_hsm_set_root_key cannot change the key half-way through the copy. */
    pthread_rwlock_rdlock((pthread_rwlock_t *)&hsm->lock);
    kp_status st = kp_hsm_new(hsm->root_key, KP_KEY_BYTES, out);
    pthread_rwlock_unlock((pthread_rwlock_t *)&hsm->lock);
    return st;
}

static void slot_free(kp_hsm *hsm, kp_slot *slot)
{
    kp_rsa_key_free(slot->rsa);
    kp_ctx_pool_release(&slot->pool);
    EVP_CIPHER_CTX_free(slot->keyed); /* the GCM provider cleanses its key schedule */
    kp_cell_free(&hsm->arena, slot->key);
    free(slot);
}

static void part_free(kp_hsm *hsm, kp_part *part)
{
    EVP_CIPHER_CTX_free(part->keyed);
    kp_cell_free(&hsm->arena, part->key);
    free(part);
}

void kp_hsm_free(kp_hsm *hsm)
{
    if (hsm == NULL)
        return;
    for (size_t i = 0; i < hsm->slots.capacity; i++)
        if (hsm->slots.entries[i].key != 0)
            slot_free(hsm, hsm->slots.entries[i].value);
    for (size_t i = 0; i < hsm->partitions.capacity; i++)
        if (hsm->partitions.entries[i].key != 0)
            part_free(hsm, hsm->partitions.entries[i].value);
    free(hsm->slots.entries);
    free(hsm->partitions.entries);
    EVP_CIPHER_CTX_free(hsm->root_keyed);
    EVP_CIPHER_free(hsm->cipher);
    kp_arena_release(&hsm->arena); /* cleanses the root key and every cell */
    pthread_rwlock_destroy(&hsm->lock);
    free(hsm);
}

size_t kp_hsm_partition_count(const kp_hsm *hsm)
{
    if (hsm == NULL)
        return 0;
    pthread_rwlock_rdlock((pthread_rwlock_t *)&hsm->lock);
    size_t n = hsm->partitions.len;
    pthread_rwlock_unlock((pthread_rwlock_t *)&hsm->lock);
    return n;
}

size_t kp_hsm_slot_count(const kp_hsm *hsm)
{
    if (hsm == NULL)
        return 0;
    pthread_rwlock_rdlock((pthread_rwlock_t *)&hsm->lock);
    size_t n = hsm->slots.len;
    pthread_rwlock_unlock((pthread_rwlock_t *)&hsm->lock);
    return n;
}

/* --- partitions ------------------------------------------------------------------------- */

/* Add a partition with a generated key (wrapped == NULL) or an unwrapped one; under the
 * write lock. */
static kp_status partition_add(kp_hsm *hsm, const uint8_t *wrapped, size_t wrapped_len,
                               kp_partition *out)
{
    if (hsm->next_partition == 0)
        return KP_E_CAPACITY; /* the counter wrapped: ids must never be reused */
    kp_part *part = calloc(1, sizeof(*part));
    if (part == NULL)
        return KP_E_NOMEM;
    part->key = kp_cell_alloc(&hsm->arena);
    if (part->key == NULL) {
        free(part);
        return KP_E_NOMEM;
    }
    kp_status st = KP_OK;
    if (wrapped == NULL) {
        if (RAND_priv_bytes(part->key, KP_KEY_BYTES) != 1)
            st = kp_fail(KP_E_RANDOM);
    } else {
        st = unwrap_key(hsm->root_keyed, PART_LABEL, NULL, 0, wrapped, wrapped_len,
                        part->key);
    }
    if (st == KP_OK) {
        part->keyed = keyed_context(hsm, part->key);
        if (part->keyed == NULL)
            st = kp_fail(KP_E_CRYPTO);
    }
    if (st == KP_OK) {
        part->id = hsm->next_partition;
        if (!map_put(&hsm->partitions, part->id, part))
            st = KP_E_NOMEM;
    }
    if (st != KP_OK) {
        part_free(hsm, part);
        return st;
    }
    hsm->next_partition++;
    *out = part->id;
    return KP_OK;
}

kp_status kp_partition_create(kp_hsm *hsm, kp_partition *out)
{
    if (hsm == NULL || out == NULL)
        return KP_E_ARGUMENT;
    pthread_rwlock_wrlock(&hsm->lock);
    kp_status st = partition_add(hsm, NULL, 0, out);
    pthread_rwlock_unlock(&hsm->lock);
    return st;
}

kp_status kp_partition_open(kp_hsm *hsm, const uint8_t *wrapped, size_t wrapped_len,
                            kp_partition *out)
{
    if (hsm == NULL || out == NULL || wrapped == NULL)
        return KP_E_ARGUMENT;
    pthread_rwlock_wrlock(&hsm->lock);
    kp_status st = partition_add(hsm, wrapped, wrapped_len, out);
    pthread_rwlock_unlock(&hsm->lock);
    return st;
}

kp_status kp_partition_export(kp_hsm *hsm, kp_partition partition, uint8_t *out,
                              size_t out_size, size_t *out_len)
{
    if (hsm == NULL || out == NULL || out_len == NULL)
        return KP_E_ARGUMENT;
    if (out_size < KP_WRAPPED_KEY_BYTES)
        return KP_E_BUFFER;
    pthread_rwlock_rdlock(&hsm->lock);
    const kp_part *part = partition ? map_get(&hsm->partitions, partition) : NULL;
    kp_status st = part == NULL ? KP_E_PARTITION_GONE
                                : wrap_key(hsm->root_keyed, PART_LABEL, NULL, 0, part->key, out);
    pthread_rwlock_unlock(&hsm->lock);
    *out_len = st == KP_OK ? KP_WRAPPED_KEY_BYTES : 0;
    return st;
}

kp_status kp_partition_destroy(kp_hsm *hsm, kp_partition partition)
{
    if (hsm == NULL)
        return KP_E_ARGUMENT;
    pthread_rwlock_wrlock(&hsm->lock);
    kp_part *part = partition ? map_get(&hsm->partitions, partition) : NULL;
    if (part == NULL) {
        pthread_rwlock_unlock(&hsm->lock);
        return KP_E_PARTITION_GONE;
    }
    /* Collect first: deleting from the map while scanning it would skip entries. */
    size_t count = 0;
    kp_slot **doomed = malloc((hsm->slots.len + 1) * sizeof(*doomed));
    if (doomed == NULL) {
        pthread_rwlock_unlock(&hsm->lock);
        return KP_E_NOMEM;
    }
    for (size_t i = 0; i < hsm->slots.capacity; i++) {
        kp_slot *slot = hsm->slots.entries[i].value;
        if (hsm->slots.entries[i].key != 0 && slot->partition == partition)
            doomed[count++] = slot;
    }
    for (size_t i = 0; i < count; i++) {
        map_del(&hsm->slots, doomed[i]->handle);
        slot_free(hsm, doomed[i]);
    }
    free(doomed);
    map_del(&hsm->partitions, partition);
    part_free(hsm, part);
    pthread_rwlock_unlock(&hsm->lock);
    return KP_OK;
}

/* --- root key ------------------------------------------------------------------------------ */

kp_status kp_partition_rewrap_batch(kp_hsm *hsm, size_t n, const uint8_t *in,
                                    size_t in_size, const uint8_t *root_key,
                                    size_t root_key_len, uint8_t *out, size_t out_size,
                                    kp_status *status)
{
    if (hsm == NULL || root_key == NULL || status == NULL || (n && (in == NULL || out == NULL)))
        return KP_E_ARGUMENT;
    if (root_key_len != KP_KEY_BYTES)
        return KP_E_LENGTH;
    if (n > KP_MAX_BATCH || in_size != n * KP_WRAPPED_KEY_BYTES)
        return KP_E_ARGUMENT;
    if (out_size < n * KP_WRAPPED_KEY_BYTES)
        return KP_E_BUFFER;
    /* The new root key's schedule lives only for this call: the key is not the HSM's
     * until kp_hsm_set_root_key makes it so. */
    EVP_CIPHER_CTX *keyed = keyed_context(hsm, root_key);
    if (keyed == NULL)
        return kp_fail(KP_E_CRYPTO);
    /* One locked cell holds each key while it is re-wrapped. The arena wants the write
     * lock, but only to hand the cell out and take it back: the re-wrapping itself
     * needs only the root key to stay put, so batches run on beside it. */
    pthread_rwlock_wrlock(&hsm->lock);
    uint8_t *key = kp_cell_alloc(&hsm->arena);
    pthread_rwlock_unlock(&hsm->lock);
    if (key == NULL) {
        EVP_CIPHER_CTX_free(keyed);
        return KP_E_NOMEM;
    }
    kp_status st = KP_OK;
    pthread_rwlock_rdlock(&hsm->lock);
    for (size_t i = 0; i < n && st == KP_OK; i++) {
        const uint8_t *item = in + i * KP_WRAPPED_KEY_BYTES;
        status[i] = unwrap_key(hsm->root_keyed, PART_LABEL, NULL, 0, item,
                               KP_WRAPPED_KEY_BYTES, key);
        if (status[i] == KP_OK)
            status[i] = wrap_key(keyed, PART_LABEL, NULL, 0, key,
                                 out + i * KP_WRAPPED_KEY_BYTES);
        /* A malformed item (KP_E_ARGUMENT from unwrap_key) fails alone; a fault of the
         * machinery fails the call, and every item not yet done with it. */
        if (status[i] == KP_E_NOMEM || status[i] == KP_E_CRYPTO || status[i] == KP_E_RANDOM) {
            st = status[i];
            for (size_t j = i + 1; j < n; j++)
                status[j] = st;
        }
    }
    pthread_rwlock_unlock(&hsm->lock);
    pthread_rwlock_wrlock(&hsm->lock);
    kp_cell_free(&hsm->arena, key); /* cleanses the last key it held */
    pthread_rwlock_unlock(&hsm->lock);
    EVP_CIPHER_CTX_free(keyed); /* the GCM provider cleanses its key schedule */
    return st;
}

kp_status kp_hsm_set_root_key(kp_hsm *hsm, const uint8_t *root_key, size_t root_key_len)
{
    if (hsm == NULL || root_key == NULL)
        return KP_E_ARGUMENT;
    if (root_key_len != KP_KEY_BYTES)
        return KP_E_LENGTH;
    /* Everything that can fail happens before the lock, so a failed call changes nothing
     * and batches wait only for the swap itself. */
    EVP_CIPHER_CTX *keyed = keyed_context(hsm, root_key);
    if (keyed == NULL)
        return kp_fail(KP_E_CRYPTO);
    pthread_rwlock_wrlock(&hsm->lock);
    EVP_CIPHER_CTX *old = hsm->root_keyed;
    /* The new key overwrites the old in the same locked cell: no copy of the old is left. */
    memcpy(hsm->root_key, root_key, KP_KEY_BYTES);
    hsm->root_keyed = keyed;
    pthread_rwlock_unlock(&hsm->lock);
    EVP_CIPHER_CTX_free(old);
    return KP_OK;
}

/* --- key slots --------------------------------------------------------------------------- */

kp_status kp_slot_find(const kp_hsm *hsm, kp_partition scope, kp_handle handle,
                       const kp_slot **out)
{
    const kp_slot *slot = handle ? map_get(&hsm->slots, handle) : NULL;
    if (slot == NULL)
        return (handle >> KP_HANDLE_SERIAL_SHIFT) == hsm->serial ? KP_E_SLOT_GONE
                                                                   : KP_E_WRONG_PARTITION;
    if (scope != 0 && slot->partition != scope)
        return KP_E_WRONG_PARTITION;
    *out = slot;
    return KP_OK;
}

kp_status kp_slot_lookup(const kp_hsm *hsm, kp_partition scope, kp_handle handle,
                         const kp_slot **out)
{
    const kp_slot *slot = NULL;
    kp_status st = kp_slot_find(hsm, scope, handle, &slot);
    if (st != KP_OK)
        return st;
    if (slot->rsa != NULL)
        return KP_E_KEY_TYPE;
    *out = slot;
    return KP_OK;
}

const kp_part *kp_part_find(const kp_hsm *hsm, kp_partition partition)
{
    return partition ? map_get(&hsm->partitions, partition) : NULL;
}

kp_status kp_slot_enter(kp_hsm *hsm, kp_partition partition, kp_slot *slot, kp_handle *out)
{
    kp_status st = KP_OK;
    if (kp_part_find(hsm, partition) == NULL)
        st = KP_E_PARTITION_GONE;
    else if (hsm->next_slot >= ((uint64_t)1 << KP_HANDLE_SERIAL_SHIFT))
        st = KP_E_CAPACITY;
    if (st == KP_OK) {
        slot->partition = partition;
        slot->handle = (hsm->serial << KP_HANDLE_SERIAL_SHIFT) | hsm->next_slot;
        if (!map_put(&hsm->slots, slot->handle, slot))
            st = KP_E_NOMEM;
    }
    if (st != KP_OK) {
        slot_free(hsm, slot);
        return st;
    }
    hsm->next_slot++;
    *out = slot->handle;
    return KP_OK;
}

kp_status kp_slot_add_key(kp_hsm *hsm, kp_partition partition, const uint8_t *key,
                          kp_handle *out)
{
    kp_slot *slot = calloc(1, sizeof(*slot));
    if (slot == NULL)
        return KP_E_NOMEM;
    kp_ctx_pool_init(&slot->pool);
    slot->key = kp_cell_alloc(&hsm->arena);
    if (slot->key != NULL) {
        memcpy(slot->key, key, KP_KEY_BYTES);
        slot->keyed = keyed_context(hsm, slot->key);
    }
    if (slot->keyed == NULL) {
        kp_status st = slot->key == NULL ? KP_E_NOMEM : kp_fail(KP_E_CRYPTO);
        slot_free(hsm, slot);
        return st;
    }
    return kp_slot_enter(hsm, partition, slot, out);
}

/* Add a slot whose key is generated (wrapped == NULL) or unwrapped; under the write lock. */
static kp_status slot_add(kp_hsm *hsm, kp_partition partition, const uint8_t *wrapped,
                          size_t wrapped_len, const uint8_t *context, size_t context_len,
                          kp_handle *out)
{
    const kp_part *part = partition ? map_get(&hsm->partitions, partition) : NULL;
    if (part == NULL)
        return KP_E_PARTITION_GONE;
    if (hsm->next_slot >= ((uint64_t)1 << KP_HANDLE_SERIAL_SHIFT))
        return KP_E_CAPACITY;
    kp_slot *slot = calloc(1, sizeof(*slot));
    if (slot == NULL)
        return KP_E_NOMEM;
    kp_ctx_pool_init(&slot->pool);
    slot->key = kp_cell_alloc(&hsm->arena);
    if (slot->key == NULL) {
        slot_free(hsm, slot);
        return KP_E_NOMEM;
    }
    kp_status st = KP_OK;
    if (wrapped == NULL) {
        if (RAND_priv_bytes(slot->key, KP_KEY_BYTES) != 1)
            st = kp_fail(KP_E_RANDOM);
    } else {
        st = unwrap_key(part->keyed, SLOT_LABEL, context, context_len, wrapped, wrapped_len,
                        slot->key);
    }
    if (st == KP_OK) {
        slot->keyed = keyed_context(hsm, slot->key);
        if (slot->keyed == NULL)
            st = kp_fail(KP_E_CRYPTO);
    }
    if (st != KP_OK) {
        slot_free(hsm, slot);
        return st;
    }
    return kp_slot_enter(hsm, partition, slot, out);
}

kp_status kp_keyslot_generate(kp_hsm *hsm, kp_partition partition, kp_handle *out)
{
    if (hsm == NULL || out == NULL)
        return KP_E_ARGUMENT;
    pthread_rwlock_wrlock(&hsm->lock);
    kp_status st = slot_add(hsm, partition, NULL, 0, NULL, 0, out);
    pthread_rwlock_unlock(&hsm->lock);
    return st;
}

kp_status kp_keyslot_import(kp_hsm *hsm, kp_partition partition, const uint8_t *wrapped,
                            size_t wrapped_len, const uint8_t *context, size_t context_len,
                            kp_handle *out)
{
    if (hsm == NULL || out == NULL || wrapped == NULL || (context == NULL && context_len))
        return KP_E_ARGUMENT;
    if (context_len > KP_MAX_CONTEXT_BYTES)
        return KP_E_LENGTH;
    pthread_rwlock_wrlock(&hsm->lock);
    kp_status st = slot_add(hsm, partition, wrapped, wrapped_len, context, context_len, out);
    pthread_rwlock_unlock(&hsm->lock);
    return st;
}

kp_status kp_hazmat_import_raw(kp_hsm *hsm, kp_partition partition, const uint8_t *key,
                               size_t key_len, kp_handle *out)
{
    if (hsm == NULL || out == NULL || key == NULL)
        return KP_E_ARGUMENT;
    if (key_len != KP_KEY_BYTES)
        return KP_E_LENGTH;
    /* Wrap the raw key under the partition key, then import it like any stored key, so
     * the known-answer tests exercise the real unwrap path too. */
    uint8_t wrapped[KP_WRAPPED_KEY_BYTES];
    pthread_rwlock_wrlock(&hsm->lock);
    const kp_part *part = partition ? map_get(&hsm->partitions, partition) : NULL;
    kp_status st = part == NULL ? KP_E_PARTITION_GONE
                                : wrap_key(part->keyed, SLOT_LABEL, NULL, 0, key, wrapped);
    if (st == KP_OK)
        st = slot_add(hsm, partition, wrapped, sizeof(wrapped), NULL, 0, out);
    pthread_rwlock_unlock(&hsm->lock);
    OPENSSL_cleanse(wrapped, sizeof(wrapped));
    return st;
}

kp_status kp_keyslot_export(kp_hsm *hsm, kp_partition partition, kp_handle handle,
                            const uint8_t *context, size_t context_len, uint8_t *out,
                            size_t out_size, size_t *out_len)
{
    if (hsm == NULL || out == NULL || out_len == NULL || (context == NULL && context_len))
        return KP_E_ARGUMENT;
    *out_len = 0;
    if (context_len > KP_MAX_CONTEXT_BYTES)
        return KP_E_LENGTH;
    if (out_size < KP_WRAPPED_KEY_BYTES)
        return KP_E_BUFFER;
    pthread_rwlock_rdlock(&hsm->lock);
    const kp_part *part = partition ? map_get(&hsm->partitions, partition) : NULL;
    const kp_slot *slot = NULL;
    kp_status st = part == NULL ? KP_E_PARTITION_GONE
                                : kp_slot_lookup(hsm, partition, handle, &slot);
    if (st == KP_OK)
        st = wrap_key(part->keyed, SLOT_LABEL, context, context_len, slot->key, out);
    pthread_rwlock_unlock(&hsm->lock);
    if (st == KP_OK)
        *out_len = KP_WRAPPED_KEY_BYTES;
    return st;
}

kp_status kp_keyslot_destroy(kp_hsm *hsm, kp_partition partition, kp_handle handle)
{
    if (hsm == NULL)
        return KP_E_ARGUMENT;
    pthread_rwlock_wrlock(&hsm->lock);
    const kp_part *part = partition ? map_get(&hsm->partitions, partition) : NULL;
    const kp_slot *slot = NULL;
    /* Either kind: a wrapping key is destroyed like an AES key. */
    kp_status st = part == NULL ? KP_E_PARTITION_GONE
                                : kp_slot_find(hsm, partition, handle, &slot);
    if (st == KP_OK) {
        map_del(&hsm->slots, handle);
        slot_free(hsm, (kp_slot *)slot);
    }
    pthread_rwlock_unlock(&hsm->lock);
    return st;
}

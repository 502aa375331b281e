/*
 * gcm.c - batched AES-256-GCM over OpenSSL's EVP interface.
 *
 * Per-batch costs are paid once: one DRBG draw for every IV and data key of the batch,
 * one read lock, and one working context per distinct slot, copied from the slot's
 * prepared key schedule. Per item there is only the IV set-up, the GCM passes and the
 * tag. Every range the caller gives is checked against its buffer's size here, even
 * though the Python wrapper builds them itself.
 */
#include <stdatomic.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include "kp_internal.h"

#define KP_HAZMAT_MAX_IV 128
#define KP_HAZMAT_MIN_TAG 4

/* --- working contexts -------------------------------------------------------------------- */

void kp_ctx_pool_init(kp_ctx_pool *pool)
{
    for (unsigned i = 0; i < KP_IDLE_CONTEXTS; i++)
        atomic_init(&pool->idle[i], NULL);
}

void kp_ctx_pool_release(kp_ctx_pool *pool)
{
    for (unsigned i = 0; i < KP_IDLE_CONTEXTS; i++)
        EVP_CIPHER_CTX_free(atomic_exchange(&pool->idle[i], NULL)); /* cleansed by OpenSSL */
}

static EVP_CIPHER_CTX *pool_take(kp_ctx_pool *pool)
{
    for (unsigned i = 0; i < KP_IDLE_CONTEXTS; i++) {
        if (atomic_load_explicit(&pool->idle[i], memory_order_relaxed) == NULL)
            continue;
        EVP_CIPHER_CTX *ctx = atomic_exchange(&pool->idle[i], NULL);
        if (ctx != NULL)
            return ctx;
    }
    return NULL;
}

static void pool_give(kp_ctx_pool *pool, EVP_CIPHER_CTX *ctx)
{
    for (unsigned i = 0; i < KP_IDLE_CONTEXTS; i++) {
        EVP_CIPHER_CTX *empty = NULL;
        if (atomic_compare_exchange_strong(&pool->idle[i], &empty, ctx))
            return;
    }
    EVP_CIPHER_CTX_free(ctx); /* more concurrent users than idle places: let this one go */
}

void kp_ctx_cache_init(kp_ctx_cache *cache)
{
    cache->next = 0;
    cache->used = 0;
}

static void cache_drop(kp_ctx_cache *cache, unsigned k)
{
    if (cache->ctx[k] != NULL && cache->pool[k] != NULL)
        pool_give(cache->pool[k], cache->ctx[k]);
    else
        EVP_CIPHER_CTX_free(cache->ctx[k]);
    cache->ctx[k] = NULL;
    cache->pool[k] = NULL;
    cache->owner[k] = NULL;
}

void kp_ctx_cache_release(kp_ctx_cache *cache)
{
    for (unsigned k = 0; k < cache->used; k++)
        cache_drop(cache, k);
    cache->next = 0;
    cache->used = 0;
}

kp_status kp_ctx_for(kp_ctx_cache *cache, const EVP_CIPHER_CTX *keyed, kp_ctx_pool *pool,
                     const void *owner, EVP_CIPHER_CTX **out)
{
    for (unsigned k = 0; k < cache->used; k++) {
        if (cache->owner[k] == owner && cache->ctx[k] != NULL) {
            *out = cache->ctx[k];
            return KP_OK;
        }
    }
    unsigned k = cache->next;
    cache->next = (k + 1) % KP_CTX_CACHE;
    if (k < cache->used)
        cache_drop(cache, k);
    EVP_CIPHER_CTX *ctx = pool != NULL ? pool_take(pool) : NULL;
    if (ctx == NULL) {
        ctx = EVP_CIPHER_CTX_new();
        if (ctx == NULL)
            return kp_fail(KP_E_NOMEM);
        /* Copying the prepared schedule is the only key set-up a slot ever sees again. */
        if (EVP_CIPHER_CTX_copy(ctx, keyed) != 1) {
            EVP_CIPHER_CTX_free(ctx);
            return kp_fail(KP_E_CRYPTO);
        }
    }
    cache->ctx[k] = ctx;
    cache->pool[k] = pool;
    cache->owner[k] = owner;
    if (cache->used <= k)
        cache->used = k + 1;
    *out = ctx;
    return KP_OK;
}

/* --- one item ---------------------------------------------------------------------------- */

kp_status kp_seal_item(EVP_CIPHER_CTX *ctx, const uint8_t *iv, size_t iv_len,
                       const uint8_t *aad, size_t aad_len, const uint8_t *in,
                       size_t in_len, uint8_t *ct, uint8_t *tag, size_t tag_len)
{
    (void)iv_len; /* the context's IV length was set by whoever prepared it */
    int n = 0;
    uint8_t none[16];
    if (EVP_EncryptInit_ex2(ctx, NULL, NULL, iv, NULL) != 1)
        return kp_fail(KP_E_CRYPTO);
    if (aad_len && EVP_EncryptUpdate(ctx, NULL, &n, aad, (int)aad_len) != 1)
        return kp_fail(KP_E_CRYPTO);
    if (in_len && EVP_EncryptUpdate(ctx, ct, &n, in, (int)in_len) != 1)
        return kp_fail(KP_E_CRYPTO);
    if (EVP_EncryptFinal_ex(ctx, none, &n) != 1)
        return kp_fail(KP_E_CRYPTO);
    /* Asking for the tag through params skips EVP_CIPHER_CTX_ctrl's translation. */
    OSSL_PARAM params[2] = {
        OSSL_PARAM_construct_octet_string(OSSL_CIPHER_PARAM_AEAD_TAG, tag, tag_len),
        OSSL_PARAM_construct_end(),
    };
    if (EVP_CIPHER_CTX_get_params(ctx, params) != 1)
        return kp_fail(KP_E_CRYPTO);
    return KP_OK;
}

kp_status kp_open_item(EVP_CIPHER_CTX *ctx, const uint8_t *iv, size_t iv_len,
                       const uint8_t *aad, size_t aad_len, const uint8_t *ct,
                       size_t ct_len, const uint8_t *tag, size_t tag_len, uint8_t *out)
{
    (void)iv_len;
    int n = 0;
    uint8_t none[16];
    if (EVP_DecryptInit_ex2(ctx, NULL, NULL, iv, NULL) != 1)
        return kp_fail(KP_E_CRYPTO);
    if (aad_len && EVP_DecryptUpdate(ctx, NULL, &n, aad, (int)aad_len) != 1)
        return kp_fail(KP_E_CRYPTO);
    if (ct_len && EVP_DecryptUpdate(ctx, out, &n, ct, (int)ct_len) != 1)
        return kp_fail(KP_E_CRYPTO);
    OSSL_PARAM params[2] = {
        OSSL_PARAM_construct_octet_string(OSSL_CIPHER_PARAM_AEAD_TAG, (void *)tag, tag_len),
        OSSL_PARAM_construct_end(),
    };
    if (EVP_CIPHER_CTX_set_params(ctx, params) != 1)
        return kp_fail(KP_E_CRYPTO);
    if (EVP_DecryptFinal_ex(ctx, none, &n) != 1) {
        /* Never leave unauthenticated plaintext behind, and say nothing about why. */
        if (ct_len)
            OPENSSL_cleanse(out, ct_len);
        return kp_fail(KP_E_AUTH);
    }
    return KP_OK;
}

/* --- batch plumbing ---------------------------------------------------------------------- */

/* One column of spans. A NULL offset array means the spans lie back to back from offset
 * 0; off == len == NULL (allowed for AAD only) means every span is empty. */
typedef struct kp_spans {
    const uint8_t *base;
    size_t size;
    const size_t *off;
    const size_t *len;
    size_t next; /* where the next back-to-back span starts */
} kp_spans;

/* The outputs: at out_off[i], or back to back when out_off is NULL. */
typedef struct kp_outs {
    uint8_t *base;
    size_t size;
    const size_t *off;
    size_t next;
} kp_outs;

/* Are the arrays of a span set usable? */
static int spans_ok(const kp_spans *s, int optional)
{
    if (s->base == NULL && s->size != 0)
        return 0;
    if (s->len == NULL)
        return optional && s->off == NULL;
    return 1;
}

static size_t span_len(const kp_spans *s, size_t i)
{
    return s->len ? s->len[i] : 0;
}

/* Take item i's span; 0 when it falls outside the buffer. Call once per item, in order,
 * whatever the item's fate, so back-to-back offsets stay in step. */
static int span_take(kp_spans *s, size_t i, const uint8_t **p)
{
    *p = NULL;
    if (s->len == NULL)
        return 1;
    size_t len = s->len[i];
    size_t off = s->off ? s->off[i] : s->next;
    s->next = off + len < off ? SIZE_MAX : off + len; /* saturate; the range check fails */
    if (!kp_in_range(off, len, s->size))
        return 0;
    *p = s->base ? s->base + off : NULL;
    return 1;
}

/* Take item i's output of len bytes, with the same rules as span_take. */
static int out_take(kp_outs *o, size_t i, size_t len, uint8_t **p)
{
    *p = NULL;
    size_t off = o->off ? o->off[i] : o->next;
    o->next = off + len < off ? SIZE_MAX : off + len;
    if (!kp_in_range(off, len, o->size))
        return 0;
    *p = o->base ? o->base + off : NULL;
    return 1;
}

typedef struct kp_batch {
    const kp_hsm *hsm;
    kp_partition scope;
    int pooled; /* hazmat batches change IV lengths, so their contexts are not reused */
    kp_ctx_cache cache;
    kp_handle last_handle;
    const kp_slot *last_slot;
} kp_batch;

static void batch_begin(kp_batch *b, kp_hsm *hsm, kp_partition scope, int pooled)
{
    b->hsm = hsm;
    b->scope = scope;
    b->pooled = pooled;
    b->last_handle = 0;
    b->last_slot = NULL;
    kp_ctx_cache_init(&b->cache);
    pthread_rwlock_rdlock(&hsm->lock);
}

static void batch_end(kp_batch *b)
{
    pthread_rwlock_unlock((pthread_rwlock_t *)&b->hsm->lock);
    kp_ctx_cache_release(&b->cache);
}

/* The working context for item handle; consecutive items of one slot skip the lookup. */
static kp_status batch_context(kp_batch *b, kp_handle handle, EVP_CIPHER_CTX **ctx)
{
    if (b->last_slot == NULL || handle != b->last_handle) {
        const kp_slot *slot = NULL;
        kp_status st = kp_slot_lookup(b->hsm, b->scope, handle, &slot);
        if (st != KP_OK)
            return st;
        b->last_handle = handle;
        b->last_slot = slot;
    }
    kp_slot *slot = (kp_slot *)b->last_slot;
    return kp_ctx_for(&b->cache, slot->keyed, b->pooled ? &slot->pool : NULL, slot, ctx);
}

/* Faults of the machinery rather than of an item's input fail the whole call. */
static int is_fault(kp_status st)
{
    return st == KP_E_NOMEM || st == KP_E_CRYPTO || st == KP_E_RANDOM;
}

int kp_status_is_fault(kp_status st)
{
    return is_fault(st) || st == KP_E_ARGUMENT;
}

/* Record item i's outcome; after a fault, mark every remaining item with it. */
static kp_status settle(kp_status st, size_t i, size_t n, kp_status *status)
{
    status[i] = st;
    if (!is_fault(st))
        return KP_OK;
    for (size_t j = i + 1; j < n; j++)
        status[j] = st;
    return st;
}

static int batch_args_ok(const kp_hsm *hsm, size_t n, const kp_handle *handles,
                         const kp_status *status, const uint8_t *out, size_t out_size,
                         const size_t *out_off)
{
    if (hsm == NULL || n > KP_MAX_BATCH)
        return 0;
    if (n == 0)
        return 1;
    (void)out_off; /* NULL: outputs back to back */
    return handles != NULL && status != NULL && (out != NULL || out_size == 0);
}

/* --- the service's batches --------------------------------------------------------------- */

kp_status kp_encrypt_batch(kp_hsm *hsm, kp_partition scope, size_t n,
                           const kp_handle *handles, const uint8_t *in, size_t in_size,
                           const size_t *in_off, const size_t *in_len, const uint8_t *aad,
                           size_t aad_size, const size_t *aad_off, const size_t *aad_len,
                           uint8_t *out, size_t out_size, const size_t *out_off,
                           kp_status *status)
{
    kp_spans ins = {in, in_size, in_off, in_len, 0};
    kp_spans aads = {aad, aad_size, aad_off, aad_len, 0};
    kp_outs outs = {out, out_size, out_off, 0};
    if (!batch_args_ok(hsm, n, handles, status, out, out_size, out_off) ||
        (n && (!spans_ok(&ins, 0) || !spans_ok(&aads, 1))))
        return KP_E_ARGUMENT;
    if (n == 0)
        return KP_OK;

    kp_draw ivs;
    kp_status fault = kp_draw_begin(&ivs, n * KP_IV_BYTES);
    if (fault != KP_OK)
        return fault;
    kp_batch b;
    batch_begin(&b, hsm, scope, 1);
    for (size_t i = 0; i < n && fault == KP_OK; i++) {
        const uint8_t *pt, *ad;
        uint8_t *sealed;
        size_t pt_len = ins.len[i], ad_len = span_len(&aads, i);
        int in_range = span_take(&ins, i, &pt) & span_take(&aads, i, &ad) &
                       out_take(&outs, i, pt_len + KP_SEAL_OVERHEAD, &sealed);
        EVP_CIPHER_CTX *ctx = NULL;
        kp_status st = batch_context(&b, handles[i], &ctx);
        if (st == KP_OK && (pt_len == 0 || pt_len > KP_MAX_INPUT_BYTES ||
                            ad_len > KP_MAX_AAD_BYTES))
            st = KP_E_LENGTH;
        if (st == KP_OK && !in_range)
            st = KP_E_BUFFER;
        if (st == KP_OK) {
            memcpy(sealed, ivs.bytes + i * KP_IV_BYTES, KP_IV_BYTES);
            st = kp_seal_item(ctx, sealed, KP_IV_BYTES, ad, ad_len, pt, pt_len,
                              sealed + KP_IV_BYTES, sealed + KP_IV_BYTES + pt_len,
                              KP_TAG_BYTES);
        }
        fault = settle(st, i, n, status);
    }
    batch_end(&b);
    kp_draw_end(&ivs);
    return fault;
}

kp_status kp_decrypt_batch(kp_hsm *hsm, kp_partition scope, size_t n,
                           const kp_handle *handles, const uint8_t *in, size_t in_size,
                           const size_t *in_off, const size_t *in_len, const uint8_t *aad,
                           size_t aad_size, const size_t *aad_off, const size_t *aad_len,
                           uint8_t *out, size_t out_size, const size_t *out_off,
                           kp_status *status)
{
    kp_spans ins = {in, in_size, in_off, in_len, 0};
    kp_spans aads = {aad, aad_size, aad_off, aad_len, 0};
    kp_outs outs = {out, out_size, out_off, 0};
    if (!batch_args_ok(hsm, n, handles, status, out, out_size, out_off) ||
        (n && (!spans_ok(&ins, 0) || !spans_ok(&aads, 1))))
        return KP_E_ARGUMENT;
    if (n == 0)
        return KP_OK;

    kp_status fault = KP_OK;
    kp_batch b;
    batch_begin(&b, hsm, scope, 1);
    for (size_t i = 0; i < n && fault == KP_OK; i++) {
        const uint8_t *sealed, *ad;
        uint8_t *pt;
        size_t sealed_len = ins.len[i], ad_len = span_len(&aads, i);
        size_t pt_len = sealed_len > KP_SEAL_OVERHEAD ? sealed_len - KP_SEAL_OVERHEAD : 0;
        int in_range = span_take(&ins, i, &sealed) & span_take(&aads, i, &ad) &
                       out_take(&outs, i, pt_len, &pt);
        EVP_CIPHER_CTX *ctx = NULL;
        kp_status st = batch_context(&b, handles[i], &ctx);
        if (st == KP_OK && (pt_len == 0 || pt_len > KP_MAX_INPUT_BYTES ||
                            ad_len > KP_MAX_AAD_BYTES))
            st = KP_E_LENGTH;
        if (st == KP_OK && !in_range)
            st = KP_E_BUFFER;
        if (st == KP_OK)
            st = kp_open_item(ctx, sealed, KP_IV_BYTES, ad, ad_len, sealed + KP_IV_BYTES,
                              pt_len, sealed + KP_IV_BYTES + pt_len, KP_TAG_BYTES, pt);
        fault = settle(st, i, n, status);
    }
    batch_end(&b);
    return fault;
}

kp_status kp_generate_data_key_batch(kp_hsm *hsm, kp_partition scope, size_t n,
                                     const kp_handle *handles, const size_t *key_len,
                                     const uint8_t *aad, size_t aad_size,
                                     const size_t *aad_off, const size_t *aad_len,
                                     uint8_t *out, size_t out_size, const size_t *out_off,
                                     kp_status *status)
{
    kp_spans aads = {aad, aad_size, aad_off, aad_len, 0};
    kp_outs outs = {out, out_size, out_off, 0};
    if (!batch_args_ok(hsm, n, handles, status, out, out_size, out_off) ||
        (n && (key_len == NULL || !spans_ok(&aads, 1))))
        return KP_E_ARGUMENT;
    if (n == 0)
        return KP_OK;

    /* One draw covers every valid item's IV and key; an item with a bad length takes no
     * bytes, so the cursor below stays in step with this sum. */
    size_t need = 0;
    for (size_t i = 0; i < n; i++)
        if (key_len[i] >= 1 && key_len[i] <= KP_MAX_DATA_KEY_BYTES)
            need += KP_IV_BYTES + key_len[i];
    kp_draw random;
    kp_status fault = kp_draw_begin(&random, need);
    if (fault != KP_OK)
        return fault;
    size_t cursor = 0;
    kp_batch b;
    batch_begin(&b, hsm, scope, 1);
    for (size_t i = 0; i < n && fault == KP_OK; i++) {
        size_t klen = key_len[i], ad_len = span_len(&aads, i);
        int valid = klen >= 1 && klen <= KP_MAX_DATA_KEY_BYTES;
        const uint8_t *ad;
        uint8_t *key;
        int in_range = span_take(&aads, i, &ad) &
                       out_take(&outs, i, valid ? 2 * klen + KP_SEAL_OVERHEAD : 0, &key);
        if (!valid) {
            fault = settle(KP_E_LENGTH, i, n, status);
            continue;
        }
        const uint8_t *fresh = random.bytes + cursor;
        cursor += KP_IV_BYTES + klen;
        EVP_CIPHER_CTX *ctx = NULL;
        kp_status st = batch_context(&b, handles[i], &ctx);
        if (st == KP_OK && ad_len > KP_MAX_AAD_BYTES)
            st = KP_E_LENGTH;
        if (st == KP_OK && !in_range)
            st = KP_E_BUFFER;
        if (st == KP_OK) {
            uint8_t *sealed = key + klen;
            memcpy(key, fresh, klen);
            memcpy(sealed, fresh + klen, KP_IV_BYTES);
            st = kp_seal_item(ctx, sealed, KP_IV_BYTES, ad, ad_len, key, klen,
                              sealed + KP_IV_BYTES, sealed + KP_IV_BYTES + klen,
                              KP_TAG_BYTES);
            if (st != KP_OK)
                OPENSSL_cleanse(key, klen);
        }
        fault = settle(st, i, n, status);
    }
    batch_end(&b);
    kp_draw_end(&random);
    return fault;
}

/* --- single items ------------------------------------------------------------------------ */

static kp_status one_outcome(kp_status call, kp_status item)
{
    return call != KP_OK ? call : item;
}

kp_status kp_encrypt_one(kp_hsm *hsm, kp_partition scope, kp_handle handle,
                         const uint8_t *in, size_t in_len, const uint8_t *aad,
                         size_t aad_len, uint8_t *out, size_t out_size)
{
    size_t zero = 0;
    kp_status item = KP_OK;
    kp_status call = kp_encrypt_batch(hsm, scope, 1, &handle, in, in_len, &zero, &in_len,
                                      aad, aad_len, &zero, &aad_len, out, out_size, &zero,
                                      &item);
    return one_outcome(call, item);
}

kp_status kp_decrypt_one(kp_hsm *hsm, kp_partition scope, kp_handle handle,
                         const uint8_t *in, size_t in_len, const uint8_t *aad,
                         size_t aad_len, uint8_t *out, size_t out_size)
{
    size_t zero = 0;
    kp_status item = KP_OK;
    kp_status call = kp_decrypt_batch(hsm, scope, 1, &handle, in, in_len, &zero, &in_len,
                                      aad, aad_len, &zero, &aad_len, out, out_size, &zero,
                                      &item);
    return one_outcome(call, item);
}

kp_status kp_generate_data_key_one(kp_hsm *hsm, kp_partition scope, kp_handle handle,
                                   size_t key_len, const uint8_t *aad, size_t aad_len,
                                   uint8_t *out, size_t out_size)
{
    size_t zero = 0;
    kp_status item = KP_OK;
    kp_status call = kp_generate_data_key_batch(hsm, scope, 1, &handle, &key_len, aad,
                                                aad_len, &zero, &aad_len, out, out_size,
                                                &zero, &item);
    return one_outcome(call, item);
}

/* --- hazardous batches for known-answer tests -------------------------------------------- */

typedef enum { HAZMAT_SEAL, HAZMAT_OPEN } hazmat_dir;

static kp_status hazmat_batch(hazmat_dir dir, kp_hsm *hsm, size_t n, const kp_handle *handles,
                              kp_spans *ivs, kp_spans *ins, kp_spans *aads,
                              const size_t *tag_len, uint8_t *out, size_t out_size,
                              const size_t *out_off, kp_status *status)
{
    kp_outs outs = {out, out_size, out_off, 0};
    if (!batch_args_ok(hsm, n, handles, status, out, out_size, out_off) ||
        (n && (tag_len == NULL || !spans_ok(ivs, 0) || !spans_ok(ins, 0) ||
               !spans_ok(aads, 1))))
        return KP_E_ARGUMENT;
    kp_status fault = KP_OK;
    kp_batch b;
    batch_begin(&b, hsm, 0, 0);
    for (size_t i = 0; i < n && fault == KP_OK; i++) {
        const uint8_t *iv, *in, *ad;
        uint8_t *dst;
        size_t iv_len = ivs->len[i], in_len = ins->len[i], ad_len = span_len(aads, i);
        size_t tlen = tag_len[i];
        size_t text_len = dir == HAZMAT_SEAL ? in_len : (in_len > tlen ? in_len - tlen : 0);
        size_t out_len = dir == HAZMAT_SEAL ? in_len + tlen : text_len;
        int in_range = span_take(ivs, i, &iv) & span_take(ins, i, &in) &
                       span_take(aads, i, &ad) & out_take(&outs, i, out_len, &dst);
        EVP_CIPHER_CTX *ctx = NULL;
        kp_status st = batch_context(&b, handles[i], &ctx);
        if (st == KP_OK &&
            (iv_len < 1 || iv_len > KP_HAZMAT_MAX_IV || tlen < KP_HAZMAT_MIN_TAG ||
             tlen > KP_TAG_BYTES || in_len > KP_MAX_INPUT_BYTES + KP_TAG_BYTES ||
             ad_len > KP_MAX_AAD_BYTES || (dir == HAZMAT_OPEN && in_len < tlen)))
            st = KP_E_LENGTH;
        if (st == KP_OK && !in_range)
            st = KP_E_BUFFER;
        /* This context may have carried another IV length for an earlier item. */
        if (st == KP_OK &&
            EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_IVLEN, (int)iv_len, NULL) != 1)
            st = kp_fail(KP_E_CRYPTO);
        if (st == KP_OK && dir == HAZMAT_SEAL)
            st = kp_seal_item(ctx, iv, iv_len, ad, ad_len, in, in_len, dst, dst + in_len,
                              tlen);
        else if (st == KP_OK)
            st = kp_open_item(ctx, iv, iv_len, ad, ad_len, in, text_len, in + text_len, tlen,
                              dst);
        fault = settle(st, i, n, status);
    }
    batch_end(&b);
    return fault;
}

kp_status kp_hazmat_seal_batch(kp_hsm *hsm, size_t n, const kp_handle *handles,
                               const uint8_t *iv, size_t iv_size, const size_t *iv_off,
                               const size_t *iv_len, const uint8_t *in, size_t in_size,
                               const size_t *in_off, const size_t *in_len,
                               const uint8_t *aad, size_t aad_size, const size_t *aad_off,
                               const size_t *aad_len, const size_t *tag_len, uint8_t *out,
                               size_t out_size, const size_t *out_off, kp_status *status)
{
    kp_spans ivs = {iv, iv_size, iv_off, iv_len, 0};
    kp_spans ins = {in, in_size, in_off, in_len, 0};
    kp_spans aads = {aad, aad_size, aad_off, aad_len, 0};
    return hazmat_batch(HAZMAT_SEAL, hsm, n, handles, &ivs, &ins, &aads, tag_len, out,
                        out_size, out_off, status);
}

kp_status kp_hazmat_open_batch(kp_hsm *hsm, size_t n, const kp_handle *handles,
                               const uint8_t *iv, size_t iv_size, const size_t *iv_off,
                               const size_t *iv_len, const uint8_t *in, size_t in_size,
                               const size_t *in_off, const size_t *in_len,
                               const uint8_t *aad, size_t aad_size, const size_t *aad_off,
                               const size_t *aad_len, const size_t *tag_len, uint8_t *out,
                               size_t out_size, const size_t *out_off, kp_status *status)
{
    kp_spans ivs = {iv, iv_size, iv_off, iv_len, 0};
    kp_spans ins = {in, in_size, in_off, in_len, 0};
    kp_spans aads = {aad, aad_size, aad_off, aad_len, 0};
    return hazmat_batch(HAZMAT_OPEN, hsm, n, handles, &ivs, &ins, &aads, tag_len, out,
                        out_size, out_off, status);
}

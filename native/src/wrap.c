/*
 * wrap.c - importing key material (AWS KMS GetParametersForImport / ImportKeyMaterial).
 *
 * A wrapping key is an RSA key pair in a slot of its own kind. Its public half leaves as
 * a SubjectPublicKeyInfo, its private half only sealed under the partition's key, for
 * the import token's lifetime. EncryptedKeyMaterial is unwrapped with it straight into
 * a new AES slot: the material, and for RSA_AES_KEY_WRAP the ephemeral AES key, are
 * written only into locked, dump-excluded pages mapped for the call and cleansed before
 * it returns (OpenSSL's own temporaries inside the RSA decryption are ordinary heap,
 * which OpenSSL cleanses before freeing).
 *
 * The sealed private key is a record of this file's own (see "the private key record"),
 * not PKCS #1 DER: OpenSSL's DER encoder and decoder copy the key through ordinary heap
 * buffers and free them uncleansed, where reading and writing the numbers through
 * OSSL_PARAMs that point into locked pages makes no copy of them at all.
 *
 * The slow parts (generating a key, an RSA decryption) run with no lock held: the call
 * takes a reference to the EVP_PKEY under the read lock, so destroying the slot
 * meanwhile only drops the slot's own reference, and a write lock waiting behind the
 * read lock is never held up by a 4096-bit private-key operation.
 *
 * Every decryption failure is the one status KP_E_AUTH. OpenSSL's OAEP decoding does not
 * say why it failed, and neither does this file: telling a bad OAEP block from a bad
 * key wrap, or a wrong length of ciphertext from either, would hand out an oracle.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "kp_internal.h"

/* Version 1 sealed PKCS #1 DER; version 2 seals the private key record. */
#define KP_SEALED_VERSION 0x02
#define KP_LABEL_BYTES 8
#define KP_SEALED_OVERHEAD (1 + KP_IV_BYTES + KP_TAG_BYTES)
/* KWP's shortest output is two 64-bit blocks; it adds one block of integrity check. */
#define KP_KWP_MIN_BYTES 16
#define KP_KWP_BLOCK 8
#define KP_RSA_E 65537u

/* Separates a sealed wrapping key from a sealed AES key ("kp-slot1") under the same
 * partition key: neither can be opened as the other. The digit follows the version, so
 * a version byte changed by hand does not authenticate either. */
static const uint8_t WRAPPING_LABEL[KP_LABEL_BYTES] = {'k', 'p', '-', 'w', 'r', 's', 'a', '2'};

struct kp_rsa_key {
    EVP_PKEY *pkey;
    uint8_t *spki; /* DER SubjectPublicKeyInfo: public, so plain heap */
    size_t spki_len;
};

void kp_rsa_key_free(kp_rsa_key *key)
{
    if (key == NULL)
        return;
    EVP_PKEY_free(key->pkey); /* RSA_free clears the private numbers */
    free(key->spki);
    free(key);
}

static int rsa_bits_ok(size_t bits)
{
    return bits == 2048 || bits == 3072 || bits == 4096;
}

/* --- locked scratch memory ------------------------------------------------------------
 * Imports are rare and an RSA decryption costs far more than mapping a page, so each
 * call maps its own pages rather than taking cells from the HSM's arena (which would
 * need the write lock around the RSA work). */

typedef struct kp_scratch {
    uint8_t *bytes;
    size_t len;
} kp_scratch;

static kp_status scratch_begin(kp_scratch *s, size_t need)
{
    long page = sysconf(_SC_PAGESIZE);
    size_t unit = page > 0 ? (size_t)page : 4096;
    s->len = (need + unit - 1) / unit * unit; /* need is a few KiB: no overflow */
    s->bytes = kp_locked_map(s->len, 1);
    return s->bytes != NULL ? KP_OK : KP_E_NOMEM;
}

static void scratch_end(kp_scratch *s)
{
    kp_locked_unmap(s->bytes, s->len); /* cleanses first */
    s->bytes = NULL;
    s->len = 0;
}

/* --- building blocks --------------------------------------------------------------------- */

/* Wrap pkey (taken over, freed on failure) with its public key's DER. */
static kp_status rsa_key_new(EVP_PKEY *pkey, kp_rsa_key **out)
{
    kp_rsa_key *key = calloc(1, sizeof(*key));
    if (key == NULL) {
        EVP_PKEY_free(pkey);
        return KP_E_NOMEM;
    }
    key->pkey = pkey;
    int len = i2d_PUBKEY(pkey, NULL);
    if (len <= 0 || len > KP_MAX_WRAPPING_PUBLIC_BYTES) {
        kp_rsa_key_free(key);
        return kp_fail(KP_E_CRYPTO);
    }
    key->spki = malloc((size_t)len);
    if (key->spki == NULL) {
        kp_rsa_key_free(key);
        return KP_E_NOMEM;
    }
    uint8_t *p = key->spki;
    if (i2d_PUBKEY(pkey, &p) != len) {
        kp_rsa_key_free(key);
        return kp_fail(KP_E_CRYPTO);
    }
    key->spki_len = (size_t)len;
    *out = key;
    return KP_OK;
}

/* Put a wrapping key (taken over, freed on failure) into a new slot of the partition. */
static kp_status wrapping_enter(kp_hsm *hsm, kp_partition partition, kp_rsa_key *key,
                                kp_handle *out)
{
    kp_slot *slot = calloc(1, sizeof(*slot));
    if (slot == NULL) {
        kp_rsa_key_free(key);
        return KP_E_NOMEM;
    }
    kp_ctx_pool_init(&slot->pool);
    slot->rsa = key;
    pthread_rwlock_wrlock(&hsm->lock);
    kp_status st = kp_slot_enter(hsm, partition, slot, out);
    pthread_rwlock_unlock(&hsm->lock);
    return st;
}

/* The wrapping key of a live partition; under either lock. */
static kp_status wrapping_find(const kp_hsm *hsm, kp_partition partition, kp_handle handle,
                               const kp_rsa_key **out)
{
    if (kp_part_find(hsm, partition) == NULL)
        return KP_E_PARTITION_GONE;
    const kp_slot *slot = NULL;
    kp_status st = kp_slot_find(hsm, partition, handle, &slot);
    if (st != KP_OK)
        return st;
    if (slot->rsa == NULL)
        return KP_E_KEY_TYPE;
    *out = slot->rsa;
    return KP_OK;
}

/* A working copy of the partition's key schedule, to use after the lock is released. */
static kp_status partition_context(const kp_part *part, EVP_CIPHER_CTX **out)
{
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    if (ctx == NULL)
        return KP_E_NOMEM;
    if (EVP_CIPHER_CTX_copy(ctx, part->keyed) != 1) {
        EVP_CIPHER_CTX_free(ctx);
        return kp_fail(KP_E_CRYPTO);
    }
    *out = ctx;
    return KP_OK;
}

/* Take, under the read lock, a reference to the wrapping key's EVP_PKEY to use after the
 * lock is released, and (when part_ctx is not NULL) the partition's key schedule. On
 * failure the caller holds neither. */
static kp_status wrapping_acquire(kp_hsm *hsm, kp_partition partition, kp_handle handle,
                                  EVP_PKEY **pkey, EVP_CIPHER_CTX **part_ctx)
{
    *pkey = NULL;
    if (part_ctx != NULL)
        *part_ctx = NULL;
    pthread_rwlock_rdlock(&hsm->lock);
    const kp_rsa_key *key = NULL;
    kp_status st = wrapping_find(hsm, partition, handle, &key);
    if (st == KP_OK && EVP_PKEY_up_ref(key->pkey) != 1)
        st = kp_fail(KP_E_CRYPTO);
    if (st == KP_OK) {
        *pkey = key->pkey;
        /* The reference comes first: a copied schedule left behind by a failure after it
         * would be the partition key's, freed by nobody. */
        if (part_ctx != NULL)
            st = partition_context(kp_part_find(hsm, partition), part_ctx);
        if (st != KP_OK) {
            EVP_PKEY_free(*pkey); /* only ours: the slot keeps its own reference */
            *pkey = NULL;
        }
    }
    pthread_rwlock_unlock(&hsm->lock);
    return st;
}

static size_t context_aad(uint8_t *aad, const uint8_t *context, size_t context_len)
{
    memcpy(aad, WRAPPING_LABEL, KP_LABEL_BYTES);
    if (context_len)
        memcpy(aad + KP_LABEL_BYTES, context, context_len);
    return KP_LABEL_BYTES + context_len;
}

/* RSAES-OAEP decryption (RFC 8017 section 7.1.2) with hash and MGF1 hash md and an empty
 * label. out must hold the modulus length. */
static kp_status oaep_decrypt(EVP_PKEY *pkey, const char *md, const uint8_t *in,
                              size_t in_len, uint8_t *out, size_t out_size, size_t *out_len)
{
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
    if (ctx == NULL)
        return kp_fail(KP_E_NOMEM);
    kp_status st = KP_OK;
    if (EVP_PKEY_decrypt_init(ctx) != 1 ||
        EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_OAEP_PADDING) != 1 ||
        EVP_PKEY_CTX_set_rsa_oaep_md_name(ctx, md, NULL) != 1 ||
        EVP_PKEY_CTX_set_rsa_mgf1_md_name(ctx, md, NULL) != 1) {
        st = KP_E_CRYPTO;
    } else {
        size_t n = out_size;
        if (EVP_PKEY_decrypt(ctx, out, &n, in, in_len) == 1)
            *out_len = n;
        else
            st = KP_E_AUTH;
    }
    EVP_PKEY_CTX_free(ctx);
    if (st != KP_OK)
        OPENSSL_cleanse(out, out_size);
    return kp_fail(st);
}

/* AES key unwrap with padding (NIST SP 800-38F section 6.3 KWP-AD; RFC 5649 section 4.2)
 * under a 256-bit KEK. out must hold in_len + KP_KWP_BLOCK bytes: EVP_DecryptUpdate may
 * write in_len plus one block, and OpenSSL cleanses in_len bytes of out on failure. */
static kp_status kwp_unwrap(const uint8_t *kek, const uint8_t *in, size_t in_len,
                            uint8_t *out, size_t *out_len)
{
    if (in_len < KP_KWP_MIN_BYTES || in_len > KP_MAX_IMPORT_BYTES || in_len % KP_KWP_BLOCK)
        return KP_E_AUTH;
    EVP_CIPHER *cipher = EVP_CIPHER_fetch(NULL, "AES-256-WRAP-PAD", NULL);
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    kp_status st = KP_OK;
    int n = 0, tail = 0;
    if (cipher == NULL || ctx == NULL) {
        st = cipher == NULL ? KP_E_CRYPTO : KP_E_NOMEM;
    } else {
        EVP_CIPHER_CTX_set_flags(ctx, EVP_CIPHER_CTX_FLAG_WRAP_ALLOW);
        if (EVP_DecryptInit_ex2(ctx, cipher, kek, NULL, NULL) != 1)
            st = KP_E_CRYPTO;
        else if (EVP_DecryptUpdate(ctx, out, &n, in, (int)in_len) != 1 ||
                 EVP_DecryptFinal_ex(ctx, out + n, &tail) != 1)
            st = KP_E_AUTH;
    }
    EVP_CIPHER_CTX_free(ctx); /* the wrap provider cleanses its key schedule */
    EVP_CIPHER_free(cipher);
    if (st != KP_OK) {
        OPENSSL_cleanse(out, in_len + KP_KWP_BLOCK);
        return kp_fail(st);
    }
    *out_len = (size_t)n + (size_t)tail;
    return KP_OK;
}

/* The plaintext key material of EncryptedKeyMaterial, in scratch (modulus + in_len +
 * KP_KWP_BLOCK bytes): its first modulus bytes take the OAEP output, the rest the KWP
 * output. */
static kp_status unwrap_material(EVP_PKEY *pkey, const char *md, int key_wrap,
                                 const uint8_t *in, size_t in_len, uint8_t *scratch,
                                 size_t modulus, const uint8_t **material,
                                 size_t *material_len)
{
    if (!key_wrap) {
        if (in_len != modulus)
            return KP_E_AUTH;
        *material = scratch;
        return oaep_decrypt(pkey, md, in, in_len, scratch, modulus, material_len);
    }
    /* The RSA part is exactly one modulus long (PKCS #11 CKM_RSA_AES_KEY_WRAP). */
    if (in_len < modulus + KP_KWP_MIN_BYTES)
        return KP_E_AUTH;
    size_t ephemeral_len = 0;
    kp_status st = oaep_decrypt(pkey, md, in, modulus, scratch, modulus, &ephemeral_len);
    if (st == KP_OK && ephemeral_len != KP_KEY_BYTES)
        st = KP_E_AUTH; /* AWS's ephemeral key is AES-256; anything else does not unwrap */
    if (st == KP_OK) {
        *material = scratch + modulus;
        st = kwp_unwrap(scratch, in + modulus, in_len - modulus, scratch + modulus,
                        material_len);
    }
    return st;
}

/* --- the private key record ------------------------------------------------------------
 * What kp_wrapping_key_export seals: the eight numbers of a two-prime RSA key, each as a
 * two-byte big-endian length and then the number, big-endian, left-padded with zeros to
 * a width that depends only on the modulus length k (KP_RSA_E_BYTES for e, k for n and
 * d, k / 2 for the primes and the CRT values), so the record's length gives away only
 * the key's size. 2 * 8 + 2k + 4 + 5k / 2 bytes: 1,172 for 2048 bits, 2,324 for 4096.
 *
 * OSSL_PARAM passes a number in the host's byte order, and this file points each
 * parameter straight at its place in the record, in locked memory: export lets the
 * provider write the numbers there and turns them big-endian in place; open turns them
 * back in place and hands the same memory to EVP_PKEY_fromdata. No BIGNUM, DER or
 * parameter buffer of this file's ever holds them. */

#define KP_RSA_NUMBERS 8
#define KP_RSA_E_BYTES 4

static const char *const RSA_NUMBER_NAMES[KP_RSA_NUMBERS] = {
    OSSL_PKEY_PARAM_RSA_N,         OSSL_PKEY_PARAM_RSA_E,
    OSSL_PKEY_PARAM_RSA_D,         OSSL_PKEY_PARAM_RSA_FACTOR1,
    OSSL_PKEY_PARAM_RSA_FACTOR2,   OSSL_PKEY_PARAM_RSA_EXPONENT1,
    OSSL_PKEY_PARAM_RSA_EXPONENT2, OSSL_PKEY_PARAM_RSA_COEFFICIENT1,
};

static size_t rsa_number_width(size_t index, size_t modulus)
{
    if (index == 1)
        return KP_RSA_E_BYTES;
    return index == 0 || index == 2 ? modulus : modulus / 2;
}

static size_t private_record_len(size_t modulus)
{
    size_t len = 0;
    for (size_t i = 0; i < KP_RSA_NUMBERS; i++)
        len += 2 + rsa_number_width(i, modulus);
    return len;
}

/* Between the host's byte order and big-endian: a reversal on a little-endian host. */
static void swap_host_big_endian(uint8_t *number, size_t len)
{
    const union {
        uint16_t word;
        uint8_t bytes[2];
    } probe = {1};
    if (probe.bytes[0] != 1)
        return;
    for (size_t i = 0, j = len - 1; i < j; i++, j--) {
        uint8_t t = number[i];
        number[i] = number[j];
        number[j] = t;
    }
}

/* Write pkey's record into record (private_record_len(modulus) bytes of locked scratch,
 * which the caller cleanses, whatever this returns). */
static kp_status private_record_write(EVP_PKEY *pkey, size_t modulus, uint8_t *record)
{
    OSSL_PARAM params[KP_RSA_NUMBERS + 1];
    size_t off = 0;
    for (size_t i = 0; i < KP_RSA_NUMBERS; i++) {
        size_t width = rsa_number_width(i, modulus);
        record[off] = (uint8_t)(width >> 8);
        record[off + 1] = (uint8_t)width;
        params[i] = OSSL_PARAM_construct_BN(RSA_NUMBER_NAMES[i], record + off + 2, width);
        off += 2 + width;
    }
    params[KP_RSA_NUMBERS] = OSSL_PARAM_construct_end();
    /* A number wider than its place (a third prime, an unbalanced one) fails here. */
    if (EVP_PKEY_get_params(pkey, params) != 1)
        return KP_E_CRYPTO;
    for (size_t i = 0; i < KP_RSA_NUMBERS; i++) {
        const OSSL_PARAM *param = &params[i];
        if (!OSSL_PARAM_modified(param) || param->return_size != param->data_size)
            return KP_E_CRYPTO;
        swap_host_big_endian(param->data, param->data_size);
    }
    return KP_OK;
}

/* The RSA key pair of a record this HSM sealed, so anything unexpected in it is the
 * HSM's own fault. The numbers are turned to host order in place, in the caller's locked
 * scratch, which the caller cleanses. */
static kp_status private_record_read(uint8_t *record, size_t record_len, EVP_PKEY **out)
{
    OSSL_PARAM params[KP_RSA_NUMBERS + 1];
    size_t off = 0;
    for (size_t i = 0; i < KP_RSA_NUMBERS; i++) {
        if (!kp_in_range(off, 2, record_len))
            return KP_E_CRYPTO;
        size_t width = (size_t)record[off] << 8 | record[off + 1];
        off += 2;
        if (width == 0 || !kp_in_range(off, width, record_len))
            return KP_E_CRYPTO;
        swap_host_big_endian(record + off, width);
        params[i] = OSSL_PARAM_construct_BN(RSA_NUMBER_NAMES[i], record + off, width);
        off += width;
    }
    if (off != record_len)
        return KP_E_CRYPTO;
    params[KP_RSA_NUMBERS] = OSSL_PARAM_construct_end();
    EVP_PKEY *pkey = NULL;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
    int ok = ctx != NULL && EVP_PKEY_fromdata_init(ctx) == 1 &&
             EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_KEYPAIR, params) == 1 &&
             rsa_bits_ok((size_t)EVP_PKEY_get_bits(pkey)) &&
             private_record_len((size_t)EVP_PKEY_get_size(pkey)) == record_len;
    EVP_PKEY_CTX_free(ctx);
    if (!ok) {
        EVP_PKEY_free(pkey);
        return KP_E_CRYPTO;
    }
    *out = pkey;
    return KP_OK;
}

/* --- the entry points -------------------------------------------------------------------- */

kp_status kp_wrapping_key_generate(kp_hsm *hsm, kp_partition partition, unsigned bits,
                                   kp_handle *out)
{
    if (hsm == NULL || out == NULL)
        return KP_E_ARGUMENT;
    if (!rsa_bits_ok(bits))
        return KP_E_LENGTH;
    /* Generating takes up to seconds: refuse a dead partition before, not after. */
    pthread_rwlock_rdlock(&hsm->lock);
    int live = kp_part_find(hsm, partition) != NULL;
    pthread_rwlock_unlock(&hsm->lock);
    if (!live)
        return KP_E_PARTITION_GONE;

    size_t nbits = bits;
    unsigned int e = KP_RSA_E;
    OSSL_PARAM params[3] = {
        OSSL_PARAM_construct_size_t(OSSL_PKEY_PARAM_RSA_BITS, &nbits),
        OSSL_PARAM_construct_uint(OSSL_PKEY_PARAM_RSA_E, &e),
        OSSL_PARAM_construct_end(),
    };
    EVP_PKEY *pkey = NULL;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
    int ok = ctx != NULL && EVP_PKEY_keygen_init(ctx) == 1 &&
             EVP_PKEY_CTX_set_params(ctx, params) == 1 && EVP_PKEY_generate(ctx, &pkey) == 1;
    EVP_PKEY_CTX_free(ctx);
    if (!ok) {
        EVP_PKEY_free(pkey);
        return kp_fail(KP_E_CRYPTO);
    }
    kp_rsa_key *key = NULL;
    kp_status st = rsa_key_new(pkey, &key);
    if (st == KP_OK)
        st = wrapping_enter(hsm, partition, key, out);
    return kp_fail(st);
}

kp_status kp_wrapping_key_public(kp_hsm *hsm, kp_partition partition, kp_handle handle,
                                 uint8_t *out, size_t out_size, size_t *out_len)
{
    if (hsm == NULL || out == NULL || out_len == NULL)
        return KP_E_ARGUMENT;
    *out_len = 0;
    pthread_rwlock_rdlock(&hsm->lock);
    const kp_rsa_key *key = NULL;
    kp_status st = wrapping_find(hsm, partition, handle, &key);
    if (st == KP_OK && out_size < key->spki_len)
        st = KP_E_BUFFER;
    if (st == KP_OK) {
        memcpy(out, key->spki, key->spki_len);
        *out_len = key->spki_len;
    }
    pthread_rwlock_unlock(&hsm->lock);
    return st;
}

kp_status kp_wrapping_key_export(kp_hsm *hsm, kp_partition partition, kp_handle handle,
                                 const uint8_t *context, size_t context_len, uint8_t *out,
                                 size_t out_size, size_t *out_len)
{
    if (hsm == NULL || out == NULL || out_len == NULL || (context == NULL && context_len))
        return KP_E_ARGUMENT;
    *out_len = 0;
    if (context_len > KP_MAX_CONTEXT_BYTES)
        return KP_E_LENGTH;
    EVP_PKEY *pkey = NULL;
    EVP_CIPHER_CTX *ctx = NULL;
    kp_status st = wrapping_acquire(hsm, partition, handle, &pkey, &ctx);
    if (st != KP_OK)
        return st;

    int size = EVP_PKEY_get_size(pkey);
    size_t record_len = size > 0 ? private_record_len((size_t)size) : 0;
    kp_scratch record = {NULL, 0};
    if (record_len == 0 || record_len + KP_SEALED_OVERHEAD > KP_MAX_WRAPPING_KEY_BYTES)
        st = kp_fail(KP_E_CRYPTO);
    else if (out_size < record_len + KP_SEALED_OVERHEAD)
        st = KP_E_BUFFER; /* refused before a private number is read */
    if (st == KP_OK)
        st = scratch_begin(&record, record_len);
    if (st == KP_OK)
        st = private_record_write(pkey, (size_t)size, record.bytes);
    kp_draw iv = {NULL, 0, NULL};
    if (st == KP_OK)
        st = kp_draw_begin(&iv, KP_IV_BYTES);
    if (st == KP_OK) {
        uint8_t aad[KP_LABEL_BYTES + KP_MAX_CONTEXT_BYTES];
        size_t aad_len = context_aad(aad, context, context_len);
        uint8_t *sealed = out + 1 + KP_IV_BYTES;
        out[0] = KP_SEALED_VERSION;
        memcpy(out + 1, iv.bytes, KP_IV_BYTES);
        st = kp_seal_item(ctx, out + 1, KP_IV_BYTES, aad, aad_len, record.bytes, record_len,
                          sealed, sealed + record_len, KP_TAG_BYTES);
        if (st == KP_OK)
            *out_len = record_len + KP_SEALED_OVERHEAD;
    }
    kp_draw_end(&iv);
    scratch_end(&record);
    EVP_CIPHER_CTX_free(ctx);
    EVP_PKEY_free(pkey);
    return kp_fail(st);
}

kp_status kp_wrapping_key_open(kp_hsm *hsm, kp_partition partition, const uint8_t *wrapped,
                               size_t wrapped_len, const uint8_t *context, size_t context_len,
                               kp_handle *out)
{
    if (hsm == NULL || out == NULL || wrapped == NULL || (context == NULL && context_len))
        return KP_E_ARGUMENT;
    if (context_len > KP_MAX_CONTEXT_BYTES)
        return KP_E_LENGTH;
    if (wrapped_len <= KP_SEALED_OVERHEAD || wrapped_len > KP_MAX_WRAPPING_KEY_BYTES ||
        wrapped[0] != KP_SEALED_VERSION)
        return KP_E_ARGUMENT;

    EVP_CIPHER_CTX *ctx = NULL;
    pthread_rwlock_rdlock(&hsm->lock);
    const kp_part *part = kp_part_find(hsm, partition);
    kp_status st = part == NULL ? KP_E_PARTITION_GONE : partition_context(part, &ctx);
    pthread_rwlock_unlock(&hsm->lock);

    size_t record_len = wrapped_len - KP_SEALED_OVERHEAD;
    kp_scratch record = {NULL, 0};
    EVP_PKEY *pkey = NULL;
    if (st == KP_OK)
        st = scratch_begin(&record, record_len);
    if (st == KP_OK) {
        uint8_t aad[KP_LABEL_BYTES + KP_MAX_CONTEXT_BYTES];
        size_t aad_len = context_aad(aad, context, context_len);
        const uint8_t *sealed = wrapped + 1 + KP_IV_BYTES;
        st = kp_open_item(ctx, wrapped + 1, KP_IV_BYTES, aad, aad_len, sealed, record_len,
                          sealed + record_len, KP_TAG_BYTES, record.bytes);
    }
    if (st == KP_OK)
        st = private_record_read(record.bytes, record_len, &pkey);
    scratch_end(&record);
    EVP_CIPHER_CTX_free(ctx);
    kp_rsa_key *key = NULL;
    if (st == KP_OK)
        st = rsa_key_new(pkey, &key);
    if (st == KP_OK)
        st = wrapping_enter(hsm, partition, key, out);
    return kp_fail(st);
}

kp_status kp_keyslot_unwrap_import(kp_hsm *hsm, kp_partition partition,
                                   kp_handle wrapping_key, int algorithm, const uint8_t *in,
                                   size_t in_len, kp_handle *out)
{
    if (hsm == NULL || out == NULL || in == NULL)
        return KP_E_ARGUMENT;
    const char *md;
    int key_wrap;
    switch (algorithm) {
    case KP_WRAP_RSAES_OAEP_SHA_1:
        md = "SHA1", key_wrap = 0;
        break;
    case KP_WRAP_RSAES_OAEP_SHA_256:
        md = "SHA256", key_wrap = 0;
        break;
    case KP_WRAP_RSA_AES_KEY_WRAP_SHA_1:
        md = "SHA1", key_wrap = 1;
        break;
    case KP_WRAP_RSA_AES_KEY_WRAP_SHA_256:
        md = "SHA256", key_wrap = 1;
        break;
    default:
        return KP_E_ARGUMENT;
    }
    if (in_len == 0 || in_len > KP_MAX_IMPORT_BYTES)
        return KP_E_LENGTH;

    EVP_PKEY *pkey = NULL;
    kp_status st = wrapping_acquire(hsm, partition, wrapping_key, &pkey, NULL);
    if (st != KP_OK)
        return st;
    int size = EVP_PKEY_get_size(pkey);
    size_t modulus = size > 0 ? (size_t)size : 0;
    kp_scratch secret = {NULL, 0};
    const uint8_t *material = NULL;
    size_t material_len = 0;
    if (modulus == 0)
        st = kp_fail(KP_E_CRYPTO);
    if (st == KP_OK)
        st = scratch_begin(&secret, modulus + in_len + KP_KWP_BLOCK);
    if (st == KP_OK)
        st = unwrap_material(pkey, md, key_wrap, in, in_len, secret.bytes, modulus, &material,
                             &material_len);
    /* Only material that authenticated reaches this distinction, so it tells an attacker
     * nothing that the ciphertext's author did not already know. */
    if (st == KP_OK && material_len != KP_KEY_BYTES)
        st = KP_E_LENGTH;
    if (st == KP_OK) {
        pthread_rwlock_wrlock(&hsm->lock);
        st = kp_slot_add_key(hsm, partition, material, out);
        pthread_rwlock_unlock(&hsm->lock);
    }
    scratch_end(&secret);
    EVP_PKEY_free(pkey);
    return kp_fail(st);
}

kp_status kp_keyslot_material_id(kp_hsm *hsm, kp_partition partition, kp_handle handle,
                                 const uint8_t *context, size_t context_len, uint8_t *out,
                                 size_t out_size)
{
    if (hsm == NULL || out == NULL || (context == NULL && context_len))
        return KP_E_ARGUMENT;
    if (context_len > KP_MAX_CONTEXT_BYTES)
        return KP_E_LENGTH;
    if (out_size < KP_MATERIAL_ID_BYTES)
        return KP_E_BUFFER;
    static const uint8_t nothing[1] = {0};
    pthread_rwlock_rdlock(&hsm->lock);
    const kp_slot *slot = NULL;
    kp_status st = kp_part_find(hsm, partition) == NULL
                       ? KP_E_PARTITION_GONE
                       : kp_slot_lookup(hsm, partition, handle, &slot);
    if (st == KP_OK) {
        size_t len = 0;
        if (EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, slot->key, KP_KEY_BYTES,
                      context_len ? context : nothing, context_len, out, out_size,
                      &len) == NULL ||
            len != KP_MATERIAL_ID_BYTES)
            st = KP_E_CRYPTO;
    }
    pthread_rwlock_unlock(&hsm->lock);
    return kp_fail(st);
}

kp_status kp_hazmat_kwp_unwrap(const uint8_t *kek, size_t kek_len, const uint8_t *in,
                               size_t in_len, uint8_t *out, size_t out_size,
                               size_t *out_len)
{
    if (kek == NULL || in == NULL || out == NULL || out_len == NULL)
        return KP_E_ARGUMENT;
    *out_len = 0;
    if (kek_len != KP_KEY_BYTES)
        return KP_E_LENGTH;
    if (in_len < KP_KWP_MIN_BYTES || in_len > KP_MAX_IMPORT_BYTES || in_len % KP_KWP_BLOCK)
        return KP_E_AUTH;
    if (out_size < in_len - KP_KWP_BLOCK)
        return KP_E_BUFFER;
    kp_scratch plain = {NULL, 0};
    size_t len = 0;
    kp_status st = scratch_begin(&plain, in_len + KP_KWP_BLOCK);
    if (st == KP_OK)
        st = kwp_unwrap(kek, in, in_len, plain.bytes, &len);
    if (st == KP_OK) {
        memcpy(out, plain.bytes, len);
        *out_len = len;
    }
    scratch_end(&plain);
    return st;
}

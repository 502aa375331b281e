/*
 * kp.h - the whole C API of keyplane's emulated HSM.
 *
 * An HSM (kp_hsm) holds partitions; a partition holds AES-256 key slots. Partitions and
 * slots are named by opaque integers that are never reused within a process, so a stale
 * or foreign name is always detected, never aliased. Key bytes never leave this module in
 * plaintext: they are generated here, or enter wrapped and are unwrapped here, and they
 * leave only wrapped (for storage) or as the data keys that generate-data-key returns.
 *
 * Every function returns a kp_status. Batch functions return KP_OK when the call itself
 * is well formed and report each item's outcome in status[i]; bad input fails only its
 * own item, an internal fault (memory, the DRBG) fails the whole call.
 *
 * Every function is safe to call from several threads at once on the same kp_hsm; the
 * Python wrapper releases the GIL around each call.
 */
#ifndef KP_H
#define KP_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum kp_status {
    KP_OK = 0,
    KP_E_ARGUMENT = 1,        /* malformed call: NULL pointer, bad size, unknown format */
    KP_E_LENGTH = 2,          /* an input length outside its allowed range */
    KP_E_BUFFER = 3,          /* an input or output range falls outside its buffer */
    KP_E_AUTH = 4,            /* authentication failed; deliberately carries no detail */
    KP_E_SLOT_GONE = 5,       /* the handle names no live slot of this HSM */
    KP_E_WRONG_PARTITION = 6, /* the handle belongs to another partition or HSM */
    KP_E_PARTITION_GONE = 7,  /* the partition id names no live partition of this HSM */
    KP_E_CAPACITY = 8,        /* a table or counter is full */
    KP_E_NOMEM = 9,           /* memory allocation failed */
    KP_E_RANDOM = 10,         /* the DRBG failed to produce bytes */
    KP_E_CRYPTO = 11,         /* an unexpected libcrypto failure */
    KP_E_KEY_TYPE = 12        /* the handle names a slot of another kind: an RSA wrapping
                                 key where an AES key is wanted, or the reverse */
} kp_status;

typedef uint64_t kp_handle;    /* a key slot; 0 is never a valid handle */
typedef uint32_t kp_partition; /* a partition of one HSM; 0 is never valid */
typedef struct kp_hsm kp_hsm;

/* Sizes. Every sealed item is IV || ciphertext || tag. */
#define KP_KEY_BYTES 32
#define KP_IV_BYTES 12
#define KP_TAG_BYTES 16
#define KP_SEAL_OVERHEAD 28              /* KP_IV_BYTES + KP_TAG_BYTES */
#define KP_MAX_INPUT_BYTES 65536         /* largest plaintext one item may carry */
#define KP_MAX_AAD_BYTES 65536           /* largest AAD one item may carry */
#define KP_MAX_DATA_KEY_BYTES 1024       /* largest data key generate-data-key makes */
#define KP_MAX_CONTEXT_BYTES 1024        /* largest AAD bound into a wrapped key */
#define KP_WRAPPED_KEY_BYTES 61          /* version || IV || wrapped key || tag */
#define KP_MAX_BATCH 1048576             /* most items one batch call may carry */

/* --- the HSM ------------------------------------------------------------------------ */

/* Create an HSM whose partition keys are wrapped under root_key (KP_KEY_BYTES bytes).
 * The root key is copied into locked memory; the caller should cleanse its copy. */
kp_status kp_hsm_new(const uint8_t *root_key, size_t root_key_len, kp_hsm **out);

/* Create another HSM under the same root key, which never leaves C to get there: a
 * dedicated cluster beside the shared fleet. */
kp_status kp_hsm_new_sibling(const kp_hsm *hsm, kp_hsm **out);

/* Destroy an HSM, cleansing every key it holds. No call may be in flight on it. */
void kp_hsm_free(kp_hsm *hsm);

/* 1 when every page of key memory so far could be locked against swapping, 0 once any
 * could not (the OS refused mlock, for example under RLIMIT_MEMLOCK). Not fatal. */
int kp_memory_locked(void);

/* Counts of live objects, for tests and metrics. */
size_t kp_hsm_partition_count(const kp_hsm *hsm);
size_t kp_hsm_slot_count(const kp_hsm *hsm);

/* --- partitions --------------------------------------------------------------------- */

/* Create a partition with a fresh wrapping key generated inside the HSM. */
kp_status kp_partition_create(kp_hsm *hsm, kp_partition *out);

/* Recreate a partition from its key as kp_partition_export wrote it. */
kp_status kp_partition_open(kp_hsm *hsm, const uint8_t *wrapped, size_t wrapped_len,
                            kp_partition *out);

/* Write the partition's wrapping key, wrapped under the root key, KP_WRAPPED_KEY_BYTES. */
kp_status kp_partition_export(kp_hsm *hsm, kp_partition partition, uint8_t *out,
                              size_t out_size, size_t *out_len);

/* Destroy a partition and every slot in it. */
kp_status kp_partition_destroy(kp_hsm *hsm, kp_partition partition);

/* --- root key ------------------------------------------------------------------------
 * Rotating the root key re-wraps partition keys and nothing else: open partitions keep
 * their keys, slots and handles, so no ciphertext notices. The caller stores every
 * partition key re-wrapped under the new root key first (kp_partition_rewrap_batch),
 * and switches the HSM over (kp_hsm_set_root_key) only once that is durable. */

/* Re-wrap n partition keys as kp_partition_export wrote them, lying back to back in in
 * (in_size = n * KP_WRAPPED_KEY_BYTES), from the HSM's root key to root_key
 * (KP_KEY_BYTES): item i goes to out[i * KP_WRAPPED_KEY_BYTES], its outcome to
 * status[i] (KP_E_AUTH: not wrapped under the HSM's root key, or altered). Each key is
 * unwrapped into locked memory and cleansed; batches run on meanwhile. */
kp_status kp_partition_rewrap_batch(kp_hsm *hsm, size_t n, const uint8_t *in,
                                    size_t in_size, const uint8_t *root_key,
                                    size_t root_key_len, uint8_t *out, size_t out_size,
                                    kp_status *status);

/* Replace the HSM's root key with root_key (KP_KEY_BYTES), cleansing the old one. Later
 * exports, opens and siblings use the new key; open partitions are untouched. Waits for
 * the calls in flight on the HSM, like creating a partition. */
kp_status kp_hsm_set_root_key(kp_hsm *hsm, const uint8_t *root_key, size_t root_key_len);

/* --- key slots ---------------------------------------------------------------------- */

/* Generate a fresh AES-256 key inside the partition. */
kp_status kp_keyslot_generate(kp_hsm *hsm, kp_partition partition, kp_handle *out);

/* Unwrap a key that kp_keyslot_export wrote (under this partition's key, with the same
 * context bytes) into a new slot. A wrong key or context fails with KP_E_AUTH. */
kp_status kp_keyslot_import(kp_hsm *hsm, kp_partition partition, const uint8_t *wrapped,
                            size_t wrapped_len, const uint8_t *context, size_t context_len,
                            kp_handle *out);

/* Write the slot's key wrapped under its partition's key, binding context (0 ..
 * KP_MAX_CONTEXT_BYTES bytes, e.g. the key id and version) as AAD. */
kp_status kp_keyslot_export(kp_hsm *hsm, kp_partition partition, kp_handle handle,
                            const uint8_t *context, size_t context_len, uint8_t *out,
                            size_t out_size, size_t *out_len);

/* Destroy a slot, cleansing its key. */
kp_status kp_keyslot_destroy(kp_hsm *hsm, kp_partition partition, kp_handle handle);

/* --- batches -------------------------------------------------------------------------
 * Item i uses the slot handles[i]. When scope is not 0, an item whose slot is not in the
 * partition scope fails with KP_E_WRONG_PARTITION. Inputs are in[in_off[i] ..
 * +in_len[i]) and aad[aad_off[i] .. +aad_len[i]); the output of item i starts at
 * out[out_off[i]]. Every range is checked against in_size, aad_size and out_size.
 *
 * A NULL offset array means that column lies back to back from offset 0: item i starts
 * where item i-1 ends. For outputs, every item takes its output size, failed or not:
 * encrypt in_len + KP_SEAL_OVERHEAD; decrypt in_len - KP_SEAL_OVERHEAD (0 if in_len is
 * at most KP_SEAL_OVERHEAD); generate-data-key 2 * key_len + KP_SEAL_OVERHEAD (0 if
 * key_len is out of range). NULL aad_off and aad_len together mean no AAD at all. */

/* Seal: out = IV || ct || tag, in_len[i] + KP_SEAL_OVERHEAD bytes; in_len 1 ..
 * KP_MAX_INPUT_BYTES; a fresh random IV per item. */
kp_status kp_encrypt_batch(kp_hsm *hsm, kp_partition scope, size_t n,
                           const kp_handle *handles, const uint8_t *in, size_t in_size,
                           const size_t *in_off, const size_t *in_len, const uint8_t *aad,
                           size_t aad_size, const size_t *aad_off, const size_t *aad_len,
                           uint8_t *out, size_t out_size, const size_t *out_off,
                           kp_status *status);

/* Open: in = IV || ct || tag; out = plaintext, in_len[i] - KP_SEAL_OVERHEAD bytes. */
kp_status kp_decrypt_batch(kp_hsm *hsm, kp_partition scope, size_t n,
                           const kp_handle *handles, const uint8_t *in, size_t in_size,
                           const size_t *in_off, const size_t *in_len, const uint8_t *aad,
                           size_t aad_size, const size_t *aad_off, const size_t *aad_len,
                           uint8_t *out, size_t out_size, const size_t *out_off,
                           kp_status *status);

/* Generate data keys: item i makes key_len[i] (1 .. KP_MAX_DATA_KEY_BYTES) random bytes
 * and writes key || IV || sealed key || tag, 2 * key_len[i] + KP_SEAL_OVERHEAD bytes. */
kp_status kp_generate_data_key_batch(kp_hsm *hsm, kp_partition scope, size_t n,
                                     const kp_handle *handles, const size_t *key_len,
                                     const uint8_t *aad, size_t aad_size,
                                     const size_t *aad_off, const size_t *aad_len,
                                     uint8_t *out, size_t out_size, const size_t *out_off,
                                     kp_status *status);

/* Single items: exactly item 0 of a one-item batch (the batch functions do the work),
 * without descriptor arrays, because marshalling those from Python costs more than
 * sealing a small item. Returns the call's status if the call failed, else the item's. */
kp_status kp_encrypt_one(kp_hsm *hsm, kp_partition scope, kp_handle handle,
                         const uint8_t *in, size_t in_len, const uint8_t *aad,
                         size_t aad_len, uint8_t *out, size_t out_size);
kp_status kp_decrypt_one(kp_hsm *hsm, kp_partition scope, kp_handle handle,
                         const uint8_t *in, size_t in_len, const uint8_t *aad,
                         size_t aad_len, uint8_t *out, size_t out_size);
kp_status kp_generate_data_key_one(kp_hsm *hsm, kp_partition scope, kp_handle handle,
                                   size_t key_len, const uint8_t *aad, size_t aad_len,
                                   uint8_t *out, size_t out_size);

/* 1 when st means the HSM itself failed (the whole batch fails), 0 for an item's own
 * error or KP_OK. */
int kp_status_is_fault(kp_status st);

/* Fill out with n bytes from the HSM's random source (the KMS GenerateRandom). */
kp_status kp_random_bytes(uint8_t *out, size_t n);

/* --- importing key material ----------------------------------------------------------
 * AWS KMS's GetParametersForImport / ImportKeyMaterial. A wrapping key is an RSA key pair
 * held in a slot of its own kind: it shares the handle namespace, partitions, counts
 * (kp_hsm_slot_count) and kp_keyslot_destroy with AES slots, but any AES operation
 * (batches, kp_keyslot_export, kp_keyslot_material_id) refuses it with KP_E_KEY_TYPE,
 * as the calls below refuse an AES slot where a wrapping key is wanted. Its private
 * half leaves C only sealed under the partition's key. While the slot lives, the private
 * numbers are in OpenSSL's own, unlocked heap (OpenSSL allocates them), cleansed when the
 * key is freed. */

/* Wrapping algorithms of AWS KMS GetParametersForImport. */
#define KP_WRAP_RSAES_OAEP_SHA_1 1
#define KP_WRAP_RSAES_OAEP_SHA_256 2
#define KP_WRAP_RSA_AES_KEY_WRAP_SHA_1 3
#define KP_WRAP_RSA_AES_KEY_WRAP_SHA_256 4

#define KP_MATERIAL_ID_BYTES 32              /* what kp_keyslot_material_id writes */
#define KP_MAX_WRAPPING_PUBLIC_BYTES 1024    /* a 4096-bit SubjectPublicKeyInfo fits */
#define KP_MAX_WRAPPING_KEY_BYTES 4096       /* a sealed 4096-bit private key fits */
#define KP_MAX_IMPORT_BYTES 6144             /* ImportKeyMaterial's EncryptedKeyMaterial */

/* Generate an RSA key pair (bits 2048, 3072 or 4096, else KP_E_LENGTH; e = 65537) inside
 * the partition: a wrapping key slot. Slow (up to seconds for 4096 bits); no lock is held
 * while the key is generated. */
kp_status kp_wrapping_key_generate(kp_hsm *hsm, kp_partition partition, unsigned bits,
                                   kp_handle *out);

/* The public key as DER SubjectPublicKeyInfo (what AWS returns as PublicKey), at most
 * KP_MAX_WRAPPING_PUBLIC_BYTES; KP_E_BUFFER if out_size is smaller than it. */
kp_status kp_wrapping_key_public(kp_hsm *hsm, kp_partition partition, kp_handle handle,
                                 uint8_t *out, size_t out_size, size_t *out_len);

/* The private key sealed under the partition's key, so the store can keep it for the
 * import token's 24 hours: version (2) || IV (12) || AES-256-GCM(record) || tag (16), with
 * "kp-wrsa2" || context (0 .. KP_MAX_CONTEXT_BYTES) as AAD. The record holds n, e, d, p,
 * q, dP, dQ and qInv, each a 2-byte big-endian length and the number big-endian,
 * zero-padded to 4 bytes for e, the modulus length k for n and d, k / 2 for the rest:
 * 1,201 bytes sealed for 2048 bits, 1,777 for 3072, 2,353 for 4096 (at most
 * KP_MAX_WRAPPING_KEY_BYTES; KP_E_BUFFER, before any private number is read, if out_size
 * is smaller). OpenSSL writes the numbers straight into locked memory, through
 * OSSL_PARAMs pointing there, and they are sealed from there. */
kp_status kp_wrapping_key_export(kp_hsm *hsm, kp_partition partition, kp_handle handle,
                                 const uint8_t *context, size_t context_len, uint8_t *out,
                                 size_t out_size, size_t *out_len);

/* Reopen what kp_wrapping_key_export wrote, into a new wrapping key slot; the record is
 * opened into locked memory and the key built from it there. Another partition's key,
 * another context or any alteration -> KP_E_AUTH; a length or version no export can have
 * -> KP_E_ARGUMENT (so is version 1, the earlier format that sealed PKCS #1 DER). */
kp_status kp_wrapping_key_open(kp_hsm *hsm, kp_partition partition, const uint8_t *wrapped,
                               size_t wrapped_len, const uint8_t *context, size_t context_len,
                               kp_handle *out);

/* Unwrap AWS's EncryptedKeyMaterial (1 .. KP_MAX_IMPORT_BYTES bytes, else KP_E_LENGTH)
 * with the wrapping key into a NEW AES-256 slot of the same partition.
 * KP_WRAP_RSAES_OAEP_SHA_x: RSAES-OAEP (hash x, MGF1 with hash x, empty label) of the
 * material. KP_WRAP_RSA_AES_KEY_WRAP_SHA_x: RSAES-OAEP (likewise) of an ephemeral AES-256
 * key, exactly modulus-length bytes, followed by that key's AES key wrap with padding
 * (RFC 5649, NIST SP 800-38F KWP) of the material. Any decryption failure -> KP_E_AUTH,
 * with no detail (no padding oracle; a memory failure inside OpenSSL's decryption reads
 * the same, as nothing here tells it apart); material that unwraps but is not
 * KP_KEY_BYTES -> KP_E_LENGTH; an unknown algorithm -> KP_E_ARGUMENT. This call writes
 * the material and
 * the ephemeral key only into locked memory, cleansed before it returns; OpenSSL's own
 * temporaries inside the RSA decryption and the key unwrap (the decrypted integer, the
 * OAEP block, the key wrap's key schedule) are ordinary unlocked heap, which OpenSSL
 * cleanses before freeing. No lock is held during the RSA decryption. */
kp_status kp_keyslot_unwrap_import(kp_hsm *hsm, kp_partition partition,
                                   kp_handle wrapping_key, int algorithm, const uint8_t *in,
                                   size_t in_len, kp_handle *out);

/* HMAC-SHA-256 keyed with the AES slot's key over context (0 .. KP_MAX_CONTEXT_BYTES, e.g.
 * the KMS key id): a KP_MATERIAL_ID_BYTES identifier of the material that reveals nothing
 * of it, so KMS can tell whether re-imported material is the same. out_size must be at
 * least KP_MATERIAL_ID_BYTES. */
kp_status kp_keyslot_material_id(kp_hsm *hsm, kp_partition partition, kp_handle handle,
                                 const uint8_t *context, size_t context_len, uint8_t *out,
                                 size_t out_size);

/* --- hazardous entry points ----------------------------------------------------------
 * Only for known-answer tests: a raw key entering in plaintext, and caller-chosen IVs,
 * IV lengths and tag lengths. The service never calls these. */

kp_status kp_hazmat_import_raw(kp_hsm *hsm, kp_partition partition, const uint8_t *key,
                               size_t key_len, kp_handle *out);

/* Seal with item i's IV iv[iv_off[i] .. +iv_len[i]) (1 .. 128 bytes) and a tag of
 * tag_len[i] (4 .. 16) bytes: out = ct || tag. Empty plaintexts are allowed. */
kp_status kp_hazmat_seal_batch(kp_hsm *hsm, size_t n, const kp_handle *handles,
                               const uint8_t *iv, size_t iv_size, const size_t *iv_off,
                               const size_t *iv_len, const uint8_t *in, size_t in_size,
                               const size_t *in_off, const size_t *in_len,
                               const uint8_t *aad, size_t aad_size, const size_t *aad_off,
                               const size_t *aad_len, const size_t *tag_len, uint8_t *out,
                               size_t out_size, const size_t *out_off, kp_status *status);

/* Open in = ct || tag (tag_len[i] bytes) with the given IV: out = plaintext. */
kp_status kp_hazmat_open_batch(kp_hsm *hsm, size_t n, const kp_handle *handles,
                               const uint8_t *iv, size_t iv_size, const size_t *iv_off,
                               const size_t *iv_len, const uint8_t *in, size_t in_size,
                               const size_t *in_off, const size_t *in_len,
                               const uint8_t *aad, size_t aad_size, const size_t *aad_off,
                               const size_t *aad_len, const size_t *tag_len, uint8_t *out,
                               size_t out_size, const size_t *out_off, kp_status *status);

/* Test only: AES key unwrap with padding (NIST SP 800-38F KWP-AD) under a raw 256-bit
 * KEK, the very function kp_keyslot_unwrap_import uses, with its plaintext returned: out
 * gets the unwrapped bytes (out_size at least in_len - 8). A failed integrity check, or
 * an in_len that is not 16 .. KP_MAX_IMPORT_BYTES and a multiple of 8 -> KP_E_AUTH. */
kp_status kp_hazmat_kwp_unwrap(const uint8_t *kek, size_t kek_len, const uint8_t *in,
                               size_t in_len, uint8_t *out, size_t out_size,
                               size_t *out_len);

#ifdef __cplusplus
}
#endif

#endif /* KP_H */

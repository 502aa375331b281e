"""The CFFI wrapper around the native HSM: the only Python that touches ``ffi``/``lib``.

It knows HSMs, partitions and slot handles as integers, and batches as sequences of
bytes. It knows nothing of KMS keys, accounts or policies. ``hazmat`` (known-answer
tests only) is deliberately not re-exported.
"""

from keyplane.native._hsm import (
    IV_BYTES,
    KEY_BYTES,
    MATERIAL_ID_BYTES,
    MAX_AAD_BYTES,
    MAX_BATCH,
    MAX_CONTEXT_BYTES,
    MAX_DATA_KEY_BYTES,
    MAX_IMPORT_BYTES,
    MAX_INPUT_BYTES,
    MAX_WRAPPING_KEY_BYTES,
    SEAL_OVERHEAD,
    TAG_BYTES,
    WRAPPED_KEY_BYTES,
    WRAPPING_ALGORITHMS,
    WRAPPING_KEY_BITS,
    Aad,
    DataKey,
    Handles,
    NativeHsm,
    Result,
    memory_locked,
    random_bytes,
)

__all__ = [
    "IV_BYTES",
    "KEY_BYTES",
    "MATERIAL_ID_BYTES",
    "MAX_AAD_BYTES",
    "MAX_BATCH",
    "MAX_CONTEXT_BYTES",
    "MAX_DATA_KEY_BYTES",
    "MAX_IMPORT_BYTES",
    "MAX_INPUT_BYTES",
    "MAX_WRAPPING_KEY_BYTES",
    "SEAL_OVERHEAD",
    "TAG_BYTES",
    "WRAPPED_KEY_BYTES",
    "WRAPPING_ALGORITHMS",
    "WRAPPING_KEY_BITS",
    "Aad",
    "DataKey",
    "Handles",
    "NativeHsm",
    "Result",
    "memory_locked",
    "random_bytes",
]

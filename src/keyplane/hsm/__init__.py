"""The emulated HSM: partitions (shared or dedicated tenancy), key slots held by handle,
and batch operations over them. It knows nothing of KMS keys, accounts or policies."""

from keyplane.hsm._batcher import Batcher
from keyplane.hsm._cluster import (
    KMS_USER,
    CloudHsmCluster,
    ClusterWorker,
    Role,
    Session,
    normalize_certificate,
    password_verifier,
)
from keyplane.hsm._hsm import (
    Hsm,
    KeySlot,
    Partition,
    Tenancy,
    decrypt_batch,
    encrypt_batch,
    generate_data_key_batch,
)
from keyplane.native import random_bytes

__all__ = [
    "KMS_USER",
    "Batcher",
    "CloudHsmCluster",
    "ClusterWorker",
    "Hsm",
    "KeySlot",
    "Partition",
    "Role",
    "Session",
    "Tenancy",
    "decrypt_batch",
    "encrypt_batch",
    "generate_data_key_batch",
    "normalize_certificate",
    "password_verifier",
    "random_bytes",
]

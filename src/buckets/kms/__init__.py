"""Keys for encryption at rest: the node's master key and its key store (SSE-S3, SSE-KMS).

``open_key_manager(store, config)`` is called once the store is open; the engine reaches the
result as ``store.kms`` (see ``buckets.engine.crypto`` for the data format and SSE-C, which
needs no server key).
"""

from buckets.kms.manager import (
    KeyManager, KMSKeyExists, KMSNotFound, KMSUnavailable, canonical_context, key_arn, key_name_of,
    open_key_manager,
)
from buckets.kms.master import MasterKey, MasterKeyError, parse_master_key

__all__ = ["KeyManager", "KMSKeyExists", "KMSNotFound", "KMSUnavailable", "MasterKey", "MasterKeyError",
           "canonical_context", "key_arn", "key_name_of", "open_key_manager", "parse_master_key"]

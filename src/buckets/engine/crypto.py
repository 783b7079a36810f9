"""Encryption at rest: the package format, per-object data keys, and what an entry records.

An encrypted part is stored as a sequence of *packages* (MinIO's DARE format is the model):
every 64 KiB of plaintext becomes 64 KiB of AES-256-GCM ciphertext plus its 16-byte tag
(the last package of a part may be shorter). That stream of packages is what the erasure
layer codes, frames and heals, exactly like plaintext: heal, the scanner, refill and
migration never see a key. A ranged read fetches only the packages the range covers and
decrypts those; nothing is read from the start of the object.

Each package is sealed with the object's data key under

* nonce = ``iv`` (8 bytes, one per part write: a hash of its write id, so two writes of a
  part never share a nonce) ‖ package index (4 bytes, big-endian);
* associated data = ``b"BKE1"`` ‖ part number (4 bytes) ‖ final flag (1 byte, set on the
  part's last package).

So a package cannot be moved to another position, part or object, a part cannot be cut
short at a package boundary without the read failing (its new last package lacks the final
flag, and the reader also knows how many packages to expect), and any changed byte fails
its tag. A failed package is an error (``SSEDataTampered``), never wrong bytes.

The data key (32 random bytes per object, or per multipart upload) is stored only sealed,
AES-256-GCM with the bucket and key as associated data, in the entry's ``sse`` record:

* SSE-S3: sealed under a key derived from the node's master key (``buckets.kms``);
* SSE-KMS: sealed under a named key of the node's key store (itself wrapped by the master key);
* SSE-C: sealed under a key derived (HKDF) from the customer's key and a random salt; the
  customer's key itself is never stored, only ``salt ‖ HMAC-SHA256(key, salt)`` to tell a
  wrong key (403) from a damaged record.

The entry's ``size`` and the sizes clients see are plaintext; ``parts[i][1]`` is what the
part takes on disk (``stored_size``), which is what the erasure geometry is computed from.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from buckets import errors
from buckets.engine.types import SSEInfo, SSESpec
from buckets.errors import define_error

if TYPE_CHECKING:
    from buckets.engine.store import Store

PACKAGE = 64 * 1024  # plaintext bytes per package
TAG = 16  # GCM tag per package
STORED_PACKAGE = PACKAGE + TAG
BATCH_PACKAGES = 16  # packages sealed per CPU-pool call when writing (1 MiB of plaintext)
_OFFLOAD = 128 * 1024  # batches at least this large are (de)crypted in the CPU pool, not on the loop
_AAD = b"BKE1"

MODE_S3, MODE_KMS, MODE_C = "SSE-S3", "SSE-KMS", "SSE-C"
_TAGS = {MODE_S3: "S3", MODE_KMS: "KMS", MODE_C: "C"}
_MODES = {tag: mode for mode, tag in _TAGS.items()}

# --- errors ------------------------------------------------------------------------------------
SSEDataTampered = define_error(
    "SSEDataTampered", "InternalError", 500,
    "The object's encrypted data failed its authentication check: it is damaged and is not served.")
SSEEncryptedObject = define_error(
    "SSEEncryptedObject", "InvalidRequest", 400,
    "The object was stored using a form of Server Side Encryption. The correct parameters must be "
    "provided to retrieve the object.")
SSEMultipartEncrypted = define_error(
    "SSEMultipartEncrypted", "InvalidRequest", 400,
    "The multipart upload initiate requested encryption. Subsequent part requests must include the "
    "appropriate encryption parameters.")
SSENotApplicable = define_error(
    "SSENotApplicable", "InvalidRequest", 400, "The encryption parameters are not applicable to this object.")
KMSNotConfigured = define_error(
    "KMSNotConfigured", "NotImplemented", 501, "Server side encryption specified but KMS is not configured")


# --- sizes ---------------------------------------------------------------------------------------
def package_count(plain: int) -> int:
    return -(-plain // PACKAGE)


def stored_size(plain: int) -> int:
    """Bytes a part of ``plain`` plaintext bytes takes once encrypted."""
    return plain + package_count(plain) * TAG


def plain_size(stored: int) -> int:
    """The inverse of ``stored_size``; ``SSEDataTampered`` for a length no part can have."""
    full, rest = divmod(stored, STORED_PACKAGE)
    if rest == 0:
        return full * PACKAGE
    if rest <= TAG:
        raise SSEDataTampered(f"{stored} bytes is not the length of an encrypted part")
    return full * PACKAGE + rest - TAG


def stored_length(entry: dict) -> int:
    """What an entry's data takes on disk, in total (inline objects: what the frames hold)."""
    if entry.get("sse"):
        return sum(p[1] for p in entry.get("parts", ()))
    return entry["size"]


def part_plain_size(entry_or_upload: dict, stored: int) -> int:
    """The plaintext size of a part stored as ``stored`` bytes under this entry or upload."""
    return plain_size(stored) if entry_or_upload.get("sse") else stored


def write_iv(write_id: str) -> bytes:
    """The 8-byte nonce prefix of one part write: unique because its write id is."""
    return hashlib.blake2b(write_id.encode(), digest_size=8, person=b"buckets-sse-iv").digest()


# --- packages ------------------------------------------------------------------------------------
def _nonce(iv: bytes, index: int) -> bytes:
    return iv + index.to_bytes(4, "big")


def _aad(part_number: int, final: bool) -> bytes:
    return _AAD + part_number.to_bytes(4, "big") + (b"\x01" if final else b"\x00")


class PartCipher:
    """Seals and opens the packages of one part under one data key."""

    __slots__ = ("_aead", "iv", "part_number")

    def __init__(self, data_key: bytes, iv: bytes, part_number: int) -> None:
        self._aead = AESGCM(data_key)
        self.iv = iv
        self.part_number = part_number

    def encrypt(self, plain: bytes, first_index: int, final: bool) -> bytes:
        """Packages ``first_index``... of ``plain`` (whole packages; the last may be short only
        when ``final``, which marks the last package as the part's last)."""
        count = package_count(len(plain))
        view = memoryview(plain)
        out = bytearray()
        for i in range(count):
            last = final and i == count - 1
            out += self._aead.encrypt(_nonce(self.iv, first_index + i), view[i * PACKAGE:(i + 1) * PACKAGE],
                                      _aad(self.part_number, last))
        return bytes(out)

    def decrypt(self, package: bytes | memoryview, index: int, final: bool) -> bytes:
        try:
            return self._aead.decrypt(_nonce(self.iv, index), package, _aad(self.part_number, final))
        except InvalidTag:
            raise SSEDataTampered(f"package {index} of part {self.part_number} failed its authentication tag") from None


@dataclass(slots=True)
class _Package:
    cipher: PartCipher
    index: int
    final: bool
    stored_len: int
    plain_len: int
    lo: int  # plaintext bytes of this package to hand out: [lo, hi)
    hi: int


class DecryptPlan:
    """What a read of plaintext bytes ``[start, end)`` of an encrypted entry fetches (the stored
    range ``[stored_start, stored_end)``, whole packages) and how it turns them back into
    exactly the requested plaintext."""

    def __init__(self, entry: dict, data_key: bytes, start: int, end: int) -> None:
        sse = entry["sse"]
        ivs = sse.get("iv") or []
        self._parts: list[tuple[PartCipher, int, int, int, int]] = []  # cipher, plain, stored, p_off, s_off
        p_off = s_off = 0
        for i, part in enumerate(entry["parts"]):
            stored = part[1]
            plain = plain_size(stored)
            if i >= len(ivs):
                raise SSEDataTampered("the object's encryption record lists fewer parts than the object")
            self._parts.append((PartCipher(data_key, ivs[i], part[0]), plain, stored, p_off, s_off))
            p_off += plain
            s_off += stored
        self.start, self.end = start, end
        self.stored_start = self.stored_end = 0
        if end > start:
            first = self._locate(start)
            last = self._locate(end - 1)
            _, _, _, fp_off, fs_off = self._parts[first]
            self.stored_start = fs_off + ((start - fp_off) // PACKAGE) * STORED_PACKAGE
            _, _, l_stored, lp_off, ls_off = self._parts[last]
            self.stored_end = ls_off + min(((end - 1 - lp_off) // PACKAGE + 1) * STORED_PACKAGE, l_stored)

    def _locate(self, offset: int) -> int:
        for i, (_, plain, _, p_off, _) in enumerate(self._parts):
            if p_off <= offset < p_off + plain:
                return i
        raise SSEDataTampered("a read past the end of the object's parts")

    def packages(self) -> Iterator[_Package]:
        if self.end <= self.start:
            return
        for cipher, plain, stored, p_off, _ in self._parts:
            lo, hi = max(self.start, p_off), min(self.end, p_off + plain)
            if lo >= hi:
                continue
            count = package_count(plain)
            for index in range((lo - p_off) // PACKAGE, (hi - 1 - p_off) // PACKAGE + 1):
                pkg_start = p_off + index * PACKAGE
                plain_len = min(PACKAGE, plain - index * PACKAGE)
                yield _Package(cipher, index, index == count - 1, plain_len + TAG, plain_len,
                               max(lo - pkg_start, 0), min(hi - pkg_start, plain_len))

    async def decrypt(self, stored: AsyncIterator[bytes], cpu: Executor) -> AsyncIterator[bytes]:
        """The plaintext of the stored stream ``[stored_start, stored_end)``, package by package
        (memory: one chunk of the stream plus one partial package). A short stream, a package
        that fails its tag or one of the wrong length is ``SSEDataTampered``."""
        loop = asyncio.get_running_loop()
        plan = self.packages()
        pending = next(plan, None)
        buf = bytearray()
        async for chunk in stored:
            buf += chunk
            batch: list[tuple[_Package, int]] = []
            used = 0
            while pending is not None and len(buf) - used >= pending.stored_len:
                batch.append((pending, used))
                used += pending.stored_len
                pending = next(plan, None)
            if not batch:
                continue
            data = bytes(buf[:used])
            del buf[:used]
            if used >= _OFFLOAD:
                out = await loop.run_in_executor(cpu, _open_batch, batch, data)
            else:
                out = _open_batch(batch, data)
            del data
            if out:
                yield out
        if pending is not None or buf:
            raise SSEDataTampered("the object's encrypted data ended before its last package")


def _open_batch(batch: list[tuple[_Package, int]], data: bytes) -> bytes:
    view = memoryview(data)
    out = []
    for pkg, offset in batch:
        plain = pkg.cipher.decrypt(view[offset:offset + pkg.stored_len], pkg.index, pkg.final)
        if len(plain) != pkg.plain_len:
            raise SSEDataTampered(f"package {pkg.index} has the wrong length")
        out.append(plain if (pkg.lo == 0 and pkg.hi == pkg.plain_len) else plain[pkg.lo:pkg.hi])
    return out[0] if len(out) == 1 else b"".join(out)


# --- sealing keys ----------------------------------------------------------------------------------
def hkdf(secret: bytes, salt: bytes | None, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(secret)


def seal(kek: bytes, secret: bytes, aad: bytes) -> bytes:
    """AES-256-GCM: nonce (12) ‖ ciphertext ‖ tag (16)."""
    nonce = os.urandom(12)
    return nonce + AESGCM(kek).encrypt(nonce, secret, aad)


def unseal(kek: bytes, blob: bytes, aad: bytes) -> bytes | None:
    """The sealed secret, or None when the key or the associated data is not the one it was sealed with."""
    try:
        return AESGCM(kek).decrypt(bytes(blob[:12]), bytes(blob[12:]), aad)
    except (InvalidTag, ValueError):
        return None


def data_key_aad(tag: str, bucket: str, key: str, context: str | None = None) -> bytes:
    return b"\0".join([b"buckets-sse-dk-v1", tag.encode(), bucket.encode(), key.encode(),
                       (context or "").encode()])


def opaque_etag(data_key: bytes, md5: bytes) -> str:
    """The ETag of an SSE-C or SSE-KMS object or part: 32 hex digits, as an MD5 has, but not
    the plaintext's MD5 (S3 documents such ETags as not being an MD5 of the data)."""
    return hmac.new(data_key, b"buckets-sse-etag\0" + md5, hashlib.sha256).digest()[:16].hex()


_CHECK_INFO = b"buckets-sse-c-check-v1"
_SSEC_KEK_INFO = b"buckets-sse-c-kek-v1"


def customer_key_check(customer_key: bytes, salt: bytes) -> bytes:
    return salt + hmac.new(customer_key, _CHECK_INFO + salt, hashlib.sha256).digest()


def customer_key_matches(check: bytes | None, customer_key: bytes) -> bool:
    if not check or len(check) != 48:
        return False
    return hmac.compare_digest(customer_key_check(customer_key, bytes(check[:16])), bytes(check))


def _seal_customer(customer_key: bytes, bucket: str, key: str) -> tuple[bytes, dict]:
    data_key = os.urandom(32)
    salt = os.urandom(16)
    kek = hkdf(customer_key, salt, _SSEC_KEK_INFO)
    return data_key, {"t": "C", "kh": customer_key_check(customer_key, salt),
                      "dk": seal(kek, data_key, data_key_aad("C", bucket, key))}


def _open_customer(record: dict, customer_key: bytes, bucket: str, key: str) -> bytes:
    check = record.get("kh")
    if not customer_key_matches(check, customer_key):
        raise errors.AccessDenied()
    kek = hkdf(customer_key, bytes(check[:16]), _SSEC_KEK_INFO)
    data_key = unseal(kek, record["dk"], data_key_aad("C", bucket, key))
    if data_key is None:
        raise SSEDataTampered("the object's sealed data key does not open with the matching customer key")
    return data_key


# --- what the engine calls -------------------------------------------------------------------------
def bucket_default(bucket_record: dict) -> SSESpec | None:
    """The encryption a bucket's default configuration (PutBucketEncryption) asks for."""
    config = bucket_record.get("encryption")
    if not config:
        return None
    if config.get("alg") == "aws:kms":
        return SSESpec(MODE_KMS, kms_key_id=config.get("kid") or None, bucket_key=bool(config.get("bk")))
    return SSESpec(MODE_S3)


def _kms(store: "Store") -> Any:
    kms = getattr(store, "kms", None)
    if kms is None:
        raise KMSNotConfigured()
    return kms


async def begin_write(store: "Store", spec: SSESpec, bucket: str, key: str) -> tuple[bytes, dict]:
    """A new data key for an object (or a multipart upload) of ``bucket/key`` and its sealed
    record (the entry's ``sse`` without the part nonces)."""
    if spec.mode == MODE_C:
        if spec.customer_key is None or len(spec.customer_key) != 32:
            raise errors.InvalidArgument("The secret key was invalid for the specified algorithm.")
        return _seal_customer(spec.customer_key, bucket, key)
    return await _kms(store).new_data_key(spec, bucket, key)


def open_data_key(store: "Store", record: dict | None, bucket: str, key: str,
                  customer_key: bytes | None, *, upload: bool = False) -> bytes | None:
    """The data key of an object (or upload) for a read (or a part upload), checking that the
    request brings what the object needs: SSE-C objects need their customer key (missing: 400,
    wrong: 403), other objects must not be sent one (400)."""
    mode = _MODES.get(record.get("t")) if record else None
    if mode == MODE_C:
        if customer_key is None:
            raise SSEMultipartEncrypted() if upload else SSEEncryptedObject()
        return _open_customer(record, customer_key, bucket, key)
    if customer_key is not None:
        raise SSENotApplicable()
    if record is None:
        return None
    return _kms(store).open_data_key(record, bucket, key)


def check_customer_key(info: SSEInfo | None, customer_key: bytes | None) -> None:
    """The checks ``open_data_key`` makes, for requests that read no data (HEAD, attributes)."""
    if info is not None and info.mode == MODE_C:
        if customer_key is None:
            raise SSEEncryptedObject()
        if not customer_key_matches(info.customer_key_check, customer_key):
            raise errors.AccessDenied()
    elif customer_key is not None:
        raise SSENotApplicable()


def sse_info(record: dict | None) -> SSEInfo | None:
    if not record:
        return None
    mode = _MODES.get(record.get("t"), MODE_S3)
    return SSEInfo(mode, kms_key_id=record.get("kid") if mode == MODE_KMS else None,
                   bucket_key=bool(record.get("bk")), context=record.get("ctx"),
                   customer_key_check=bytes(record["kh"]) if mode == MODE_C and record.get("kh") else None)


def etag_for(record: dict | None, data_key: bytes | None, md5: bytes) -> str:
    """The ETag of a write: the plaintext MD5, except under SSE-C and SSE-KMS."""
    if record is None or data_key is None or record.get("t") == "S3":
        return md5.hex()
    return opaque_etag(data_key, md5)

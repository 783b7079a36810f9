"""Encryption at rest in the engine: the package format (sizes, the range mapping, tamper and
truncation detection) and encrypted objects through a real store (ranges, multipart, heal,
the key store's records surviving a registry rebuild, a wrong or missing master key)."""

from __future__ import annotations

import os
import shutil
from types import SimpleNamespace

import pytest
from engine_testkit import BLOCK, INLINE, MiB, content, get_bytes, read_all, shard_file

from buckets import Store, errors
from buckets.engine import crypto
from buckets.engine.crypto import PACKAGE, STORED_PACKAGE, TAG, DecryptPlan, PartCipher, SSEDataTampered
from buckets.engine.heal import heal_object
from buckets.engine.types import CompletePart, PutOptions, SSESpec
from buckets.kms import KMSNotFound, KMSUnavailable, open_key_manager

SIZES = [0, 1, 100, PACKAGE - 1, PACKAGE, PACKAGE + 1, 2 * PACKAGE, 3 * PACKAGE + 17]


# --- the package format ----------------------------------------------------------------------------
@pytest.mark.parametrize("plain", SIZES + [16 * PACKAGE, 16 * PACKAGE + 1, 10_000_000])
def test_stored_and_plain_sizes_are_inverse(plain: int) -> None:
    stored = crypto.stored_size(plain)
    assert stored == plain + crypto.package_count(plain) * TAG
    assert crypto.plain_size(stored) == plain


@pytest.mark.parametrize("stored", [1, TAG, STORED_PACKAGE + 1, STORED_PACKAGE + TAG, 5 * STORED_PACKAGE + 3])
def test_no_part_has_a_length_inside_a_tag(stored: int) -> None:
    with pytest.raises(SSEDataTampered):
        crypto.plain_size(stored)


def seal_part(plain: bytes, key: bytes, iv: bytes, number: int, batch: int = 3) -> bytes:
    """The packages of one part as the writer makes them: batches, the last one final."""
    cipher = PartCipher(key, iv, number)
    out = bytearray()
    step = batch * PACKAGE
    for off in range(0, len(plain), step):
        chunk = plain[off:off + step]
        out += cipher.encrypt(chunk, off // PACKAGE, final=off + step >= len(plain))
    return bytes(out)


def entry_of(parts: list[tuple[int, bytes]], ivs: list[bytes]) -> dict:
    return {"parts": [[n, len(stored), "", {}, 0] for n, stored in parts], "sse": {"t": "C", "iv": ivs}}


async def decrypt(plan: DecryptPlan, stored: bytes, chunk: int = 7000) -> bytes:
    async def stream():
        window = stored[plan.stored_start:plan.stored_end]
        for off in range(0, len(window), chunk):
            yield window[off:off + chunk]

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as cpu:
        return b"".join([piece async for piece in plan.decrypt(stream(), cpu)])


@pytest.fixture
def two_parts():
    key = os.urandom(32)
    first, second = os.urandom(3 * PACKAGE + 100), os.urandom(PACKAGE + 5)
    ivs = [crypto.write_iv("part-one"), crypto.write_iv("part-two")]
    stored = [seal_part(first, key, ivs[0], 1), seal_part(second, key, ivs[1], 2)]
    entry = entry_of([(1, stored[0]), (2, stored[1])], ivs)
    return key, first + second, b"".join(stored), entry


@pytest.mark.parametrize(("start", "end"), [
    (0, 1), (0, PACKAGE), (PACKAGE - 1, PACKAGE + 1), (PACKAGE, 2 * PACKAGE), (5, 3 * PACKAGE + 100),
    (3 * PACKAGE + 99, 3 * PACKAGE + 101),  # across the part boundary
    (3 * PACKAGE + 100, 4 * PACKAGE + 105),  # exactly the second part
    (0, 4 * PACKAGE + 105), (4 * PACKAGE + 104, 4 * PACKAGE + 105),
])
async def test_a_range_reads_only_the_packages_it_covers(two_parts, start: int, end: int) -> None:
    key, plain, stored, entry = two_parts
    plan = DecryptPlan(entry, key, start, end)
    # the stored window starts on the boundary of the package holding ``start``...
    first_plain = 3 * PACKAGE + 100
    if start < first_plain:
        assert plan.stored_start == (start // PACKAGE) * STORED_PACKAGE
    else:
        assert plan.stored_start == crypto.stored_size(first_plain) + ((start - first_plain) // PACKAGE) * STORED_PACKAGE
    touched = list(plan.packages())
    assert sum(p.stored_len for p in touched) == plan.stored_end - plan.stored_start
    # ... and holds no package the range does not need
    assert all(p.hi > p.lo for p in touched)
    assert await decrypt(plan, stored) == plain[start:end]


async def test_the_stored_window_of_a_range_is_minimal(two_parts) -> None:
    key, _plain, _stored, entry = two_parts
    plan = DecryptPlan(entry, key, PACKAGE + 10, PACKAGE + 20)
    assert (plan.stored_start, plan.stored_end) == (STORED_PACKAGE, 2 * STORED_PACKAGE)
    plan = DecryptPlan(entry, key, 3 * PACKAGE + 100, 3 * PACKAGE + 101)  # first byte of part 2
    part1 = crypto.stored_size(3 * PACKAGE + 100)
    assert (plan.stored_start, plan.stored_end) == (part1, part1 + STORED_PACKAGE)


@pytest.mark.parametrize("position", [0, 5, STORED_PACKAGE - 1, STORED_PACKAGE + 3, -1])
async def test_a_changed_byte_is_an_error_not_wrong_bytes(two_parts, position: int) -> None:
    key, _plain, stored, entry = two_parts
    damaged = bytearray(stored)
    damaged[position] ^= 0x40
    with pytest.raises(SSEDataTampered):
        await decrypt(DecryptPlan(entry, key, 0, len(_plain)), bytes(damaged))


async def test_a_truncated_stream_is_an_error(two_parts) -> None:
    key, plain, stored, entry = two_parts
    plan = DecryptPlan(entry, key, 0, len(plain))

    async def short():
        yield stored[:plan.stored_end - 10]

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as cpu, pytest.raises(SSEDataTampered):
        [piece async for piece in plan.decrypt(short(), cpu)]


async def test_a_part_cut_at_a_package_boundary_is_an_error() -> None:
    """Dropping whole trailing packages (and shrinking the recorded size to match) leaves a
    last package without the final flag: its tag fails."""
    key, iv = os.urandom(32), crypto.write_iv("w")
    plain = os.urandom(3 * PACKAGE)
    stored = seal_part(plain, key, iv, 1)
    cut = stored[:2 * STORED_PACKAGE]
    entry = entry_of([(1, cut)], [iv])
    with pytest.raises(SSEDataTampered):
        await decrypt(DecryptPlan(entry, key, 0, 2 * PACKAGE), cut)


async def test_packages_cannot_be_swapped_or_moved_to_another_part() -> None:
    key, iv = os.urandom(32), crypto.write_iv("w")
    plain = os.urandom(3 * PACKAGE)
    stored = seal_part(plain, key, iv, 1)
    swapped = stored[STORED_PACKAGE:2 * STORED_PACKAGE] + stored[:STORED_PACKAGE] + stored[2 * STORED_PACKAGE:]
    with pytest.raises(SSEDataTampered):
        await decrypt(DecryptPlan(entry_of([(1, swapped)], [iv]), key, 0, len(plain)), swapped)
    with pytest.raises(SSEDataTampered):  # the same bytes presented as part 2
        await decrypt(DecryptPlan(entry_of([(2, stored)], [iv]), key, 0, len(plain)), stored)
    with pytest.raises(SSEDataTampered):  # another key
        await decrypt(DecryptPlan(entry_of([(1, stored)], [iv]), os.urandom(32), 0, len(plain)), stored)


def test_customer_key_check_is_salted_and_never_the_key() -> None:
    key = os.urandom(32)
    data_key, record = crypto._seal_customer(key, "b", "k")
    _, again = crypto._seal_customer(key, "b", "k")
    assert key not in record["kh"] and key not in record["dk"]
    assert record["kh"] != again["kh"]  # a fresh salt each time: no equal checks for equal keys
    assert crypto._open_customer(record, key, "b", "k") == data_key
    with pytest.raises(errors.AccessDenied):
        crypto._open_customer(record, os.urandom(32), "b", "k")
    with pytest.raises(SSEDataTampered):  # the sealed key is bound to its bucket and key
        crypto._open_customer(record, key, "b", "other")


# --- through a store ---------------------------------------------------------------------------------
CUSTOMER = os.urandom(32)
SSEC = SSESpec(crypto.MODE_C, customer_key=CUSTOMER)


def settings(secret: str | None = None, key_file: str | None = None):
    return SimpleNamespace(kms_secret_key=secret, kms_key_file=key_file)


def disk_bytes(paths: list[str]) -> bytes:
    out = bytearray()
    for root in paths:
        for dirpath, _dirs, files in os.walk(root):
            for name in files:
                with open(os.path.join(dirpath, name), "rb") as f:
                    out += f.read()
    return bytes(out)


@pytest.mark.parametrize("size", [0, 10, INLINE - 100, INLINE + 1, BLOCK, 3 * PACKAGE + 5, 5 * BLOCK + 3])
async def test_ssec_objects_read_back_whole_and_by_range(store, bucket, size: int) -> None:
    data = content(f"ssec-{size}", size)
    info = await store.put_object(bucket, "k", data, size, PutOptions(sse=SSEC))
    assert info.size == size and info.sse.mode == crypto.MODE_C
    assert info.etag != crypto.hashlib.md5(data).hexdigest()  # SSE-C ETags are not the MD5
    head = await store.head_object(bucket, "k")
    assert head.size == size and head.parts[0].size == size
    assert await get_bytes(store, bucket, "k", customer_key=CUSTOMER) == data
    for start, end in [(0, 1), (size // 3, size // 2 + 1), (size - 1, size), (PACKAGE - 2, PACKAGE + 2)]:
        if 0 <= start < end <= size:
            got = await get_bytes(store, bucket, "k", range=(start, end - 1), customer_key=CUSTOMER)
            assert got == data[start:end], (start, end)
    with pytest.raises(crypto.SSEEncryptedObject):
        await store.get_object(bucket, "k")
    with pytest.raises(errors.AccessDenied):
        await store.get_object(bucket, "k", customer_key=os.urandom(32))


async def test_a_wrong_length_body_stores_nothing(store, bucket) -> None:
    with pytest.raises(errors.IncompleteBody):
        await store.put_object(bucket, "short", b"x" * 100, 200, PutOptions(sse=SSEC))
    with pytest.raises(errors.IncompleteBody):
        await store.put_object(bucket, "long", b"x" * 300, 200, PutOptions(sse=SSEC))
    assert (await store.list_objects(bucket)).objects == []


async def test_ssec_multipart_parts_are_plaintext_sized_and_packaged_per_part(store, bucket) -> None:
    bodies = [content("p1", 5 * MiB), content("p2", 5 * MiB + 7), content("p3", 1234)]
    up = await store.create_multipart_upload(bucket, "mp", PutOptions(sse=SSEC))
    assert up.sse.mode == crypto.MODE_C
    with pytest.raises(crypto.SSEMultipartEncrypted):  # a part without the key
        await store.put_part(bucket, "mp", up.upload_id, 1, bodies[0], len(bodies[0]))
    with pytest.raises(errors.AccessDenied):
        await store.put_part(bucket, "mp", up.upload_id, 1, bodies[0], len(bodies[0]),
                             PutOptions(sse=SSESpec(crypto.MODE_C, customer_key=os.urandom(32))))
    done = []
    for n, body in enumerate(bodies, 1):
        part = await store.put_part(bucket, "mp", up.upload_id, n, body, len(body), PutOptions(sse=SSEC))
        assert part.size == len(body)
        done.append(CompletePart(n, part.etag))
    listed = await store.list_parts(bucket, "mp", up.upload_id)
    assert [p.size for p in listed.parts] == [len(b) for b in bodies]
    info = await store.complete_multipart_upload(bucket, "mp", up.upload_id, done)
    whole = b"".join(bodies)
    assert info.size == len(whole) and info.etag.endswith("-3")
    assert await get_bytes(store, bucket, "mp", customer_key=CUSTOMER) == whole
    edge = len(bodies[0])
    got = await get_bytes(store, bucket, "mp", range=(edge - 100, edge + 100), customer_key=CUSTOMER)
    assert got == whole[edge - 100:edge + 101]
    assert await get_bytes(store, bucket, "mp", part_number=2, customer_key=CUSTOMER) == bodies[1]
    assert [p.size for p in (await store.head_object(bucket, "mp")).parts] == [len(b) for b in bodies]


async def test_minimum_part_size_is_judged_on_plaintext(store, bucket) -> None:
    """5 MiB - 1 of plaintext takes more than 5 MiB encrypted: still too small."""
    body = content("small", 5 * MiB - 1)
    up = await store.create_multipart_upload(bucket, "tiny", PutOptions(sse=SSEC))
    p1 = await store.put_part(bucket, "tiny", up.upload_id, 1, body, len(body), PutOptions(sse=SSEC))
    p2 = await store.put_part(bucket, "tiny", up.upload_id, 2, b"x", 1, PutOptions(sse=SSEC))
    with pytest.raises(errors.EntityTooSmall):
        await store.complete_multipart_upload(bucket, "tiny", up.upload_id,
                                              [CompletePart(1, p1.etag), CompletePart(2, p2.etag)])


@pytest.mark.parametrize("size", [INLINE - 200, 3 * BLOCK + 11])
async def test_heal_rebuilds_encrypted_shards_without_a_key(store, bucket, size: int) -> None:
    data = content("heal", size)
    await store.put_object(bucket, "h", data, size, PutOptions(sse=SSEC))
    os.unlink(shard_file(store, bucket, "h", 0))
    result = await heal_object(store, bucket, "h")
    assert result.repaired == [0]  # rebuilt from the other shards: ciphertext in, ciphertext out
    os.unlink(shard_file(store, bucket, "h", 1))  # the rebuilt shard 0 is now needed
    assert await get_bytes(store, bucket, "h", customer_key=CUSTOMER) == data


async def test_encrypted_bytes_on_disk_hold_no_plaintext(store, bucket, disk_paths) -> None:
    marker = b"PLAINTEXT-MARKER-" + os.urandom(6).hex().encode()
    body = marker * (3 * BLOCK // len(marker))
    await store.put_object(bucket, "small", marker * 3, len(marker) * 3, PutOptions(sse=SSEC))
    await store.put_object(bucket, "big", body, len(body), PutOptions(sse=SSEC))
    assert marker not in disk_bytes(disk_paths)
    await store.put_object(bucket, "clear", body, len(body))  # the scan does find plaintext
    assert marker in disk_bytes(disk_paths)


async def test_sse_s3_and_kms_through_the_key_store(store, bucket, tmp_path) -> None:
    key_file = tmp_path / "keys" / "master.key"
    store.kms = await open_key_manager(store, settings(key_file=str(key_file)))
    assert store.kms.master is None and not key_file.exists()  # created when first needed
    data = content("s3", 3 * PACKAGE + 9)
    info = await store.put_object(bucket, "s3", data, len(data), PutOptions(sse=SSESpec(crypto.MODE_S3)))
    assert key_file.exists() and key_file.stat().st_mode & 0o777 == 0o600
    assert info.etag == crypto.hashlib.md5(data).hexdigest()  # SSE-S3 keeps the MD5 ETag
    assert await get_bytes(store, bucket, "s3") == data
    with pytest.raises(KMSNotFound):
        await store.put_object(bucket, "kms", data, len(data), PutOptions(sse=SSESpec(crypto.MODE_KMS,
                                                                                      kms_key_id="app")))
    await store.kms.create_key("app")
    info = await store.put_object(bucket, "kms", data, len(data),
                                  PutOptions(sse=SSESpec(crypto.MODE_KMS, kms_key_id="arn:aws:kms:app",
                                                         context='{"a":"b"}')))
    assert info.sse.kms_key_id == "app" and info.sse.context == '{"a":"b"}'
    assert await get_bytes(store, bucket, "kms", range=(PACKAGE, PACKAGE + 10)) == data[PACKAGE:PACKAGE + 11]
    assert [k["name"] for k in store.kms.list_keys()] == ["buckets-master-key", "app"]

    # A restart with the file gone: reported, nothing created, encrypted objects refused.
    saved = key_file.read_bytes()
    key_file.unlink()
    store.kms = await open_key_manager(store, settings(key_file=str(key_file)))
    assert "missing" in store.kms.problem and not key_file.exists()
    with pytest.raises(KMSUnavailable):
        await store.get_object(bucket, "s3")
    with pytest.raises(KMSUnavailable):
        await store.put_object(bucket, "new", b"x", 1, PutOptions(sse=SSESpec(crypto.MODE_S3)))
    assert not key_file.exists()
    # Another key instead: reported as not the recorded one.
    other = "other-key:" + __import__("base64").b64encode(os.urandom(32)).decode()
    store.kms = await open_key_manager(store, settings(secret=other))
    assert "not the one" in store.kms.problem
    with pytest.raises(KMSUnavailable):
        await store.get_object(bucket, "kms")
    # The right key back: everything reads again.
    key_file.write_bytes(saved)
    store.kms = await open_key_manager(store, settings(key_file=str(key_file)))
    assert store.kms.problem is None
    assert await get_bytes(store, bucket, "kms") == data


async def test_the_key_store_survives_a_registry_rebuild(tmp_disks, tmp_path) -> None:
    disks = tmp_disks(4)
    secret = "rebuild-key:" + __import__("base64").b64encode(os.urandom(32)).decode()
    opts = dict(sync=False, block_size=BLOCK, inline_threshold=INLINE, partitions=64)
    store = await Store.open(disks, **opts)
    store.kms = await open_key_manager(store, settings(secret=secret))
    await store.make_bucket("bkt")
    await store.kms.create_key("named")
    data = content("r", 2 * BLOCK)
    await store.put_object("bkt", "k", data, len(data), PutOptions(sse=SSESpec(crypto.MODE_KMS, kms_key_id="named")))
    await store.close()
    shutil.rmtree(disks[0])  # the registry's disk dies
    with open(disks[0], "w") as f:
        f.write("dead")
    store = await Store.open(disks, **opts)
    try:
        store.kms = await open_key_manager(store, settings(secret=secret))
        assert store.kms.problem is None
        assert [k["name"] for k in store.kms.list_keys()] == ["rebuild-key", "named"]
        assert await read_all(await store.get_object("bkt", "k")) == data
        # the mirror holds the named key wrapped only, and no master key at all
        with open(os.path.join(disks[1], ".buckets.sys", "kms.meta"), "rb") as f:
            mirror = f.read()
        assert secret.split(":")[1].encode() not in mirror and b"rebuild-key" in mirror
    finally:
        await store.close()


@pytest.mark.parametrize("key_id", ["app", "alias/app", "arn:aws:kms:app",
                                    "arn:aws:kms:us-east-1:123456789012:key/app",
                                    "arn:aws:kms:eu-west-1:123456789012:alias/app"])
def test_kms_key_ids_name_the_same_key(key_id: str) -> None:
    from buckets.kms import key_name_of

    assert key_name_of(key_id) == "app"


@pytest.mark.parametrize(("value", "message"), [
    ("no-colon", "expected NAME:BASE64"),
    ("bad name!:" + "A" * 44, "key name must be"),
    ("name:not base64!", "not valid base64"),
    ("name:" + __import__("base64").b64encode(b"short").decode(), "must be 32 bytes"),
])
def test_a_malformed_master_key_is_refused_without_echoing_it(value: str, message: str) -> None:
    from buckets.cli.config import ConfigError, build_config
    from buckets.kms import MasterKeyError, parse_master_key

    with pytest.raises(MasterKeyError) as caught:
        parse_master_key(value, "BUCKETS_KMS_SECRET_KEY")
    secret = value.partition(":")[2]
    assert message in str(caught.value) and (not secret or secret not in str(caught.value))
    with pytest.raises(ConfigError) as caught:
        build_config({"paths": ["/tmp/x"]}, {"BUCKETS_KMS_SECRET_KEY": value})
    assert str(caught.value).startswith("BUCKETS_KMS_SECRET_KEY:") and message in str(caught.value)

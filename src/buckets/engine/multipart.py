"""Multipart uploads: parts are erasure-coded as they arrive; completion adopts them.

Each part is streamed straight into ``.buckets.sys/multipart/<upload>/<pwid>.part`` on
the disks of the key's partition (the upload directory is itself a staging area: a part
exists only once the registry's upload record names it). CompleteMultipartUpload
validates the list, then renames the chosen part files into the new object's data
directory on each disk and writes the metadata last: no byte is copied or re-read.

The disks also hold what a registry rebuild needs to bring an upload back (engine/rebuild.py):
``upload.meta``, the upload's record as created, written on a write quorum of its disks
before the registry knows the upload, and beside each part file ``<pwid>.pmeta``, that
part's number and entry, written before the registry names the part. An abort removes the
``upload.meta`` files first (from a write quorum of disks, or it is refused), so a rebuild
after a crash in between cannot revive it; a completed upload is named by its object
(``mpu``), which a rebuild reads first.

These functions are methods of ``Store`` (bound in its class body).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging

import blake3
import time
from typing import TYPE_CHECKING

from buckets import checksums, errors
from buckets.engine import crypto, paths, space, versions
from buckets.engine.ids import new_id
from buckets.engine.meta import encode_meta_file, entry_to_info, upload_to_info
from buckets.engine.names import check_object_key
from buckets.engine.types import (
    CompletePart, ListPartsResult, ListUploadsResult, ObjectInfo, PartInfo, PutOptions, UploadInfo,
)
from buckets.engine.writer import ErasureWriter

if TYPE_CHECKING:
    from buckets.engine.store import Store

log = logging.getLogger("buckets.engine")

MIN_PART_SIZE = 5 * 1024 * 1024
MAX_PARTS = 10_000


async def _upload(self: "Store", bucket: str, key: str, upload_id: str) -> dict:
    await self._require_bucket(bucket)
    rec = await self.catalog.get_upload(bucket, upload_id)
    if rec is None or rec["key"] != key:
        raise errors.NoSuchUpload(resource=f"/{bucket}/{key}", UploadId=upload_id)
    return rec


@space.notes_full
async def create_multipart_upload(self: "Store", bucket: str, key: str,
                                  opts: PutOptions | None = None) -> UploadInfo:
    opts = opts or PutOptions()
    check_object_key(key)
    bucket_rec = await self._require_bucket(bucket)
    self.catalog.check_room(bucket)  # see Store.put_object: an upload's entry is new data too
    # One data key for the whole upload, sealed in its record; each part is its own packages.
    sse = opts.sse if opts.sse is not None else crypto.bucket_default(bucket_rec)
    _, sse_rec = await crypto.begin_write(self, sse, bucket, key) if sse is not None else (None, None)
    k, m = self.layout_for(opts.storage_class)
    _, disk_ids = self.table.locate(bucket, key)
    upload_id = new_id()  # time-ordered: uploads of one key list in initiation order
    rec = {
        "bucket": bucket, "key": key, "uid": upload_id, "init": time.time(),
        "h": dict(opts.headers), "um": dict(opts.user_meta),
        "ca": opts.checksum_algorithms[0].upper() if opts.checksum_algorithms else None,
        "ct": opts.checksum_type or ("COMPOSITE" if opts.checksum_algorithms else None),
        "sc": opts.storage_class, "k": k, "m": m, "bs": self.block_size,
        "disks": list(disk_ids[: k + m]), "parts": {}, "access": dict(opts.access),
    }
    # tags and object lock given at creation apply to the object Complete makes
    if opts.tags:
        rec["tg"] = dict(opts.tags)
    if opts.lock_mode is not None:
        rec["lm"], rec["lu"] = opts.lock_mode, float(opts.lock_until)
    if opts.legal_hold:
        rec["lh"] = True
    if sse_rec is not None:
        rec["sse"] = sse_rec
    # On the disks first (a rebuild's source), then in the registry (the commit point).
    # New data: not into a disk's free-space reserve, which is kept for deletions (as a PUT's
    # pieces are not); a quorum lost only for want of space is ``StorageFull``.
    disks = self.disks_for(rec["disks"])
    meta = encode_meta_file({f: v for f, v in rec.items() if f != "parts"})
    full = []  # the disks that refused it for want of space

    async def write(d) -> None:
        try:
            await d.write_file(paths.upload_meta(upload_id), meta, sync=self.sync, new_data=True)
        except errors.DiskFull:
            full.append(d)
            raise

    stored = await self._on_disks(write, disks)
    if stored < self._write_quorum(k, m):
        await self._on_disks(lambda d: d.delete(paths.upload_dir(upload_id), recursive=True), disks)
        if stored + len(full) >= self._write_quorum(k, m):
            raise errors.StorageFull()
        raise errors.WriteQuorumLost(f"Write quorum lost: the upload's record reached {stored} of {k + m} disks, "
                                     f"{self._write_quorum(k, m)} needed")
    await self.catalog.create_upload(bucket, upload_id, rec)
    return upload_to_info(rec)


@space.notes_full
async def put_part(self: "Store", bucket: str, key: str, upload_id: str, part_number: int, stream,
                   size: int | None, opts: PutOptions | None = None) -> PartInfo:
    opts = opts or PutOptions()
    if not 1 <= part_number <= MAX_PARTS:
        raise errors.InvalidArgument("Part number must be an integer between 1 and 10000, inclusive",
                                     ArgumentName="partNumber", ArgumentValue=str(part_number))
    rec = await _upload(self, bucket, key, upload_id)
    self.catalog.check_room(bucket)  # see Store.put_object
    customer_key = opts.sse.customer_key if opts.sse is not None else None
    data_key = crypto.open_data_key(self, rec.get("sse"), bucket, key, customer_key, upload=True)
    codec = self.codec_for(rec["k"], rec["m"], rec["bs"])
    disks = self.writable(self.disks_for(rec["disks"]), self._write_quorum(rec["k"], rec["m"]))
    pwid = new_id()
    path = paths.upload_part(upload_id, pwid)
    algs = tuple(opts.checksum_algorithms)
    # The upload's algorithm, or S3's default for an upload created without one (the object's
    # full-object CRC64NVME is combined from the parts' at Complete).
    upload_alg = rec.get("ca") or checksums.DEFAULT_ALGORITHM
    if upload_alg not in algs:
        algs = algs + (upload_alg,)
    cipher = crypto.PartCipher(data_key, crypto.write_iv(pwid), part_number) if data_key is not None else None
    writer = ErasureWriter(codec, disks, [path] * codec.n, self.cpu, algorithms=algs, inline_limit=-1,
                           cipher=cipher, on_lag=self.lagging_disk, keep=self.keep,
                           known_slow=self.known_slow, kept_up=self.kept_up)
    meta_path = paths.upload_part_meta(upload_id, pwid)

    async def drop(d) -> None:
        await d.delete(path)
        await d.delete(meta_path)

    try:
        try:
            result = await writer.run(stream, size)
            if opts.verify is not None:
                await opts.verify(self._computed(result))
            ok = await writer.finish(self.sync)
        except errors.WriteQuorumLost:
            await _still_open(self, bucket, key, upload_id)
            raise
        mtime = time.time()
        etag = crypto.etag_for(rec.get("sse"), data_key, result.md5)
        part = [pwid, result.stored_size, etag, result.checksums, mtime, ok, result.content_hash]
        # Beside the part file, what the registry is about to say of it (a rebuild's source).
        meta = encode_meta_file({"uid": upload_id, "n": part_number, "part": part})
        with_meta: list[int] = []

        async def describe(i: int) -> None:
            try:
                await disks[i].write_file(meta_path, meta, sync=self.sync)
                with_meta.append(i)
            except errors.DiskError as exc:
                log.warning("disk %s: %s", disks[i].endpoint, exc)

        await asyncio.gather(*(describe(i) for i in ok))
        await self._on_disks(lambda d: d.fsync_dir(paths.upload_dir(upload_id)) if self.sync else _noop(),
                             [disks[i] for i in ok])
    except BaseException:
        await writer.abort()
        await self._on_disks(lambda d: d.delete(meta_path), disks)
        raise
    if len(with_meta) < self._write_quorum(codec.k, codec.m):
        await self._on_disks(drop, disks)
        await _still_open(self, bucket, key, upload_id)
        raise errors.WriteQuorumLost()
    async with self.locks.hold(("upload", upload_id)), self.catalog.upload_lease(bucket, upload_id):
        try:
            await _upload(self, bucket, key, upload_id)
            old = await self.catalog.put_part(bucket, upload_id, part_number, part)
        except errors.BucketsError:
            await self._on_disks(drop, disks)
            raise
    if old is not None and old[0] != pwid:  # (never this part's own files: the record names them)
        old_path, old_meta = paths.upload_part(upload_id, old[0]), paths.upload_part_meta(upload_id, old[0])

        async def drop_old(d) -> None:
            await d.delete(old_meta)  # the record first: a rebuild never counts a part it lost
            await d.delete(old_path)

        self._spawn(self._on_disks(drop_old, disks))
    return PartInfo(part_number, result.size, etag, result.checksums, mtime, sse=crypto.sse_info(rec.get("sse")))


async def _noop() -> None:
    return None


async def _still_open(self: "Store", bucket: str, key: str, upload_id: str) -> None:
    """A part whose files could not be written: NoSuchUpload if a Complete or an Abort ended the
    upload meanwhile (they remove its directory, where the part's files go), as the part would
    have been told a moment later; else nothing (the caller's error stands: a 503)."""
    try:
        await _upload(self, bucket, key, upload_id)
    except errors.NoSuchUpload:
        raise
    except errors.BucketsError:
        pass  # (not known now: the write's own error says it)


def _object_checksum(rec: dict, chosen: list[list]) -> tuple[dict[str, str], str | None]:
    alg, ctype = rec.get("ca"), rec.get("ct")
    if not alg:  # created without an algorithm: S3's default, when every part has it
        alg, ctype = checksums.DEFAULT_ALGORITHM, "FULL_OBJECT"
    digests = []
    for p in chosen:
        value = (p[3] or {}).get(alg)
        if value is None:
            return {}, None  # a part was uploaded without the checksum: nothing to combine
        digests.append(base64.b64decode(value))
    if ctype == "FULL_OBJECT":
        raw = checksums.combine_full_object(alg, [(d, p[1]) for d, p in zip(digests, chosen)])
        return {alg: base64.b64encode(raw).decode()}, "FULL_OBJECT"
    return {alg: checksums.composite(alg, digests)}, "COMPOSITE"


async def complete_multipart_upload(self: "Store", bucket: str, key: str, upload_id: str,
                                    parts: list[CompletePart], opts: PutOptions | None = None) -> ObjectInfo:
    opts = opts or PutOptions()
    async with self.locks.hold(("upload", upload_id)), self.catalog.upload_lease(bucket, upload_id):
        try:
            rec = await _upload(self, bucket, key, upload_id)
        except errors.NoSuchUpload:
            done = await _completed(self, bucket, key, upload_id, parts)
            if done is not None:  # a client's retry of a Complete that succeeded: same answer
                return done
            raise
        if not parts:
            raise errors.MalformedXML("The XML you provided was not well-formed or did not validate "
                                      "against our published schema: no parts were listed.")
        chosen: list[list] = []
        numbers = [cp.number for cp in parts]
        if any(b <= a for a, b in zip(numbers, numbers[1:])):
            raise errors.InvalidPartOrder(UploadId=upload_id)
        for i, cp in enumerate(parts):
            have = rec["parts"].get(str(cp.number))
            if have is None or have[2] != cp.etag.strip('"').lower():
                raise errors.InvalidPart(UploadId=upload_id, PartNumber=str(cp.number))
            for alg, value in cp.checksums.items():
                if (have[3] or {}).get(alg.upper()) not in (None, value):
                    raise errors.InvalidPart(f"The checksum of part {cp.number} does not match.",
                                             UploadId=upload_id, PartNumber=str(cp.number))
            have_size = crypto.part_plain_size(rec, have[1])
            if i < len(parts) - 1 and have_size < MIN_PART_SIZE:
                raise errors.EntityTooSmall(ProposedSize=str(have_size), MinSizeAllowed=str(MIN_PART_SIZE),
                                            PartNumber=str(cp.number), ETag=have[2])
            chosen.append([cp.number, *have])
        # [number, pwid, stored size, etag, checksums, mtime, slots, blake3]; the sizes the client
        # is judged on (minimum part size, object size, full-object CRCs) are plaintext sizes.
        plain = [crypto.part_plain_size(rec, p[2]) for p in chosen]
        await self._check_conditions(bucket, key, opts)
        bucket_rec = await self._require_bucket(bucket)
        md5s = b"".join(bytes.fromhex(p[3]) for p in chosen)
        etag = f"{hashlib.md5(md5s).hexdigest()}-{len(chosen)}"
        ck, ckt = _object_checksum(rec, [[p[0], size, p[3], p[4]] for p, size in zip(chosen, plain)])
        if opts.verify is not None:  # whole-object checksum / x-amz-mp-object-size, before anything moves
            await opts.verify({"size": sum(plain), "checksum_type": ckt, **ck})
        wid = new_id()
        mtime = time.time()
        lock_opts = PutOptions(tags=rec.get("tg") or {}, lock_mode=rec.get("lm"), lock_until=rec.get("lu"),
                               legal_hold=bool(rec.get("lh")))
        entry = {
            **versions.version_fields(bucket_rec, lock_opts, mtime), "mpu": upload_id,
            "wid": wid, "mt": mtime, "size": sum(plain), "etag": etag,
            "h": rec.get("h") or {}, "um": rec.get("um") or {}, "ck": ck, "ckt": ckt,
            "ch": _multipart_content_hash(chosen),
            "sc": rec.get("sc", "STANDARD"), "k": rec["k"], "m": rec["m"], "bs": rec["bs"],
            "disks": rec["disks"], "gen": self.table.generation, "inline": False,
            "parts": [[p[0], p[2], p[3], p[4], p[5]] for p in chosen],
        }
        if rec.get("sse"):
            entry["sse"] = dict(rec["sse"], iv=[crypto.write_iv(p[1]) for p in chosen])
        entry.update(rec.get("access") or {})
        disks = self.disks_for(rec["disks"])
        stage = paths.staging(new_id())
        moves = [(paths.upload_part(upload_id, p[1]), paths.part_path(bucket, key, wid, p[0])) for p in chosen]
        # a disk can adopt the parts only if it holds every one of them
        slots = [i for i, d in enumerate(disks)
                 if d is not None and all(i in (p[6] if len(p) > 6 else range(len(disks))) for p in chosen)]
        ok = await self._commit_streamed(bucket, key, entry, stage, disks, slots, moves)
        await self._publish(bucket, key, entry, opts, disks, ok, finished_upload=upload_id)
    self._spawn(self._on_disks(lambda d: d.delete(paths.upload_dir(upload_id), recursive=True), disks))
    return entry_to_info(bucket, key, entry)


async def _completed(self: "Store", bucket: str, key: str, upload_id: str,
                     parts: list[CompletePart]) -> ObjectInfo | None:
    """The object a finished upload made, if it is still the key's current version and the
    retried request lists the same parts."""
    entry = await self.catalog.get_object(bucket, key)
    if entry is None or entry.get("mpu") != upload_id or entry.get("dm"):
        return None
    have = [(p[0], p[2]) for p in entry["parts"]]
    if have != [(cp.number, cp.etag.strip('"').lower()) for cp in parts]:
        return None
    return entry_to_info(bucket, key, entry)


def _multipart_content_hash(chosen: list[list]) -> str:
    """``mp:`` + BLAKE3 over the parts' BLAKE3 digests: a content hash without re-reading data."""
    digests = [bytes.fromhex(p[7]) for p in chosen if len(p) > 7 and p[7]]
    if len(digests) != len(chosen):
        return ""
    return "mp:" + blake3.blake3(b"".join(digests)).hexdigest()


async def abort_multipart_upload(self: "Store", bucket: str, key: str, upload_id: str) -> None:
    async with self.locks.hold(("upload", upload_id)), self.catalog.upload_lease(bucket, upload_id):
        rec = await _upload(self, bucket, key, upload_id)
        # Its record off a write quorum of its disks first: fewer than k copies are left, and
        # a rebuild (after a crash before the registry forgets it) does not bring it back.
        disks = self.disks_for(rec["disks"])

        async def unrecord(d) -> None:
            await d.delete(paths.upload_meta(upload_id))
            if self.sync:  # the removal itself must outlive a power cut
                try:
                    await d.fsync_dir(paths.upload_dir(upload_id))
                except errors.DiskError:
                    if await d.exists(paths.upload_dir(upload_id)):
                        raise  # (no directory there: nothing to remove on this disk)

        removed = await self._on_disks(unrecord, disks)
        if removed < self._write_quorum(rec["k"], rec["m"]):
            raise errors.WriteQuorumLost(f"Write quorum lost: the upload's record was removed from {removed} of "
                                         f"{rec['k'] + rec['m']} disks, {self._write_quorum(rec['k'], rec['m'])} needed")
        await self.catalog.delete_upload(bucket, upload_id)
    await self._on_disks(lambda d: d.delete(paths.upload_dir(upload_id), recursive=True),
                         self.disks_for(rec["disks"]))


async def list_parts(self: "Store", bucket: str, key: str, upload_id: str, part_marker: int = 0,
                     max_parts: int = 1000) -> ListPartsResult:
    rec = await _upload(self, bucket, key, upload_id)
    numbers = sorted(int(n) for n in rec["parts"] if int(n) > part_marker)
    page = numbers[:max(0, max_parts)]
    parts = []
    for n in page:
        p = rec["parts"][str(n)]
        parts.append(PartInfo(n, crypto.part_plain_size(rec, p[1]), p[2], p[3] or {}, p[4]))
    truncated = len(numbers) > len(page)
    return ListPartsResult(upload_to_info(rec), parts, truncated, page[-1] if page else part_marker)


async def list_multipart_uploads(self: "Store", bucket: str, prefix: str = "", delimiter: str = "",
                                 key_marker: str = "", upload_id_marker: str = "",
                                 limit: int = 1000) -> ListUploadsResult:
    await self._require_bucket(bucket)
    recs = sorted((r for r in await self.catalog.list_uploads(bucket) if r["key"].startswith(prefix)),
                  key=lambda r: (r["key"].encode(), r["uid"]))
    uploads: list[UploadInfo] = []
    prefixes: list[str] = []
    truncated = False
    for r in recs:
        kb = r["key"].encode()
        if key_marker:
            mk = key_marker.encode()
            if kb < mk or (kb == mk and (not upload_id_marker or r["uid"] <= upload_id_marker)):
                continue
        if delimiter:
            idx = r["key"].find(delimiter, len(prefix))
            if idx >= 0:
                cp = r["key"][: idx + len(delimiter)]
                if prefixes and prefixes[-1] == cp:
                    continue
                if key_marker and cp.encode() <= key_marker.encode():
                    continue
                if len(uploads) + len(prefixes) >= limit:
                    truncated = True
                    break
                prefixes.append(cp)
                continue
        if len(uploads) + len(prefixes) >= limit:
            truncated = True
            break
        uploads.append(upload_to_info(r))
    next_key = next_uid = None
    if truncated:
        if uploads and (not prefixes or uploads[-1].key.encode() >= prefixes[-1].encode()):
            next_key, next_uid = uploads[-1].key, uploads[-1].upload_id
        elif prefixes:
            next_key = prefixes[-1]
    return ListUploadsResult(uploads, prefixes, truncated, next_key, next_uid)

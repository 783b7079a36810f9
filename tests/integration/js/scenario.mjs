// The AWS SDK for JavaScript v3 against a Buckets server, with the SDK's default settings
// (CRC32 request checksums, aws-chunked streaming bodies, response checksum validation).
// Run by tests/integration/test_client_js.py: BUCKETS_ENDPOINT, BUCKETS_KEY, BUCKETS_SECRET,
// BUCKETS_REGION, BUCKETS_BUCKET. Prints one JSON object: what each step saw. Any failure
// exits non-zero with the error on stderr.
import { createHash, randomBytes } from "node:crypto";
import { Readable } from "node:stream";
import {
  S3Client, CreateBucketCommand, HeadBucketCommand, ListBucketsCommand, PutObjectCommand,
  GetObjectCommand, HeadObjectCommand, ListObjectsV2Command, CopyObjectCommand,
  DeleteObjectsCommand, DeleteObjectCommand, DeleteBucketCommand, paginateListObjectsV2,
} from "@aws-sdk/client-s3";
import { Upload } from "@aws-sdk/lib-storage";
import { getSignedUrl } from "@aws-sdk/s3-request-presigner";

const env = process.env;
const client = new S3Client({
  endpoint: env.BUCKETS_ENDPOINT, region: env.BUCKETS_REGION, forcePathStyle: true,
  credentials: { accessKeyId: env.BUCKETS_KEY, secretAccessKey: env.BUCKETS_SECRET },
});
const bucket = env.BUCKETS_BUCKET;
const md5 = (data) => createHash("md5").update(data).digest("hex");
const out = {};

await client.send(new CreateBucketCommand({ Bucket: bucket }));
await client.send(new HeadBucketCommand({ Bucket: bucket }));
out.listed_bucket = (await client.send(new ListBucketsCommand({}))).Buckets.some((b) => b.Name === bucket);

// A string body: the SDK adds x-amz-checksum-crc32 by default.
const put = await client.send(new PutObjectCommand({
  Bucket: bucket, Key: "hello.txt", Body: "hello from javascript", ContentType: "text/plain",
  Metadata: { origin: "node" },
}));
out.put_etag = put.ETag;
out.put_crc32 = put.ChecksumCRC32 ?? null;
const got = await client.send(new GetObjectCommand({ Bucket: bucket, Key: "hello.txt", ChecksumMode: "ENABLED" }));
out.get_body = await got.Body.transformToString();
out.get_type = got.ContentType;
out.get_crc32 = got.ChecksumCRC32 ?? null;
const head = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: "hello.txt" }));
out.head_metadata = head.Metadata;

// A stream of known length: aws-chunked with a trailing CRC32.
const streamed = randomBytes(3 * 1024 * 1024 + 17);
await client.send(new PutObjectCommand({
  Bucket: bucket, Key: "streamed.bin", Body: Readable.from([streamed.subarray(0, 1 << 20), streamed.subarray(1 << 20)]),
  ContentLength: streamed.length,
}));
const streamedBack = Buffer.from(await (await client.send(new GetObjectCommand({ Bucket: bucket, Key: "streamed.bin" }))).Body.transformToByteArray());
out.streamed_equal = Buffer.compare(streamedBack, streamed) === 0;
const ranged = await client.send(new GetObjectCommand({ Bucket: bucket, Key: "streamed.bin", Range: "bytes=1048570-1048579" }));
out.range_equal = Buffer.compare(Buffer.from(await ranged.Body.transformToByteArray()), streamed.subarray(1048570, 1048580)) === 0;
out.range_header = ranged.ContentRange;

// lib-storage's Upload: a multipart upload of a stream, four parts in flight.
const big = randomBytes(12 * 1024 * 1024 + 5);
const upload = new Upload({
  client, params: { Bucket: bucket, Key: "dir/big.bin", Body: Readable.from([big]) },
  partSize: 5 * 1024 * 1024, queueSize: 4,
});
const uploaded = await upload.done();
out.multipart_etag = uploaded.ETag;
const bigBack = Buffer.from(await (await client.send(new GetObjectCommand({ Bucket: bucket, Key: "dir/big.bin" }))).Body.transformToByteArray());
out.multipart_md5_equal = md5(bigBack) === md5(big);

await client.send(new CopyObjectCommand({ Bucket: bucket, Key: "dir/copy.txt", CopySource: `${bucket}/hello.txt` }));
for (let i = 0; i < 7; i++) {
  await client.send(new PutObjectCommand({ Bucket: bucket, Key: `many/${i}`, Body: `item ${i}` }));
}
const keys = [];
for await (const page of paginateListObjectsV2({ client, pageSize: 3 }, { Bucket: bucket })) {
  for (const o of page.Contents ?? []) keys.push(o.Key);
}
out.keys = keys;
const top = await client.send(new ListObjectsV2Command({ Bucket: bucket, Delimiter: "/" }));
out.prefixes = (top.CommonPrefixes ?? []).map((p) => p.Prefix);

// Conditional create: the second one is refused with 412.
await client.send(new PutObjectCommand({ Bucket: bucket, Key: "once", Body: "first", IfNoneMatch: "*" }));
try {
  await client.send(new PutObjectCommand({ Bucket: bucket, Key: "once", Body: "second", IfNoneMatch: "*" }));
  out.second_create = "accepted";
} catch (error) {
  out.second_create = `${error.name} ${error.$metadata?.httpStatusCode}`;
}

const url = await getSignedUrl(client, new GetObjectCommand({ Bucket: bucket, Key: "hello.txt" }), { expiresIn: 300 });
out.presigned_body = await (await fetch(url)).text();

try {
  await client.send(new GetObjectCommand({ Bucket: bucket, Key: "missing" }));
  out.missing = "found";
} catch (error) {
  out.missing = `${error.name} ${error.$metadata?.httpStatusCode}`;
}

const all = keys.map((Key) => ({ Key })).concat([{ Key: "once" }]);
const deleted = await client.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: all } }));
out.deleted = (deleted.Deleted ?? []).length;
out.delete_errors = (deleted.Errors ?? []).length;
await client.send(new DeleteObjectCommand({ Bucket: bucket, Key: "never-existed" }));
await client.send(new DeleteBucketCommand({ Bucket: bucket }));
out.done = true;
console.log(JSON.stringify(out));

// MinIO's JavaScript client (`minio` on npm) against a Buckets server, with its defaults.
// Run by tests/integration/test_client_js.py with the same environment as scenario.mjs.
// Prints one JSON object: what each step saw; any failure exits non-zero.
import { createHash, randomBytes } from "node:crypto";
import { Readable } from "node:stream";
import * as Minio from "minio";

const env = process.env;
const url = new URL(env.BUCKETS_ENDPOINT);
const mc = new Minio.Client({
  endPoint: url.hostname, port: Number(url.port), useSSL: false, pathStyle: true,
  accessKey: env.BUCKETS_KEY, secretKey: env.BUCKETS_SECRET, region: env.BUCKETS_REGION,
  partSize: 16 * 1024 * 1024,  // its smallest: a 40 MiB stream goes up in three parts
});
const bucket = env.BUCKETS_BUCKET;
const md5 = (data) => createHash("md5").update(data).digest("hex");
const readAll = async (stream) => { const parts = []; for await (const p of stream) parts.push(p); return Buffer.concat(parts); };
const out = {};

await mc.makeBucket(bucket, env.BUCKETS_REGION);
out.exists = await mc.bucketExists(bucket);
const small = Buffer.from("hello from minio-js");
out.put = await mc.putObject(bucket, "small.txt", small, small.length, { "Content-Type": "text/plain", "x-amz-meta-origin": "minio-js" });
const stat = await mc.statObject(bucket, "small.txt");
out.stat = { size: stat.size, type: stat.metaData["content-type"], origin: stat.metaData["origin"] };
out.small_back = (await readAll(await mc.getObject(bucket, "small.txt"))).toString();
// A stream of unknown length, cut into parts by the client (multipart above its part size).
const big = randomBytes(40 * 1024 * 1024 + 11);
const chunks = []; for (let i = 0; i < big.length; i += 1 << 20) chunks.push(big.subarray(i, i + (1 << 20)));
const uploaded = await mc.putObject(bucket, "dir/big.bin", Readable.from(chunks));
out.big_etag = uploaded.etag;
out.big_equal = md5(await readAll(await mc.getObject(bucket, "dir/big.bin"))) === md5(big);
out.partial_equal = Buffer.compare(await readAll(await mc.getPartialObject(bucket, "dir/big.bin", 32 * 1024 * 1024 - 5, 10)),
  big.subarray(32 * 1024 * 1024 - 5, 32 * 1024 * 1024 + 5)) === 0;
const conds = new Minio.CopyConditions();
await mc.copyObject(bucket, "dir/copy.txt", `/${bucket}/small.txt`, conds);
const listed = [];
for await (const item of mc.listObjectsV2(bucket, "", true)) listed.push(item.name);
out.listed = listed;
const top = [];
for await (const item of mc.listObjects(bucket, "", false)) top.push(item.name ?? item.prefix);
out.top = top;
out.presigned_body = await (await fetch(await mc.presignedGetObject(bucket, "small.txt", 300))).text();
await mc.setObjectTagging(bucket, "small.txt", { kind: "test" });
out.tags = await mc.getObjectTagging(bucket, "small.txt");
await mc.removeObjects(bucket, listed);
const after = [];
for await (const item of mc.listObjectsV2(bucket, "", true)) after.push(item.name);
out.after_delete = after;
try {
  await mc.statObject(bucket, "small.txt");
  out.missing = "found";
} catch (error) {
  out.missing = error.code;
}
await mc.removeBucket(bucket);
out.done = true;
console.log(JSON.stringify(out));

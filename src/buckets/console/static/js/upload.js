// Uploads with per-file progress. A file of up to MULTIPART_THRESHOLD goes as one PUT; a
// larger one as a multipart upload of PART_SIZE parts, one after the other (a failed part
// is retried, then the upload is aborted). Parts are File.slice()s: the browser reads them
// from disk as they are sent, and the server streams each into the engine, so no side
// ever holds a whole file in memory.

import * as api from "./api.js";
import { h, formatBytes } from "./ui.js";

export const MULTIPART_THRESHOLD = 16 * 1024 * 1024;
export const PART_SIZE = 8 * 1024 * 1024; // S3's minimum is 5 MiB (all parts but the last)
const PART_ATTEMPTS = 3;
const PARALLEL_FILES = 2;

class Upload {
  constructor(file, bucket, key) {
    this.file = file;
    this.bucket = bucket;
    this.key = key;
    this.cancelled = false;
    this.handle = {};
    this.progress = h("progress", { max: String(Math.max(file.size, 1)), value: "0",
                                    "aria-label": `Upload of ${key}` });
    this.status = h("span", { class: "upload-status" }, "Waiting");
    this.cancelButton = h("button", { type: "button", class: "small", onclick: () => this.cancel(),
                                      "aria-label": `Cancel upload of ${key}` }, "Cancel");
    this.row = h("li", { class: "upload", dataset: { key, state: "waiting" } },
      h("span", { class: "upload-name" }, key), h("span", { class: "muted" }, formatBytes(file.size)),
      this.progress, this.status, this.cancelButton);
  }

  set(state, text) {
    this.row.dataset.state = state;
    this.status.textContent = text;
  }

  shown(bytes) {
    this.progress.value = bytes;
    const percent = this.file.size ? Math.floor((bytes / this.file.size) * 100) : 100;
    this.status.textContent = `${percent}%`;
  }

  cancel() {
    this.cancelled = true;
    if (this.handle.abort) this.handle.abort();
  }

  async run() {
    this.set("running", "0%");
    try {
      const info = this.file.size <= MULTIPART_THRESHOLD ? await this.single() : await this.multipart();
      this.progress.value = Math.max(this.file.size, 1);
      this.set("done", "Done");
      this.cancelButton.remove();
      return info;
    } catch (error) {
      this.set(this.cancelled ? "cancelled" : "failed", this.cancelled ? "Cancelled" : `Failed: ${error.message}`);
      this.cancelButton.remove();
      throw error;
    }
  }

  single() {
    return api.put(api.bucketPath(this.bucket, "/object" + api.query({ key: this.key })), this.file, {
      contentType: this.file.type, handle: this.handle, onProgress: (loaded) => this.shown(loaded),
    });
  }

  async multipart() {
    const created = await api.call("POST", api.bucketPath(this.bucket, "/uploads"),
      { key: this.key, content_type: this.file.type || "application/octet-stream" });
    const uploadPath = api.bucketPath(this.bucket, `/uploads/${encodeURIComponent(created.upload_id)}`);
    const parts = [];
    try {
      let offset = 0;
      for (let number = 1; offset < this.file.size; number += 1) {
        const blob = this.file.slice(offset, Math.min(offset + PART_SIZE, this.file.size));
        const done = offset;
        let answer = null;
        for (let attempt = 1; answer === null; attempt += 1) {
          if (this.cancelled) throw new api.ApiError(0, "Cancelled", "Cancelled.");
          try {
            answer = await api.put(`${uploadPath}/parts/${number}` + api.query({ key: this.key }), blob, {
              handle: this.handle, onProgress: (loaded) => this.shown(done + loaded),
            });
          } catch (error) {
            if (this.cancelled || attempt >= PART_ATTEMPTS || error.status === 401 || error.status === 403) throw error;
          }
        }
        parts.push({ number, etag: answer.etag });
        offset += blob.size;
        this.shown(offset);
      }
      return await api.call("POST", `${uploadPath}/complete`, { key: this.key, parts });
    } catch (error) {
      try {
        await api.call("DELETE", uploadPath + api.query({ key: this.key }));
      } catch (_) {
        // the upload may be gone already; the server drops stale ones with the bucket
      }
      throw error;
    }
  }
}

// Upload `files` (a FileList or array) under `prefix`, rows in `panel` (a <ul>); calls
// `onDone()` once every file has finished (done, failed or cancelled).
export async function uploadFiles(files, { bucket, prefix, panel, onDone }) {
  const uploads = Array.from(files).map((file) => new Upload(file, bucket, prefix + (file.name || "file")));
  for (const upload of uploads) panel.append(upload.row);
  panel.closest("section").hidden = false;
  let next = 0;
  let failures = 0;
  async function worker() {
    while (next < uploads.length) {
      const upload = uploads[next];
      next += 1;
      try {
        await upload.run();
      } catch (_) {
        failures += 1;
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(PARALLEL_FILES, uploads.length) }, worker));
  if (onDone) onDone(uploads.length - failures, failures);
}

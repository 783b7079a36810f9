// One object's details: size, ETag, content type, stored headers, user metadata,
// checksums, storage class, encryption; download and delete from here too.

import * as api from "./api.js";
import { h, clear, confirmDialog, errorBox, formatBytes, formatDate, pageTitle, toast } from "./ui.js";

function row(label, ...value) {
  return [h("dt", {}, label), h("dd", {}, ...value)];
}

export async function objectPage(view, { args, params }) {
  const bucket = args[0];
  const key = params.get("key") || "";
  const slash = key.lastIndexOf("/", key.length - 2);
  const prefix = slash >= 0 ? key.slice(0, slash + 1) : "";
  const name = key.slice(prefix.length);
  pageTitle(name || key);
  const back = `#/browse/${encodeURIComponent(bucket)}` + (prefix ? `?prefix=${encodeURIComponent(prefix)}` : "");
  const body = h("div", {});
  clear(view,
    h("nav", { class: "crumbs", "aria-label": "Breadcrumb" }, h("ol", {},
      h("li", {}, h("a", { href: "#/buckets" }, "Buckets")),
      h("li", {}, h("a", { href: back }, prefix ? `${bucket}/${prefix}` : bucket)),
      h("li", {}, h("span", { "aria-current": "page" }, name)))),
    h("div", { class: "page-head" }, h("h1", { class: "break" }, name)),
    body);
  let info;
  try {
    info = await api.call("GET", api.bucketPath(bucket, "/object" + api.query({ key })));
  } catch (error) {
    clear(body, errorBox(error));
    return null;
  }
  const headers = Object.entries(info.headers).filter(([n]) => n !== "content-type");
  const metadata = Object.entries(info.metadata);
  const checksums = Object.entries(info.checksums);
  async function remove() {
    if (!(await confirmDialog({ title: `Delete ${name}?`, message: "This cannot be undone." }))) return;
    try {
      await api.call("POST", api.bucketPath(bucket, "/delete"), { keys: [key] });
      toast(`${name} deleted.`, "ok");
      location.hash = back;
    } catch (error) {
      toast(`${error.code}: ${error.message}`, "error");
    }
  }
  clear(body,
    h("div", { class: "toolbar" },
      h("a", { class: "button primary", href: api.downloadUrl(bucket, key), download: name }, "Download"),
      h("button", { type: "button", class: "danger", onclick: remove }, "Delete")),
    h("dl", { class: "details", id: "object-details" },
      row("Key", h("span", { class: "mono break" }, info.key)),
      row("Size", `${formatBytes(info.size)} (${info.size.toLocaleString()} bytes)`),
      row("ETag", h("span", { class: "mono break", id: "object-etag" }, info.etag)),
      row("Content type", h("span", { class: "mono" }, info.content_type)),
      row("Last modified", formatDate(info.last_modified)),
      row("Storage class", info.storage_class),
      row("Parts", String(info.parts)),
      row("Checksums", checksums.length
        ? h("ul", { class: "plain" }, checksums.map(([alg, value]) => h("li", {}, h("strong", {}, alg), " ",
          h("span", { class: "mono break" }, value), info.checksum_type ? ` (${info.checksum_type})` : "")))
        : "none"),
      row("Encryption", info.encryption ? `${info.encryption.mode}${info.encryption.kms_key_id ? ` (${info.encryption.kms_key_id})` : ""}` : "none"),
      row("Metadata", metadata.length
        ? h("ul", { class: "plain" }, metadata.map(([n, v]) => h("li", {}, h("span", { class: "mono" }, `x-amz-meta-${n}`), ": ", v)))
        : "none"),
      headers.length ? row("Headers", h("ul", { class: "plain" }, headers.map(([n, v]) => h("li", {}, h("span", { class: "mono" }, n), ": ", v)))) : null,
      row("Version", info.version_id)));
  return null;
}

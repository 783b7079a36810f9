// The buckets page: the buckets this user may list, with object count and size; create
// one; delete one (after a confirmation that names it).

import * as api from "./api.js";
import { h, clear, confirmDialog, errorBox, formatBytes, formatDate, pageTitle, toast } from "./ui.js";

export async function bucketsPage(view) {
  pageTitle("Buckets");
  const list = h("div", { class: "table-wrap" });
  const nameInput = h("input", { id: "new-bucket", name: "bucket", required: true, minlength: "3", maxlength: "63",
                                 pattern: "[a-z0-9][a-z0-9.\\-]{1,61}[a-z0-9]", spellcheck: "false",
                                 autocapitalize: "off", "aria-describedby": "new-bucket-help" });
  const create = h("form", { class: "inline-form", "aria-label": "Create a bucket" },
    h("label", { for: "new-bucket" }, "New bucket"), nameInput,
    h("button", { type: "submit", class: "primary" }, "Create bucket"),
    h("p", { id: "new-bucket-help", class: "muted small" },
      "3 to 63 lower-case letters, digits, dots and hyphens."));
  create.addEventListener("submit", async (event) => {
    event.preventDefault();
    const name = nameInput.value.trim();
    if (!name) return;
    try {
      await api.call("POST", "buckets", { name });
      toast(`Bucket ${name} created.`, "ok");
      nameInput.value = "";
      await load();
    } catch (error) {
      toast(`${error.code}: ${error.message}`, "error");
      nameInput.focus();
    }
  });
  clear(view, h("div", { class: "page-head" }, h("h1", {}, "Buckets")), create, list);

  async function remove(bucket) {
    const ok = await confirmDialog({
      title: `Delete bucket ${bucket.name}?`,
      message: bucket.objects > 0
        ? `It holds ${bucket.objects} objects: a bucket must be empty to be deleted.`
        : "The bucket is empty. This cannot be undone.",
      confirm: "Delete bucket",
    });
    if (!ok) return;
    try {
      await api.call("DELETE", api.bucketPath(bucket.name));
      toast(`Bucket ${bucket.name} deleted.`, "ok");
      await load();
    } catch (error) {
      toast(`${error.code}: ${error.message}`, "error");
    }
  }

  async function load() {
    let data;
    try {
      data = await api.call("GET", "buckets");
    } catch (error) {
      clear(list, errorBox(error));
      return;
    }
    if (!data.buckets.length) {
      clear(list, h("p", { class: "empty" }, "No buckets yet: create one above."));
      return;
    }
    const rows = data.buckets.map((bucket) => h("tr", { dataset: { bucket: bucket.name } },
      h("th", { scope: "row" }, h("a", { href: `#/browse/${encodeURIComponent(bucket.name)}` }, bucket.name)),
      h("td", { class: "num" }, bucket.objects.toLocaleString()),
      h("td", { class: "num" }, formatBytes(bucket.bytes)),
      h("td", { class: "wide-only" }, formatDate(bucket.created)),
      h("td", { class: "wide-only" }, bucket.owner),
      h("td", { class: "actions" },
        h("button", { type: "button", class: "danger small", "aria-label": `Delete bucket ${bucket.name}`,
                      onclick: () => remove(bucket) }, "Delete"))));
    clear(list, h("table", { class: "grid", id: "bucket-table" },
      h("caption", { class: "visually-hidden" }, "Buckets you may list"),
      h("thead", {}, h("tr", {},
        h("th", { scope: "col" }, "Name"), h("th", { scope: "col", class: "num" }, "Objects"),
        h("th", { scope: "col", class: "num" }, "Size"), h("th", { scope: "col", class: "wide-only" }, "Created"),
        h("th", { scope: "col", class: "wide-only" }, "Owner"), h("th", { scope: "col" }, h("span", { class: "visually-hidden" }, "Actions")))),
      h("tbody", {}, rows)));
  }

  await load();
  return null;
}

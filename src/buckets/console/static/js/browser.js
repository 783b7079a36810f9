// The object browser: one bucket, one prefix ("folder") at a time, one page of the listing
// at a time (continuation tokens: a bucket of 100,000 objects is never loaded whole).
// Sorting applies to the page shown; the server lists in key order.

import * as api from "./api.js";
import { h, clear, confirmDialog, errorBox, formatBytes, formatDate, infoDialog, pageTitle, toast } from "./ui.js";
import { uploadFiles } from "./upload.js";

const PAGE_SIZES = [50, 100, 250, 500, 1000];
const EXPIRIES = [[900, "15 minutes"], [3600, "1 hour"], [86400, "1 day"], [604800, "7 days"]];

function browseHash(bucket, prefix) {
  return `#/browse/${encodeURIComponent(bucket)}` + (prefix ? `?prefix=${encodeURIComponent(prefix)}` : "");
}

function baseName(key, prefix) {
  return key.slice(prefix.length);
}

export async function browserPage(view, { args, params }) {
  const bucket = args[0];
  const prefix = params.get("prefix") || "";
  pageTitle(prefix ? `${bucket}/${prefix}` : bucket);
  const state = { tokens: [], token: null, next: null, pageSize: Number(params.get("limit")) || 100,
                  sort: { column: "name", ascending: true }, objects: [], prefixes: [], selected: new Set() };

  // breadcrumbs: Buckets / bucket / a / b /
  const crumbs = [h("li", {}, h("a", { href: "#/buckets" }, "Buckets"))];
  crumbs.push(h("li", {}, prefix ? h("a", { href: browseHash(bucket, "") }, bucket)
    : h("span", { "aria-current": "page" }, bucket)));
  const segments = prefix.split("/").filter((s, i, all) => i < all.length - 1 || s);
  let walked = "";
  segments.forEach((segment, index) => {
    walked += segment + "/";
    crumbs.push(h("li", {}, index === segments.length - 1 ? h("span", { "aria-current": "page" }, segment)
      : h("a", { href: browseHash(bucket, walked) }, segment)));
  });

  const picker = h("input", { type: "file", id: "file-input", multiple: true, class: "visually-hidden", tabindex: "-1",
                              "aria-hidden": "true" });
  const deleteButton = h("button", { type: "button", class: "danger", id: "delete-selected", disabled: true },
    "Delete selected");
  const sizeSelect = h("select", { id: "page-size" },
    PAGE_SIZES.map((n) => h("option", { value: String(n), selected: n === state.pageSize }, String(n))));
  const toolbar = h("div", { class: "toolbar", role: "toolbar", "aria-label": "Objects" },
    h("button", { type: "button", class: "primary", id: "upload-button", onclick: () => picker.click() }, "Upload files"),
    picker,
    h("button", { type: "button", id: "new-folder", onclick: newFolder }, "New folder"),
    deleteButton,
    h("button", { type: "button", id: "refresh", onclick: () => load(state.token) }, "Refresh"),
    h("span", { class: "spacer" }),
    h("label", { for: "page-size", class: "muted" }, "Per page"), sizeSelect);

  const uploadList = h("ul", { class: "uploads", id: "uploads" });
  const uploadsSection = h("section", { class: "uploads-panel", hidden: true, "aria-labelledby": "uploads-title" },
    h("h2", { id: "uploads-title" }, "Uploads"), uploadList);
  const drop = h("div", { class: "dropzone", id: "dropzone" },
    h("p", {}, "Drop files here to upload them to ", h("strong", {}, `${bucket}/${prefix}`),
      ", or use ", h("em", {}, "Upload files"), "."));
  const listing = h("div", { class: "table-wrap", id: "listing" });
  const pager = h("nav", { class: "pager", "aria-label": "Pages" });
  const live = h("p", { class: "visually-hidden", "aria-live": "polite", id: "listing-status" });

  clear(view,
    h("nav", { class: "crumbs", "aria-label": "Breadcrumb" }, h("ol", {}, crumbs)),
    h("div", { class: "page-head" }, h("h1", {}, prefix ? segments[segments.length - 1] + "/" : bucket)),
    toolbar, drop, uploadsSection, listing, pager, live);

  function startUpload(files) {
    if (!files || !files.length) return;
    uploadFiles(files, { bucket, prefix, panel: uploadList, onDone: (ok, failed) => {
      toast(failed ? `${ok} uploaded, ${failed} failed.` : `${ok} file${ok === 1 ? "" : "s"} uploaded.`,
            failed ? "error" : "ok");
      load(state.token);
    } });
  }
  picker.addEventListener("change", () => {
    startUpload(picker.files);
    picker.value = "";
  });
  for (const target of [drop, view]) {
    target.addEventListener("dragover", (event) => {
      event.preventDefault();
      drop.classList.add("over");
    });
    target.addEventListener("dragleave", () => drop.classList.remove("over"));
    target.addEventListener("drop", (event) => {
      event.preventDefault();
      event.stopPropagation();
      drop.classList.remove("over");
      startUpload(event.dataTransfer && event.dataTransfer.files);
    });
  }
  sizeSelect.addEventListener("change", () => {
    state.pageSize = Number(sizeSelect.value);
    state.tokens = [];
    load(null);
  });
  deleteButton.addEventListener("click", () => removeKeys(Array.from(state.selected)));

  async function newFolder() {
    const input = h("input", { id: "folder-name", required: true, spellcheck: "false", autocapitalize: "off" });
    const ok = await confirmDialog({ title: "New folder", confirm: "Open folder", danger: false,
      message: "A folder is a key prefix: it exists once something is uploaded into it.",
      body: h("div", { class: "field" }, h("label", { for: "folder-name" }, "Folder name"), input) });
    const name = input.value.replace(/^\/+|\/+$/g, "");
    if (ok && name) location.hash = browseHash(bucket, prefix + name + "/");
  }

  async function share(key) {
    const select = h("select", { id: "share-expiry" },
      EXPIRIES.map(([seconds, label]) => h("option", { value: String(seconds), selected: seconds === 3600 }, label)));
    const ok = await confirmDialog({ title: `Share ${baseName(key, prefix)}`, confirm: "Create link", danger: false,
      message: "Anyone with the link can download this object until it expires (a presigned URL made with your credentials).",
      body: h("div", { class: "field" }, h("label", { for: "share-expiry" }, "Link valid for"), select) });
    if (!ok) return;
    try {
      const link = await api.call("POST", api.bucketPath(bucket, "/share"), { key, expires: Number(select.value) });
      const field = h("input", { id: "share-url", readonly: true, value: link.url, class: "mono" });
      const copy = h("button", { type: "button", onclick: async () => {
        field.select();
        try {
          await navigator.clipboard.writeText(link.url);
          toast("Link copied.", "ok");
        } catch (_) {
          document.execCommand && document.execCommand("copy");
        }
      } }, "Copy");
      infoDialog({ title: "Share link", body: h("div", { class: "field" },
        h("label", { for: "share-url" }, `Valid until ${formatDate(link.expires)}`), h("div", { class: "row" }, field, copy)) });
      field.select();
    } catch (error) {
      toast(`${error.code}: ${error.message}`, "error");
    }
  }

  async function removeKeys(keys) {
    if (!keys.length) return;
    const ok = await confirmDialog({
      title: keys.length === 1 ? `Delete ${baseName(keys[0], prefix)}?` : `Delete ${keys.length} objects?`,
      message: "This cannot be undone.", confirm: "Delete" });
    if (!ok) return;
    try {
      let deleted = 0;
      const failed = [];
      for (let i = 0; i < keys.length; i += 1000) {
        const answer = await api.call("POST", api.bucketPath(bucket, "/delete"), { keys: keys.slice(i, i + 1000) });
        deleted += answer.deleted.length;
        failed.push(...answer.errors);
      }
      toast(failed.length ? `${deleted} deleted; ${failed.length} not: ${failed[0].code}` : `${deleted} deleted.`,
            failed.length ? "error" : "ok");
    } catch (error) {
      toast(`${error.code}: ${error.message}`, "error");
    }
    state.selected.clear();
    await load(state.token);
  }

  function sortedObjects() {
    const { column, ascending } = state.sort;
    const sign = ascending ? 1 : -1;
    const key = { name: (o) => o.key, size: (o) => o.size, modified: (o) => o.last_modified }[column];
    return [...state.objects].sort((a, b) => (key(a) < key(b) ? -sign : key(a) > key(b) ? sign : 0));
  }

  function header(label, column, extra = "") {
    const active = state.sort.column === column;
    const sort = active ? (state.sort.ascending ? "ascending" : "descending") : "none";
    return h("th", { scope: "col", "aria-sort": sort, class: extra },
      h("button", { type: "button", class: "sort", dataset: { sort: column }, onclick: () => {
        state.sort = { column, ascending: active ? !state.sort.ascending : true };
        render();
      } }, label, h("span", { class: "sort-mark", "aria-hidden": "true" }, active ? (state.sort.ascending ? " ▲" : " ▼") : "")));
  }

  function updateSelection() {
    deleteButton.disabled = state.selected.size === 0;
    deleteButton.textContent = state.selected.size ? `Delete selected (${state.selected.size})` : "Delete selected";
  }

  function render() {
    const folderRows = (state.sort.ascending || state.sort.column !== "name" ? state.prefixes : [...state.prefixes].reverse())
      .map((p) => h("tr", { class: "folder", dataset: { prefix: p } },
        h("td", {}),
        h("th", { scope: "row" }, h("a", { href: browseHash(bucket, p) }, h("span", { class: "icon-folder", "aria-hidden": "true" }),
          baseName(p, prefix))),
        h("td", { class: "num" }, "–"), h("td", { class: "wide-only" }, ""), h("td", {})));
    const objectRows = sortedObjects().map((o) => {
      const name = baseName(o.key, prefix);
      const box = h("input", { type: "checkbox", "aria-label": `Select ${name}`, checked: state.selected.has(o.key) });
      box.addEventListener("change", () => {
        if (box.checked) state.selected.add(o.key); else state.selected.delete(o.key);
        updateSelection();
      });
      return h("tr", { dataset: { key: o.key } },
        h("td", { class: "check" }, box),
        h("th", { scope: "row" }, h("a", { href: `#/object/${encodeURIComponent(bucket)}?key=${encodeURIComponent(o.key)}` }, name)),
        h("td", { class: "num" }, formatBytes(o.size)),
        h("td", { class: "wide-only" }, formatDate(o.last_modified)),
        h("td", { class: "actions" },
          h("a", { class: "button small", href: api.downloadUrl(bucket, o.key), download: name,
                   "aria-label": `Download ${name}` }, "Download"),
          h("button", { type: "button", class: "small", "aria-label": `Share ${name}`, onclick: () => share(o.key) }, "Share"),
          h("button", { type: "button", class: "small danger", "aria-label": `Delete ${name}`,
                        onclick: () => removeKeys([o.key]) }, "Delete")));
    });
    if (!folderRows.length && !objectRows.length) {
      clear(listing, h("p", { class: "empty" }, state.token ? "No more objects." : "Nothing here yet: drop files to upload them."));
    } else {
      const all = h("input", { type: "checkbox", "aria-label": "Select every object on this page",
                               checked: state.objects.length > 0 && state.objects.every((o) => state.selected.has(o.key)) });
      all.addEventListener("change", () => {
        for (const o of state.objects) {
          if (all.checked) state.selected.add(o.key); else state.selected.delete(o.key);
        }
        render();
      });
      clear(listing, h("table", { class: "grid", id: "object-table" },
        h("caption", { class: "visually-hidden" }, `Objects in ${bucket}/${prefix}`),
        h("thead", {}, h("tr", {}, h("th", { scope: "col", class: "check" }, all), header("Name", "name"),
          header("Size", "size", "num"), header("Last modified", "modified", "wide-only"),
          h("th", { scope: "col" }, h("span", { class: "visually-hidden" }, "Actions")))),
        h("tbody", {}, folderRows, objectRows)));
    }
    const page = state.tokens.length + 1;
    clear(pager,
      h("button", { type: "button", id: "prev-page", disabled: state.tokens.length === 0, onclick: () => {
        const previous = state.tokens.pop();
        load(previous === undefined ? null : previous, true);
      } }, "‹ Previous"),
      h("span", { class: "muted", id: "page-number" }, `Page ${page}`),
      h("button", { type: "button", id: "next-page", disabled: !state.next, onclick: () => {
        state.tokens.push(state.token);
        load(state.next, true);
      } }, "Next ›"));
    updateSelection();
    live.textContent = `${state.prefixes.length} folders and ${state.objects.length} objects on page ${page}.`;
  }

  async function load(token, paging = false) {
    let data;
    try {
      data = await api.call("GET", api.bucketPath(bucket, "/objects" + api.query({ prefix, token, limit: state.pageSize })));
    } catch (error) {
      clear(listing, errorBox(error));
      clear(pager);
      return;
    }
    state.token = token;
    state.next = data.next_token;
    state.objects = data.objects;
    state.prefixes = data.prefixes;
    if (paging) state.selected.clear();
    render();
  }

  await load(null);
  return null;
}

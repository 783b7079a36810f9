// Small DOM helpers. Text always goes in as text (textContent), never as HTML: names of
// buckets and keys are whatever users chose.

export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      node.addEventListener(name.slice(2).toLowerCase(), value);
    } else if (name === "class") {
      node.className = value;
    } else if (name === "dataset") {
      Object.assign(node.dataset, value);
    } else if (value === true) {
      node.setAttribute(name, "");
    } else {
      node.setAttribute(name, String(value));
    }
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function clear(node, ...children) {
  node.replaceChildren();
  append(node, children);
  return node;
}

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];

export function formatBytes(bytes) {
  if (bytes === null || bytes === undefined) return "–";
  let value = Number(bytes);
  let unit = 0;
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(value < 10 ? 2 : 1)} ${UNITS[unit]}`;
}

export function formatDate(seconds) {
  if (!seconds) return "–";
  const date = new Date(seconds * 1000);
  return date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

export function formatDuration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const s = Math.round(seconds);
  if (s < 120) return `${s} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  if (s < 172800) return `${Math.round(s / 3600)} h`;
  return `${Math.round(s / 86400)} days`;
}

// A polite announcement (role=status): errors and results, read by screen readers too.
export function toast(message, kind = "info") {
  const box = document.getElementById("toast");
  const item = h("div", { class: `toast ${kind}` }, message);
  box.append(item);
  setTimeout(() => item.remove(), kind === "error" ? 8000 : 4000);
}

// A modal <dialog>: resolves true when confirmed. Focus returns where it was.
export function confirmDialog({ title, message, confirm = "Delete", danger = true, body = null }) {
  const dialog = document.getElementById("dialog");
  const previous = document.activeElement;
  return new Promise((resolve) => {
    const titleId = "dialog-title";
    const ok = h("button", { type: "submit", class: danger ? "danger" : "primary", value: "ok" }, confirm);
    const cancel = h("button", { type: "button", value: "cancel", onclick: () => dialog.close("cancel") }, "Cancel");
    const form = h("form", { method: "dialog" },
      h("h2", { id: titleId }, title),
      message ? h("p", {}, message) : null,
      body,
      h("div", { class: "dialog-buttons" }, cancel, ok));
    clear(dialog, form);
    dialog.setAttribute("aria-labelledby", titleId);
    dialog.returnValue = "";
    dialog.addEventListener("close", () => {
      resolve(dialog.returnValue === "ok");
      if (previous && previous.focus) previous.focus();
    }, { once: true });
    dialog.showModal();
    (body && body.querySelector("input, select, textarea")) ? body.querySelector("input, select, textarea").focus()
      : cancel.focus();
  });
}

// A dialog that only shows something (a share link): one Close button.
export function infoDialog({ title, body }) {
  const dialog = document.getElementById("dialog");
  const previous = document.activeElement;
  const close = h("button", { type: "submit", class: "primary", value: "ok" }, "Close");
  clear(dialog, h("form", { method: "dialog" }, h("h2", { id: "dialog-title" }, title), body,
    h("div", { class: "dialog-buttons" }, close)));
  dialog.setAttribute("aria-labelledby", "dialog-title");
  dialog.addEventListener("close", () => previous && previous.focus && previous.focus(), { once: true });
  dialog.showModal();
  return dialog;
}

export function meter(used, total, label) {
  const fraction = total > 0 ? Math.min(1, used / total) : 0;
  const fill = h("div", { class: "meter-fill" });
  fill.style.width = `${(fraction * 100).toFixed(1)}%`; // CSSOM: the CSP allows no style attributes
  return h("div", { class: "meter", role: "meter", "aria-label": label, "aria-valuemin": "0",
                    "aria-valuemax": String(total || 0), "aria-valuenow": String(used || 0),
                    "aria-valuetext": `${Math.round(fraction * 100)}% used` },
    fill);
}

export function pageTitle(text) {
  document.title = `${text} · Buckets console`;
}

export function errorBox(error) {
  return h("div", { class: "error-box", role: "alert" },
    h("strong", {}, error.code || "Error"), " ", error.message || String(error));
}

// The console's entry point: the login form, the header, and a router over the URL's
// hash (#/buckets, #/browse/BUCKET?prefix=..., #/object/BUCKET?key=..., #/cluster, #/users).

import * as api from "./api.js";
import { h, clear, pageTitle, toast } from "./ui.js";
import { bucketsPage } from "./buckets.js";
import { browserPage } from "./browser.js";
import { objectPage } from "./object.js";
import { clusterPage } from "./cluster.js";
import { usersPage } from "./users.js";

const main = document.getElementById("main");
const top = document.getElementById("top");
let stopPage = null; // what the current page must stop (timers) when another is shown
const ROOT_PAGES = ["cluster", "users"];

export function parseHash() {
  const hash = location.hash.replace(/^#\/?/, "");
  const [path, search = ""] = hash.split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  const params = new URLSearchParams(search);
  return { page: parts[0] || "buckets", args: parts.slice(1), params };
}

function showLogin(message) {
  if (stopPage) stopPage();
  stopPage = null;
  top.hidden = true;
  pageTitle("Log in");
  const error = h("p", { class: "error-box", role: "alert", id: "login-error", hidden: !message }, message || "");
  const accessKey = h("input", { id: "access-key", name: "access_key", autocomplete: "username", required: true,
                                 spellcheck: "false", autocapitalize: "off" });
  const secretKey = h("input", { id: "secret-key", name: "secret_key", type: "password",
                                 autocomplete: "current-password", required: true });
  const submit = h("button", { type: "submit", class: "primary" }, "Log in");
  const form = h("form", { class: "login", "aria-labelledby": "login-title", novalidate: true },
    h("h1", { id: "login-title" }, h("span", { class: "logo", "aria-hidden": "true" }), "Buckets"),
    h("p", { class: "muted" }, "Log in with an access key and its secret key."),
    error,
    h("label", { for: "access-key" }, "Access key"), accessKey,
    h("label", { for: "secret-key" }, "Secret key"), secretKey,
    submit);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!accessKey.value || !secretKey.value) {
      error.hidden = false;
      error.textContent = "Enter an access key and a secret key.";
      return;
    }
    submit.disabled = true;
    try {
      await api.login(accessKey.value.trim(), secretKey.value);
      secretKey.value = "";
      const { page } = parseHash();
      if (!location.hash || location.hash === "#" || (!api.session.root && ROOT_PAGES.includes(page))) {
        history.replaceState(null, "", "#/buckets");
      }
      route();
    } catch (err) {
      error.hidden = false;
      error.textContent = err.code === "InvalidCredentials"
        ? "Wrong access key or secret key." : err.message;
      secretKey.value = "";
      secretKey.focus();
    } finally {
      submit.disabled = false;
    }
  });
  clear(main, form);
  (accessKey.value ? secretKey : accessKey).focus();
}

function renderHeader(page) {
  top.hidden = false;
  clear(document.getElementById("who"), h("span", { class: "muted" }, "Logged in as "),
    h("strong", {}, api.session.user), api.session.root ? h("span", { class: "badge" }, "root") : null);
  for (const link of document.querySelectorAll("[data-nav]")) {
    const item = link.closest("li");
    if (link.dataset.root !== undefined) item.hidden = !api.session.root;
    if (link.dataset.nav === page || (page === "browse" || page === "object") && link.dataset.nav === "buckets") {
      link.setAttribute("aria-current", "page");
    } else {
      link.removeAttribute("aria-current");
    }
  }
}

async function route() {
  if (!api.session.user) {
    try {
      await api.resume();
    } catch (_) {
      showLogin();
      return;
    }
  }
  if (stopPage) stopPage();
  stopPage = null;
  const { page, args, params } = parseHash();
  renderHeader(page);
  const pages = { buckets: bucketsPage, browse: browserPage, object: objectPage, cluster: clusterPage,
                  users: usersPage };
  const show = pages[page] || bucketsPage;
  const view = h("div", { class: "page" });
  clear(main, view);
  stopPage = (await show(view, { args, params })) || null;
  main.focus({ preventScroll: true });
}

api.whenLoggedOut((error) => {
  showLogin(error && error.code === "SessionExpired" ? "The session expired: log in again."
    : "The session ended: log in again.");
});

document.getElementById("logout").addEventListener("click", async () => {
  try {
    await api.logout();
  } catch (_) {
    // the session is gone either way
  }
  showLogin();
  toast("Logged out.");
});

window.addEventListener("hashchange", route);
route();

// The users page (root only): add a user, enable or disable one, set its policy, remove
// it. The server runs the admin API's own handlers for each (buckets-admin user ...).

import * as api from "./api.js";
import { h, clear, confirmDialog, errorBox, formatDate, pageTitle, toast } from "./ui.js";

function randomSecret() {
  const bytes = new Uint8Array(24);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export async function usersPage(view) {
  pageTitle("Users");
  const list = h("div", { class: "table-wrap" });
  let policies = [];

  function policySelect(id, current) {
    return h("select", { id }, policies.map((p) => h("option", { value: p.name, selected: p.name === current },
      p.canned ? `${p.name} (built in)` : p.name)));
  }

  const accessKey = h("input", { id: "user-access-key", required: true, minlength: "3", maxlength: "128",
                                 spellcheck: "false", autocapitalize: "off", autocomplete: "off" });
  const secretKey = h("input", { id: "user-secret-key", required: true, minlength: "8", maxlength: "128",
                                 spellcheck: "false", autocomplete: "new-password", class: "mono" });
  const policyHolder = h("span", {});
  const form = h("form", { class: "stack-form", "aria-labelledby": "add-user-title" },
    h("h2", { id: "add-user-title" }, "Add a user"),
    h("div", { class: "field" }, h("label", { for: "user-access-key" }, "Access key"), accessKey),
    h("div", { class: "field" }, h("label", { for: "user-secret-key" }, "Secret key"),
      h("div", { class: "row" }, secretKey, h("button", { type: "button", onclick: () => { secretKey.value = randomSecret(); } }, "Generate"))),
    h("div", { class: "field" }, h("label", { for: "user-policy" }, "Policy"), policyHolder),
    h("button", { type: "submit", class: "primary" }, "Add user"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await api.call("POST", "users", { access_key: accessKey.value.trim(), secret_key: secretKey.value,
                                        policy: document.getElementById("user-policy").value });
      toast(`User ${accessKey.value.trim()} added.`, "ok");
      accessKey.value = "";
      secretKey.value = "";
      await load();
    } catch (error) {
      toast(`${error.code}: ${error.message}`, "error");
    }
  });
  clear(view, h("div", { class: "page-head" }, h("h1", {}, "Users")), list, form);

  async function act(method, path, body, done) {
    try {
      await api.call(method, path, body);
      toast(done, "ok");
    } catch (error) {
      toast(`${error.code}: ${error.message}`, "error");
    }
    await load();
  }

  async function setPolicy(user) {
    const select = policySelect("policy-choice", user.policy);
    const ok = await confirmDialog({ title: `Policy of ${user.access_key}`, confirm: "Set policy", danger: false,
      body: h("div", { class: "field" }, h("label", { for: "policy-choice" }, "Policy"), select) });
    if (ok) await act("PUT", `users/${encodeURIComponent(user.access_key)}/policy`, { policy: select.value },
      `${user.access_key} now has policy ${select.value}.`);
  }

  async function remove(user) {
    if (await confirmDialog({ title: `Remove user ${user.access_key}?`,
      message: "Its requests and console sessions stop at once. Its buckets stay.", confirm: "Remove user" })) {
      await act("DELETE", `users/${encodeURIComponent(user.access_key)}`, undefined, `${user.access_key} removed.`);
    }
  }

  async function load() {
    let data;
    try {
      [data, policies] = await Promise.all([api.call("GET", "users"),
        api.call("GET", "policies").then((answer) => answer.policies)]);
    } catch (error) {
      clear(list, errorBox(error));
      return;
    }
    clear(policyHolder, policySelect("user-policy", "readwrite"));
    if (!data.users.length) {
      clear(list, h("p", { class: "empty" }, "No users besides the root user yet."));
      return;
    }
    clear(list, h("table", { class: "grid", id: "user-table" },
      h("caption", { class: "visually-hidden" }, "Users"),
      h("thead", {}, h("tr", {}, ["Access key", "Status", "Policy"].map((t) => h("th", { scope: "col" }, t)),
        h("th", { scope: "col", class: "wide-only" }, "Created"), h("th", { scope: "col" }, h("span", { class: "visually-hidden" }, "Actions")))),
      h("tbody", {}, data.users.map((user) => h("tr", { dataset: { user: user.access_key } },
        h("th", { scope: "row", class: "mono" }, user.access_key),
        h("td", {}, h("span", { class: `state state-${user.enabled ? "online" : "offline"}` }, user.enabled ? "enabled" : "disabled")),
        h("td", { class: "break" }, user.policy && user.policy.trim().startsWith("{") ? "JSON document" : user.policy),
        h("td", { class: "wide-only" }, formatDate(user.created)),
        h("td", { class: "actions" },
          h("button", { type: "button", class: "small", "aria-label": `${user.enabled ? "Disable" : "Enable"} ${user.access_key}`,
                        onclick: () => act("POST", `users/${encodeURIComponent(user.access_key)}/${user.enabled ? "disable" : "enable"}`, {},
                          `${user.access_key} ${user.enabled ? "disabled" : "enabled"}.`) }, user.enabled ? "Disable" : "Enable"),
          h("button", { type: "button", class: "small", "aria-label": `Set the policy of ${user.access_key}`,
                        onclick: () => setPolicy(user) }, "Policy"),
          h("button", { type: "button", class: "small danger", "aria-label": `Remove ${user.access_key}`,
                        onclick: () => remove(user) }, "Remove")))))));
  }

  await load();
  return null;
}

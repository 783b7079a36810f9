// The cluster page (root only): nodes and disks (state, used/free), the erasure layout,
// heal status with progress and "Start heal", the migration when this is a cluster, and
// request rates from the node's own metrics. Refreshed every few seconds while shown.

import * as api from "./api.js";
import { h, clear, errorBox, formatBytes, formatDuration, meter, pageTitle, toast } from "./ui.js";

const REFRESH_MS = 3000;
const HEALING_REFRESH_MS = 1000;

function card(title, value, detail, id) {
  return h("div", { class: "card", id },
    h("h2", {}, title), h("p", { class: "card-value" }, value), detail ? h("p", { class: "muted small" }, detail) : null);
}

function stateBadge(state) {
  return h("span", { class: `state state-${state}` }, state);
}

export async function clusterPage(view) {
  pageTitle("Cluster");
  const body = h("div", { "aria-live": "off" });
  clear(view, h("div", { class: "page-head" }, h("h1", {}, "Cluster")), body);
  let timer = null;
  let stopped = false;
  let healButton = null;

  async function startHeal() {
    healButton.disabled = true;
    try {
      await api.call("POST", "cluster/heal", {});
      toast("Heal pass started.", "ok");
    } catch (error) {
      toast(`${error.code}: ${error.message}`, "error");
    }
    await refresh();
  }

  function render(data) {
    const { info, heal, migration, rates } = data;
    const disks = info.disks || [];
    const online = disks.filter((d) => d.state !== "offline").length;
    const cluster = info.cluster;
    const summary = h("div", { class: "cards" },
      card("Nodes", cluster ? `${cluster.nodes_online} / ${cluster.nodes_total} online` : "1 (single node)",
        cluster ? `generation ${cluster.generation ?? "–"}` : null, "card-nodes"),
      card("Disks", `${online} / ${disks.length} online`, info.health.status === "ok" ? "write quorum met" : "below write quorum", "card-disks"),
      card("Erasure", `${info.erasure.data} data + ${info.erasure.parity} parity`,
        `write quorum ${info.erasure.write_quorum}, read quorum ${info.erasure.read_quorum}`, "card-erasure"),
      card("Stored", formatBytes(info.usage.bytes), `${info.usage.objects.toLocaleString()} objects in ${info.usage.buckets} buckets`, "card-usage"),
      card("Requests", rates.total === null ? "measuring…" : `${rates.total.toFixed(rates.total < 10 ? 2 : 1)} /s`,
        rates.total === null ? null : `over the last ${Math.round(rates.seconds)} s`, "card-rate"),
      card("Uptime", formatDuration(info.uptime_seconds), `version ${info.version}`, "card-uptime"));

    const nodes = cluster ? h("section", { "aria-labelledby": "nodes-title" }, h("h2", { id: "nodes-title" }, "Nodes"),
      h("div", { class: "table-wrap" }, h("table", { class: "grid", id: "node-table" },
        h("thead", {}, h("tr", {}, ["Endpoint", "State", "Disks online", "Leader"].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, cluster.nodes.map((n) => h("tr", {},
          h("th", { scope: "row" }, n.endpoint, n.self ? h("span", { class: "badge" }, "this node") : null),
          h("td", {}, stateBadge(n.online ? (n.state === "active" ? "online" : n.state) : "offline")),
          h("td", { class: "num" }, `${n.disks_online} / ${n.disks_total}`),
          h("td", {}, n.leader ? "yes" : ""))))))) : null;

    const diskTable = h("section", { "aria-labelledby": "disks-title" }, h("h2", { id: "disks-title" }, "Disks"),
      h("div", { class: "table-wrap" }, h("table", { class: "grid", id: "disk-table" },
        h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Disk"), h("th", { scope: "col" }, "State"),
          h("th", { scope: "col" }, "Used"), h("th", { scope: "col", class: "num" }, "Free"),
          h("th", { scope: "col", class: "num wide-only" }, "Total"))),
        h("tbody", {}, disks.map((d) => h("tr", { dataset: { disk: d.endpoint } },
          h("th", { scope: "row", class: "mono break" }, d.endpoint, d.error ? h("div", { class: "muted small" }, d.error) : null),
          h("td", {}, stateBadge(d.state)),
          h("td", {}, meter(d.used, d.total, `${d.endpoint} used`), h("span", { class: "small muted" }, formatBytes(d.used))),
          h("td", { class: "num" }, formatBytes(d.free)),
          h("td", { class: "num wide-only" }, formatBytes(d.total))))))));

    const running = heal.started !== null && !heal.done;
    const healProgress = h("progress", { id: "heal-progress", max: String(Math.max(heal.objects_total, 1)),
      value: String(heal.done && heal.started !== null ? Math.max(heal.objects_total, 1) : heal.objects_done),
      "aria-label": "Heal progress" });
    healButton = h("button", { type: "button", class: "primary", id: "start-heal", disabled: running, onclick: startHeal },
      running ? "Healing…" : "Start heal");
    const healText = heal.started === null ? "No heal pass asked for since the server started."
      : heal.done ? `Last pass finished: ${heal.objects_total.toLocaleString()} objects checked.`
        : `Healing: ${heal.objects_done.toLocaleString()} of ${heal.objects_total.toLocaleString()} objects checked.`;
    const healSection = h("section", { "aria-labelledby": "heal-title", id: "heal" },
      h("h2", { id: "heal-title" }, "Heal"),
      h("p", { id: "heal-status", dataset: { done: String(heal.done), started: String(heal.started !== null) } }, healText),
      healProgress,
      h("dl", { class: "details compact" },
        h("dt", {}, "Shards repaired"), h("dd", { id: "heal-repaired" }, String(heal.shards_repaired)),
        h("dt", {}, "Shards bad"), h("dd", {}, String(heal.shards_bad)),
        h("dt", {}, "Unrecoverable objects"), h("dd", {}, String(heal.objects_unrecoverable)),
        h("dt", {}, "Scanner cycle"), h("dd", {}, `${heal.cycle}${heal.scanning ? " (scanning)" : ""}`),
        h("dt", {}, "Queued repairs"), h("dd", {}, String(heal.queued))),
      healButton);

    let migrationBody;
    if (!migration.cluster && migration.state === "none" && !cluster) {
      migrationBody = h("p", { class: "muted" }, "This is a single node: there is no migration.");
    } else if (migration.state === "none" || !migration.state) {
      migrationBody = h("p", { class: "muted" }, "No migration has run.");
    } else {
      const planned = (migration.planned && migration.planned.bytes) || 0;
      const remaining = migration.remaining_bytes ?? 0;
      migrationBody = h("div", {},
        h("p", {}, `Generation ${migration.from_gen} → ${migration.to_gen}: `, stateBadge(migration.state)),
        planned ? h("progress", { max: String(planned), value: String(Math.max(0, planned - remaining)), "aria-label": "Migration progress" }) : null,
        h("p", { class: "muted small" },
          `${(migration.moved_objects || 0).toLocaleString()} objects, ${formatBytes(migration.moved_bytes || 0)} moved`,
          migration.eta_seconds ? `; about ${formatDuration(migration.eta_seconds)} left` : ""));
    }
    const migrationSection = h("section", { "aria-labelledby": "migration-title" },
      h("h2", { id: "migration-title" }, "Migration"), migrationBody);

    const rateRows = rates.by_api.slice(0, 12).map((r) => h("tr", {}, h("th", { scope: "row" }, r.api),
      h("td", { class: "num" }, r.rate.toFixed(2))));
    const rateSection = h("section", { "aria-labelledby": "rates-title" },
      h("h2", { id: "rates-title" }, "Request rates"),
      rates.total === null ? h("p", { class: "muted" }, "Measuring: rates appear after a few seconds.")
        : h("div", {},
          h("p", {}, Object.entries(rates.by_status).map(([cls, value]) => h("span", { class: "pill" }, `${cls}: ${value.toFixed(2)}/s`))),
          rateRows.length ? h("div", { class: "table-wrap" }, h("table", { class: "grid", id: "rate-table" },
            h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "API"), h("th", { scope: "col", class: "num" }, "Requests/s"))),
            h("tbody", {}, rateRows))) : h("p", { class: "muted" }, "No requests in the last minute.")));

    clear(body, summary, nodes, diskTable, h("div", { class: "two-columns" }, healSection, migrationSection), rateSection);
    return running;
  }

  async function refresh() {
    if (stopped) return;
    clearTimeout(timer);
    let healing = false;
    const focused = document.activeElement && body.contains(document.activeElement) ? document.activeElement.id : null;
    try {
      healing = render(await api.call("GET", "cluster"));
      const again = focused && document.getElementById(focused);
      if (again) again.focus({ preventScroll: true }); // a refresh must not move the keyboard focus
    } catch (error) {
      clear(body, errorBox(error));
      if (error.status === 401 || error.status === 403) return;
    }
    if (!stopped) timer = setTimeout(refresh, healing ? HEALING_REFRESH_MS : REFRESH_MS);
  }

  await refresh();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

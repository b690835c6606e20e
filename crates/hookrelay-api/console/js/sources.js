// Sources: each configured source's kind, state, leader, lag and last error, from
// GET /v1/sources, refreshed every few seconds while the page is open.

import { get } from "/console/js/api.js";
import { h, table, statusBadge, time, seconds, problem, code } from "/console/js/dom.js";

const REFRESH_MS = 3000;

export async function list(page) {
  const body = h("div", {});
  const updated = h("p", { class: "muted" });
  const draw = async () => {
    try {
      const res = await get("/v1/sources");
      body.replaceChildren(sourcesTable(res.data));
      updated.textContent = `Refreshed every ${REFRESH_MS / 1000} s · last at ${time(new Date().toISOString())}`;
    } catch (e) {
      body.replaceChildren(problem(e));
    }
  };
  await draw();
  page.show(
    h("h1", {}, "Sources"),
    h("p", {}, "What hookrelay reads changes from, as this process sees it; another process may lead a source (standby)."),
    updated,
    body,
  );
  page.every(REFRESH_MS, draw);
}

function sourcesTable(sources) {
  const columns = [
    { label: "Source" }, { label: "Kind" }, { label: "State" }, { label: "Leader" },
    { label: "Lag", class: "num" }, { label: "Events", class: "num hide-narrow" }, { label: "Last error" },
  ];
  const rows = sources.map((s) => [
    h("strong", { "data-source": s.name }, s.name),
    s.kind,
    [statusBadge(s.state), s.ready ? null : h("span", { class: "muted" }, " not capturing yet")],
    leader(s.leader),
    h("span", { title: s.last_event_at ? `newest change committed ${time(s.last_event_at)}` : "no change captured yet" },
      seconds(s.lag_seconds)),
    String(s.events_captured),
    lastError(s),
  ]);
  return table("Sources", columns, rows, "No sources are configured.");
}

function leader(l) {
  if (!l) return h("span", { class: "muted" }, "none");
  return h("span", {},
    code(l.process),
    l.is_this_process ? " (this process)" : null,
    h("br"),
    h("span", { class: "muted" }, `since ${time(l.since)}${l.epoch != null ? ` · epoch ${l.epoch}` : ""}`));
}

function lastError(s) {
  const notices = (s.notices || []).map((n) =>
    h("div", { class: "muted" }, `${n.kind} at ${time(n.at)}: ${n.detail}`));
  if (!s.last_error) {
    return notices.length ? notices : h("span", { class: "muted" }, "none");
  }
  return h("div", { class: "wrap-anywhere" },
    h("span", { class: "error" }, s.last_error),
    h("div", { class: "muted" }, `at ${time(s.last_error_at)} · ${s.errors} error(s) since start`),
    notices);
}

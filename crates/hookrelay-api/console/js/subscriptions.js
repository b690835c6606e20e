// Subscriptions: a paged, searchable list; create and edit; pause and resume; delete
// (after a confirmation); rotate the secret (shown once); send a test event; the
// circuit's state; and the way to their deliveries.

import { get, post, patch, del, query, seg } from "/console/js/api.js";
import { h, table, facts, field, statusBadge, time, code, toast, busy, pretty } from "/console/js/dom.js";

const PAGE = 25;

/** A secret to show once on the next detail page (kept in memory, never in a URL). */
let secretToShow = null;

export async function list(page) {
  const search = page.params.get("search") || "";
  const cursor = page.params.get("cursor") || "";
  const res = await get(`/v1/subscriptions${query({ limit: PAGE, cursor, search })}`);
  const input = h("input", { type: "search", name: "search", value: search, placeholder: "part of a URL or description" });
  const form = h("form", { class: "row end", role: "search", onsubmit: (ev) => {
    ev.preventDefault();
    location.hash = `#/subscriptions${query({ search: input.value.trim() })}`;
  } },
  field("subscription-search", "Search by URL or description", input),
  h("div", { class: "field" }, h("button", { type: "submit", class: "quiet" }, "Search")));

  const columns = [
    { label: "Subscription" }, { label: "State" }, { label: "Event types", class: "hide-narrow" },
    { label: "Circuit" }, { label: "Deliveries" },
  ];
  const rows = res.data.map((s) => [
    h("div", {},
      h("a", { href: `#/subscriptions/${seg(s.id)}`, "data-subscription": s.id }, s.description || s.url),
      h("div", { class: "muted wrap-anywhere" }, s.description ? s.url : null, s.description ? h("br") : null, code(s.id))),
    stateBadge(s),
    (s.event_types || ["every type"]).join(", "),
    circuitBadge(s.circuit),
    h("span", { class: "row" },
      h("a", { href: `#/deliveries${query({ subscription_id: s.id })}` }, "All"),
      h("a", { href: `#/deliveries${query({ subscription_id: s.id, status: "failed" })}` }, "Failed")),
  ]);
  const pager = h("div", { class: "toolbar" },
    cursor ? h("a", { class: "button quiet", href: `#/subscriptions${query({ search })}` }, "First page") : null,
    res.next_cursor ? h("a", { class: "button quiet", href: `#/subscriptions${query({ search, cursor: res.next_cursor })}` }, "Next page") : null);
  page.show(
    h("div", { class: "toolbar" }, h("h1", {}, "Subscriptions"), h("span", { class: "spacer" }),
      h("a", { class: "button", href: "#/subscriptions/new" }, "New subscription")),
    form,
    table("Subscriptions", columns, rows, search ? `No subscription matches “${search}”.` : "No subscriptions yet."),
    pager,
  );
}

function stateBadge(s) {
  if (s.enabled) return statusBadge("enabled");
  return h("span", {}, statusBadge(s.disabled_reason && !/paused/.test(s.disabled_reason) ? "disabled" : "paused"),
    s.disabled_reason ? h("div", { class: "muted" }, s.disabled_reason) : null);
}

function circuitBadge(c) {
  if (!c) return "—";
  const label = c.state === "closed" ? "closed" : c.state;
  return h("span", {}, statusBadge(label),
    c.consecutive_failures ? h("div", { class: "muted" }, `${c.consecutive_failures} failure(s) in a row`) : null);
}

export async function detail(page) {
  const [id] = page.match;
  const s = await get(`/v1/subscriptions/${seg(id)}`);
  const secret = secretToShow && secretToShow.id === id ? secretToShow.secret : null;
  secretToShow = null;
  const out = h("div", { "aria-live": "polite" });
  const secretBox = h("div", {});
  if (secret) secretBox.replaceChildren(secretNotice("This subscription's signing secret", secret));

  const toggle = h("button", { type: "button", class: "quiet", "data-action": s.enabled ? "pause" : "resume" },
    s.enabled ? "Pause" : "Resume");
  toggle.addEventListener("click", () => busy(toggle, out, async () => {
    await patch(`/v1/subscriptions/${seg(id)}`, { enabled: !s.enabled });
    toast(s.enabled ? "Paused: matching events queue until it is resumed." : "Resumed: queued events are being sent.");
    await detail(page);
  }));

  const test = h("button", { type: "button", class: "quiet", "data-action": "test" }, "Send test event");
  test.addEventListener("click", () => busy(test, out, async () => {
    const r = await post(`/v1/subscriptions/${seg(id)}/test`);
    out.replaceChildren(testResult(r));
  }));

  const rotate = h("button", { type: "button", class: "quiet", "data-action": "rotate-secret" }, "Rotate secret");
  rotate.addEventListener("click", () => busy(rotate, out, async () => {
    if (!confirm("Make a new signing secret? The old one keeps signing for 24 hours.")) return;
    const r = await post(`/v1/subscriptions/${seg(id)}/rotate-secret`);
    secretBox.replaceChildren(secretNotice("The new signing secret (the old one signs too for 24 h)", r.secret));
  }));

  const replayFailed = h("button", { type: "button", class: "quiet", "data-action": "replay-all-failed" }, "Replay all failed");
  replayFailed.addEventListener("click", () => busy(replayFailed, out, async () => {
    if (!confirm("Send every failed delivery of this subscription again?")) return;
    const r = await post("/v1/replay", { subscription_id: id, status: "failed" });
    toast(`${r.replayed} failed deliver${r.replayed === 1 ? "y" : "ies"} scheduled again.`);
  }));

  const remove = h("button", { type: "button", class: "danger", "data-action": "delete" }, "Delete");
  remove.addEventListener("click", () => busy(remove, out, async () => {
    if (!confirm(`Delete ${s.description || s.url}? Its deliveries are deleted with it; this cannot be undone.`)) return;
    await del(`/v1/subscriptions/${seg(id)}`);
    toast("Subscription deleted.");
    location.hash = "#/subscriptions";
  }));

  const c = s.circuit || {};
  page.show(
    h("h1", {}, s.description || s.url),
    secretBox,
    h("div", { class: "toolbar" },
      h("a", { class: "button", href: `#/subscriptions/${seg(id)}/edit` }, "Edit"),
      toggle, test, rotate,
      h("a", { class: "button quiet", href: `#/deliveries${query({ subscription_id: id })}` }, "Deliveries"),
      h("a", { class: "button quiet", href: `#/deliveries${query({ subscription_id: id, status: "failed" })}` }, "Failed deliveries"),
      replayFailed, remove),
    out,
    h("div", { class: "panel" }, facts([
      ["Id", code(s.id)],
      ["URL", s.url],
      ["Description", s.description],
      ["State", stateBadge(s)],
      ["Event types", s.event_types ? s.event_types.join(", ") : "every type"],
      ["Sources", s.sources ? s.sources.join(", ") : "every source"],
      ["Filter", s.filter ? code(s.filter) : "none: every matching event"],
      ["Headers", Object.keys(s.headers || {}).length
        ? h("div", {}, Object.entries(s.headers).map(([k, v]) => h("div", {}, code(`${k}: ${v}`))))
        : "none"],
      ["Ordering", s.ordering === "key" ? "per key (a row's changes in commit order)" : "none"],
      ["Circuit", h("span", {}, circuitBadge(c),
        c.open_until ? h("div", { class: "muted" }, `cooling down until ${time(c.open_until)}`) : null)],
      ["Created", time(s.created_at)],
      ["Updated", time(s.updated_at)],
    ])),
  );
}

function secretNotice(what, secret) {
  return h("div", { class: "notice info", role: "status" },
    h("p", {}, `${what}, shown this once: store it now.`),
    h("p", {}, h("code", { class: "secret", "data-secret": "" }, secret)));
}

function testResult(r) {
  return h("div", { class: `notice ${r.succeeded ? "ok" : "bad"}`, "data-test-result": r.succeeded ? "ok" : "failed" },
    h("p", {}, r.succeeded ? "The test event was delivered." : "The test event was not delivered."),
    facts([
      ["Event id", code(r.event_id)],
      ["Status code", r.status_code == null ? "no answer" : String(r.status_code)],
      ["Duration", `${r.duration_ms} ms`],
      ["Error", r.error],
      ["Response body", r.response_body ? h("pre", {}, pretty(r.response_body)) : null],
    ]));
}

export async function create(page) {
  const names = await sourceNames();
  page.show(h("h1", {}, "New subscription"), form(null, names, async (body, out) => {
    const s = await post("/v1/subscriptions", body);
    secretToShow = { id: s.id, secret: s.secret };
    toast("Subscription created.");
    location.hash = `#/subscriptions/${seg(s.id)}`;
    return s;
  }));
}

export async function edit(page) {
  const [id] = page.match;
  const [s, names] = await Promise.all([get(`/v1/subscriptions/${seg(id)}`), sourceNames()]);
  page.show(h("h1", {}, `Edit ${s.description || s.url}`), form(s, names, async (body) => {
    await patch(`/v1/subscriptions/${seg(id)}`, body);
    toast("Subscription saved.");
    location.hash = `#/subscriptions/${seg(id)}`;
  }));
}

async function sourceNames() {
  const res = await get("/v1/sources");
  return res.data.map((s) => s.name);
}

/** The create and edit form; `s` is the subscription being edited, or null. */
function form(s, sourceList, save) {
  const url = h("input", { type: "url", name: "url", required: true, value: s ? s.url : "", placeholder: "https://example.com/webhooks" });
  const description = h("input", { type: "text", name: "description", value: s ? s.description : "" });
  const types = h("input", { type: "text", name: "event_types", value: s && s.event_types ? s.event_types.join(", ") : "", placeholder: "orders.*, *.delete" });
  const chosen = new Set(s && s.sources ? s.sources : []);
  const boxes = sourceList.map((name) => h("label", {},
    h("input", { type: "checkbox", name: "sources", value: name, checked: chosen.has(name) }), name));
  const filter = h("textarea", { name: "filter", rows: 2, placeholder: 'op == "update" && before.status != after.status' }, s && s.filter ? s.filter : "");
  const headers = h("textarea", { name: "headers", rows: 3, placeholder: "X-Team: billing" },
    s ? Object.entries(s.headers || {}).map(([k, v]) => `${k}: ${v}`).join("\n") : "");
  const ordering = h("select", { name: "ordering" },
    h("option", { value: "key", selected: !s || s.ordering === "key" }, "per key (default)"),
    h("option", { value: "none", selected: s && s.ordering === "none" }, "none"));
  const paused = h("input", { type: "checkbox", name: "paused" });
  const out = h("div", {});
  const submit = h("button", { type: "submit" }, s ? "Save" : "Create subscription");

  const el = h("form", { class: "panel" },
    field("sub-url", "Endpoint URL", url),
    field("sub-description", "Description", description),
    field("sub-event-types", "Event types", types, "Globs separated by commas, e.g. orders.* or *.delete; empty: every type."),
    h("fieldset", { class: "field" },
      h("legend", {}, "Sources"),
      h("span", { class: "hint" }, "None ticked: every source."),
      h("div", { class: "checks" }, boxes.length ? boxes : h("span", { class: "muted" }, "No sources are configured."))),
    field("sub-filter", "Filter (CEL)", filter, "Only events for which this is true; empty: every event. Variables: op, source, schema, table, key, before, after."),
    field("sub-headers", "Headers", headers, "One per line, as Name: value. Sent with every delivery."),
    field("sub-ordering", "Ordering", ordering),
    s ? null : h("div", { class: "field" }, h("label", { class: "row" }, paused, "Create it paused (events queue until it is resumed)")),
    h("div", { class: "toolbar" }, submit,
      h("a", { class: "button quiet", href: s ? `#/subscriptions/${seg(s.id)}` : "#/subscriptions" }, "Cancel")),
    out);
  el.addEventListener("submit", (ev) => {
    ev.preventDefault();
    busy(submit, out, async () => {
      const body = {
        url: url.value.trim(),
        description: description.value.trim(),
        event_types: splitList(types.value),
        sources: boxes.map((b) => b.querySelector("input")).filter((i) => i.checked).map((i) => i.value),
        filter: filter.value.trim(),
        headers: parseHeaders(headers.value),
        ordering: ordering.value,
      };
      if (s) {
        // A PATCH: null clears event_types, sources, filter and headers.
        for (const k of ["event_types", "sources"]) if (body[k].length === 0) body[k] = null;
        if (!body.filter) body.filter = null;
      } else {
        for (const k of ["event_types", "sources"]) if (body[k].length === 0) delete body[k];
        if (!body.filter) delete body.filter;
        if (Object.keys(body.headers).length === 0) delete body.headers;
        if (paused.checked) body.enabled = false;
      }
      await save(body, out);
    });
  });
  return el;
}

function splitList(text) {
  return text.split(/[\s,]+/).map((t) => t.trim()).filter(Boolean);
}

function parseHeaders(text) {
  const headers = {};
  for (const line of text.split("\n")) {
    if (!line.trim()) continue;
    const at = line.indexOf(":");
    if (at < 1) throw new Error(`Headers: “${line.trim()}” is not Name: value`);
    headers[line.slice(0, at).trim()] = line.slice(at + 1).trim();
  }
  return headers;
}

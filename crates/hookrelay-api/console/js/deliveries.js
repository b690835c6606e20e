// Deliveries: filtered by subscription and status (`failed` one click away), each
// with its attempts (time, status code, duration, error, response body as text and
// raw), the event's body, Replay on one and Replay all failed for a subscription.

import { get, post, query, seg, subscriptionNames } from "/console/js/api.js";
import { h, table, facts, field, statusBadge, time, code, problem, toast, busy, pretty } from "/console/js/dom.js";

const PAGE = 50;
const STATUSES = ["pending", "retrying", "succeeded", "failed"];
const OPEN = new Set(["pending", "retrying"]);

export async function list(page) {
  const p = page.params;
  const filters = {
    subscription_id: p.get("subscription_id") || "",
    status: p.get("status") || "",
    event_type: p.get("event_type") || "",
  };
  const cursor = p.get("cursor") || "";
  const [res, subs] = await Promise.all([
    get(`/v1/deliveries${query({ ...filters, limit: PAGE, cursor })}`),
    subscriptionNames(),
  ]);
  const at = (changes) => `#/deliveries${query({ ...filters, ...changes })}`;
  const out = h("div", {});

  const chips = h("nav", { class: "chips", "aria-label": "Status" },
    [["", "All"], ...STATUSES.map((s) => [s, s[0].toUpperCase() + s.slice(1)])].map(([value, label]) =>
      h("a", { href: at({ status: value }), "aria-current": filters.status === value ? "true" : null, "data-status": value || "all" }, label)));

  const picker = h("select", { name: "subscription_id" },
    h("option", { value: "" }, "every subscription"),
    subs.list.map((s) => h("option", { value: s.id, selected: s.id === filters.subscription_id }, subs.names.get(s.id))));
  const type = h("input", { type: "text", name: "event_type", value: filters.event_type, placeholder: "orders.update" });
  const form = h("form", { class: "row end", onsubmit: (ev) => {
    ev.preventDefault();
    location.hash = `#/deliveries${query({ subscription_id: picker.value, status: filters.status, event_type: type.value.trim() })}`;
  } },
  field("deliveries-subscription", "Subscription", picker),
  field("deliveries-event-type", "Event type", type),
  h("div", { class: "field" }, h("button", { type: "submit", class: "quiet" }, "Filter")));

  let bulk = null;
  if (filters.subscription_id) {
    bulk = h("button", { type: "button", class: "quiet", "data-action": "replay-all-failed" }, "Replay all failed");
    bulk.addEventListener("click", () => busy(bulk, out, async () => {
      const name = subs.names.get(filters.subscription_id) || filters.subscription_id;
      if (!confirm(`Send every failed delivery of ${name} again?`)) return;
      const r = await post("/v1/replay", { subscription_id: filters.subscription_id, status: "failed" });
      toast(`${r.replayed} failed deliver${r.replayed === 1 ? "y" : "ies"} scheduled again.`);
      await list(page);
    }));
  }

  const columns = [
    { label: "Delivery" }, { label: "Status" }, { label: "Event" }, { label: "Subscription", class: "hide-narrow" },
    { label: "Attempts", class: "num" }, { label: "Last answer" }, { label: "Created", class: "hide-narrow" }, { label: "" },
  ];
  const rows = res.data.map((d) => [
    h("a", { href: `#/deliveries/${d.id}`, "data-delivery": String(d.id), "aria-label": `Delivery ${d.id}` }, `#${d.id}`),
    statusBadge(d.status),
    h("div", {}, d.event_type, h("div", { class: "muted" }, code(d.event_id))),
    subs.names.get(d.subscription_id) || code(d.subscription_id),
    String(d.attempt_count),
    lastAnswer(d),
    time(d.created_at),
    d.status === "failed" ? replayButton(d, out, () => list(page)) : null,
  ]);
  const empty = filters.status === "failed" ? "No failed deliveries." : "No deliveries match.";
  page.show(
    h("div", { class: "toolbar" }, h("h1", {}, "Deliveries"), h("span", { class: "spacer" }), bulk),
    chips,
    form,
    out,
    table("Deliveries, newest first", columns, rows, empty),
    h("div", { class: "toolbar" },
      cursor ? h("a", { class: "button quiet", href: at({}) }, "Newest") : null,
      res.next_cursor ? h("a", { class: "button quiet", href: at({ cursor: res.next_cursor }) }, "Older") : null),
  );
}

function lastAnswer(d) {
  if (d.last_status_code == null && !d.last_error) return h("span", { class: "muted" }, "—");
  return h("span", { class: "wrap-anywhere" },
    d.last_status_code != null ? code(String(d.last_status_code)) : null,
    d.last_error ? ` ${d.last_error}` : null);
}

function replayButton(d, out, then) {
  const b = h("button", { type: "button", class: "small", "data-action": "replay", "aria-label": `Replay delivery ${d.id}` }, "Replay");
  b.addEventListener("click", () => busy(b, out, async () => {
    await post(`/v1/deliveries/${d.id}/replay`);
    toast(`Delivery #${d.id} scheduled again (same event id).`);
    await then();
  }));
  return b;
}

export async function detail(page) {
  const [id] = page.match;
  const d = await get(`/v1/deliveries/${seg(id)}`);
  const [event, sub] = await Promise.all([
    get(`/v1/events/${seg(d.event_id)}`).catch((e) => e),
    get(`/v1/subscriptions/${seg(d.subscription_id)}`).catch(() => null),
  ]);
  const out = h("div", {});
  const replay = replayButton(d, out, () => detail(page));
  replay.classList.remove("small");
  const subName = sub ? sub.description || sub.url : d.subscription_id;

  page.show(
    h("h1", {}, `Delivery #${d.id}`),
    h("div", { class: "toolbar" }, statusBadge(d.status), replay,
      h("a", { class: "button quiet", href: `#/deliveries${query({ subscription_id: d.subscription_id, status: "failed" })}` },
        "This subscription's failed deliveries")),
    out,
    h("div", { class: "panel" }, facts([
      ["Status", h("span", { "data-delivery-status": d.status }, d.status)],
      ["Subscription", h("a", { href: `#/subscriptions/${seg(d.subscription_id)}` }, subName)],
      ["Event", h("a", { href: `#/events/${seg(d.event_id)}` }, code(d.event_id))],
      ["Event type", d.event_type],
      ["Attempts", `${d.attempt_count} since it was created or last replayed`],
      ["Next attempt", OPEN.has(d.status) ? time(d.next_attempt_at) : null],
      ["Created", time(d.created_at)],
      ["Updated", time(d.updated_at)],
    ])),
    h("h2", {}, "Attempts"),
    attempts(d.attempts),
    h("h2", {}, "Event body"),
    event instanceof Error ? problem(event) : h("pre", { "data-event-body": "" }, pretty(event)),
  );
  // While it is still due, follow it until it settles.
  if (OPEN.has(d.status)) {
    const timer = setInterval(async () => {
      if (page.left) return clearInterval(timer);
      try {
        const now = await get(`/v1/deliveries/${seg(id)}`);
        if (!page.left && (now.status !== d.status || now.attempts.length !== d.attempts.length)) {
          clearInterval(timer);
          await detail(page);
        }
      } catch {
        clearInterval(timer);
      }
    }, 1500);
    page.timers.push(timer);
  }
}

function attempts(list) {
  const columns = [
    { label: "#", class: "num" }, { label: "Time" }, { label: "Status code", class: "num" },
    { label: "Duration", class: "num" }, { label: "Error" }, { label: "Response body" },
  ];
  const rows = list.map((a) => [
    String(a.attempt),
    time(a.started_at),
    a.status_code == null ? h("span", { class: "muted" }, "none") : code(String(a.status_code)),
    `${a.duration_ms} ms`,
    a.error ? h("span", { class: "wrap-anywhere" }, a.error) : h("span", { class: "muted" }, "—"),
    body(a),
  ]);
  return table("Attempts, oldest first", columns, rows, "No attempt yet.");
}

/** The response body as text, with a switch to its exact bytes (base64). */
function body(a) {
  if (a.response_body == null && a.response_body_base64 == null) return h("span", { class: "muted" }, "none");
  if (a.response_body === "") return h("span", { class: "muted" }, "empty");
  const text = h("pre", {}, a.response_body ?? "");
  const raw = h("pre", { hidden: true }, a.response_body_base64 ?? "");
  const toggle = h("button", { type: "button", class: "small quiet", "aria-pressed": "false" }, "Raw (base64)");
  toggle.addEventListener("click", () => {
    const showRaw = raw.hidden;
    raw.hidden = !showRaw;
    text.hidden = showRaw;
    toggle.setAttribute("aria-pressed", String(showRaw));
  });
  return h("div", {}, toggle, text, raw);
}

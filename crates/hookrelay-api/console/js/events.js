// Events: look one up by id, see its body (the exact envelope its webhooks carry) and
// where it went (its delivery to each subscription).

import { get, query, seg, subscriptionNames } from "/console/js/api.js";
import { h, table, field, statusBadge, time, code, problem, pretty } from "/console/js/dom.js";

const PAGE = 25;

function lookup(value = "") {
  const input = h("input", { type: "text", name: "event_id", value, required: true, placeholder: "evt_01…", spellcheck: "false" });
  return h("form", { class: "row end", role: "search", onsubmit: (ev) => {
    ev.preventDefault();
    const id = input.value.trim();
    if (id) location.hash = `#/events/${seg(id)}`;
  } },
  field("event-id", "Event id", input),
  h("div", { class: "field" }, h("button", { type: "submit" }, "Look up")));
}

export async function list(page) {
  const cursor = page.params.get("cursor") || "";
  const source = page.params.get("source") || "";
  const eventType = page.params.get("event_type") || "";
  const res = await get(`/v1/events${query({ limit: PAGE, cursor, source, event_type: eventType })}`);
  const columns = [
    { label: "Event" }, { label: "Type" }, { label: "Source", class: "hide-narrow" },
    { label: "Key", class: "hide-narrow" }, { label: "Committed" },
  ];
  const rows = res.data.map((e) => [
    h("a", { href: `#/events/${seg(e.id)}` }, code(e.id)),
    e.type,
    e.source ? `${e.source.name} · ${e.source.schema}.${e.source.table}` : "—",
    e.key ? code(JSON.stringify(e.key)) : "—",
    time(e.committed_at),
  ]);
  const at = (c) => `#/events${query({ source, event_type: eventType, cursor: c })}`;
  page.show(
    h("h1", {}, "Events"),
    lookup(),
    h("h2", {}, "Latest events"),
    table("Events, newest first", columns, rows, "No events stored."),
    h("div", { class: "toolbar" },
      cursor ? h("a", { class: "button quiet", href: at("") }, "Newest") : null,
      res.next_cursor ? h("a", { class: "button quiet", href: at(res.next_cursor) }, "Older") : null),
  );
}

export async function detail(page) {
  const [id] = page.match;
  let event;
  try {
    event = await get(`/v1/events/${seg(id)}`);
  } catch (e) {
    if (e.status !== 404) throw e;
    page.show(h("h1", {}, "Events"), lookup(id), problem(e));
    return;
  }
  const [went, subs] = await Promise.all([
    get(`/v1/deliveries${query({ event_id: id, limit: 100 })}`),
    subscriptionNames(),
  ]);
  const columns = [
    { label: "Delivery" }, { label: "Subscription" }, { label: "Status" }, { label: "Attempts", class: "num" },
    { label: "Last answer" }, { label: "Updated", class: "hide-narrow" },
  ];
  const rows = went.data.map((d) => [
    h("a", { href: `#/deliveries/${d.id}` }, `#${d.id}`),
    h("a", { href: `#/subscriptions/${seg(d.subscription_id)}` }, subs.names.get(d.subscription_id) || d.subscription_id),
    statusBadge(d.status),
    String(d.attempt_count),
    d.last_status_code != null ? code(String(d.last_status_code)) : (d.last_error || "—"),
    time(d.updated_at),
  ]);
  page.show(
    h("h1", {}, h("span", { class: "visually-hidden" }, "Event "), code(event.id)),
    lookup(id),
    h("p", {}, `${event.type} from ${event.source ? event.source.name : "?"}, committed ${time(event.committed_at)}`),
    h("h2", {}, "Where it went"),
    table("Deliveries of this event", columns, rows, "No subscription took this event."),
    h("h2", {}, "Body"),
    h("pre", { "data-event-body": "" }, pretty(event)),
  );
}

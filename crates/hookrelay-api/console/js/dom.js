// Small DOM helpers. Everything shown is set as text (never as HTML), so a response
// body or a row value cannot become markup.

/** `h("a", {href: "#/x", class: "c", onclick: fn}, "text", child, [more])`. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") {
      el.addEventListener(k.slice(2), v);
    } else if (k === "class") {
      el.className = v;
    } else if (k === "for") {
      el.htmlFor = v;
    } else if (k === "value") {
      el.value = v;
    } else if (k === "checked" || k === "selected") {
      el[k] = Boolean(v);
    } else if (v === true) {
      el.setAttribute(k, "");
    } else {
      el.setAttribute(k, String(v));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
}

/** A table with column headers and rows of cells (a cell: text, node, or [node…]). */
export function table(caption, columns, rows, empty = "Nothing here yet.") {
  if (rows.length === 0) {
    return h("p", { class: "muted" }, empty);
  }
  const head = h("tr", {}, columns.map((c) => h("th", { scope: "col", class: c.class }, c.label)));
  const body = rows.map((cells) => h("tr", {}, cells.map((cell, i) => h("td", { class: columns[i].class }, cell))));
  return h("div", { class: "table-wrap" },
    h("table", {}, h("caption", { class: "visually-hidden" }, caption), h("thead", {}, head), h("tbody", {}, body)));
}

/** A definition list of [term, value] pairs; a null value shows "—". */
export function facts(pairs) {
  return h("dl", { class: "facts" }, pairs.flatMap(([k, v]) => [
    h("dt", {}, k),
    h("dd", {}, v === null || v === undefined || v === "" ? "—" : v),
  ]));
}

/** A form field: a label above an input, with an optional hint tied to it. */
export function field(id, label, input, hint) {
  input.id = id;
  const hintId = hint ? `${id}-hint` : null;
  if (hintId) input.setAttribute("aria-describedby", hintId);
  return h("div", { class: "field" },
    h("label", { for: id }, label),
    hint ? h("span", { id: hintId, class: "hint" }, hint) : null,
    input);
}

export function badge(text, kind) {
  return h("span", { class: `badge ${kind}` }, text);
}

const STATUS_KIND = {
  succeeded: "ok", running: "ok", closed: "ok", enabled: "ok",
  pending: "info", connecting: "info", standby: "info", half_open: "warn",
  retrying: "warn", paused: "warn", stopped: "warn",
  failed: "bad", error: "bad", open: "bad", disabled: "bad",
};

export function statusBadge(status) {
  return badge(status.replace("_", "-"), STATUS_KIND[status] || "info");
}

/** `2026-12-06 08:30:01Z` from an RFC 3339 time, or "—". */
export function time(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

/** A duration in seconds as `850 ms`, `12.3 s`, `4 min`, `2.5 h`. */
export function seconds(s) {
  if (s === null || s === undefined) return "—";
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 120) return `${s.toFixed(1)} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

/** Pretty JSON of a value, or the text as it is if it is not JSON. */
export function pretty(value) {
  if (typeof value === "string") {
    try {
      return JSON.stringify(JSON.parse(value), null, 2);
    } catch {
      return value;
    }
  }
  return JSON.stringify(value, null, 2);
}

export function code(text) {
  return h("code", {}, text);
}

/** An error box for a failed call (role=alert, so it is read out). */
export function problem(err) {
  return h("div", { class: "notice bad", role: "alert" }, err && err.message ? err.message : String(err));
}

let toastTimer = null;
/** A short message in the page's polite live region. */
export function toast(text) {
  const el = document.getElementById("toast");
  el.textContent = text;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.textContent = ""; }, 6000);
}

/** Runs `action` with `button` disabled meanwhile; shows a failure in `out`. */
export async function busy(button, out, action) {
  button.disabled = true;
  if (out) out.replaceChildren();
  try {
    return await action();
  } catch (e) {
    if (out) out.replaceChildren(problem(e));
    else toast(e.message);
    return undefined;
  } finally {
    button.disabled = false;
  }
}

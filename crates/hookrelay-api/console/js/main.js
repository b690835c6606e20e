// The console's shell: sign-in, navigation and a hash router (#/section/…), so a
// page's address never carries the token and every view is a bookmarkable link.

import { call, session, ApiError } from "/console/js/api.js";
import { h, problem } from "/console/js/dom.js";
import * as sources from "/console/js/sources.js";
import * as subscriptions from "/console/js/subscriptions.js";
import * as deliveries from "/console/js/deliveries.js";
import * as events from "/console/js/events.js";

const routes = [
  [/^\/sources$/, "sources", sources.list],
  [/^\/subscriptions$/, "subscriptions", subscriptions.list],
  [/^\/subscriptions\/new$/, "subscriptions", subscriptions.create],
  [/^\/subscriptions\/([^/]+)\/edit$/, "subscriptions", subscriptions.edit],
  [/^\/subscriptions\/([^/]+)$/, "subscriptions", subscriptions.detail],
  [/^\/deliveries$/, "deliveries", deliveries.list],
  [/^\/deliveries\/(\d+)$/, "deliveries", deliveries.detail],
  [/^\/events$/, "events", events.list],
  [/^\/events\/([^/]+)$/, "events", events.detail],
];

const el = (id) => document.getElementById(id);
let current = null;

/** What a view gets: where to draw, the address's parameters, and its lifetime. */
class Page {
  constructor(view, params, match) {
    this.view = view;
    this.params = params;
    this.match = match;
    this.controller = new AbortController();
    this.timers = [];
  }
  get left() {
    return this.controller.signal.aborted;
  }
  /** Calls `fn` every `ms` while this page is shown. */
  every(ms, fn) {
    this.timers.push(setInterval(() => { if (!this.left) fn(); }, ms));
  }
  /** Draws `nodes` if the operator is still on this page. */
  show(...nodes) {
    if (!this.left) this.view.replaceChildren(...nodes);
  }
  leave() {
    this.controller.abort();
    this.timers.forEach(clearInterval);
  }
}

function signedIn(yes) {
  el("sign-in").hidden = yes;
  el("nav").hidden = !yes;
  el("sign-out").hidden = !yes;
  if (!yes) {
    el("view").replaceChildren();
    el("token").value = "";
  }
}

async function route() {
  if (current) current.leave();
  current = null;
  if (!session.token()) {
    signedIn(false);
    el("token").focus();
    return;
  }
  signedIn(true);
  const hash = location.hash.replace(/^#/, "") || "/sources";
  const [path, search] = hash.split("?");
  const found = routes.find(([re]) => re.test(path));
  const view = el("view");
  for (const a of el("nav").querySelectorAll("a")) {
    if (found && a.dataset.section === found[1]) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  if (!found) {
    view.replaceChildren(h("h1", {}, "Not found"), h("p", {}, "No such page in the console."));
    return;
  }
  const [re, , render] = found;
  const match = path.match(re).slice(1).map(decodeURIComponent);
  const page = new Page(view, new URLSearchParams(search || ""), match);
  current = page;
  view.replaceChildren(h("p", { class: "muted" }, "Loading…"));
  try {
    await render(page);
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return; // signed out; route() runs again
    page.show(h("h1", {}, "Something went wrong"), problem(e));
  }
  if (page.left) return;
  const title = view.querySelector("h1");
  if (title) {
    title.tabIndex = -1;
    document.title = `${title.textContent} · hookrelay console`;
    if (document.activeElement === document.body || document.activeElement === null) title.focus();
  }
}

el("sign-in-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const input = el("token");
  const error = el("sign-in-error");
  const button = ev.target.querySelector("button");
  const token = input.value.trim();
  error.hidden = true;
  button.disabled = true;
  try {
    await call("GET", "/v1/sources", undefined, token);
    session.signIn(token);
    input.value = "";
    if (location.hash && location.hash !== "#") await route();
    else location.hash = "#/sources"; // routes on hashchange
  } catch (e) {
    error.textContent = e.status === 401 ? "The API refused this token." : e.message;
    error.hidden = false;
    input.focus();
  } finally {
    button.disabled = false;
  }
});

el("sign-out").addEventListener("click", () => {
  session.signOut();
  route();
});

window.addEventListener("hookrelay:signed-out", () => {
  route();
  const error = el("sign-in-error");
  error.textContent = "The API no longer accepts the token: sign in again.";
  error.hidden = false;
});

window.addEventListener("hashchange", route);
route();

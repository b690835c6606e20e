// The one way the console talks to the server: the documented /v1 API, with the
// operator's token in the Authorization header (never in a URL).

const TOKEN_KEY = "hookrelay.console.token";

export const session = {
  token: () => sessionStorage.getItem(TOKEN_KEY),
  signIn: (token) => sessionStorage.setItem(TOKEN_KEY, token),
  signOut: () => sessionStorage.removeItem(TOKEN_KEY),
};

/** A failed call: the HTTP status and the problem document the API answered. */
export class ApiError extends Error {
  constructor(status, problem) {
    const detail = problem && typeof problem === "object"
      ? [problem.title, problem.detail].filter(Boolean).join(": ")
      : String(problem || "");
    super(detail || `the API answered ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

/** Calls `/v1…` with `token` (default: the session's) and answers the parsed JSON. */
export async function call(method, path, body, token = session.token()) {
  if (!path.startsWith("/v1/")) {
    throw new ApiError(0, { title: "Not an API path", detail: path });
  }
  if (!token) {
    throw new ApiError(401, { title: "Not signed in" });
  }
  const headers = { Authorization: `Bearer ${token}`, Accept: "application/json" };
  const init = { method, headers, cache: "no-store", credentials: "omit", redirect: "error" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, { title: "The server did not answer", detail: String(e.message || e) });
  }
  const text = await res.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = text;
    }
  }
  if (res.status === 401 && token === session.token()) {
    session.signOut();
    window.dispatchEvent(new Event("hookrelay:signed-out"));
  }
  if (!res.ok) {
    throw new ApiError(res.status, data);
  }
  return data;
}

export const get = (path) => call("GET", path);
export const post = (path, body) => call("POST", path, body);
export const patch = (path, body) => call("PATCH", path, body);
export const del = (path) => call("DELETE", path);

/** `?a=1&b=2` from the entries whose value is not empty, or "". */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== "") q.set(k, v);
  }
  const s = q.toString();
  return s ? `?${s}` : "";
}

/** A path segment, escaped. */
export const seg = (s) => encodeURIComponent(s);

/** Every subscription (unpaged listing), for pickers and names. */
export async function subscriptionNames() {
  const list = await get("/v1/subscriptions");
  const names = new Map();
  for (const s of list.data) names.set(s.id, s.description || s.url);
  return { list: list.data, names };
}

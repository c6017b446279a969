// The API client: the session (sessionStorage only, never a URL), authenticated fetches, and errors
// that say which route failed and why. URLs are relative, so the console works under a stage prefix.

const KEY = "spot-optimizer-session";

export function session() {
  try { return JSON.parse(sessionStorage.getItem(KEY)); } catch { return null; }
}

export function signOut() { sessionStorage.removeItem(KEY); }

// The error code of the API's answer for a method and path it has no route for (404: the deployed gateway,
// infra/gateway_responses.py, and local mode alike): chalicelib.errors.RouteNotFoundError's, which
// tests/api/test_unknown_route.py keeps equal.
export const UNKNOWN_ROUTE = "route_not_found";

export class ApiError extends Error {
  constructor(method, path, status, body) {
    const text = (body && (body.message || body.Message)) || (typeof body === "string" ? body : "") || "";
    super(`${method} ${path} answered ${status}${text ? `: ${text}` : ""}`);
    this.method = method; this.path = path; this.status = status;
    this.code = body && body.error; this.field = body && body.field; this.body = body;
  }
  // A route this server does not have: 404 with the code UNKNOWN_ROUTE; from an API deployed
  // before its gateway responses, or bare chalice local, 403 "Missing Authentication Token" (or 404/405
  // without our JSON error code).
  get missingRoute() {
    if (this.status === 404 && this.code === UNKNOWN_ROUTE) return true;
    return !this.code && (this.status === 403 || this.status === 404 || this.status === 405);
  }
}

function headers(s, extra) {
  const h = { Accept: "application/json", ...extra };
  if (s && s.kind === "admin") h["X-Admin-Key"] = s.secret;
  if (s && s.kind === "client") h.Authorization = `Bearer ${s.secret}`;
  return h;
}

async function request(method, path, body, s = session(), accept) {
  const init = { method, headers: headers(s, accept ? { Accept: accept } : {}), cache: "no-store" };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  const response = await fetch(path.replace(/^\//, ""), init);
  if (accept === "text/csv" && response.ok) return response.blob();
  const text = await response.text();
  let data = text;
  try { data = text ? JSON.parse(text) : null; } catch { /* not JSON: keep the text */ }
  if (!response.ok) throw new ApiError(method, path, response.status, data);
  return data;
}

export const api = {
  get: (path) => request("GET", path),
  post: (path, body = {}) => request("POST", path, body),
  del: (path) => request("DELETE", path),
  csv: (path) => request("GET", path, undefined, session(), "text/csv"),
};

// Sign-in: the secret is checked against the API before it is kept (client: /api/client/validate;
// admin: the client list, which needs the key). Nothing is stored when the check fails.
export async function signIn(kind, secret) {
  const probe = { kind, secret };
  if (kind === "client") {
    const me = await request("GET", "/api/client/validate", undefined, probe);
    Object.assign(probe, { client_id: me.client_id, name: me.name });
  } else {
    await request("GET", "/api/admin/clients?limit=1", undefined, probe);
    probe.name = "operator";
  }
  sessionStorage.setItem(KEY, JSON.stringify(probe));
  return probe;
}

export function qs(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") q.set(k, v);
  const text = q.toString();
  return text ? `?${text}` : "";
}

export async function downloadCsv(path, filename) {
  const blob = await api.csv(path);
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url; a.download = filename;
  document.body.appendChild(a); a.click(); a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

// Shared building blocks: data loading, tables, charts, status, formatting. Numbers are shown as the API
// returns them (formatted, never recomputed): the console estimates nothing.
import { html, useState, useEffect, useRef, useCallback } from "./vendor/htm-preact-standalone.module.js";
import { ApiError } from "./api.js";

export { html, useState, useEffect, useRef, useCallback };

// Load one or more API calls; reload() fetches again. Each page shows error/loading states through <Async>.
export function useApi(loader, deps = []) {
  const [state, setState] = useState({ loading: true, data: null, error: null });
  const [tick, setTick] = useState(0);
  useEffect(() => {
    let live = true;
    setState((s) => ({ ...s, loading: true }));
    loader().then((data) => live && setState({ loading: false, data, error: null }),
                  (error) => live && setState({ loading: false, data: null, error }));
    return () => { live = false; };
  }, [...deps, tick]);
  return { ...state, reload: useCallback(() => setTick((t) => t + 1), []) };
}

export function ErrorBox({ error, what }) {
  if (!error) return null;
  const missing = error instanceof ApiError && error.missingRoute;
  return html`<div class="error" role="alert" data-error-route=${error.path || ""}>
    <strong>${missing ? `Not available on this server: ${what || "this view"}` : `Could not load ${what || "this view"}`}</strong>
    <div>${missing ? `The API has no route ${error.method} ${error.path} (answered ${error.status}).` : error.message}</div>
  </div>`;
}

export function Async({ state, what, children }) {
  if (state.error) return html`<${ErrorBox} error=${state.error} what=${what} />`;
  if (state.loading && !state.data) return html`<p class="loading">Loading ${what || ""}…</p>`;
  return children(state.data);
}

export function Notice({ notice }) {
  if (!notice) return null;
  return html`<div class=${notice.error ? "error" : "notice"} role=${notice.error ? "alert" : "status"}>${notice.text}</div>`;
}

// Run an action, report its outcome as a notice; returns the API's answer (or null on error).
export function useAction() {
  const [notice, setNotice] = useState(null);
  const [busy, setBusy] = useState(false);
  const run = async (fn, success) => {
    setBusy(true); setNotice(null);
    try {
      const result = await fn();
      if (success) setNotice({ text: typeof success === "function" ? success(result) : success });
      return result;
    } catch (error) {
      setNotice({ error: true, text: error.message });
      return null;
    } finally { setBusy(false); }
  };
  return { notice, busy, run, setNotice };
}

// ---- formatting (display only) ----
export const usd = (v) => (v === null || v === undefined ? "—" : `$${Number(v).toFixed(4)}`);
export const pct = (v) => (v === null || v === undefined ? "—" : `${Number(v).toFixed(2)}%`);
export const num = (v) => (v === null || v === undefined ? "—" : String(v));
export const when = (v) => (v ? v.replace("T", " ").replace(/(\.\d+)?Z$/, " UTC") : "—");
export const secs = (v) => (v === null || v === undefined ? "—" : `${Number(v).toFixed(1)} s`);
export const ms = (v) => (v === null || v === undefined ? "—" : `${(Number(v) / 1000).toFixed(3)} s`);
export const yesNo = (v) => (v === null || v === undefined ? "—" : v ? "yes" : "no");

export function Badge({ value }) {
  const v = value === null || value === undefined ? "—" : String(value);
  return html`<span class=${`badge badge-${v.toLowerCase().replace(/[^a-z]+/g, "-")}`}>${v}</span>`;
}

export function Stat({ label, value, hint, id }) {
  return html`<div class="stat" data-stat=${id || label}>
    <div class="stat-label">${label}</div><div class="stat-value">${value}</div>
    ${hint ? html`<div class="stat-hint">${hint}</div>` : null}</div>`;
}

// columns: [{key, label, render?(row)}]
export function Table({ rows, columns, empty, id, rowKey }) {
  if (!rows || rows.length === 0) return html`<p class="empty" data-table=${id}>${empty || "Nothing yet."}</p>`;
  return html`<div class="table-wrap"><table data-table=${id}>
    <thead><tr>${columns.map((c) => html`<th>${c.label}</th>`)}</tr></thead>
    <tbody>${rows.map((row, i) => html`<tr key=${rowKey ? row[rowKey] : i} data-row=${rowKey ? row[rowKey] : i}>
      ${columns.map((c) => html`<td data-col=${c.key}>${c.render ? c.render(row) : num(row[c.key])}</td>`)}</tr>`)}
    </tbody></table></div>`;
}

// Pagination: the API's next_token, nothing else.
export function Pager({ nextToken, onNext, onFirst, atFirst }) {
  if (!nextToken && atFirst) return null;
  return html`<div class="pager">
    ${atFirst ? null : html`<button class="secondary" onClick=${onFirst}>First page</button>`}
    ${nextToken ? html`<button class="secondary" onClick=${() => onNext(nextToken)}>Next page</button>` : null}
  </div>`;
}

export function usePaged() {
  const [token, setToken] = useState(null);
  return { token, next: setToken, first: () => setToken(null), atFirst: token === null };
}

const PALETTE = ["#0f766e", "#c2410c", "#1d4ed8", "#a21caf", "#4d7c0f", "#b91c1c", "#0369a1", "#92400e"];

// A Chart.js chart. config: {type, labels, datasets:[{label, data}], options?}
export function ChartBox({ id, title, type = "line", labels, datasets, options, empty }) {
  const canvas = useRef(null);
  useEffect(() => {
    if (!canvas.current || !window.Chart || !labels || labels.length === 0) return undefined;
    const chart = new window.Chart(canvas.current, {
      type,
      data: { labels, datasets: datasets.map((d, i) => ({
        borderColor: PALETTE[i % PALETTE.length], backgroundColor: type === "line" ? PALETTE[i % PALETTE.length]
          : (d.colors || PALETTE[i % PALETTE.length]), pointRadius: type === "line" ? 1.5 : undefined,
        borderWidth: type === "line" ? 2 : 0, tension: 0.2, ...d })) },
      options: { animation: false, responsive: true, maintainAspectRatio: false,
                 plugins: { legend: { display: datasets.length > 1 || type === "doughnut" } }, ...options },
    });
    return () => chart.destroy();
  }, [JSON.stringify([type, labels, datasets])]);
  return html`<figure class="chart" data-chart=${id}>
    <figcaption>${title}</figcaption>
    ${!labels || labels.length === 0 ? html`<p class="empty">${empty || "No data in this period."}</p>`
      : html`<div class="chart-area"><canvas ref=${canvas} aria-label=${title} role="img"></canvas></div>`}
  </figure>`;
}

export function Section({ title, actions, children, id }) {
  return html`<section class="card" data-section=${id || title}>
    <header class="card-head"><h2>${title}</h2>${actions ? html`<div class="actions">${actions}</div>` : null}</header>
    ${children}</section>`;
}

export function link(path) { return `#${path}`; }

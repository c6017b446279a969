// Instances: filtered list; one instance's page with its metrics, switch targets (price, risk),
// a 7-day price chart, its switches, and the force-switch form.
import { api, qs, downloadCsv } from "./api.js";
import { html, useApi, useAction, useState, Async, Section, Table, Notice, Badge, Pager, usePaged, Stat, ChartBox,
         usd, pct, num, when } from "./ui.js";
import { switchColumns } from "./client-overview.js";

const columns = [
  { key: "instance_id", label: "Instance", render: (i) => html`<a href=${`#/instances/${i.instance_id}`}>${i.instance_id}</a>` },
  { key: "status", label: "Status", render: (i) => html`<${Badge} value=${i.status} />` },
  { key: "role", label: "Role" },
  { key: "mode", label: "Mode", render: (i) => html`<${Badge} value=${i.mode} />` },
  { key: "instance_type", label: "Type" },
  { key: "pool_id", label: "Pool" },
  { key: "current_price", label: "Price/h", render: (i) => usd(i.current_price) },
  { key: "on_demand_price", label: "On-demand/h", render: (i) => usd(i.on_demand_price) },
  { key: "agent_id", label: "Agent", render: (i) => html`<a href=${`#/agents/${i.agent_id}`}>${i.agent_id}</a>` },
  { key: "launched_at", label: "Launched", render: (i) => when(i.launched_at) },
  { key: "terminated_at", label: "Terminated", render: (i) => when(i.terminated_at) },
];

export function InstancesPage({ who }) {
  const paged = usePaged();
  const [filters, setFilters] = useState({ status: "active", mode: "", search: "" });
  const [applied, setApplied] = useState(filters);
  const action = useAction();
  const path = `/api/client/${who.client_id}/instances`;
  const state = useApi(() => api.get(path + qs({ ...applied, limit: 50, next_token: paged.token })), [JSON.stringify(applied), paged.token]);
  const set = (k) => (e) => setFilters({ ...filters, [k]: e.target.value });
  return html`<h1>Instances</h1>
    <${Section} title="Instances" id="instances" actions=${html`<button class="secondary" data-action="csv"
        onClick=${() => action.run(() => downloadCsv(path + qs({ ...applied, format: "csv" }), "instances.csv"))}>Download CSV</button>`}>
      <form class="filters" onSubmit=${(e) => { e.preventDefault(); paged.first(); setApplied(filters); }}>
        <label>Status <select name="status" value=${filters.status} onChange=${set("status")}>
          <option value="active">active</option><option value="terminated">terminated</option><option value="all">all</option></select></label>
        <label>Mode <select name="mode" value=${filters.mode} onChange=${set("mode")}>
          <option value="">any</option><option value="spot">spot</option><option value="ondemand">on-demand</option></select></label>
        <label>Search <input name="search" value=${filters.search} placeholder="id, type, pool" onInput=${set("search")} /></label>
        <button type="submit">Apply</button>
      </form>
      <${Notice} notice=${action.notice} />
      <${Async} state=${state} what="the instances">${(d) => html`
        <${Table} id="instances" rows=${d.instances} columns=${columns} rowKey="instance_id" empty="No instances match." />
        <${Pager} nextToken=${d.next_token} onNext=${paged.next} onFirst=${paged.first} atFirst=${paged.atFirst} />`}<//>
    <//>`;
}

function Metrics({ id }) {
  const state = useApi(() => api.get(`/api/client/instances/${id}/metrics`), [id]);
  return html`<${Async} state=${state} what="the metrics">${(m) => html`<div class="stats">
    <${Stat} id="uptime_seconds" label="Uptime" value=${`${num(m.uptime_seconds)} s`} />
    <${Stat} id="switches_7d" label="Switches, 7 days" value=${num(m.switches_7d)} />
    <${Stat} id="switches_30d" label="Switches, 30 days" value=${num(m.switches_30d)} />
    <${Stat} id="savings_30d" label="Saved, 30 days" value=${usd(m.savings_30d)} />
    <${Stat} id="savings_total" label="Saved in total" value=${usd(m.savings_total)} /></div>`}<//>`;
}

function Targets({ id, pricing }) {
  return html`<${Async} state=${pricing} what="the switch targets">${(p) => html`
    <p class="muted">Now ${html`<${Badge} value=${p.mode} />`} on ${p.pool_id || "—"} at ${usd(p.current_price)}/h; on-demand ${usd(p.on_demand_price)}/h.</p>
    <${Table} id="targets" rowKey="pool_id" rows=${p.pools} empty="No pools known for this type." columns=${[
      { key: "pool_id", label: "Pool", render: (r) => html`${r.pool_id}${r.is_current ? html` <${Badge} value="current" />` : null}` },
      { key: "instance_type", label: "Type" }, { key: "az", label: "AZ" },
      { key: "price", label: "Price/h", render: (r) => usd(r.price) },
      { key: "savings_percent", label: "Savings vs on-demand", render: (r) => pct(r.savings_percent) },
      { key: "risk_score", label: "Interruption risk", render: (r) => (r.risk_score == null ? "—" : Number(r.risk_score).toFixed(3)) },
      { key: "observed_at", label: "Observed", render: (r) => when(r.observed_at) }]} />`}<//>`;
}

function PriceChart({ id }) {
  const state = useApi(() => api.get(`/api/client/instances/${id}/price-history?days=7&interval=hour`), [id]);
  return html`<${Async} state=${state} what="the price history">${(h) => {
    const labels = h.series.length ? h.series[0].points.map((p) => p.t.slice(5, 16).replace("T", " ")) : [];
    const datasets = h.series.map((s) => ({ label: s.pool_id, data: s.points.map((p) => p.price) }));
    if (h.on_demand_price != null && labels.length) datasets.push({ label: "on-demand", data: labels.map(() => h.on_demand_price), borderDash: [6, 4] });
    return html`<${ChartBox} id="price-history" title="Price per hour, last 7 days (USD)" labels=${labels} datasets=${datasets} />`;
  }}<//>`;
}

function ForceSwitch({ id, pricing }) {
  const [target, setTarget] = useState("ondemand");
  const [pool, setPool] = useState("");
  const action = useAction();
  const pools = pricing.data ? pricing.data.pools.filter((p) => !p.is_current) : [];
  const submit = (e) => {
    e.preventDefault();
    const body = target === "ondemand" ? { target: "ondemand" } : { target: "pool", pool_id: pool };
    action.run(() => api.post(`/api/client/instances/${id}/force-switch`, body),
      (r) => `Switch queued: command ${r.command.command_id} to ${r.command.target_mode}${r.command.target_pool_id ? ` ${r.command.target_pool_id}` : ""} (priority ${r.command.priority}, ${r.command.status}). The agent picks it up at its next heartbeat.`);
  };
  return html`<form class="force-switch" data-form="force-switch" onSubmit=${submit}>
    <label class="inline"><input type="radio" name="target" value="ondemand" checked=${target === "ondemand"} onChange=${() => setTarget("ondemand")} /> On-demand</label>
    <label class="inline"><input type="radio" name="target" value="pool" checked=${target === "pool"} onChange=${() => setTarget("pool")} /> Spot pool</label>
    ${target === "pool" ? (pools.length ? html`<select name="pool_id" value=${pool} onChange=${(e) => setPool(e.target.value)} required>
        <option value="">choose a pool</option>${pools.map((p) => html`<option value=${p.pool_id}>${p.pool_id} — ${usd(p.price)}/h, risk ${p.risk_score == null ? "—" : Number(p.risk_score).toFixed(3)}</option>`)}</select>`
      : html`<input name="pool_id" placeholder="pool id, e.g. m5.large.us-east-1a" value=${pool} onInput=${(e) => setPool(e.target.value)} required />`) : null}
    <button type="submit" disabled=${action.busy}>Force switch</button>
    <${Notice} notice=${action.notice} /></form>`;
}

function Switches({ cid, id }) {
  const state = useApi(() => api.get(`/api/client/${cid}/switch-history${qs({ instance_id: id, limit: 20 })}`), [id]);
  return html`<${Async} state=${state} what="the switches">${(d) => html`
    <${Table} id="instance-switches" rows=${d.switches} columns=${switchColumns} rowKey="switch_id" empty="No switches." />`}<//>`;
}

export function InstanceDetail({ who, param }) {
  const id = encodeURIComponent(param);
  const pricing = useApi(() => api.get(`/api/client/instances/${id}/pricing`), [id]);
  return html`<h1><a href="#/instances" class="back">Instances</a> / ${param}</h1>
    <${Section} title="Metrics" id="metrics"><${Metrics} id=${id} /><//>
    <${Section} title="Force a switch" id="force-switch"><${Async} state=${pricing} what="the instance">${(d) => d.current_primary
      ? html`<${ForceSwitch} id=${id} pricing=${pricing} />`
      : html`<p class="muted" data-not-switchable>Only its agent's current primary can be switched, and this instance is not (it is gone, a standby, or one a switch left running).</p>`}<//><//>
    <${Section} title="Switch targets" id="targets"><${Targets} id=${id} pricing=${pricing} /><//>
    <${Section} title="Prices" id="prices"><${PriceChart} id=${id} /><//>
    <${Section} title="Switches" id="instance-switches"><${Switches} cid=${who.client_id} id=${param} /><//>`;
}

// Client overview: the client's summary, its 30-day charts and its last switches.
import { api } from "./api.js";
import { html, useApi, Async, Section, Stat, ChartBox, Table, usd, pct, num, when, Badge } from "./ui.js";

export const switchColumns = [
  { key: "initiated_at", label: "When", render: (r) => when(r.initiated_at) },
  { key: "agent_id", label: "Agent", render: (r) => html`<a href=${`#/agents/${r.agent_id}`}>${r.agent_id}</a>` },
  { key: "from", label: "From", render: (r) => `${r.from_mode || "—"} ${r.from_pool_id || ""}` },
  { key: "to", label: "To", render: (r) => `${r.to_mode || "—"} ${r.to_pool_id || ""}` },
  { key: "trigger", label: "Trigger", render: (r) => html`<${Badge} value=${r.trigger} />` },
  { key: "old_price", label: "Old price/h", render: (r) => usd(r.old_price) },
  { key: "new_price", label: "New price/h", render: (r) => usd(r.new_price) },
  { key: "hourly_impact", label: "Impact/h", render: (r) => usd(r.hourly_impact) },
  { key: "downtime_seconds", label: "Downtime", render: (r) => (r.downtime_seconds == null ? "—" : `${r.downtime_seconds} s`) },
];

function Summary({ cid }) {
  const state = useApi(() => api.get(`/api/client/${cid}`), [cid]);
  return html`<${Async} state=${state} what="the client summary">${(c) => html`
    <div class="stats">
      <${Stat} id="total_savings" label="Total savings" value=${usd(c.savings.total_savings)} hint=${`${pct(c.savings.savings_percent)} of on-demand`} />
      <${Stat} id="month_to_date_savings" label="Saved this month" value=${usd(c.savings.month_to_date_savings)} />
      <${Stat} id="last_30d_savings" label="Saved, last 30 days" value=${usd(c.savings.last_30d_savings)} />
      <${Stat} id="total_actual_cost" label="Actual cost" value=${usd(c.savings.total_actual_cost)} hint=${`on-demand would be ${usd(c.savings.total_baseline_cost)}`} />
      <${Stat} id="agents_online" label="Agents online" value=${`${num(c.agents_online)} / ${num(c.agents_total)}`} />
      <${Stat} id="instances_active" label="Active instances" value=${num(c.instances_active)} hint=${`${num(c.replicas_active)} standby replicas`} />
    </div>
    <p class="muted">Last sync ${when(c.last_sync)}; savings as of ${when(c.savings.as_of)}.</p>`}
  <//>`;
}

function Charts({ cid }) {
  const state = useApi(() => api.get(`/api/client/${cid}/stats/charts`), [cid]);
  return html`<${Async} state=${state} what="the charts">${(c) => html`<div class="charts">
    <${ChartBox} id="savings-trend" title="Savings per day (USD)" type="bar"
      labels=${c.savings_trend.map((d) => d.date)} datasets=${[{ label: "savings", data: c.savings_trend.map((d) => d.savings) }]} />
    <${ChartBox} id="cost-vs-ondemand" title="Actual cost vs on-demand (USD per day)"
      labels=${c.cost_vs_on_demand.map((d) => d.date)}
      datasets=${[{ label: "actual", data: c.cost_vs_on_demand.map((d) => d.actual_cost) },
                  { label: "on-demand baseline", data: c.cost_vs_on_demand.map((d) => d.baseline_cost) }]} />
    <${ChartBox} id="mode-mix" title="Instances by mode" type="doughnut" labels=${["spot", "on-demand"]}
      datasets=${[{ label: "instances", data: [c.mode_distribution.spot, c.mode_distribution.ondemand], colors: ["#0f766e", "#c2410c"] }]} />
    <${ChartBox} id="switches-per-day" title="Switches per day" type="bar"
      labels=${c.switches_per_day.map((d) => d.date)} datasets=${[{ label: "switches", data: c.switches_per_day.map((d) => d.count) }]} />
  </div>`}<//>`;
}

function RecentSwitches({ cid }) {
  const state = useApi(() => api.get(`/api/client/${cid}/switch-history?limit=10`), [cid]);
  return html`<${Async} state=${state} what="the recent switches">${(d) => html`
    <${Table} id="recent-switches" rows=${d.switches} columns=${switchColumns} rowKey="switch_id" empty="No switches yet." />`}<//>`;
}

export function ClientOverview({ who }) {
  const cid = who.client_id;
  return html`<h1>Overview <small>${who.name}</small></h1>
    <${Section} title="Summary" id="summary"><${Summary} cid=${cid} /><//>
    <${Section} title="Last 30 days" id="charts"><${Charts} cid=${cid} /><//>
    <${Section} title="Recent switches" id="recent-switches"><${RecentSwitches} cid=${cid} /><//>`;
}

// Operator overview: fleet statistics and growth.
import { api } from "./api.js";
import { html, useApi, Async, Section, Stat, ChartBox, usd, pct, num, when } from "./ui.js";

export function AdminOverview() {
  const stats = useApi(() => api.get("/api/admin/stats"), []);
  const growth = useApi(() => api.get("/api/admin/clients/growth?days=30"), []);
  return html`<h1>Fleet overview</h1>
    <${Section} title="Fleet" id="fleet-stats"><${Async} state=${stats} what="the fleet statistics">${(s) => html`<div class="stats">
      <${Stat} id="clients" label="Clients (active)" value=${`${num(s.clients_active)} / ${num(s.clients_total)}`} hint=${`counted ${when(s.counted_at)}`} />
      <${Stat} id="agents" label="Agents online" value=${`${num(s.agents_online)} / ${num(s.agents_total)}`} />
      <${Stat} id="instances_active" label="Active instances" value=${num(s.instances_active)} />
      <${Stat} id="pools_tracked" label="Pools tracked" value=${num(s.pools_tracked)} />
      <${Stat} id="switches" label="Switches (24 h)" value=${`${num(s.switches_24h)}`} hint=${`${num(s.switches_total)} in total`} />
      <${Stat} id="interruptions_24h" label="Interruptions (24 h)" value=${num(s.interruptions_24h)} />
      <${Stat} id="total_savings" label="Fleet savings" value=${usd(s.savings.total_savings)} hint=${`${pct(s.savings.savings_percent)} of on-demand`} />
      <${Stat} id="active_model" label="Active model" value=${num(s.active_model && typeof s.active_model === "object" ? s.active_model.version : s.active_model)} />
    </div>`}<//><//>
    <${Section} title="Growth, last 30 days" id="growth"><${Async} state=${growth} what="the growth">${(g) => html`<div class="charts">
      <${ChartBox} id="growth-clients" title="Clients and agents" labels=${g.growth.map((d) => d.date)} datasets=${[
        { label: "active clients", data: g.growth.map((d) => d.clients_active) }, { label: "agents online", data: g.growth.map((d) => d.agents_online) },
        { label: "active instances", data: g.growth.map((d) => d.instances_active) }]} />
      <${ChartBox} id="growth-savings" title="Fleet savings to date (USD)" labels=${g.growth.map((d) => d.date)}
        datasets=${[{ label: "total savings", data: g.growth.map((d) => d.total_savings) }]} />
    </div>`}<//><//>`;
}

// Savings: the summary, month by month, the last 30 days, and the CSV export (all from the API).
import { api, downloadCsv } from "./api.js";
import { html, useApi, useAction, Async, Section, Table, Stat, ChartBox, Notice, usd, pct, num, when } from "./ui.js";

export function SavingsPage({ who }) {
  const path = `/api/client/${who.client_id}/savings`;
  const state = useApi(() => api.get(`${path}?months=12`), [path]);
  const action = useAction();
  return html`<h1>Savings</h1>
    <${Notice} notice=${action.notice} />
    <${Async} state=${state} what="the savings">${(s) => html`
      <${Section} title="Summary" id="savings-summary" actions=${html`<button class="secondary" data-action="csv"
          onClick=${() => action.run(() => downloadCsv(`${path}?months=12&format=csv`, "savings.csv"))}>Download CSV</button>`}>
        <div class="stats">
          <${Stat} id="total_savings" label="Total savings" value=${usd(s.summary.total_savings)} hint=${`${pct(s.summary.savings_percent)} of on-demand`} />
          <${Stat} id="total_actual_cost" label="Actual cost" value=${usd(s.summary.total_actual_cost)} />
          <${Stat} id="total_baseline_cost" label="On-demand baseline" value=${usd(s.summary.total_baseline_cost)} />
          <${Stat} id="month_to_date_savings" label="This month" value=${usd(s.summary.month_to_date_savings)} />
        </div><p class="muted">As of ${when(s.summary.as_of)} (${s.summary.currency}).</p><//>
      <${Section} title="By month" id="savings-monthly">
        <${ChartBox} id="savings-monthly" title="Actual cost vs on-demand per month (USD)" type="bar" labels=${s.monthly.map((m) => m.month)}
          datasets=${[{ label: "actual", data: s.monthly.map((m) => m.actual_cost) }, { label: "on-demand baseline", data: s.monthly.map((m) => m.baseline_cost) }]} />
        <${Table} id="savings-monthly" rows=${s.monthly} rowKey="month" columns=${[
          { key: "month", label: "Month" }, { key: "baseline_cost", label: "On-demand baseline", render: (m) => usd(m.baseline_cost) },
          { key: "actual_cost", label: "Actual", render: (m) => usd(m.actual_cost) }, { key: "savings", label: "Savings", render: (m) => usd(m.savings) },
          { key: "savings_percent", label: "Savings %", render: (m) => pct(m.savings_percent) }]} /><//>
      <${Section} title="Last 30 days" id="savings-daily">
        <${Table} id="savings-daily" rows=${s.daily} rowKey="date" columns=${[
          { key: "date", label: "Day" }, { key: "baseline_cost", label: "On-demand baseline", render: (d) => usd(d.baseline_cost) },
          { key: "actual_cost", label: "Actual", render: (d) => usd(d.actual_cost) }, { key: "savings", label: "Savings", render: (d) => usd(d.savings) },
          { key: "spot_hours", label: "Spot hours", render: (d) => num(d.spot_hours) }, { key: "ondemand_hours", label: "On-demand hours", render: (d) => num(d.ondemand_hours) }]} /><//>`}<//>`;
}

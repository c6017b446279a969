// Decisions with their reasons: the last five of every agent, or one agent's full history.
import { api, qs } from "./api.js";
import { html, useApi, Async, Section, Table, Badge, Pager, usePaged, usd, when, num } from "./ui.js";

const fmtRisk = (v) => (v === null || v === undefined ? "—" : typeof v === "object" ? JSON.stringify(v) : Number(v).toFixed(3));
const fmtTarget = (t) => (t === null || t === undefined ? "—" : typeof t === "object" ? [t.mode, t.pool_id].filter(Boolean).join(" ") || JSON.stringify(t) : String(t));

// The decision engine's expected hourly cost of each option (pool or "ondemand"): the chosen one is shown,
// every option is in the tooltip.
function expected(d) {
  const costs = d.expected_cost;
  if (costs === null || costs === undefined) return "—";
  if (typeof costs !== "object") return usd(costs);
  const all = Object.entries(costs).map(([k, v]) => `${k}: ${usd(v)}`).join("\n");
  return html`<span title=${all}>${d.target in costs ? usd(costs[d.target]) : "—"}</span>`;
}

export function DecisionTable({ rows, id = "decisions" }) {
  const columns = [
    { key: "decided_at", label: "When", render: (d) => when(d.decided_at) },
    { key: "action", label: "Action", render: (d) => html`<${Badge} value=${d.action} />` },
    { key: "current", label: "From", render: (d) => fmtTarget(d.current) },
    { key: "target", label: "To", render: (d) => fmtTarget(d.target) },
    { key: "risk", label: "Risk", render: (d) => fmtRisk(d.risk) },
    { key: "expected_cost", label: "Expected cost/h of the target", render: (d) => expected(d) },
    { key: "reason", label: "Reason", render: (d) => html`<span class="reason">${num(d.reason)}</span>` },
    { key: "source", label: "Source" },
  ];
  return html`<${Table} id=${id} rows=${rows} columns=${columns} empty="No decisions yet." />`;
}

function AgentHistory({ agentId }) {
  const paged = usePaged();
  const state = useApi(() => api.get(`/api/client/agents/${encodeURIComponent(agentId)}/decisions${qs({ limit: 50, next_token: paged.token })}`), [agentId, paged.token]);
  return html`<${Async} state=${state} what="the decisions">${(d) => html`
    <${DecisionTable} rows=${d.decisions} />
    <${Pager} nextToken=${d.next_token} onNext=${paged.next} onFirst=${paged.first} atFirst=${paged.atFirst} />`}<//>`;
}

export function DecisionsPage({ who, param }) {
  if (param) {
    return html`<h1><a href="#/decisions" class="back">Decisions</a> / ${param}</h1>
      <${Section} title="Decision history" id="agent-decisions"><${AgentHistory} agentId=${param} /><//>`;
  }
  const state = useApi(() => api.get(`/api/client/${who.client_id}/agents/decisions`), [who.client_id]);
  return html`<h1>Decisions</h1>
    <${Async} state=${state} what="the decisions">${(d) => (d.agents.length === 0 ? html`<p class="empty">No agents yet.</p>`
      : d.agents.map((a) => html`<${Section} id=${`decisions-${a.agent_id}`} title=${a.hostname || a.agent_id}
          actions=${html`<${Badge} value=${a.status} /> <span class="muted">pricing ${num(a.pricing_health)}, last report ${when(a.last_pricing_report_at)}</span>
            <a href=${`#/decisions/${a.agent_id}`}>full history</a>`}>
          <${DecisionTable} rows=${a.decisions} /><//>`))}<//>`;
}

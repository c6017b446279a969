// Activity (the audit log) and system health.
import { api, qs } from "./api.js";
import { html, useApi, Async, Section, Table, Badge, Pager, usePaged, when, num } from "./ui.js";

export function ActivityPage() {
  const paged = usePaged();
  const state = useApi(() => api.get(`/api/admin/activity${qs({ limit: 100, next_token: paged.token })}`), [paged.token]);
  return html`<h1>Activity</h1><${Section} title="System events, newest first" id="activity">
    <${Async} state=${state} what="the activity">${(d) => html`
      <${Table} id="activity" rows=${d.events} empty="No events." columns=${[
        { key: "created_at", label: "When", render: (e) => when(e.created_at) },
        { key: "severity", label: "Severity", render: (e) => html`<${Badge} value=${e.severity} />` },
        { key: "event_type", label: "Event" }, { key: "message", label: "Message" },
        { key: "client_id", label: "Client" }, { key: "agent_id", label: "Agent" }, { key: "instance_id", label: "Instance" }]} />
      <${Pager} nextToken=${d.next_token} onNext=${paged.next} onFirst=${paged.first} atFirst=${paged.atFirst} />`}<//><//>`;
}

export function HealthPage() {
  const state = useApi(() => api.get("/api/admin/system-health"), []);
  return html`<h1>System health</h1><${Async} state=${state} what="the system health">${(h) => html`
    <${Section} title="Status" id="health" actions=${html`<${Badge} value=${h.status} />`}>
      <${Table} id="checks" rows=${Object.entries(h.checks || {}).map(([name, v]) => ({ name, ...(typeof v === "object" && v ? v : { status: v }) }))}
        columns=${[{ key: "name", label: "Check" }, { key: "status", label: "Status", render: (c) => html`<${Badge} value=${c.status ?? c.ok} />` },
          { key: "detail", label: "Detail", render: (c) => num(c.detail ?? c.message ?? "") }]} />
      <dl class="kv"><dt>Stale agents</dt><dd data-key="stale_agents">${num(Array.isArray(h.stale_agents) ? h.stale_agents.length : h.stale_agents)}</dd>
        <dt>Failed replicas</dt><dd data-key="failed_replicas">${num(Array.isArray(h.failed_replicas) ? h.failed_replicas.length : h.failed_replicas)}</dd>
        <dt>Active model</dt><dd>${num(h.active_model && typeof h.active_model === "object" ? h.active_model.version : h.active_model)}</dd></dl><//>
    <${Section} title="Recent errors" id="recent-errors">
      <${Table} id="recent-errors" rows=${h.recent_errors || []} empty="No recent errors." columns=${[
        { key: "created_at", label: "When", render: (e) => when(e.created_at) }, { key: "event_type", label: "Event" },
        { key: "message", label: "Message" }, { key: "client_id", label: "Client" }]} /><//>`}<//>`;
}

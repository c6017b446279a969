// Replicas: every standby of the client (with its primary), promote or terminate one.
import { api } from "./api.js";
import { html, useApi, useAction, Async, Section, Table, Notice, Badge, usd, when, num } from "./ui.js";

function ReplicaActions({ row, onDone, action }) {
  const live = !["terminated", "promoted", "failed"].includes(row.status);
  if (!live) return "—";
  const base = `/api/agents/${encodeURIComponent(row.agent_id)}/replicas/${encodeURIComponent(row.replica_id)}`;
  return html`<span class="row-actions">
    <button class="small" data-action="promote" disabled=${action.busy || !row.instance_id}
      onClick=${async () => { if (await action.run(() => api.post(`${base}/promote`, {}),
        (r) => `Promotion of ${r.replica_id} started (${r.action}); interruption ${r.interruption_id || "—"}.`)) onDone(); }}>Promote</button>
    <button class="small danger" data-action="terminate" disabled=${action.busy}
      onClick=${async () => { if (!window.confirm(`Terminate replica ${row.replica_id} and its instance?`)) return;
        if (await action.run(() => api.del(base), (r) => `Replica ${r.replica_id} is ${r.status}.`)) onDone(); }}>Terminate</button>
  </span>`;
}

export function ReplicaTable({ rows, onDone, withPrimary, id = "replicas" }) {
  const action = useAction();
  const columns = [
    { key: "replica_id", label: "Replica" },
    { key: "agent_id", label: "Agent", render: (r) => html`<a href=${`#/agents/${r.agent_id}`}>${r.primary && r.primary.hostname ? r.primary.hostname : r.agent_id}</a>` },
    ...(withPrimary ? [{ key: "primary", label: "Primary", render: (r) => (r.primary ? `${r.primary.instance_id || "—"} (${r.primary.mode || "—"} ${r.primary.pool_id || ""})` : "—") }] : []),
    { key: "status", label: "Status", render: (r) => html`<${Badge} value=${r.status} />` },
    { key: "replica_type", label: "Kind" },
    { key: "instance_id", label: "Instance" },
    { key: "pool_id", label: "Pool" },
    { key: "hourly_cost", label: "Cost/h", render: (r) => usd(r.hourly_cost) },
    { key: "sync_status", label: "Sync", render: (r) => `${num(r.sync_status)}${r.sync_latency_ms != null ? ` (${r.sync_latency_ms} ms)` : ""}` },
    { key: "created_at", label: "Created", render: (r) => when(r.created_at) },
    { key: "ready_at", label: "Ready", render: (r) => when(r.ready_at) },
    { key: "actions", label: "", render: (r) => html`<${ReplicaActions} row=${r} onDone=${onDone} action=${action} />` },
  ];
  return html`<${Notice} notice=${action.notice} />
    <${Table} id=${id} rows=${rows} columns=${columns} rowKey="replica_id" empty="No replicas." />`;
}

export function ReplicasPage({ who }) {
  const state = useApi(() => api.get(`/api/client/${who.client_id}/replicas?limit=100`), [who.client_id]);
  return html`<h1>Replicas</h1>
    <${Section} title="Standby replicas" id="replicas">
      <${Async} state=${state} what="the replicas">${(d) => html`
        <${ReplicaTable} rows=${d.replicas} withPrimary=${true} onDone=${state.reload} />`}<//>
    <//>`;
}

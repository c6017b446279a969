// All agents and all instances, across clients.
import { api, qs } from "./api.js";
import { html, useApi, useState, Async, Section, Table, Badge, Pager, usePaged, usd, num, when } from "./ui.js";

function Listing({ title, id, path, filters, columns, rowKey }) {
  const paged = usePaged();
  const [values, setValues] = useState(Object.fromEntries(filters.map((f) => [f.key, ""])));
  const state = useApi(() => api.get(path + qs({ ...values, limit: 50, next_token: paged.token })), [JSON.stringify(values), paged.token]);
  return html`<h1>${title}</h1><${Section} title=${title} id=${id}>
    <div class="filters">${filters.map((f) => html`<label>${f.label} <select name=${f.key} value=${values[f.key]}
      onChange=${(e) => { paged.first(); setValues({ ...values, [f.key]: e.target.value }); }}>
      <option value="">any</option>${f.options.map((o) => html`<option value=${o}>${o}</option>`)}</select></label>`)}</div>
    <${Async} state=${state} what=${title.toLowerCase()}>${(d) => html`
      <${Table} id=${id} rows=${d[id]} columns=${columns} rowKey=${rowKey} empty="Nothing here." />
      <${Pager} nextToken=${d.next_token} onNext=${paged.next} onFirst=${paged.first} atFirst=${paged.atFirst} />`}<//><//>`;
}

export function AdminAgents() {
  return html`<${Listing} title="All agents" id="agents" path="/api/admin/agents" rowKey="agent_id"
    filters=${[{ key: "status", label: "Status", options: ["online", "degraded", "offline", "deleted"] }]}
    columns=${[{ key: "client_id", label: "Client" }, { key: "hostname", label: "Agent", render: (a) => a.hostname || a.logical_agent_id || a.agent_id },
      { key: "status", label: "Status", render: (a) => html`<${Badge} value=${a.status} />` },
      { key: "mode", label: "Mode", render: (a) => (a.auto_switch_enabled ? "auto-switch" : a.manual_replica_enabled ? "manual replica" : "manual") },
      { key: "instance_id", label: "Instance" }, { key: "pool_id", label: "Pool" }, { key: "region", label: "Region" },
      { key: "agent_version", label: "Version" }, { key: "last_heartbeat_at", label: "Last heartbeat", render: (a) => when(a.last_heartbeat_at) }]} />`;
}

export function AdminInstances() {
  return html`<${Listing} title="All instances" id="instances" path="/api/admin/instances" rowKey="instance_id"
    filters=${[{ key: "status", label: "Status", options: ["active", "terminated", "all"] }, { key: "mode", label: "Mode", options: ["spot", "ondemand"] }]}
    columns=${[{ key: "client_id", label: "Client" }, { key: "instance_id", label: "Instance" },
      { key: "status", label: "Status", render: (i) => html`<${Badge} value=${i.status} />` }, { key: "mode", label: "Mode" },
      { key: "instance_type", label: "Type" }, { key: "pool_id", label: "Pool" }, { key: "current_price", label: "Price/h", render: (i) => usd(i.current_price) },
      { key: "role", label: "Role", render: (i) => num(i.role) }, { key: "launched_at", label: "Launched", render: (i) => when(i.launched_at) }]} />`;
}

// Agents: the list (status, modes, config), and one agent's page: configuration, enable/disable,
// delete, replicas, decisions, interruptions.
import { api, qs } from "./api.js";
import { html, useApi, useAction, useState, Async, Section, Table, Notice, Badge, Pager, usePaged,
         when, num, yesNo } from "./ui.js";
import { ReplicaTable } from "./client-replicas.js";
import { DecisionTable } from "./client-decisions.js";
import { InterruptionTable } from "./client-interruptions.js";

const mode = (a) => (a.auto_switch_enabled ? "auto-switch" : a.manual_replica_enabled ? "manual replica" : "manual");

export const agentColumns = [
  { key: "hostname", label: "Agent", render: (a) => html`<a href=${`#/agents/${a.agent_id}`}>${a.hostname || a.logical_agent_id || a.agent_id}</a>` },
  { key: "status", label: "Status", render: (a) => html`<${Badge} value=${a.status} />` },
  { key: "enabled", label: "Enabled", render: (a) => yesNo(a.enabled) },
  { key: "mode", label: "Mode", render: (a) => mode(a) },
  { key: "auto_terminate_enabled", label: "Auto-terminate", render: (a) => `${yesNo(a.auto_terminate_enabled)}${a.auto_terminate_enabled ? ` after ${num(a.terminate_wait_seconds)} s` : ""}` },
  { key: "instance_id", label: "Instance", render: (a) => (a.instance_id ? html`<a href=${`#/instances/${a.instance_id}`}>${a.instance_id}</a>` : "—") },
  { key: "instance_type", label: "Type" },
  { key: "pool", label: "Running on", render: (a) => `${num(a.mode)} ${a.pool_id || ""}` },
  { key: "replica_count", label: "Replicas" },
  { key: "last_heartbeat_at", label: "Last heartbeat", render: (a) => when(a.last_heartbeat_at) },
  { key: "config_version", label: "Config v." },
];

export function AgentsPage({ who }) {
  const paged = usePaged();
  const [history, setHistory] = useState(false);
  const path = `/api/client/${who.client_id}/agents${history ? "/history" : ""}`;
  const state = useApi(() => api.get(path + qs({ limit: 50, next_token: paged.token })), [path, paged.token]);
  return html`<h1>Agents</h1>
    <${Section} title=${history ? "All agents, deleted included" : "Agents"} id="agents"
      actions=${html`<label class="inline"><input type="checkbox" checked=${history} onChange=${(e) => { setHistory(e.target.checked); paged.first(); }} /> show deleted</label>`}>
      <${Async} state=${state} what="the agents">${(d) => html`
        <${Table} id="agents" rows=${d.agents} columns=${agentColumns} rowKey="agent_id" empty="No agents registered yet." />
        <${Pager} nextToken=${d.next_token} onNext=${paged.next} onFirst=${paged.first} atFirst=${paged.atFirst} />`}<//>
    <//>`;
}

// The agent's row from the (paginated) list: the contract has no single-agent read for clients.
async function findAgent(cid, agentId) {
  let token = null;
  for (let page = 0; page < 20; page += 1) {
    const d = await api.get(`/api/client/${cid}/agents/history${qs({ limit: 100, next_token: token })}`);
    const row = d.agents.find((a) => a.agent_id === agentId);
    if (row || !d.next_token) return row || null;
    token = d.next_token;
  }
  return null;
}

function ConfigForm({ agentId, row }) {
  const initial = row ? { mode: row.auto_switch_enabled ? "auto" : row.manual_replica_enabled ? "replica" : "none",
    auto_terminate_enabled: !!row.auto_terminate_enabled, terminate_wait_seconds: row.terminate_wait_seconds ?? "" } : null;
  const [form, setForm] = useState(initial || { mode: "", auto_terminate_enabled: null, terminate_wait_seconds: "" });
  const [saved, setSaved] = useState(null);
  const action = useAction();
  const set = (k, v) => setForm({ ...form, [k]: v });
  const submit = async (e) => {
    e.preventDefault();
    const body = {};  // only what the user set (or changed from the agent's current values)
    if (form.mode && (!initial || form.mode !== initial.mode)) {
      if (form.mode === "auto") body.auto_switch_enabled = true;
      else if (form.mode === "replica") body.manual_replica_enabled = true;
      else Object.assign(body, { auto_switch_enabled: false, manual_replica_enabled: false });
    }
    if (form.auto_terminate_enabled !== null && (!initial || form.auto_terminate_enabled !== initial.auto_terminate_enabled)) {
      body.auto_terminate_enabled = form.auto_terminate_enabled;
    }
    if (form.terminate_wait_seconds !== "" && (!initial || Number(form.terminate_wait_seconds) !== Number(initial.terminate_wait_seconds))) {
      body.terminate_wait_seconds = Number(form.terminate_wait_seconds);
    }
    if (Object.keys(body).length === 0) { action.setNotice({ error: true, text: "Nothing changed." }); return; }
    const result = await action.run(() => api.post(`/api/client/agents/${encodeURIComponent(agentId)}/config`, body),
      (r) => `Configuration saved (version ${r.config_version}).`);
    if (result) setSaved(result);
  };
  return html`<form class="config-form" onSubmit=${submit} data-form="config">
    ${row ? null : html`<p class="muted">The agent's current settings could not be read; only what you set here is sent.</p>`}
    <fieldset><legend>Mode</legend>
      ${[["auto", "Auto-switch (the decision engine moves it to the best pool)"], ["replica", "Manual replica (a ready standby is kept)"],
         ["none", "Neither (manual switches only)"]].map(([v, label]) => html`
        <label class="inline"><input type="radio" name="mode" value=${v} checked=${form.mode === v} onChange=${() => set("mode", v)} /> ${label}</label>`)}
    </fieldset>
    <label class="inline"><input type="checkbox" name="auto_terminate_enabled" checked=${!!form.auto_terminate_enabled}
      onChange=${(e) => set("auto_terminate_enabled", e.target.checked)} /> Terminate the old instance after a switch</label>
    <label class="field">Terminate wait (seconds)
      <input type="number" name="terminate_wait_seconds" min="0" value=${form.terminate_wait_seconds}
        onInput=${(e) => set("terminate_wait_seconds", e.target.value)} /></label>
    <button type="submit" disabled=${action.busy}>Save configuration</button>
    <${Notice} notice=${action.notice} />
    ${saved ? html`<dl class="kv" data-saved-config>
      <dt>Auto-switch</dt><dd data-key="auto_switch_enabled">${yesNo(saved.auto_switch_enabled)}</dd>
      <dt>Manual replica</dt><dd data-key="manual_replica_enabled">${yesNo(saved.manual_replica_enabled)}</dd>
      <dt>Auto-terminate</dt><dd data-key="auto_terminate_enabled">${yesNo(saved.auto_terminate_enabled)}</dd>
      <dt>Terminate wait</dt><dd data-key="terminate_wait_seconds">${num(saved.terminate_wait_seconds)} s</dd>
      <dt>Config version</dt><dd data-key="config_version">${num(saved.config_version)}</dd></dl>` : null}
  </form>`;
}

function AgentSummary({ row, agentId, onChanged }) {
  const action = useAction();
  // The server's last answer wins over the row until the reload lands, so a second click right after the
  // first asks for the opposite of what the server now holds, not of what the stale row says.
  const [answered, setAnswered] = useState(null);
  const enabled = answered && answered.of === row ? answered.enabled : row.enabled;
  const toggle = () => action.run(() => api.post(`/api/client/agents/${encodeURIComponent(agentId)}/toggle-enabled`, { enabled: !enabled }),
    (r) => `Agent ${r.enabled ? "enabled" : "disabled"}.`).then((r) => { if (r) { setAnswered({ of: row, enabled: r.enabled }); onChanged(); } });
  const remove = async () => {
    if (!window.confirm(`Delete agent ${row.hostname || agentId}? It stops being managed.`)) return;
    if (await action.run(() => api.del(`/api/client/agents/${encodeURIComponent(agentId)}`), "Agent deleted.")) onChanged();
  };
  return html`<dl class="kv">
      <dt>Status</dt><dd><${Badge} value=${row.status} /></dd>
      <dt>Enabled</dt><dd>${yesNo(enabled)}</dd>
      <dt>Mode</dt><dd>${mode(row)}</dd>
      <dt>Instance</dt><dd>${row.instance_id ? html`<a href=${`#/instances/${row.instance_id}`}>${row.instance_id}</a>` : "—"} ${row.instance_type || ""}</dd>
      <dt>Running on</dt><dd>${num(row.mode)} ${row.pool_id || ""} (${row.region || "—"})</dd>
      <dt>Agent version</dt><dd>${num(row.agent_version)}</dd>
      <dt>Last heartbeat</dt><dd>${when(row.last_heartbeat_at)}</dd>
      <dt>Config version</dt><dd>${num(row.config_version)}</dd>
    </dl>
    ${row.status === "deleted" ? null : html`<div class="actions">
      <button class="secondary" data-action="toggle-enabled" disabled=${action.busy} onClick=${toggle}>${enabled ? "Disable" : "Enable"}</button>
      <button class="danger" data-action="delete-agent" disabled=${action.busy} onClick=${remove}>Delete agent</button></div>`}
    <${Notice} notice=${action.notice} />`;
}

export function AgentDetail({ who, param }) {
  const agentId = param;
  const row = useApi(() => findAgent(who.client_id, agentId), [agentId]);
  const replicas = useApi(() => api.get(`/api/agents/${encodeURIComponent(agentId)}/replicas?include_terminated=true&limit=20`), [agentId]);
  const decisions = useApi(() => api.get(`/api/client/agents/${encodeURIComponent(agentId)}/decisions?limit=20`), [agentId]);
  const interruptions = useApi(() => api.get(`/api/agents/${encodeURIComponent(agentId)}/interruptions?limit=20`), [agentId]);
  const name = row.data ? row.data.hostname || row.data.logical_agent_id : agentId;
  return html`<h1><a href="#/agents" class="back">Agents</a> / ${name}</h1>
    <${Section} title="Agent" id="agent">
      <${Async} state=${row} what="the agent's status">${(r) => (r ? html`<${AgentSummary} row=${r} agentId=${agentId} onChanged=${row.reload} />`
        : html`<p class="empty">No such agent.</p>`)}<//><//>
    <${Section} title="Configuration" id="config">
      ${row.loading && !row.data && !row.error ? html`<p class="loading">Loading…</p>` : html`<${ConfigForm} agentId=${agentId} row=${row.data} />`}<//>
    <${Section} title="Replicas" id="agent-replicas">
      <${Async} state=${replicas} what="the replicas">${(d) => html`<${ReplicaTable} id="agent-replicas" rows=${d.replicas} onDone=${replicas.reload} />`}<//><//>
    <${Section} title="Decisions" id="agent-decisions">
      <${Async} state=${decisions} what="the decisions">${(d) => html`<${DecisionTable} rows=${d.decisions} />`}<//><//>
    <${Section} title="Interruptions" id="agent-interruptions">
      <${Async} state=${interruptions} what="the interruptions">${(d) => html`<${InterruptionTable} rows=${d.interruptions} />`}<//><//>`;
}

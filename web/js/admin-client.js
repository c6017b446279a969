// One client, for the operator: its quotas (the client's own overrides; blank = the stage's default), legacy agent
// mode, rate limit, and the AWS accounts bound to it (bind a role, unbind).
import { api } from "./api.js";
import { html, useApi, useAction, useState, Async, Section, Table, Notice, Badge, Stat, num, when, yesNo } from "./ui.js";
import { LIMITS, limitValue } from "./client-account.js";

const enc = encodeURIComponent;
const NUMERIC = new Set(["max_agents", "max_instances", "max_standby_usd_per_hour", "max_switches_per_agent_per_day",
                         "max_instance_vcpus"]);

// The form's text for an override (blank: none), and back: null restores the default, a number sets it.
const shown = (name, value) => (value === null || value === undefined ? ""
  : name === "allowed_instance_families" ? value.join(", ") : String(value));

function parsed(name, text) {
  const t = text.trim();
  if (name === "allow_accelerated_types") return t === "" ? null : t === "yes";
  if (name === "allowed_instance_families") return t === "" ? null : t.split(/[\s,]+/).filter(Boolean);
  return t === "" ? null : Number(t);  // a typo is the API's 400, shown as such
}

function LimitsForm({ id, state, action }) {
  const d = state.data;
  const [draft, setDraft] = useState(null);
  const values = draft || Object.fromEntries(LIMITS.map(([name]) => [name, shown(name, d.overrides[name])]));
  const set = (name, value) => setDraft({ ...values, [name]: value });
  const submit = async (e) => {
    e.preventDefault();
    const body = Object.fromEntries(LIMITS.map(([name]) => [name, parsed(name, values[name])]));
    if (await action.run(() => api.post(`/api/admin/clients/${enc(id)}/limits`, body), "Quotas saved.")) {
      setDraft(null); state.reload();
    }
  };
  return html`<form class="limits" data-form="limits" onSubmit=${submit}>
    <p class="muted">Blank: the stage's default (shown greyed). The effective value is in the last column.</p>
    <table><tbody>${LIMITS.map(([name, label]) => html`<tr key=${name}>
      <td>${label}</td>
      <td>${name === "allow_accelerated_types"
        ? html`<select name=${name} value=${values[name]} onChange=${(e) => set(name, e.target.value)}>
            <option value="">default</option><option value="yes">yes</option><option value="no">no</option></select>`
        : html`<input name=${name} inputmode=${NUMERIC.has(name) ? "decimal" : "text"} value=${values[name]}
            placeholder=${limitValue(name, d.limits[name])} onInput=${(e) => set(name, e.target.value)} />`}</td>
      <td data-effective=${name}>${limitValue(name, d.limits[name])}</td></tr>`)}</tbody></table>
    <button type="submit" disabled=${action.busy}>Save quotas</button>
    <${Notice} notice=${action.notice} /></form>`;
}

function Settings({ client, reload }) {
  const action = useAction();
  const [rate, setRate] = useState(client.rate_limit_per_window === null ? "" : String(client.rate_limit_per_window));
  const legacy = async () => {
    const enabled = !client.legacy_agents;
    if (await action.run(() => api.post(`/api/admin/clients/${enc(client.client_id)}/legacy-agents`, { enabled }),
      `Legacy agent mode is ${enabled ? "on" : "off"}.`)) reload();
  };
  const saveRate = async (e) => {
    e.preventDefault();
    const requests = rate.trim() === "" ? null : Number(rate.trim());
    if (await action.run(() => api.post(`/api/admin/clients/${enc(client.client_id)}/rate-limit`,
      { requests_per_window: requests }), "Rate limit saved.")) reload();
  };
  return html`<div class="stats">
      <${Stat} id="status" label="Status" value=${html`<${Badge} value=${client.status} />`} />
      <${Stat} id="legacy_agents" label="Legacy agent mode" value=${yesNo(client.legacy_agents)}
        hint="v4 agents: the client token on agent routes, registration without an identity document" />
      <${Stat} id="effective_rate_limit" label="Requests per window" value=${num(client.effective_rate_limit)} />
      <${Stat} id="created_at" label="Created" value=${when(client.created_at)} /></div>
    <div class="row-actions">
      <button class="secondary" data-action="legacy-agents" disabled=${action.busy} onClick=${legacy}>
        ${client.legacy_agents ? "Turn legacy agent mode off" : "Turn legacy agent mode on"}</button></div>
    <form class="inline-form" data-form="rate-limit" onSubmit=${saveRate}>
      <label>Own rate limit <input name="requests_per_window" inputmode="numeric" value=${rate}
        placeholder="stage default" onInput=${(e) => setRate(e.target.value)} /></label>
      <button type="submit" disabled=${action.busy}>Save</button></form>
    <${Notice} notice=${action.notice} />`;
}

function Accounts({ client, reload }) {
  const action = useAction();
  const [account, setAccount] = useState("");
  const [role, setRole] = useState("");
  const bind = async (e) => {
    e.preventDefault();
    if (await action.run(() => api.post(`/api/admin/clients/${enc(client.client_id)}/accounts`,
      { account_id: account.trim(), role_arn: role.trim() }), `Account ${account.trim()} bound.`)) {
      setAccount(""); setRole(""); reload();
    }
  };
  const unbind = async (id) => {
    if (!window.confirm(`Unbind account ${id}? The product stops acting there for ${client.name}.`)) return;
    if (await action.run(() => api.del(`/api/admin/clients/${enc(client.client_id)}/accounts/${enc(id)}`),
      `Account ${id} unbound.`)) reload();
  };
  const rows = client.aws_accounts.map((id) => ({ account_id: id }));
  return html`<${Table} id="client-accounts" rows=${rows} rowKey="account_id" empty="No AWS account bound." columns=${[
      { key: "account_id", label: "AWS account" },
      { key: "actions", label: "", render: (a) => html`<button class="small danger" data-action="unbind"
        disabled=${action.busy} onClick=${() => unbind(a.account_id)}>Unbind</button>` }]} />
    <form class="inline-form" data-form="bind-account" onSubmit=${bind}>
      <label>Account <input name="account_id" required inputmode="numeric" value=${account} onInput=${(e) => setAccount(e.target.value)} /></label>
      <label>Role ARN <input name="role_arn" required value=${role} placeholder="arn:aws:iam::123456789012:role/SpotOptimizer"
        onInput=${(e) => setRole(e.target.value)} /></label>
      <button type="submit" disabled=${action.busy}>Bind</button></form>
    <${Notice} notice=${action.notice} />`;
}

export function ClientDetail({ param }) {
  const client = useApi(() => api.get(`/api/admin/clients/${enc(param)}`), [param]);
  const limits = useApi(() => api.get(`/api/admin/clients/${enc(param)}/limits`), [param]);
  const action = useAction();
  return html`<h1><a href="#/clients" class="back">Clients</a> / ${client.data ? client.data.name : param}</h1>
    <${Section} title="Client" id="client"><${Async} state=${client} what="the client">${(c) => html`
      <${Settings} client=${c} reload=${client.reload} />`}<//><//>
    <${Section} title="Quotas" id="client-limits"><${Async} state=${limits} what="the quotas">${() => html`
      <${LimitsForm} id=${param} state=${limits} action=${action} />`}<//><//>
    <${Section} title="AWS accounts" id="client-accounts"><${Async} state=${client} what="the accounts">${(c) => html`
      <${Accounts} client=${c} reload=${client.reload} />`}<//><//>`;
}

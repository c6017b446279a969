// Clients: create (the token is shown once), regenerate a token, activate/deactivate, delete with typed confirmation.
import { api, qs } from "./api.js";
import { html, useApi, useAction, useState, Async, Section, Table, Notice, Badge, Pager, usePaged, usd, num, when } from "./ui.js";

function TokenOnce({ shown, onDone }) {
  if (!shown) return null;
  return html`<div class="token-once" role="alert" data-token-once>
    <strong>${shown.title}</strong>
    <p>Copy it now: it is stored only as a hash and will never be shown again.</p>
    <code data-token>${shown.token}</code>
    <button class="secondary" onClick=${onDone}>I have stored it</button></div>`;
}

function CreateForm({ onCreated, action }) {
  const [name, setName] = useState("");
  const [email, setEmail] = useState("");
  const submit = async (e) => {
    e.preventDefault();
    const body = { name: name.trim() };
    if (email.trim()) body.email = email.trim();
    const created = await action.run(() => api.post("/api/admin/clients/create", body), (r) => `Client ${r.name} created (${r.client_id}).`);
    if (created) { setName(""); setEmail(""); onCreated(created); }
  };
  return html`<form class="inline-form" data-form="create-client" onSubmit=${submit}>
    <label>Name <input name="name" required value=${name} onInput=${(e) => setName(e.target.value)} /></label>
    <label>Email <input name="email" type="email" value=${email} onInput=${(e) => setEmail(e.target.value)} /></label>
    <button type="submit" disabled=${action.busy}>Create client</button></form>`;
}

function DeleteDialog({ client, onClose, onDeleted, action }) {
  const [typed, setTyped] = useState("");
  if (!client) return null;
  const submit = async (e) => {
    e.preventDefault();
    const r = await action.run(() => api.del(`/api/admin/clients/${encodeURIComponent(client.client_id)}`),
      (res) => `Client ${client.name} deleted: ${Object.entries(res.deleted || {}).map(([k, v]) => `${v} ${k}`).join(", ") || "nothing else"}.`);
    if (r) { onDeleted(); onClose(); }
  };
  return html`<form class="dialog" data-form="delete-client" onSubmit=${submit}>
    <strong>Delete ${client.name}?</strong>
    <p>This deletes the client, its agents, instances and history. Type the client's name <code>${client.name}</code> to confirm.</p>
    <input name="confirm" value=${typed} onInput=${(e) => setTyped(e.target.value)} autocomplete="off" />
    <button type="submit" class="danger" disabled=${typed !== client.name || action.busy}>Delete for good</button>
    <button type="button" class="secondary" onClick=${onClose}>Cancel</button></form>`;
}

export function ClientsPage() {
  const paged = usePaged();
  const action = useAction();
  const [shown, setShown] = useState(null);
  const [deleting, setDeleting] = useState(null);
  const state = useApi(() => api.get(`/api/admin/clients${qs({ limit: 50, next_token: paged.token })}`), [paged.token]);
  const regenerate = async (c) => {
    if (!window.confirm(`Regenerate the token of ${c.name}? The current one stops working at once.`)) return;
    const r = await action.run(() => api.post(`/api/admin/clients/${encodeURIComponent(c.client_id)}/regenerate-token`, {}), r2 => r2.warning);
    if (r) setShown({ title: `New token of ${c.name}`, token: r.client_token });
  };
  const setStatus = async (c, status) => {
    if (await action.run(() => api.post(`/api/admin/clients/${encodeURIComponent(c.client_id)}/status`, { status }),
      `${c.name} is ${status}.`)) state.reload();
  };
  const columns = [
    { key: "name", label: "Client", render: (c) => html`<a href=${`#/clients/${encodeURIComponent(c.client_id)}`}>${c.name}</a>` },
    { key: "client_id", label: "Id" },
    { key: "status", label: "Status", render: (c) => html`<${Badge} value=${c.status} />` },
    { key: "email", label: "Email" },
    { key: "agents", label: "Agents online", render: (c) => (c.agents_total === undefined ? "—" : `${num(c.agents_online)} / ${num(c.agents_total)}`) },
    { key: "instances_active", label: "Instances", render: (c) => num(c.instances_active) },
    { key: "total_savings", label: "Savings", render: (c) => usd(c.total_savings) },
    { key: "created_at", label: "Created", render: (c) => when(c.created_at) },
    { key: "actions", label: "", render: (c) => html`<span class="row-actions">
      <button class="small secondary" data-action="regenerate" disabled=${action.busy} onClick=${() => regenerate(c)}>Regenerate token</button>
      ${c.status === "active"
        ? html`<button class="small secondary" data-action="deactivate" disabled=${action.busy} onClick=${() => setStatus(c, "inactive")}>Deactivate</button>`
        : html`<button class="small secondary" data-action="activate" disabled=${action.busy} onClick=${() => setStatus(c, "active")}>Activate</button>`}
      <button class="small danger" data-action="delete" disabled=${action.busy} onClick=${() => setDeleting(c)}>Delete</button></span>` },
  ];
  return html`<h1>Clients</h1>
    <${Section} title="New client" id="create-client">
      <${CreateForm} action=${action} onCreated=${(c) => { setShown({ title: `Token of ${c.name}`, token: c.client_token }); state.reload(); }} /><//>
    <${TokenOnce} shown=${shown} onDone=${() => setShown(null)} />
    <${Notice} notice=${action.notice} />
    <${DeleteDialog} client=${deleting} action=${action} onClose=${() => setDeleting(null)} onDeleted=${state.reload} />
    <${Section} title="Clients" id="clients">
      <${Async} state=${state} what="the clients">${(d) => html`
        <${Table} id="clients" rows=${d.clients} columns=${columns} rowKey="client_id" empty="No clients yet." />
        <${Pager} nextToken=${d.next_token} onNext=${paged.next} onFirst=${paged.first} atFirst=${paged.atFirst} />`}<//><//>`;
}
